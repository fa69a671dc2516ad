package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"

	"github.com/notifyd/notifyd/internal/testkit"
)

// throttleFixture is an authenticator with a fake clock that counts its
// bcrypt comparisons.
type throttleFixture struct {
	t        *testing.T
	a        *authenticator
	now      time.Time
	compared int
}

func newThrottleFixture(t *testing.T, cfg Config) *throttleFixture {
	hash, _ := bcrypt.GenerateFromPassword([]byte("right pass"), bcrypt.MinCost)
	cfg.Listen = DefaultListen
	cfg.Users = []User{{Username: "ops", Bcrypt: string(hash), Role: RoleOperator}}
	a, err := newAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &throttleFixture{t: t, a: a, now: time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)}
	a.now = func() time.Time { return f.now }
	a.compare = func(h, p []byte) error { f.compared++; return bcrypt.CompareHashAndPassword(h, p) }
	return f
}

// try signs in with Basic from addr and returns the status it would be
// answered (200 for a principal) and the Retry-After of a 429.
func (f *throttleFixture) try(user, pass, addr string) (int, time.Duration) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = addr + ":40000"
	r.SetBasicAuth(user, pass)
	_, fail := f.a.authenticate(r)
	if fail == nil {
		return http.StatusOK, 0
	}
	return fail.status, fail.retryAfter
}

// TestSignInBackoff: five failed sign-ins of a username are free; then
// each further check waits, 1 s doubling to at most 5 min, and a check
// during the wait is 429 without running bcrypt, the right password
// included. A success forgets the username's failures.
func TestSignInBackoff(t *testing.T) {
	f := newThrottleFixture(t, Config{})
	for i := 0; i < freeSignInFailures; i++ {
		if code, _ := f.try("ops", "guess", "192.0.2."+fmt.Sprint(i+1)); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, code)
		}
	}
	compared := f.compared
	for _, pass := range []string{"guess", "right pass"} {
		if code, wait := f.try("ops", pass, "192.0.2.100"); code != http.StatusTooManyRequests || wait != time.Second {
			t.Errorf("during the wait (%s): %d, retry after %s; want 429 after 1s", pass, code, wait)
		}
	}
	if f.compared != compared {
		t.Errorf("bcrypt ran %d times during the wait", f.compared-compared)
	}
	// Each failure after the wait doubles the next one, up to 5 min.
	want := time.Second
	for i := 0; i < 12; i++ {
		f.now = f.now.Add(want)
		if code, _ := f.try("ops", "guess", "192.0.2.100"); code != http.StatusUnauthorized {
			t.Fatalf("after waiting %s: %d, want the password checked (401)", want, code)
		}
		want = min(2*want, signInMaxBackoff)
		if code, wait := f.try("ops", "guess", "192.0.2.101"); code != http.StatusTooManyRequests || wait != want {
			t.Errorf("failure %d: %d, retry after %s; want 429 after %s", freeSignInFailures+2+i, code, wait, want)
		}
	}
	if want != signInMaxBackoff {
		t.Fatalf("the backoff reached %s, not its cap", want)
	}
	f.now = f.now.Add(want)
	if code, _ := f.try("ops", "right pass", "192.0.2.102"); code != http.StatusOK {
		t.Fatalf("the right password after the wait: %d", code)
	}
	for i := 0; i < freeSignInFailures; i++ { // forgotten: free again
		if code, _ := f.try("ops", "guess", "192.0.2.103"); code != http.StatusUnauthorized {
			t.Fatalf("after a success, failure %d: %d", i+1, code)
		}
	}
}

// TestSignInBackoffPerAddress: one client failing with many usernames
// waits too, and only that client; failures are forgotten 15 minutes after
// the last one.
func TestSignInBackoffPerAddress(t *testing.T) {
	f := newThrottleFixture(t, Config{})
	for i := 0; i < freeSignInFailures; i++ {
		if code, _ := f.try(fmt.Sprintf("user%d", i), "guess", "198.51.100.7"); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, code)
		}
	}
	compared := f.compared
	if code, wait := f.try("ops", "right pass", "198.51.100.7"); code != http.StatusTooManyRequests || wait != time.Second {
		t.Errorf("the same client, another user: %d after %s, want 429", code, wait)
	}
	if f.compared != compared {
		t.Error("bcrypt ran for a throttled client")
	}
	if code, _ := f.try("ops", "right pass", "198.51.100.8"); code != http.StatusOK {
		t.Errorf("another client: %d, want 200", code)
	}
	// IPv6: a client holds its /64.
	for i := 0; i < freeSignInFailures; i++ {
		f.try("nobody", "guess", fmt.Sprintf("[2001:db8:1:2::%x]", i+1))
	}
	if code, _ := f.try("ops", "right pass", "[2001:db8:1:2:ffff::1]"); code != http.StatusTooManyRequests {
		t.Errorf("the same /64: %d, want 429", code)
	}
	if code, _ := f.try("ops", "right pass", "[2001:db8:1:3::1]"); code != http.StatusOK {
		t.Errorf("another /64: %d, want 200", code)
	}
	f.now = f.now.Add(signInForget)
	f.a.throttle.mu.Lock()
	f.a.throttle.forgetLocked(f.now)
	left := len(f.a.throttle.failed)
	f.a.throttle.mu.Unlock()
	if left != 0 {
		t.Errorf("%d entries left %s after the last failure", left, signInForget)
	}
}

// TestClientAddress: the peer, unless it is a trusted proxy: then the
// last X-Forwarded-For hop that is not one.
func TestClientAddress(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, c := range []struct {
		peer, xff, want string
	}{
		{"203.0.113.9:5000", "", "203.0.113.9"},
		{"203.0.113.9:5000", "198.51.100.1", "203.0.113.9"}, // not from a proxy: the header is the client's own
		{"10.1.1.1:5000", "", "10.1.1.1"},
		{"10.1.1.1:5000", "198.51.100.1", "198.51.100.1"},
		{"10.1.1.1:5000", "6.6.6.6, 198.51.100.1, 10.2.2.2", "198.51.100.1"}, // the client wrote 6.6.6.6
		{"10.1.1.1:5000", "not-an-ip, 10.2.2.2", "10.2.2.2"},
		{"[::1]:5000", "2001:db8:aa:bb:1::9", "2001:db8:aa:bb::/64"},
		{"[::ffff:203.0.113.9]:5000", "", "203.0.113.9"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = c.peer
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		if got := clientAddress(r, trusted); got != c.want {
			t.Errorf("peer %s, X-Forwarded-For %q: %q, want %q", c.peer, c.xff, got, c.want)
		}
	}
	cfg := Config{Listen: DefaultListen, TrustedProxies: []string{"10.0.0.0/8", "192.0.2.1", "fd00::/8"}}
	if err := cfg.Validate(); err != nil {
		t.Errorf("trusted proxies: %v", err)
	}
	cfg.TrustedProxies = []string{"10.0.0.0/8", "proxy.example"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "api.trusted_proxies[1]") {
		t.Errorf("a name among trusted proxies: %v", err)
	}
}

// TestPasswordChecksBounded: with every bcrypt slot busy and the queue
// behind them full, one more Basic request is 503 at once, while a
// request with an API key is answered as usual: Basic traffic never makes
// a key wait. With 4 cores: 2 slots (half the cores), 8 queued per slot.
func TestPasswordChecksBounded(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	key, sum, _ := NewKey()
	hash, _ := bcrypt.GenerateFromPassword([]byte("right pass"), bcrypt.MinCost)
	cfg := Config{Listen: DefaultListen, Keys: []Key{{Name: "shop", SHA256: sum}},
		Users: []User{{Username: "ops", Bcrypt: string(hash), Role: RoleOperator}}}
	cfg.SetDefaults()
	k := newMemoryKafka()
	reg := prometheus.NewRegistry()
	s, err := New(cfg, Deps{Commands: k, Results: k, Registerer: reg}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	entered := make(chan struct{}, 64)
	s.auth.compare = func(h, p []byte) error {
		entered <- struct{}{}
		<-release
		return bcrypt.CompareHashAndPassword(h, p)
	}
	get := func(header, addr string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, PathNotifications+"c-1/", nil)
		r.RemoteAddr = addr + ":40000"
		r.Header.Set("Authorization", header)
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		return w
	}
	var wg sync.WaitGroup
	const slots = 2
	n := slots * (1 + bcryptQueuePerSlot)
	for i := 0; i < n; i++ { // each from its own address, as a botnet would
		wg.Go(func() { get(basicHeader(fmt.Sprintf("bot%d", i), "guess"), fmt.Sprintf("192.0.2.%d", i+1)) })
	}
	for range slots {
		<-entered
	}
	testkit.Eventually(t, "the rest queued behind the slots", 10*time.Second, func() bool { return s.auth.checking.Load() == int64(n) })
	testkit.Returns(t, "a password check beyond the queue", 10*time.Second, func() {
		if w := get(basicHeader("ops", "right pass"), "198.51.100.1"); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" ||
			!strings.Contains(w.Body.String(), msgBusy) {
			t.Errorf("a password check beyond the queue: %d %s", w.Code, w.Body)
		}
	})
	if w := get("Api-Key "+key, "198.51.100.2"); w.Code != http.StatusNotFound {
		t.Errorf("an API key while bcrypt is saturated: %d %s", w.Code, w.Body)
	}
	close(release)
	wg.Wait()
	if q := s.auth.checking.Load(); q != 0 {
		t.Errorf("every check over, %d still counted in the queue", q)
	}
	for result, want := range map[string]float64{passwordRefused: float64(n), passwordBusy: 1, passwordAccepted: 0, passwordThrottled: 0} {
		if got := testutil.ToFloat64(s.m.passwords.WithLabelValues(result)); got != want {
			t.Errorf("notifyd_api_password_checks_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

// TestConsoleSignInThrottled: the console's sign-in form backs off as
// Basic does, shared with it: 429 with Retry-After and a page saying how
// long; a Basic failure counts against the same username.
func TestConsoleSignInThrottled(t *testing.T) {
	f := newConsoleFixture(t)
	b := f.browser()
	for i := 0; i < freeSignInFailures-1; i++ {
		if p := b.post("/console/login", url.Values{"username": {"ops"}, "password": {"guess"}}); p.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, p.status)
		}
	}
	r, _ := http.NewRequest(http.MethodGet, f.srv.URL+PathNotifications+"c-1/", nil)
	r.SetBasicAuth("ops", "guess")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the fifth failure, with Basic: %d", resp.StatusCode)
	}
	p := b.post("/console/login", url.Values{"username": {"ops"}, "password": {"ops pass"}})
	if p.status != http.StatusTooManyRequests || p.header.Get("Retry-After") != "1" || !strings.Contains(p.text(), "Too many failed sign-ins: try again in 1 second.") {
		t.Errorf("sign-in during the wait: %d Retry-After %q %s", p.status, p.header.Get("Retry-After"), p.text())
	}
	if strings.Contains(p.header.Get("Set-Cookie"), sessionCookie+"=") && !strings.Contains(p.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Error("a session was opened during the wait")
	}
}

// TestPasswordChecksPerClient: one client has at most checksPerClient
// password checks under way; a further one is 429 at once, without
// queueing, so that a flood from one client leaves the queue to others:
// another client's sign-in goes through meanwhile.
func TestPasswordChecksPerClient(t *testing.T) {
	f := newThrottleFixture(t, Config{})
	release := make(chan struct{})
	f.a.compare = func(h, p []byte) error {
		<-release
		return bcrypt.CompareHashAndPassword(h, p)
	}
	running := func(addr string) int {
		f.a.throttle.mu.Lock()
		defer f.a.throttle.mu.Unlock()
		return f.a.throttle.running["addr:"+addr]
	}
	var wg sync.WaitGroup
	for i := range checksPerClient {
		wg.Go(func() { f.try(fmt.Sprintf("bot%d", i), "guess", "198.51.100.66") })
	}
	testkit.Eventually(t, "both checks of one client running", 10*time.Second, func() bool { return running("198.51.100.66") == checksPerClient })
	if code, wait := f.try("bot9", "guess", "198.51.100.66"); code != http.StatusTooManyRequests || wait != time.Second {
		t.Errorf("a third check from the same client: %d after %s, want 429 at once", code, wait)
	}
	other := make(chan int, 1)
	go func() { code, _ := f.try("ops", "right pass", "203.0.113.5"); other <- code }()
	testkit.Eventually(t, "another client's check running", 10*time.Second, func() bool { return running("203.0.113.5") == 1 })
	close(release)
	wg.Wait()
	if code := <-other; code != http.StatusOK {
		t.Errorf("another client's sign-in during the flood: %d", code)
	}
	f.a.throttle.mu.Lock()
	left := len(f.a.throttle.running)
	f.a.throttle.mu.Unlock()
	if left != 0 {
		t.Errorf("every check over, %d client addresses still counted as checking (the table would only grow)", left)
	}
}

// TestSignInTableFull: with the table of remembered failures full of
// other names and addresses, a configured user's failures still count.
func TestSignInTableFull(t *testing.T) {
	f := newThrottleFixture(t, Config{})
	f.a.throttle.mu.Lock()
	for i := range maxSignInEntries {
		f.a.throttle.failed[fmt.Sprintf("addr:junk-%d", i)] = &signInFailures{n: 1, last: f.now, until: f.now}
	}
	f.a.throttle.mu.Unlock()
	for i := 0; i <= freeSignInFailures; i++ {
		if code, _ := f.try("nobody-new", "guess", fmt.Sprintf("192.0.2.%d", 201+i)); code != http.StatusUnauthorized {
			t.Fatalf("an unknown user's check %d with the table full: %d, want 401 (not remembered)", i+1, code)
		}
	}
	for i := 0; i < freeSignInFailures; i++ {
		f.try("ops", "guess", fmt.Sprintf("192.0.2.%d", i+1))
	}
	if code, _ := f.try("ops", "right pass", "192.0.2.200"); code != http.StatusTooManyRequests {
		t.Errorf("a configured user's sixth check with the table full: %d, want 429", code)
	}
}

// TestSignInTableForgets: a table full of failures signInForget old, their
// waits over, makes room for a new one: it is remembered.
func TestSignInTableForgets(t *testing.T) {
	f := newThrottleFixture(t, Config{})
	old := f.now.Add(-signInForget)
	f.a.throttle.mu.Lock()
	for i := range maxSignInEntries {
		f.a.throttle.failed[fmt.Sprintf("addr:old-%d", i)] = &signInFailures{n: 9, last: old, until: old}
	}
	f.a.throttle.mu.Unlock()
	for i := 0; i < freeSignInFailures; i++ {
		f.try("nobody-new", "guess", fmt.Sprintf("192.0.2.%d", i+1))
	}
	if code, _ := f.try("nobody-new", "guess", "192.0.2.200"); code != http.StatusTooManyRequests {
		t.Errorf("a sixth failure after the old ones were forgotten: %d, want 429", code)
	}
}
