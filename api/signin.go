package api

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Password checks (Basic on the API, the console's sign-in form) are
// guarded against guessing and against exhausting the CPU, in this order:
//
//  1. failed checks back off per username and per client address:
//     freeSignInFailures are free, then each further one makes the next
//     check wait signInFirstBackoff, doubling up to signInMaxBackoff;
//     a check during the wait is answered 429 with Retry-After, without
//     running bcrypt (a correct password included: it would make the wait
//     an oracle). A success forgets the username's failures (not the
//     address's: an attacker's own account would wipe them); failures are
//     forgotten signInForget after the last one once no wait runs;
//  2. a pair bcrypt accepted less than verifiedFor ago is taken without a
//     new comparison;
//  3. one client address has at most checksPerClient checks running or
//     waiting at once; a further one is answered 429 at once (a flood
//     from one client, even within its free failures, cannot fill the
//     queue in front of everyone else's sign-in);
//  4. bcrypt runs on at most half the cores, with at most
//     bcryptQueuePerSlot checks waiting per running one; beyond that the
//     check is answered 503 at once. API keys need no bcrypt: Basic
//     traffic, however heavy, never makes a key's request wait.
const (
	freeSignInFailures = 5
	signInFirstBackoff = time.Second
	signInMaxBackoff   = 5 * time.Minute
	signInForget       = 15 * time.Minute
	// maxSignInEntries bounds the unknown usernames and the addresses
	// whose failures are remembered (about 100 bytes each); when full, new
	// ones are not added until old ones are forgotten: those already
	// throttled stay so. The configured users' failures are always
	// remembered (there are few), so filling the table cannot lift the
	// backoff of a real username.
	maxSignInEntries   = 100_000
	checksPerClient    = 2
	bcryptQueuePerSlot = 8
)

// signInThrottle remembers failed password checks by key ("user:<name>",
// "addr:<client address>"), and counts the checks of each client address
// under way.
type signInThrottle struct {
	now func() time.Time

	mu      sync.Mutex
	failed  map[string]*signInFailures
	running map[string]int
}

type signInFailures struct {
	n     int       // consecutive failures
	last  time.Time // of the last one
	until time.Time // no check before this
}

func newSignInThrottle(now func() time.Time) *signInThrottle {
	return &signInThrottle{now: now, failed: map[string]*signInFailures{}, running: map[string]int{}}
}

// enter counts a check of key under way, unless checksPerClient are
// already: then it reports false.
func (t *signInThrottle) enter(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.running[key] >= checksPerClient {
		return false
	}
	t.running[key]++
	return true
}

// leave ends a check entered.
func (t *signInThrottle) leave(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.running[key]--; t.running[key] <= 0 {
		delete(t.running, key)
	}
}

// wait returns how long the longest wait of keys still runs, 0 when none.
func (t *signInThrottle) wait(keys ...string) time.Duration {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var longest time.Duration
	for _, k := range keys {
		if f := t.failed[k]; f != nil {
			longest = max(longest, f.until.Sub(now))
		}
	}
	return longest
}

// fail records a failed check of a configured user's key (always kept)
// and of bounded keys (kept while there is room).
func (t *signInThrottle) fail(user string, bounded ...string) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := bounded
	if user != "" {
		keys = append([]string{user}, bounded...)
	}
	for i, k := range keys {
		f := t.failed[k]
		if f == nil {
			if len(t.failed) >= maxSignInEntries {
				t.forgetLocked(now)
			}
			if len(t.failed) >= maxSignInEntries && (user == "" || i > 0) {
				continue
			}
			f = &signInFailures{}
			t.failed[k] = f
		}
		f.n++
		f.last = now
		if over := f.n - freeSignInFailures; over >= 0 {
			backoff := signInMaxBackoff
			if over < 20 {
				backoff = min(signInFirstBackoff<<over, signInMaxBackoff)
			}
			f.until = now.Add(backoff)
		}
	}
}

// succeed forgets the failures of key.
func (t *signInThrottle) succeed(key string) {
	t.mu.Lock()
	delete(t.failed, key)
	t.mu.Unlock()
}

// forgetLocked drops the entries whose last failure is signInForget old
// and whose wait has ended.
func (t *signInThrottle) forgetLocked(now time.Time) {
	for k, f := range t.failed {
		if now.Sub(f.last) >= signInForget && !now.Before(f.until) {
			delete(t.failed, k)
		}
	}
}

// clientAddress is the address a request comes from, as the throttle
// counts it: the peer's IP, or, when the peer is one of trusted (a proxy
// in front, api.trusted_proxies), the last address of X-Forwarded-For that
// is not a trusted proxy. An IPv6 address counts as its /64, which one
// client usually holds whole.
func clientAddress(r *http.Request, trusted []netip.Prefix) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if isTrusted(ip, trusted) {
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // a hop we cannot read: stop at the last one we could
			}
			ip = hop.Unmap()
			if !isTrusted(ip, trusted) {
				break
			}
		}
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

func isTrusted(ip netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
