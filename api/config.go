package api

import (
	"github.com/notifyd/notifyd/schemas"

	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/notifyd/notifyd/dispatch"
)

// Config is the api block of the configuration. Zero fields take the
// defaults set by SetDefaults; Validate names the first bad key.
type Config struct {
	// Listen is where the API is served (api.listen): host:port, or "off".
	// The command sets the default: 127.0.0.1:8000 with no configuration
	// file, off with one.
	Listen string `yaml:"listen"`
	// Keys are the API keys, by name, with the hex SHA-256 of each key
	// (api.keys); the key itself is never configured.
	Keys []Key `yaml:"keys"`
	// Users sign in with HTTP Basic (api.users).
	Users []User `yaml:"users"`
	// Wait is how long a request waits for its delivery result before it
	// is answered 202 (api.wait, default 30s).
	Wait time.Duration `yaml:"wait"`
	// MaxInFlight bounds the requests waiting for a result at once; more
	// are answered 503 (api.max_in_flight, default 1024).
	MaxInFlight int `yaml:"max_in_flight"`
	// TLS serves HTTPS (and HTTP/2) when both files are set (api.tls).
	TLS TLSConfig `yaml:"tls"`
	// AllowInsecure permits credentials over plain HTTP on an address
	// other than loopback, for a TLS-terminating proxy in front
	// (api.allow_insecure, default false).
	AllowInsecure bool `yaml:"allow_insecure"`
	// RateLimit is a token bucket per key or user (api.rate_limit). Unset,
	// DefaultRateLimit(wait, max_in_flight): no single key can hold all
	// of api.max_in_flight; per_second: 0 turns it off.
	RateLimit *dispatch.RateLimit `yaml:"rate_limit"`
	// TrustedProxies are the addresses (CIDRs, or single IPs) of proxies in
	// front of the API whose X-Forwarded-For names the client
	// (api.trusted_proxies; default none: the peer is the client). Failed
	// sign-ins back off per client address: behind a proxy not listed
	// here every client shares the proxy's.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Console is the operator console under /console/ (api.console).
	Console ConsoleConfig `yaml:"console"`
	// PublicURL is the address providers call back, e.g.
	// https://notify.example.com (api.public_url): Twilio's signatures
	// are computed over <public_url>/callbacks/twilio, since behind a
	// proxy the request's own URL differs; the twilio provider asks for
	// status callbacks there. Unset: the request's own URL.
	PublicURL string `yaml:"public_url"`
}

// ConsoleConfig is api.console.
type ConsoleConfig struct {
	// Enabled serves the console (api.console.enabled, default true).
	Enabled *bool `yaml:"enabled"`
	// SessionKey signs the session cookies: a secret of at least 32
	// characters (api.console.session_key or session_key_file). Unset,
	// the command makes one in store.dir (console-session-key, 0600), so
	// sessions survive a restart; instances behind one address must share
	// it.
	SessionKey string `yaml:"session_key" secret:""`
	// SessionTTL is how long a sign-in lasts (api.console.session_ttl,
	// default 8h).
	SessionTTL time.Duration `yaml:"session_ttl"`
}

// On reports whether the console is served.
func (c ConsoleConfig) On() bool { return c.Enabled == nil || *c.Enabled }

// Key is one API key: its name (the requested_by of its commands) and the
// lowercase hex SHA-256 of the key.
type Key struct {
	Name   string `yaml:"name"`
	SHA256 string `yaml:"sha256"`
	// Merchant, when set, makes the key the merchant's: it reaches that
	// merchant's transactions and results only. Unset: a platform key,
	// which reaches every merchant's.
	Merchant string `yaml:"merchant"`
}

// User is one HTTP Basic user: the bcrypt hash of the password and a role.
type User struct {
	Username string `yaml:"username"`
	Bcrypt   string `yaml:"bcrypt"`
	// Role is operator (may resend) or viewer (may look only: console
	// pages and the API's GET of a result).
	Role Role `yaml:"role"`
	// Merchant, when set, makes the user the merchant's (see Key.Merchant).
	Merchant string `yaml:"merchant"`
}

// Role is what a user may do.
type Role string

// The roles of users.
const (
	RoleOperator Role = "operator"
	RoleViewer   Role = "viewer"
)

// MaySend reports whether the role may cause a send: publish a resend
// command (the API's POST, the console's resend and bulk recovery). The one
// rule of roles, for every door.
func (r Role) MaySend() bool { return r == RoleOperator }

// TLSConfig is api.tls.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether TLS is configured.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Defaults of the api block, in one place.
const (
	DefaultWait        = 30 * time.Second
	DefaultMaxInFlight = 1024
	// DefaultListen is where the embedded default serves the API.
	DefaultListen = "127.0.0.1:8000"
	// DefaultSessionTTL is how long a console sign-in lasts.
	DefaultSessionTTL = 8 * time.Hour
	// MinSessionKeyLength is the shortest api.console.session_key.
	MinSessionKeyLength = 32
)

// SetDefaults fills the zero fields that have a default.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = "off"
	}
	if c.Wait == 0 {
		c.Wait = DefaultWait
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.Console.SessionTTL == 0 {
		c.Console.SessionTTL = DefaultSessionTTL
	}
	if c.RateLimit == nil && c.Wait > 0 && c.MaxInFlight > 0 {
		l := DefaultRateLimit(c.Wait, c.MaxInFlight)
		c.RateLimit = &l
	}
}

// DefaultRateLimit is api.rate_limit when unset: per_second =
// max_in_flight / (4 × wait in seconds), burst = twice that, so that one
// key (or user) sending as fast as it may, every request waiting the whole
// wait for its result, holds at most per_second × wait + burst = about a
// third of max_in_flight, and never all of it: with the defaults (30s,
// 1024) 8.5 requests/s, burst 17, at most 273 waiting. A resend is a rare,
// deliberate act; a merchant that needs more says so.
func DefaultRateLimit(wait time.Duration, maxInFlight int) dispatch.RateLimit {
	perSecond := float64(maxInFlight) / (4 * max(wait.Seconds(), 1))
	return dispatch.RateLimit{PerSecond: perSecond, Burst: max(1, int(2*perSecond))}
}

// Enabled reports whether the API is served.
func (c *Config) Enabled() bool { return c.Listen != "off" && c.Listen != "" }

// Validate checks the block and names the key of the first problem. It
// never echoes a hash.
func (c *Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("api.listen: %q is not host:port (or off)", c.Listen)
	}
	switch {
	case c.Wait < 0:
		return errors.New("api.wait: must not be negative")
	case c.MaxInFlight < 0:
		return errors.New("api.max_in_flight: must be >= 1")
	}
	if c.RateLimit != nil {
		if err := c.RateLimit.Validate(); err != nil {
			return fmt.Errorf("api.rate_limit.%w", err)
		}
	}
	if c.Console.SessionTTL < 0 {
		return errors.New("api.console.session_ttl: must not be negative")
	}
	if k := c.Console.SessionKey; k != "" && len(k) < MinSessionKeyLength {
		return fmt.Errorf("api.console.session_key: at least %d characters (the value is not shown)", MinSessionKeyLength)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return errors.New("api.public_url: must be an http(s) URL with a host and no query, e.g. https://notify.example.com")
		}
	}
	if _, err := c.trustedProxies(); err != nil {
		return err
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("api.tls: cert_file and key_file go together")
	}
	if !c.TLS.Enabled() && !c.AllowInsecure && !loopback(host) {
		return fmt.Errorf("api.listen: %q is not a loopback address and api.tls is not set: API keys and passwords would cross the network in clear; set api.tls.cert_file and api.tls.key_file, or api.allow_insecure: true behind a TLS-terminating proxy", c.Listen)
	}
	names := map[string]bool{}
	for i, k := range c.Keys {
		key := fmt.Sprintf("api.keys[%d]", i)
		switch {
		case k.Name == "":
			return fmt.Errorf("%s.name: is required", key)
		case !validName(k.Name):
			return fmt.Errorf("%s.name: %q must be 1 to 128 printable characters without spaces", key, k.Name)
		case names[k.Name]:
			return fmt.Errorf("%s.name: %q is used twice", key, k.Name)
		}
		names[k.Name] = true
		if b, err := hex.DecodeString(k.SHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("%s.sha256: must be the 64 hex characters of the key's SHA-256 (notifyd api-key %s prints it)", key, k.Name)
		}
		if k.Merchant != "" && !schemas.ValidMerchantID(k.Merchant) {
			return fmt.Errorf("%s.merchant: %w", key, errMerchantID)
		}
	}
	for i, u := range c.Users {
		key := fmt.Sprintf("api.users[%d]", i)
		switch {
		case u.Username == "":
			return fmt.Errorf("%s.username: is required", key)
		case !validName(u.Username) || strings.Contains(u.Username, ":"):
			return fmt.Errorf("%s.username: %q must be 1 to 128 printable characters without spaces or ':'", key, u.Username)
		case names[u.Username]:
			return fmt.Errorf("%s.username: %q is also the name of a key or another user", key, u.Username)
		}
		names[u.Username] = true
		if _, err := bcrypt.Cost([]byte(u.Bcrypt)); err != nil {
			// The library's error quotes the value: not repeated here.
			return fmt.Errorf("%s.bcrypt: not a bcrypt hash (want $2a$, $2b$ or $2y$ and 53 more characters)", key)
		}
		if u.Role != RoleOperator && u.Role != RoleViewer {
			return fmt.Errorf("%s.role: %q (want operator or viewer)", key, u.Role)
		}
		if u.Merchant != "" && !schemas.ValidMerchantID(u.Merchant) {
			return fmt.Errorf("%s.merchant: %w", key, errMerchantID)
		}
	}
	return nil
}

// errMerchantID says what a merchant_id is.
var errMerchantID = fmt.Errorf("a merchant_id is 1 to %d of A-Z, a-z, 0-9, '.', '_' and '-'", schemas.MaxMerchantIDLength)

// trustedProxies parses api.trusted_proxies.
func (c *Config) trustedProxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, v := range c.TrustedProxies {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("api.trusted_proxies[%d]: %q is not an IP address or a CIDR such as 10.0.0.0/8", i, v)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// loopback reports whether host only ever accepts local connections.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validName: 1 to 128 printable ASCII characters, no spaces.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
