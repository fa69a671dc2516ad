package webhooks

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The test vector of the Standard Webhooks specification's libraries
// (and Svix's documentation).
const (
	vectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorUnix   = 1614265330
	vectorBody   = `{"test": 2432232314}`
	vectorSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignKnownVector(t *testing.T) {
	k, err := ParseSecret(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(vectorUnix, 0)
	if got := k.Sign(vectorID, at, []byte(vectorBody)); got != vectorSig {
		t.Fatalf("Sign = %s, want %s", got, vectorSig)
	}
	ok := func(id, ts, sigs, body string, now time.Time) bool {
		return k.Verify(id, ts, sigs, []byte(body), now, 5*time.Minute) == nil
	}
	ts := strconv.Itoa(vectorUnix)
	if !ok(vectorID, ts, vectorSig, vectorBody, at.Add(4*time.Minute)) || !ok(vectorID, ts, "v1,bogus "+vectorSig, vectorBody, at) {
		t.Error("the vector does not verify")
	}
	if !ok(vectorID, ts, vectorSig, vectorBody, at.Add(5*time.Minute)) || !ok(vectorID, ts, vectorSig, vectorBody, at.Add(-5*time.Minute)) {
		t.Error("the tolerance's own bounds refused")
	}
	for name, bad := range map[string]bool{
		"another body":     ok(vectorID, ts, vectorSig, `{"test": 2432232315}`, at),
		"another id":       ok("msg_other", ts, vectorSig, vectorBody, at),
		"another version":  ok(vectorID, ts, "v2,"+vectorSig[3:], vectorBody, at),
		"too old":          ok(vectorID, ts, vectorSig, vectorBody, at.Add(6*time.Minute)),
		"too new":          ok(vectorID, ts, vectorSig, vectorBody, at.Add(-6*time.Minute)),
		"not a timestamp":  ok(vectorID, "soon", vectorSig, vectorBody, at),
		"no signature":     ok(vectorID, ts, "", vectorBody, at),
		"not base64":       ok(vectorID, ts, "v1,***", vectorBody, at),
		"another secret's": ok(vectorID, ts, "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32)), vectorBody, at),
	} {
		if bad {
			t.Errorf("%s verified", name)
		}
	}
}

func TestParseSecret(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", n))) }
	for _, c := range []struct {
		secret string
		ok     bool
	}{
		{SecretPrefix + b64(24), true},
		{SecretPrefix + b64(64), true},
		{SecretPrefix + b64(23), false},
		{SecretPrefix + b64(65), false},
		{b64(32), false},
		{"whsec-" + b64(32), false},
		{SecretPrefix + "not base64!", false},
		{SecretPrefix, false},
	} {
		_, err := ParseSecret(c.secret)
		if (err == nil) != c.ok {
			t.Errorf("%q: %v, want ok=%v", c.secret, err, c.ok)
		}
		if err != nil && len(c.secret) > len(SecretPrefix)+4 && strings.Contains(err.Error(), c.secret[len(SecretPrefix):]) {
			t.Errorf("the error holds the secret: %v", err)
		}
	}
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseSecret(s); err != nil || !strings.HasPrefix(s, SecretPrefix) {
		t.Errorf("NewSecret made %q: %v", s, err)
	}
	if s2, _ := NewSecret(); s2 == s {
		t.Error("two secrets alike")
	}
}

func TestPublic(t *testing.T) {
	for _, c := range []struct {
		ip     string
		public bool
	}{
		{"8.8.8.8", true}, {"1.1.1.1", true}, {"2606:4700:4700::1111", true}, {"::ffff:8.8.8.8", true},
		{"100.63.255.255", true}, {"100.128.0.0", true}, {"11.0.0.1", true}, {"172.32.0.1", true}, {"192.169.0.1", true},
		{"127.0.0.1", false}, {"127.1.2.3", false}, {"::1", false}, {"::ffff:127.0.0.1", false},
		{"10.0.0.1", false}, {"172.16.0.1", false}, {"172.31.255.255", false}, {"192.168.1.1", false}, {"::ffff:10.1.1.1", false},
		{"169.254.169.254", false}, {"169.254.0.1", false}, {"fe80::1", false},
		{"100.64.0.1", false}, {"100.127.255.255", false},
		{"0.0.0.0", false}, {"0.1.2.3", false}, {"::", false},
		{"224.0.0.1", false}, {"ff02::1", false}, {"255.255.255.255", false}, {"240.0.0.1", false},
		{"fc00::1", false}, {"fd12:3456::1", false}, {"fec0::1", false},
		{"192.0.2.1", false}, {"198.51.100.7", false}, {"203.0.113.9", false}, {"198.18.0.1", false}, {"192.0.0.8", false},
		{"64:ff9b::7f00:1", false}, {"2002:7f00:1::", false}, {"2001:db8::1", false}, {"100::1", false},
	} {
		if got := Public(netip.MustParseAddr(c.ip)); got != c.public {
			t.Errorf("Public(%s) = %v, want %v", c.ip, got, c.public)
		}
	}
	if Public(netip.Addr{}) {
		t.Error("the zero address is public")
	}
	// The dialer's check, on the address a connection is about to use.
	control := guardedDialer(false, time.Second).Control
	for addr, want := range map[string]error{
		"8.8.8.8:443": nil, "[2606:4700:4700::1111]:443": nil,
		"127.0.0.1:443": ErrNotPublic, "[::1]:443": ErrNotPublic, "169.254.169.254:80": ErrNotPublic, "not an address": ErrNotPublic,
	} {
		if got := control("tcp", addr, nil); got != want {
			t.Errorf("control(%s) = %v, want %v", addr, got, want)
		}
	}
	if guardedDialer(true, time.Second).Control != nil {
		t.Error("allow_private checks addresses")
	}
}

func TestSenderDefaults(t *testing.T) {
	for _, timeout := range []time.Duration{0, -time.Second} {
		if s := NewSender(Options{Timeout: timeout}); s.opts.Timeout != 15*time.Second || s.opts.UserAgent != "notifyd" {
			t.Errorf("Timeout %v: defaults %+v", timeout, s.opts)
		}
	}
	if s := NewSender(Options{Timeout: time.Second, UserAgent: "x"}); s.opts.Timeout != time.Second || s.opts.UserAgent != "x" || s.client.Timeout != time.Second {
		t.Errorf("given: %+v", s.opts)
	}
}

// receiver is an endpoint that verifies what it gets with its own code
// (the specification's steps, not Key's) and answers as told.
type receiver struct {
	t      *testing.T
	secret []byte
	hits   atomic.Int32
	answer func(w http.ResponseWriter)
	got    chan http.Header
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.hits.Add(1)
	body, _ := io.ReadAll(req.Body)
	id, ts, sig := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature")
	mac := hmac.New(sha256.New, r.secret)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	if want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)); sig != want {
		r.t.Errorf("signature %q, want %q", sig, want)
	}
	var payload struct {
		Type      string          `json:"type"`
		Timestamp time.Time       `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &payload); err != nil || payload.Type != TypeResult || string(payload.Data) != `{"result_id":"r-1"}` ||
		!payload.Timestamp.Equal(time.Date(2026, 11, 2, 9, 0, 7, 0, time.UTC)) {
		r.t.Errorf("body %s (%v)", body, err)
	}
	select {
	case r.got <- req.Header.Clone():
	default:
	}
	r.answer(w)
}

func TestSend(t *testing.T) {
	secret, _ := NewSecret()
	key, _ := ParseSecret(secret)
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	rc := &receiver{t: t, secret: raw, got: make(chan http.Header, 1)}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	elsewhere := &receiver{t: t, secret: raw, answer: func(w http.ResponseWriter) {}}
	other := httptest.NewServer(elsewhere)
	defer other.Close()
	s := NewSender(Options{AllowPrivate: true, Timeout: 2 * time.Second, UserAgent: "notifyd/test"})
	defer s.Close()
	m := Message{ID: "r-1", Type: TypeResult, Timestamp: time.Date(2026, 11, 2, 9, 0, 7, 0, time.UTC), Data: json.RawMessage(`{"result_id":"r-1"}`)}
	now := time.Now()
	cases := []struct {
		status     int
		header     string
		outcome    Outcome
		retryAfter time.Duration
	}{
		{200, "", Delivered, 0}, {204, "", Delivered, 0}, {299, "", Delivered, 0},
		{408, "", Retry, 0}, {429, "120", Retry, 120 * time.Second}, {500, "", Retry, 0}, {503, "7", Retry, 7 * time.Second}, {599, "", Retry, 0},
		{400, "", Final, 0}, {401, "", Final, 0}, {404, "", Final, 0}, {410, "", Final, 0}, {422, "", Final, 0},
		{301, "", Final, 0}, {302, "", Final, 0}, {307, "", Final, 0},
	}
	for _, c := range cases {
		rc.answer = func(w http.ResponseWriter) {
			if c.header != "" {
				w.Header().Set("Retry-After", c.header)
			}
			if c.status >= 300 && c.status < 400 {
				w.Header().Set("Location", other.URL+"/moved")
			}
			w.WriteHeader(c.status)
		}
		a := s.Send(context.Background(), srv.URL+"/hooks?token=tok-123", key, m, now)
		if a.Outcome != c.outcome || a.Status != c.status || a.RetryAfter != c.retryAfter {
			t.Errorf("HTTP %d: %+v, want %s, Retry-After %v", c.status, a, c.outcome, c.retryAfter)
		}
		if (a.Outcome == Delivered) != (a.Detail == "") || strings.Contains(a.Detail, "tok-123") {
			t.Errorf("HTTP %d: detail %q", c.status, a.Detail)
		}
	}
	if n := elsewhere.hits.Load(); n != 0 {
		t.Errorf("a redirect was followed %d times", n)
	}
	// The request carries the three webhook headers and no credential.
	rc.answer = func(w http.ResponseWriter) {}
	<-rc.got
	s.Send(context.Background(), srv.URL, key, m, now)
	h := <-rc.got
	var names []string
	for name := range h {
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{"Accept-Encoding", "Content-Length", "Content-Type", "User-Agent", "Webhook-Id", "Webhook-Signature", "Webhook-Timestamp"}; !slices.Equal(names, want) {
		t.Errorf("headers %q, want %q", names, want)
	}
	if h.Get("webhook-id") != "r-1" || h.Get("webhook-timestamp") != strconv.FormatInt(now.Unix(), 10) || h.Get("User-Agent") != "notifyd/test" || h.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", h)
	}
}

func TestSendRefusals(t *testing.T) {
	key, _ := ParseSecret(vectorSecret)
	m := Message{ID: "r-1", Type: TypeResult, Timestamp: time.Now(), Data: json.RawMessage(`{}`)}
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	tls := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	tls.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	tls.StartTLS()
	defer tls.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(tls.URL, "https://"))
	strict := NewSender(Options{Timeout: time.Second})
	defer strict.Close()
	for _, c := range []struct{ url, detail string }{
		{srv.URL, "must be https"},                                                   // http, and loopback
		{tls.URL, "not on a public address"},                                         // https, loopback: refused at connect
		{"https://localhost:" + port + "/?token=tok-123", "not on a public address"}, // a name that resolves to loopback
		{"https://[::ffff:127.0.0.1]:" + port, "not on a public address"},
		{"https://user:tok-123@example.com/", "credentials"},
		{"ftp://example.com/", "must be https"},
		{"https:///nohost", "no host"},
		{"::not a url", "not a URL"},
	} {
		a := strict.Send(context.Background(), c.url, key, m, time.Now())
		if a.Outcome != Final || !strings.Contains(a.Detail, c.detail) || strings.Contains(a.Detail, "tok-123") {
			t.Errorf("%s: %+v, want final %q", c.url, a, c.detail)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("a refused endpoint was reached %d times", n)
	}
	// Allowed: http, and a private address.
	loose := NewSender(Options{AllowPrivate: true, Timeout: time.Second})
	defer loose.Close()
	if a := loose.Send(context.Background(), srv.URL, key, m, time.Now()); a.Outcome != Delivered {
		t.Errorf("allowed private http: %+v", a)
	}
	if a := loose.Send(context.Background(), "ftp://example.com/", key, m, time.Now()); a.Outcome != Final || !strings.Contains(a.Detail, "https or http") {
		t.Errorf("allowed private, ftp: %+v", a)
	}
	if a := loose.Send(context.Background(), tls.URL, key, m, time.Now()); a.Outcome != Retry || a.Detail != "TLS handshake failed" {
		t.Errorf("a certificate not trusted: %+v", a)
	}
}

func TestSendNoAnswer(t *testing.T) {
	key, _ := ParseSecret(vectorSecret)
	m := Message{ID: "r-1", Type: TypeResult, Timestamp: time.Now(), Data: json.RawMessage(`{}`)}
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer slow.Close()
	defer close(release)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String()
	ln.Close()
	s := NewSender(Options{AllowPrivate: true, Timeout: 200 * time.Millisecond})
	defer s.Close()
	if a := s.Send(context.Background(), slow.URL, key, m, time.Now()); a.Outcome != Retry || a.Detail != "no answer in time" {
		t.Errorf("slow: %+v", a)
	}
	if a := s.Send(context.Background(), closed, key, m, time.Now()); a.Outcome != Retry || a.Detail != "unreachable" {
		t.Errorf("refused: %+v", a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if a := s.Send(ctx, slow.URL, key, m, time.Now()); a.Outcome != Retry || a.Detail != "canceled" {
		t.Errorf("canceled: %+v", a)
	}
	if a := s.Send(context.Background(), slow.URL, key, Message{ID: "x", Data: json.RawMessage(`{`)}, time.Now()); a.Outcome != Final {
		t.Errorf("data not JSON: %+v", a)
	}
}

func TestSchedule(t *testing.T) {
	s := DefaultSchedule()
	want := []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	for n, w := range want {
		if got, ok := s.Next(n, 0); !ok || got != w {
			t.Errorf("Next(%d) = %v %v, want %v", n, got, ok, w)
		}
	}
	for _, n := range []int{8, 9, -1} {
		if _, ok := s.Next(n, 0); ok {
			t.Errorf("Next(%d): not spent", n)
		}
	}
	for _, c := range []struct {
		attempts   int
		retryAfter time.Duration
		want       time.Duration
	}{
		{1, 2 * time.Second, 5 * time.Second},   // shorter than the schedule: the schedule
		{1, 90 * time.Second, 90 * time.Second}, // longer: honoured
		{2, 48 * time.Hour, 10 * time.Hour},     // up to the longest wait
		{0, time.Duration(1<<63 - 1), 10 * time.Hour},
	} {
		if got, _ := s.Next(c.attempts, c.retryAfter); got != c.want {
			t.Errorf("Next(%d, %v) = %v, want %v", c.attempts, c.retryAfter, got, c.want)
		}
	}
	now := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "0": 0, "-3": 0, "1": time.Second, "30": 30 * time.Second, " 5 ": 5 * time.Second, "soon": 0,
		"9223372036": 9223372036 * time.Second, "9223372037": time.Duration(1<<63 - 1),
		now.Add(time.Minute).Format(http.TimeFormat): time.Minute, now.Add(-time.Minute).Format(http.TimeFormat): 0,
		"99999999999999999999": 0, "9223372036854775807": time.Duration(1<<63 - 1),
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestMessageBody(t *testing.T) {
	m := Message{ID: "d-1", Type: TypeDelivery, Timestamp: time.Date(2026, 11, 2, 9, 0, 7, 5e8, time.FixedZone("x", 3600)), Data: json.RawMessage(`{"a":1}`)}
	b, err := m.Body()
	if err != nil || string(b) != `{"type":"notification.delivery","timestamp":"2026-11-02T08:00:07.5Z","data":{"a":1}}` {
		t.Errorf("body %s %v", b, err)
	}
	for typ, ok := range map[string]bool{TypeResult: true, TypeDelivery: true, "notification.other": false, "": false} {
		if ValidType(typ) != ok {
			t.Errorf("ValidType(%q)", typ)
		}
	}
}
