package api

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/testkit"
)

// TestListenersTimeOut: a connection that sends nothing, one whose body
// never ends, and an idle keep-alive connection are each closed by the
// server (the client's own deadline only stops a hang).
func TestListenersTimeOut(t *testing.T) {
	tm := Timeouts{ReadHeader: 100 * time.Millisecond, Read: 200 * time.Millisecond, Write: time.Second, Idle: 100 * time.Millisecond}
	srv := tm.Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}), slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	closed := func(name string, conn net.Conn, r *bufio.Reader) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, err := r.ReadByte(); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Errorf("%s: the server kept the connection open", name)
				}
				return
			}
		}
	}
	dial := func() (net.Conn, *bufio.Reader) {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, bufio.NewReader(conn)
	}

	conn, r := dial()
	closed("nothing sent", conn, r)

	conn, r = dial()
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\na")
	closed("a body that never ends", conn, r)

	conn, r = dial()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("a request: %d, close %v", resp.StatusCode, resp.Close)
	}
	closed("an idle keep-alive connection", conn, r)

	if d := DefaultTimeouts(time.Minute); d.ReadHeader <= 0 || d.Read <= 0 || d.Write != time.Minute || d.Idle <= 0 {
		t.Errorf("DefaultTimeouts leave one unbounded: %+v", d)
	}
}

// TestDefaultRateLimit: unset, api.rate_limit lets no single key hold all
// of api.max_in_flight, whatever the two are: sending as fast as it may,
// each request waiting the whole api.wait, a key holds at most
// per_second × wait + burst places. And on a server, a key that fires
// many requests at once leaves places for another.
func TestDefaultRateLimit(t *testing.T) {
	for _, wait := range []time.Duration{time.Second, 30 * time.Second, 5 * time.Minute} {
		for _, maxInFlight := range []int{2, 8, 1024, 100_000} {
			cfg := Config{Listen: DefaultListen, Wait: wait, MaxInFlight: maxInFlight}
			cfg.SetDefaults()
			l := cfg.RateLimit
			if l == nil || l.Validate() != nil {
				t.Fatalf("wait %s, max_in_flight %d: default %+v", wait, maxInFlight, l)
			}
			if held := l.PerSecond*wait.Seconds() + float64(l.Burst); held >= float64(maxInFlight) {
				t.Errorf("wait %s, max_in_flight %d: one key may hold %.0f places", wait, maxInFlight, held)
			}
		}
	}
	off := Config{Listen: DefaultListen, RateLimit: rateLimit(0, 0)}
	off.SetDefaults()
	if off.RateLimit.PerSecond != 0 {
		t.Errorf("per_second: 0 did not turn it off: %+v", off.RateLimit)
	}

	key, sum, _ := NewKey()
	other, otherSum, _ := NewKey()
	cfg := Config{Listen: DefaultListen, Keys: []Key{{Name: "flood", SHA256: sum}, {Name: "shop", SHA256: otherSum}}, MaxInFlight: 64}
	cfg.SetDefaults()
	k := newMemoryKafka()
	s, err := New(cfg, Deps{Commands: k, Results: k}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range k.onPublish {
		}
	}()
	post := func(key string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, PathNotifications, strings.NewReader(`{"session_id":"s1","channels":["sms"]}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Api-Key "+key)
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		return w
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 200 {
		wg.Go(func() {
			w := post(key)
			mu.Lock()
			codes[w.Code]++
			mu.Unlock()
		})
	}
	testkit.Eventually(t, "each of the 200 requests published or throttled", 30*time.Second, func() bool { return k.publishedCount()+codes429(&mu, codes) == 200 })
	published := k.publishedCount()
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- post(other) }()
	testkit.Eventually(t, "the other key's command published", 30*time.Second, func() bool { return k.publishedCount() > published })
	_ = s.Stop(context.Background()) // the waiting requests are answered 202
	wg.Wait()
	if w := <-done; w.Code != http.StatusAccepted {
		t.Errorf("another key while one floods: %d %s", w.Code, w.Body)
	}
	if codes[http.StatusServiceUnavailable] != 0 || codes[http.StatusTooManyRequests] == 0 {
		t.Errorf("the flooding key's answers: %v", codes)
	}
	t.Logf("the flooding key: %d published, answers %v", published, codes)
}

func codes429(mu *sync.Mutex, codes map[int]int) int {
	mu.Lock()
	defer mu.Unlock()
	return codes[http.StatusTooManyRequests]
}

// TestConsoleRateLimited: the console's resends and recoveries count
// against the user's own rate limit, the same bucket as the user's API
// requests.
func TestConsoleRateLimited(t *testing.T) {
	f := newConsoleFixture(t, event("s-1", "o-1", "paid", nil))
	limited := f.instance(func(c *Config) { c.RateLimit = rateLimit(0.001, 2) })
	cookie := signIn(t, limited.Handler(), "ops", "ops pass")
	post := func(path string, form url.Values) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Cookie", cookie)
		w := httptest.NewRecorder()
		limited.Handler().ServeHTTP(w, r)
		return w
	}
	if w := post("/console/recover", url.Values{"action": {"preview"}}); w.Code != http.StatusOK {
		t.Fatalf("first recovery preview: %d", w.Code)
	}
	// The user's API request takes the second token.
	r := httptest.NewRequest(http.MethodGet, PathNotifications+"c-1/", nil)
	r.SetBasicAuth("ops", "ops pass")
	w := httptest.NewRecorder()
	limited.Handler().ServeHTTP(w, r)
	if w.Code != http.StatusNotFound {
		t.Fatalf("the user's API request: %d", w.Code)
	}
	for _, path := range []string{"/console/resend", "/console/recover"} {
		w := post(path, url.Values{"session_id": {"s-1"}, "channel": {"sms"}, "command_id": {"0193a6a0-7c1e-7000-8000-000000000001"}, "action": {"confirm"}})
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "Too many requests") {
			t.Errorf("%s over the limit: %d %q", path, w.Code, w.Header().Get("Retry-After"))
		}
	}
	if n := f.kafka.publishedCount(); n != 0 {
		t.Errorf("%d commands published over the limit", n)
	}
}
