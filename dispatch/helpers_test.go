package dispatch

import (
	"context"
	"encoding/json"
	"errors"
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
		s.txns[t.SessionID] = t
		if t.OrderNo != "" {
			s.orders[t.OrderNo] = t.SessionID
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

func (s *memStore) SessionForOrder(o string) (string, bool, error) {
	if s.err != nil {
		return "", false, s.err
	}
	id, ok := s.orders[o]
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
