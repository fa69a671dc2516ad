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
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Principal is who made a request: a key's name or a user's username, which
// becomes the command's requested_by.
type Principal struct {
	Name string
	// Role is the user's; keys have none.
	Role Role
	// Key is true for an API key, false for a Basic user.
	Key bool
}

// MaySend reports whether the principal may cause a send: an API key (a
// merchant's system), or a user whose role may (Role.MaySend).
func (p Principal) MaySend() bool { return p.Key || p.Role.MaySend() }

// authenticator checks Authorization headers against the configured keys
// and users.
type authenticator struct {
	keys  []keyEntry
	users map[string]User
	// dummy is a bcrypt hash compared for unknown users, so that the time
	// of an answer does not tell which usernames exist.
	dummy []byte
	// bcryptSlots bounds the bcrypt comparisons running at once (each takes
	// tens of milliseconds of a core): requests with Basic credentials,
	// wrong ones included, cannot take every core from the API keys'
	// requests, which need none.
	bcryptSlots chan struct{}
	// verified holds the SHA-256 of (username, password) pairs bcrypt
	// accepted less than verifiedFor ago, so a signed-in user costs one
	// comparison per verifiedFor instead of one per request.
	mu       sync.Mutex
	verified map[[sha256.Size]byte]time.Time
	now      func() time.Time
	compare  func(hash, password []byte) error
}

// verifiedFor is how long a Basic pair bcrypt accepted is taken without a
// new comparison; maxVerified bounds that cache (it is emptied when full).
const (
	verifiedFor = 5 * time.Minute
	maxVerified = 4096
)

type keyEntry struct {
	name string
	sum  [sha256.Size]byte
}

func newAuthenticator(cfg Config) (*authenticator, error) {
	a := &authenticator{
		users:       map[string]User{},
		bcryptSlots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2)),
		verified:    map[[sha256.Size]byte]time.Time{},
		now:         time.Now,
		compare:     bcrypt.CompareHashAndPassword,
	}
	for _, k := range cfg.Keys {
		var e keyEntry
		b, err := hex.DecodeString(k.SHA256)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("api.keys: %s: sha256 is not 64 hex characters", k.Name)
		}
		e.name = k.Name
		copy(e.sum[:], b)
		a.keys = append(a.keys, e)
	}
	for _, u := range cfg.Users {
		a.users[u.Username] = u
	}
	// The dummy hash has the highest cost of the users': an unknown user
	// takes as long as the slowest known one.
	cost := bcrypt.DefaultCost
	for _, u := range cfg.Users {
		if c, err := bcrypt.Cost([]byte(u.Bcrypt)); err == nil && c > cost {
			cost = c
		}
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("notifyd: no such user"), cost)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	a.dummy = dummy
	return a, nil
}

// The 401 answers, verbatim.
const (
	msgNoCredentials = "Authentication credentials were not provided."
	msgInvalidKey    = "Invalid API key."
	msgInvalidBasic  = "Invalid username/password."
)

// authenticate returns the request's principal, or the 401 detail. Keys are
// compared by their SHA-256 in constant time against every configured key
// (the loop does not stop at a match); passwords with bcrypt.
func (a *authenticator) authenticate(r *http.Request) (Principal, string) {
	h := r.Header.Get("Authorization")
	scheme, cred, _ := strings.Cut(h, " ")
	switch {
	case strings.EqualFold(scheme, "Api-Key"):
		cred = strings.TrimSpace(cred)
		if cred == "" {
			return Principal{}, msgInvalidKey
		}
		sum := sha256.Sum256([]byte(cred))
		match := -1
		for i := range a.keys {
			if subtle.ConstantTimeCompare(sum[:], a.keys[i].sum[:]) == 1 {
				match = i
			}
		}
		if match < 0 {
			return Principal{}, msgInvalidKey
		}
		return Principal{Name: a.keys[match].name, Key: true}, ""
	case strings.EqualFold(scheme, "Basic"):
		user, pass, ok := r.BasicAuth()
		if !ok {
			return Principal{}, msgInvalidBasic
		}
		u, known := a.users[user]
		if !a.checkPassword(r, u, known, user, pass) {
			return Principal{}, msgInvalidBasic
		}
		return Principal{Name: u.Username, Role: u.Role}, ""
	}
	return Principal{}, msgNoCredentials
}

// checkPassword compares pass with the user's bcrypt hash (with a dummy
// hash for an unknown user, so both take as long), at most len(bcryptSlots)
// comparisons at a time; a pair accepted less than verifiedFor ago is
// taken from the cache. A request whose client leaves while it waits for a
// slot is refused.
func (a *authenticator) checkPassword(r *http.Request, u User, known bool, user, pass string) bool {
	h := sha256.New()
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(pass))
	var pair [sha256.Size]byte
	h.Sum(pair[:0])
	now := a.now()
	a.mu.Lock()
	at, ok := a.verified[pair]
	a.mu.Unlock()
	if known && ok && now.Sub(at) < verifiedFor {
		return true
	}
	select {
	case a.bcryptSlots <- struct{}{}:
	case <-r.Context().Done():
		return false
	}
	hash := a.dummy
	if known {
		hash = []byte(u.Bcrypt)
	}
	good := a.compare(hash, []byte(pass)) == nil && known
	<-a.bcryptSlots
	if good {
		a.mu.Lock()
		if len(a.verified) >= maxVerified {
			clear(a.verified)
		}
		a.verified[pair] = now
		a.mu.Unlock()
	}
	return good
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
	if err := writeNew(path, name+":"+string(hash)+"\n"); err != nil {
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
	if err := writeNew(path, s+"\n"); err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	return s, nil
}

// writeNew creates path (mode 0600; it must not exist) holding content.
func writeNew(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
