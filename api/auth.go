package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/notifyd/notifyd/internal/secretfile"
	"github.com/notifyd/notifyd/schemas"
)

// Principal is who made a request: a key's name or a user's username, which
// becomes the command's requested_by.
type Principal struct {
	Name string
	// Role is the user's; keys have none.
	Role Role
	// Key is true for an API key, false for a Basic user.
	Key bool
	// Merchant is the merchant the principal belongs to; "" for a
	// platform principal, which reaches every merchant.
	Merchant string
}

// ID names the principal uniquely (its rate limit's bucket): names are
// unique within the platform ("/name") and within each merchant
// ("merchant/name").
func (p Principal) ID() string { return p.Merchant + "/" + p.Name }

// Reaches reports whether the principal may see a transaction or result
// of merchantID: a platform principal every one, a merchant's its own.
func (p Principal) Reaches(merchantID string) bool {
	return p.Merchant == "" || p.Merchant == schemas.MerchantOf(merchantID)
}

// MaySend reports whether the principal may cause a send: an API key (a
// merchant's system), or a user whose role may (Role.MaySend).
func (p Principal) MaySend() bool { return p.Key || p.Role.MaySend() }

// authenticator checks Authorization headers against the configured keys
// and users, and passwords in the order signin.go writes down.
type authenticator struct {
	keys  []keyEntry
	users map[string]User
	// merchants holds merchants' keys and users, from their settings
	// (nil: none).
	merchants Merchants
	// dummy is a bcrypt hash compared for unknown users, so that the time
	// of an answer does not tell which usernames exist.
	dummy []byte
	// bcryptSlots bounds the bcrypt comparisons running at once (each takes
	// tens of milliseconds of a core): requests with Basic credentials,
	// wrong ones included, cannot take every core from the API keys'
	// requests, which need none. checking counts the checks running or
	// waiting for a slot, at most maxChecking.
	bcryptSlots chan struct{}
	checking    atomic.Int64
	maxChecking int64
	// throttle backs failed checks off by username and client address;
	// trusted are the proxies whose X-Forwarded-For names the client.
	throttle *signInThrottle
	trusted  []netip.Prefix
	// verified holds the SHA-256 of (username, password) pairs bcrypt
	// accepted less than verifiedFor ago, so a signed-in user costs one
	// comparison per verifiedFor instead of one per request.
	mu       sync.Mutex
	verified map[[sha256.Size]byte]time.Time
	now      func() time.Time
	compare  func(hash, password []byte) error
	// checked counts the checks by result (nil: not counted).
	checked *prometheus.CounterVec
}

// verifiedFor is how long a Basic pair bcrypt accepted is taken without a
// new comparison; maxVerified bounds that cache (it is emptied when full).
const (
	verifiedFor = 5 * time.Minute
	maxVerified = 4096
)

type keyEntry struct {
	name     string
	merchant string
	sum      [sha256.Size]byte
}

func newAuthenticator(cfg Config) (*authenticator, error) {
	slots := max(1, runtime.GOMAXPROCS(0)/2)
	a := &authenticator{
		users:       map[string]User{},
		bcryptSlots: make(chan struct{}, slots),
		maxChecking: int64(slots * (1 + bcryptQueuePerSlot)),
		verified:    map[[sha256.Size]byte]time.Time{},
		now:         time.Now,
		compare:     bcrypt.CompareHashAndPassword,
	}
	a.throttle = newSignInThrottle(func() time.Time { return a.now() })
	trusted, err := cfg.trustedProxies()
	if err != nil {
		return nil, err
	}
	a.trusted = trusted
	for _, k := range cfg.Keys {
		var e keyEntry
		b, err := hex.DecodeString(k.SHA256)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("api.keys: %s: sha256 is not 64 hex characters", k.Name)
		}
		e.name, e.merchant = k.Name, k.Merchant
		copy(e.sum[:], b)
		a.keys = append(a.keys, e)
	}
	for _, u := range cfg.Users {
		a.users[u.Username] = u
	}
	// The dummy hash has the highest cost of the users' (bcrypt's default
	// with none): an unknown user takes as long as the slowest known one,
	// never longer, so the answer's time does not tell which names exist.
	cost := 0
	for _, u := range cfg.Users {
		if c, err := bcrypt.Cost([]byte(u.Bcrypt)); err == nil && c > cost {
			cost = c
		}
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("notifyd: no such user"), cost)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	a.dummy = dummy
	return a, nil
}

// user returns the user named name: one of api.users, else a merchant's.
func (a *authenticator) user(name string) (User, bool) {
	if u, ok := a.users[name]; ok {
		return u, true
	}
	if a.merchants != nil {
		return a.merchants.User(name)
	}
	return User{}, false
}

// The 401 answers, verbatim.
const (
	msgNoCredentials = "Authentication credentials were not provided."
	msgInvalidKey    = "Invalid API key."
	msgInvalidBasic  = "Invalid username/password."
)

// authFailure is why a request is not authenticated: 401 (detail), 429
// (too many failed sign-ins: retryAfter) or 503 (too many password checks
// at once).
type authFailure struct {
	status     int
	detail     string
	retryAfter time.Duration
}

// authenticate returns the request's principal, or why not. Keys are
// compared by their SHA-256 in constant time against every configured key
// (the loop does not stop at a match); passwords by checkPassword.
func (a *authenticator) authenticate(r *http.Request) (Principal, *authFailure) {
	h := r.Header.Get("Authorization")
	scheme, cred, _ := strings.Cut(h, " ")
	switch {
	case strings.EqualFold(scheme, "Api-Key"):
		cred = strings.TrimSpace(cred)
		if cred == "" {
			return Principal{}, &authFailure{status: http.StatusUnauthorized, detail: msgInvalidKey}
		}
		sum := sha256.Sum256([]byte(cred))
		match := -1
		for i := range a.keys {
			if subtle.ConstantTimeCompare(sum[:], a.keys[i].sum[:]) == 1 {
				match = i
			}
		}
		if match >= 0 {
			return Principal{Name: a.keys[match].name, Key: true, Merchant: a.keys[match].merchant}, nil
		}
		if a.merchants != nil {
			// A merchant's key: found by its SHA-256, which only the
			// key's holder can give.
			if name, merchant, ok := a.merchants.Key(hex.EncodeToString(sum[:])); ok {
				return Principal{Name: name, Key: true, Merchant: merchant}, nil
			}
		}
		return Principal{}, &authFailure{status: http.StatusUnauthorized, detail: msgInvalidKey}
	case strings.EqualFold(scheme, "Basic"):
		user, pass, ok := r.BasicAuth()
		if !ok {
			return Principal{}, &authFailure{status: http.StatusUnauthorized, detail: msgInvalidBasic}
		}
		switch c := a.checkPassword(r, user, pass); {
		case c.retryAfter > 0:
			return Principal{}, &authFailure{status: http.StatusTooManyRequests, detail: throttled(c.retryAfter), retryAfter: c.retryAfter}
		case c.busy:
			return Principal{}, &authFailure{status: http.StatusServiceUnavailable, detail: msgBusy, retryAfter: time.Second}
		case !c.ok:
			return Principal{}, &authFailure{status: http.StatusUnauthorized, detail: msgInvalidBasic}
		default:
			return Principal{Name: c.user.Username, Role: c.user.Role, Merchant: c.user.Merchant}, nil
		}
	}
	if strings.TrimSpace(h) != "" {
		return Principal{}, &authFailure{status: http.StatusUnauthorized, detail: unsupportedScheme(scheme)}
	}
	return Principal{}, &authFailure{status: http.StatusUnauthorized, detail: msgNoCredentials}
}

// schemeName is what an unsupported scheme's answer may name: a word, not
// something that could be a credential sent without its scheme (a key
// holds "_").
var schemeName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{0,19}$`)

// unsupportedScheme answers a credential of a scheme notifyd does not
// take (Bearer, Token, ...), naming the ones it takes.
func unsupportedScheme(scheme string) string {
	const accepted = "use Api-Key or Basic."
	if schemeName.MatchString(scheme) {
		return fmt.Sprintf("Unsupported authorization scheme %q: %s", scheme, accepted)
	}
	return "Unsupported authorization scheme: " + accepted
}

// msgBusy answers (503) a password check beyond the bcrypt queue.
const msgBusy = "Service unavailable: too many sign-ins at once."

// throttled is the gateway framework's words for a 429.
func throttled(wait time.Duration) string {
	secs := retryAfterSeconds(wait)
	return fmt.Sprintf("Request was throttled. Expected available in %d second%s.", secs, plural(secs))
}

// retryAfterSeconds is a wait as Retry-After gives it: whole seconds,
// rounded up.
func retryAfterSeconds(wait time.Duration) int { return int(math.Ceil(wait.Seconds())) }

// passwordCheck is the outcome of checkPassword.
type passwordCheck struct {
	ok   bool
	user User // the user, when ok
	// retryAfter > 0: refused unchecked, failed sign-ins are backing off.
	retryAfter time.Duration
	// busy: refused unchecked, too many checks at once.
	busy bool
}

// checkPassword checks a username and password in the order signin.go
// writes down: the backoff of the username's and the client's failures,
// the cache of accepted pairs, the client's checks under way, then bcrypt
// (with a dummy hash for an unknown user, so that both take as long),
// bounded. A request whose
// client leaves while it waits for a slot is refused (not counted as a
// failure).
func (a *authenticator) checkPassword(r *http.Request, user, pass string) passwordCheck {
	c := a.check(r, user, pass)
	if a.checked != nil {
		result := passwordRefused
		switch {
		case c.ok:
			result = passwordAccepted
		case c.retryAfter > 0:
			result = passwordThrottled
		case c.busy:
			result = passwordBusy
		}
		a.checked.WithLabelValues(result).Inc()
	}
	return c
}

func (a *authenticator) check(r *http.Request, user, pass string) passwordCheck {
	userKey, addrKey := "user:"+user, "addr:"+clientAddress(r, a.trusted)
	if wait := a.throttle.wait(userKey, addrKey); wait > 0 {
		return passwordCheck{retryAfter: wait}
	}
	u, known := a.user(user)
	h := sha256.New()
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(u.Bcrypt)) // a new password (a merchant's settings changed) is checked again
	h.Write([]byte{0})
	h.Write([]byte(pass))
	var pair [sha256.Size]byte
	h.Sum(pair[:0])
	now := a.now()
	a.mu.Lock()
	at, ok := a.verified[pair]
	a.mu.Unlock()
	if known && ok && now.Sub(at) < verifiedFor {
		return passwordCheck{ok: true, user: u}
	}
	if !a.throttle.enter(addrKey) {
		return passwordCheck{retryAfter: time.Second}
	}
	defer a.throttle.leave(addrKey)
	if a.checking.Add(1) > a.maxChecking {
		a.checking.Add(-1)
		return passwordCheck{busy: true}
	}
	defer a.checking.Add(-1)
	select {
	case a.bcryptSlots <- struct{}{}:
	case <-r.Context().Done():
		return passwordCheck{}
	}
	hash := a.dummy
	if known {
		hash = []byte(u.Bcrypt)
	}
	good := a.compare(hash, []byte(pass)) == nil && known
	<-a.bcryptSlots
	if !good {
		if known {
			a.throttle.fail(userKey, addrKey)
		} else {
			a.throttle.fail("", userKey, addrKey)
		}
		return passwordCheck{}
	}
	a.throttle.succeed(userKey)
	a.mu.Lock()
	if len(a.verified) >= maxVerified {
		clear(a.verified)
	}
	a.verified[pair] = now
	a.mu.Unlock()
	return passwordCheck{ok: true, user: u}
}

// challenge is the WWW-Authenticate header of 401 answers.
const challenge = `Api-Key realm="notifyd", Basic realm="notifyd", charset="UTF-8"`

// keyPrefix starts every key notifyd makes, so that a leaked one is easy to
// recognise (and to scan for).
const keyPrefix = "nfy_"

// NewKey returns a new random API key and the hex SHA-256 that configures
// it (api.keys[].sha256).
func NewKey() (key, sha256Hex string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("new key: %w", err)
	}
	key = keyPrefix + base64.RawURLEncoding.EncodeToString(b)
	return key, HashKey(key), nil
}

// HashKey returns the hex SHA-256 of a key, as api.keys[].sha256 holds it.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// LocalKey returns the API key kept in path (mode 0600), making it when
// the file does not exist yet; created says it was made now. It is the key
// of a notifyd configured with no keys and no users.
func LocalKey(path string) (key string, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		key = strings.TrimSpace(string(b))
		if !strings.HasPrefix(key, keyPrefix) || len(key) < len(keyPrefix)+32 {
			return "", false, fmt.Errorf("api key file %s: not a key made by notifyd (delete it to make a new one)", path)
		}
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("api key file: %w", err)
	}
	key, _, err = NewKey()
	if err != nil {
		return "", false, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", false, fmt.Errorf("api key file: %w", err)
	}
	if _, err := f.WriteString(key + "\n"); err != nil {
		f.Close()
		return "", false, fmt.Errorf("api key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", false, fmt.Errorf("api key file: %w", err)
	}
	return key, true, nil
}

// LocalUser returns the console user kept in path (mode 0600: the name and
// the bcrypt hash of the password, never the password), making it when the
// file does not exist yet: an operator named name with a random password,
// returned (to be shown once) only when created now. It is the console
// user of a notifyd configured with no api.users.
func LocalUser(path, name string) (u User, password string, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		user, hash, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
		if _, cerr := bcrypt.Cost([]byte(hash)); !ok || cerr != nil || user == "" {
			return User{}, "", false, fmt.Errorf("console user file %s: not made by notifyd (delete it to make a new one)", path)
		}
		return User{Username: user, Bcrypt: hash, Role: RoleOperator}, "", false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return User{}, "", false, fmt.Errorf("console user file: %w", err)
	}
	raw := make([]byte, 18)
	if _, err := rand.Read(raw); err != nil {
		return User{}, "", false, fmt.Errorf("console user: %w", err)
	}
	password = base64.RawURLEncoding.EncodeToString(raw)
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return User{}, "", false, fmt.Errorf("console user: %w", err)
	}
	if err := secretfile.WriteNew(path, name+":"+string(hash)+"\n"); err != nil {
		return User{}, "", false, fmt.Errorf("console user file: %w", err)
	}
	return User{Username: name, Bcrypt: string(hash), Role: RoleOperator}, password, true, nil
}

// LocalSecret returns the secret kept in path (mode 0600), making a random
// one (32 bytes, hex) when the file does not exist yet: the console's
// session key when api.console.session_key is not set.
func LocalSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(b)); len(s) >= MinSessionKeyLength {
			return s, nil
		}
		return "", fmt.Errorf("secret file %s: shorter than %d characters (delete it to make a new one)", path, MinSessionKeyLength)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("secret file: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("secret: %w", err)
	}
	s := hex.EncodeToString(raw)
	if err := secretfile.WriteNew(path, s+"\n"); err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	return s, nil
}
