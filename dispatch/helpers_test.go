package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

const (
	testEmail = "lina.haddad@example.com"
	testPhone = "+96550001234"
)

// memStore is an in-memory Transactions for tests.
type memStore struct {
	txns   map[string]schemas.PaymentEvent
	orders map[string]string
	sent   map[string]time.Time // session/channel/state -> last sent
	err    error
}

func newMemStore(txns ...schemas.PaymentEvent) *memStore {
	s := &memStore{txns: map[string]schemas.PaymentEvent{}, orders: map[string]string{}}
	for _, t := range txns {
		t.MerchantID = schemas.MerchantOf(t.MerchantID) // as the store answers
		s.txns[t.SessionID] = t
		if t.OrderNo != "" {
			s.orders[orderKey(t.MerchantID, t.OrderNo)] = t.SessionID
		}
	}
	return s
}

func (s *memStore) Transaction(id string) (schemas.PaymentEvent, bool, error) {
	if s.err != nil {
		return schemas.PaymentEvent{}, false, s.err
	}
	t, ok := s.txns[id]
	return t, ok, nil
}

func (s *memStore) LastSent(id string, ch schemas.Channel, st schemas.State) (time.Time, bool, error) {
	if s.err != nil {
		return time.Time{}, false, s.err
	}
	at, ok := s.sent[id+"/"+string(ch)+"/"+string(st)]
	return at, ok, nil
}

// orderKey is memStore's key of a merchant's order_no.
func orderKey(merchant, order string) string {
	return schemas.MerchantOf(merchant) + "/" + order
}

func (s *memStore) SessionForOrder(m, o string) (string, bool, error) {
	if s.err != nil {
		return "", false, s.err
	}
	id, ok := s.orders[orderKey(m, o)]
	return id, ok, nil
}

// paidTxn is a paid transaction with every channel enabled and both
// contacts.
func paidTxn() schemas.PaymentEvent {
	return schemas.PaymentEvent{
		EventID:           "ev-1",
		SessionID:         "sess-1",
		OrderNo:           "ORD-1",
		State:             schemas.StatePaid,
		Version:           3,
		TimestampUTC:      time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Amount:            json.RawMessage(`"12.500"`),
		CurrencyCode:      "KWD",
		CustomerEmail:     testEmail,
		CustomerPhone:     testPhone,
		CustomerFirstName: "Lina",
		CustomerLastName:  "Haddad",
		Language:          schemas.LanguageEN,
		Notifications: map[schemas.Channel][]schemas.State{
			schemas.ChannelEmail:    {},
			schemas.ChannelSMS:      {schemas.StatePaid, schemas.StateFailed},
			schemas.ChannelWhatsApp: nil,
		},
	}
}

func allChannels() []schemas.Channel {
	return []schemas.Channel{schemas.ChannelEmail, schemas.ChannelSMS, schemas.ChannelWhatsApp}
}

func command(channels ...schemas.Channel) schemas.ResendCommand {
	return schemas.ResendCommand{
		CommandID:   "cmd-1",
		SessionID:   "sess-1",
		Channels:    channels,
		RequestedAt: "2025-01-02T03:04:05Z",
		RequestedBy: "ops@example.org",
	}
}

func defaultTemplates(t testing.TB) *Templates {
	t.Helper()
	tpl, err := ParseTemplates(DefaultTemplates())
	if err != nil {
		t.Fatalf("ParseTemplates(DefaultTemplates()): %v", err)
	}
	return tpl
}

var fixedNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.FixedZone("AST", 3*3600))

// newTestDispatcher builds a Dispatcher with the default templates, a fixed
// Now and the given providers; policies override the per-channel retry.
func newTestDispatcher(t testing.TB, providers map[schemas.Channel]Provider, retry map[schemas.Channel]RetryPolicy, store Transactions) *Dispatcher {
	t.Helper()
	if store == nil {
		store = newMemStore(paidTxn())
	}
	d, err := New(Config{
		Routes:    routes(providers, retry),
		Templates: defaultTemplates(t),
		Now:       func() time.Time { return fixedNow },
	}, store, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

// routes gives each channel of providers one route, with the channel's
// retry policy.
func routes(providers map[schemas.Channel]Provider, retry map[schemas.Channel]RetryPolicy) map[schemas.Channel][]Route {
	out := map[schemas.Channel][]Route{}
	for ch, p := range providers {
		out[ch] = []Route{{Provider: p, Retry: retry[ch]}}
	}
	return out
}

// okProvider succeeds at once, recording messages.
type okProvider struct {
	name string
	mu   sync.Mutex
	msgs []Message
}

func (p *okProvider) Name() string { return p.name }

func (p *okProvider) Send(ctx context.Context, m Message) (Receipt, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, m)
	return Receipt{MessageID: p.name + "-msg-" + string(m.Channel)}, nil
}

func (p *okProvider) sent() []Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Message(nil), p.msgs...)
}

// scriptProvider returns the scripted errors in turn, then succeeds.
type scriptProvider struct {
	mu     sync.Mutex
	errs   []error
	calls  int
	onCall func(ctx context.Context, call int)
}

func (p *scriptProvider) Name() string { return "script" }

func (p *scriptProvider) Send(ctx context.Context, m Message) (Receipt, error) {
	p.mu.Lock()
	p.calls++
	call := p.calls
	var err error
	if call <= len(p.errs) {
		err = p.errs[call-1]
	}
	p.mu.Unlock()
	if p.onCall != nil {
		p.onCall(ctx, call)
	}
	if err != nil {
		return Receipt{}, err
	}
	return Receipt{MessageID: "script-ok"}, nil
}

func (p *scriptProvider) callCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// fakeClock drives the retry budget; its sleep advances it and records the
// waits.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	return nil
}

func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

func useFakeClock(d *Dispatcher) *fakeClock {
	c := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	d.clock = c.Now
	d.sleep = c.Sleep
	return c
}

var errBoom = errors.New("boom")

func channelResult(t *testing.T, r schemas.DeliveryResult, ch schemas.Channel) schemas.ChannelResult {
	t.Helper()
	for _, c := range r.Channels {
		if c.Channel == ch {
			return c
		}
	}
	t.Fatalf("no %s in result channels %+v", ch, r.Channels)
	return schemas.ChannelResult{}
}

// --- Provider peers: HTTP servers and SMTP listeners the providers call ---

// received is one request a fake provider server got.
type received struct {
	method, path string
	header       http.Header
	body         []byte
}

// answer is what a fake provider server answers.
type answer struct {
	status     int
	retryAfter string
	body       string
	// slow makes the server wait until the client gives up (at most
	// slowFallback, then answer 200 with no body: a client that did not
	// give up gets an answer its test does not expect).
	slow bool
}

// fakeServer is an in-process provider API that records what it receives
// and answers each request with its answer.
type fakeServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []received
}

func newFakeServer(t *testing.T, a answer) *fakeServer {
	t.Helper()
	return newScriptedPeer(t, func(*http.Request) bool { return true }, answer{}, a)
}

// slowFallback bounds how long a slow peer holds a request its client
// does not give up: long enough that no correct client gets there, so a
// test sees the wrong answer instead of hanging.
const slowFallback = 30 * time.Second

// holdUntilGivenUp holds a request until its client leaves, or
// slowFallback.
func holdUntilGivenUp(r *http.Request) {
	t := time.NewTimer(slowFallback)
	defer t.Stop()
	select {
	case <-r.Context().Done():
	case <-t.C:
	}
}

// only returns the one request the server received.
func (s *fakeServer) only(t *testing.T) received {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) != 1 {
		t.Fatalf("server received %d requests, want 1", len(s.reqs))
	}
	return s.reqs[0]
}

// --- HTTP peers -------------------------------------------------------------

// newScriptedPeer is a fakeServer that answers the requests authorized
// accepts with answers in turn, the last one repeated, and any other request
// with unauthorized (without using up the script). A slow answer holds the
// request until the client gives up (holdUntilGivenUp).
func newScriptedPeer(t *testing.T, authorized func(*http.Request) bool, unauthorized answer, answers ...answer) *fakeServer {
	t.Helper()
	if len(answers) == 0 {
		t.Fatal("newScriptedPeer: no answers")
	}
	s := &fakeServer{}
	next := 0 // guarded by s.mu
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, received{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: b})
		a := unauthorized
		if authorized(r) {
			a = answers[min(next, len(answers)-1)]
			next++
		}
		s.mu.Unlock()
		if a.slow {
			holdUntilGivenUp(r)
			return
		}
		if a.retryAfter != "" {
			w.Header().Set("Retry-After", a.retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(s.Close)
	return s
}

// all returns the requests the server received so far.
func (s *fakeServer) all() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.reqs...)
}

// downURL returns the URL of a server that is no longer listening.
func downURL() string {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	return u
}

// twilioPeer follows Twilio's Messages API: Basic auth with the account SID
// and token on the account's Messages.json, else 401 with code 20003.
func twilioPeer(t *testing.T, answers ...answer) *fakeServer {
	return newScriptedPeer(t, func(r *http.Request) bool {
		u, p, ok := r.BasicAuth()
		return ok && u == twilioSID && p == twilioToken && r.Method == http.MethodPost &&
			r.URL.Path == "/2010-04-01/Accounts/"+twilioSID+"/Messages.json"
	}, answer{status: 401, body: twilioErr(20003, 401, "Authenticate")}, answers...)
}

// metaPeer follows the WhatsApp Cloud API: a Bearer token, else 401 with
// Graph code 190.
func metaPeer(t *testing.T, answers ...answer) *fakeServer {
	return newScriptedPeer(t, func(r *http.Request) bool {
		return r.Header.Get("Authorization") == "Bearer "+metaToken && r.Method == http.MethodPost &&
			r.URL.Path == "/v21.0/"+metaPhoneID+"/messages"
	}, answer{status: 401, body: metaErr(190, "Invalid OAuth access token - Cannot parse access token", "")}, answers...)
}

// silentSMTPPeer accepts connections and never answers (a connection a
// client holds beyond slowFallback is closed, which a client not honouring
// its deadline reports otherwise); it returns its port and a count of the
// connections it accepted.
func silentSMTPPeer(t *testing.T) (int, func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
			time.AfterFunc(slowFallback, func() { c.Close() })
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().(*net.TCPAddr).Port, func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
}

// downSMTPPort returns a loopback port nothing listens on.
func downSMTPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}
