package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/consumer/embedded"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/schemas"

	"github.com/notifyd/notifyd/internal/testkit"
)

// The end-to-end tests run notifyd's Service against a Kafka-protocol
// broker over real connections: the embedded broker by default, or the
// brokers in NOTIFYD_TEST_BROKERS. Topics get unique names per test, so
// tests share nothing but the broker.

const testPartitions = 4

type harness struct {
	t       testing.TB
	conn    Conn
	brokers []string
	topics  Topics
	writer  *kafka.Writer
	client  *kafka.Client

	mu      sync.Mutex
	results map[string][]received // command_id -> results in arrival order
	dlq     []received
	changed chan struct{}
}

type received struct {
	msg    kafka.Message
	result schemas.DeliveryResult
	// at is when the harness read it.
	at time.Time
}

// testConn is how the tests reach their broker: with
// NOTIFYD_TEST_SECURE_BROKERS, the SASL_SSL listener that `scripts/kafka-local
// secure-env` describes (NOTIFYD_TEST_SECURE_*), through the kafka.tls and
// kafka.sasl code notifyd itself uses, with NOTIFYD_TEST_SECURE_MECHANISM
// (default scram-sha-512); else the plaintext NOTIFYD_TEST_BROKERS; else a
// new embedded broker.
func testConn(t testing.TB) Conn {
	t.Helper()
	if env := os.Getenv("NOTIFYD_TEST_SECURE_BROKERS"); env != "" {
		tlsCfg, err := TLSConfig{
			CAFile: os.Getenv("NOTIFYD_TEST_SECURE_CA_FILE"), CertFile: os.Getenv("NOTIFYD_TEST_SECURE_CERT_FILE"),
			KeyFile: os.Getenv("NOTIFYD_TEST_SECURE_KEY_FILE"), ServerName: os.Getenv("NOTIFYD_TEST_SECURE_SERVER_NAME"),
		}.Build()
		if err != nil {
			t.Fatalf("NOTIFYD_TEST_SECURE_*: kafka.tls.%v", err)
		}
		mechanism := os.Getenv("NOTIFYD_TEST_SECURE_MECHANISM")
		if mechanism == "" {
			mechanism = "scram-sha-512"
		}
		m, err := SASLConfig{Mechanism: mechanism, Username: os.Getenv("NOTIFYD_TEST_SECURE_USERNAME"),
			Password: os.Getenv("NOTIFYD_TEST_SECURE_PASSWORD")}.Build(true)
		if err != nil {
			t.Fatalf("NOTIFYD_TEST_SECURE_*: kafka.sasl.%v", err)
		}
		return Conn{Brokers: strings.Split(env, ","), ClientID: "test", TLS: tlsCfg, SASL: m}
	}
	if env := os.Getenv("NOTIFYD_TEST_BROKERS"); env != "" {
		return Conn{Brokers: strings.Split(env, ","), ClientID: "test"}
	}
	b, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return Conn{Brokers: []string{b.Addr()}, ClientID: "test"}
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessOn(t, testConn(t))
}

// newHarnessOn is newHarness on the brokers of conn.
func newHarnessOn(t testing.TB, conn Conn) *harness {
	t.Helper()
	brokers := conn.Brokers
	prefix := fmt.Sprintf("%s-%d-", strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), time.Now().UnixNano())
	h := &harness{
		t: t, conn: conn, brokers: brokers,
		topics: Topics{
			PaymentEvents: prefix + "payment-events", Commands: prefix + "notification-commands",
			Results: prefix + "notification-results", DeadLetter: prefix + "notification-commands-dlq",
			Deliveries: prefix + "notification-deliveries", ConsoleSessions: prefix + "console-sessions",
			MerchantSettings: prefix + "merchant-settings",
		},
		client:  conn.Client(nil),
		results: map[string][]received{},
		changed: make(chan struct{}),
	}
	h.writer = conn.Writer()
	t.Cleanup(func() { h.writer.Close() })
	var specs []TopicSpec
	for _, name := range []string{h.topics.PaymentEvents, h.topics.Commands, h.topics.Results, h.topics.DeadLetter, h.topics.Deliveries, h.topics.ConsoleSessions,
		h.topics.MerchantSettings} {
		specs = append(specs, TopicSpec{Name: name, Partitions: testPartitions, ReplicationFactor: 1})
	}
	// A loaded broker may be briefly unavailable (a KRaft broker fenced by a
	// late heartbeat): retry what is worth retrying, as notifyd does.
	tctx, tcancel := context.WithTimeout(context.Background(), time.Minute)
	defer tcancel()
	if err := RetryUnreachable(tctx, nil, "create test topics", func(ctx context.Context) error {
		return EnsureTopics(ctx, h.client, specs, true)
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	t.Cleanup(func() { cancel(); <-done; <-done })
	go func() {
		defer func() { done <- struct{}{} }()
		_ = Follow(ctx, conn, h.topics.Results, false, func(m kafka.Message) bool {
			var r schemas.DeliveryResult
			if err := json.Unmarshal(m.Value, &r); err != nil {
				t.Errorf("result is not JSON: %s", m.Value)
			}
			h.mu.Lock()
			h.results[r.CommandID] = append(h.results[r.CommandID], received{m, r, time.Now()})
			h.notifyLocked()
			h.mu.Unlock()
			return true
		})
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		_ = Follow(ctx, conn, h.topics.DeadLetter, false, func(m kafka.Message) bool {
			h.mu.Lock()
			h.dlq = append(h.dlq, received{msg: m, at: time.Now()})
			h.notifyLocked()
			h.mu.Unlock()
			return true
		})
	}()
	return h
}

func (h *harness) notifyLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// waitFor waits until cond (called under the lock) holds.
func (h *harness) waitFor(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.After(timeout)
	for {
		h.mu.Lock()
		ok := cond()
		ch := h.changed
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			h.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// poll waits until cond holds, for conditions on an instance's state (its
// store) that no message seen by the harness announces
// (testkit.Eventually).
func (h *harness) poll(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	testkit.Eventually(h.t, what, timeout, cond)
}

// result waits for the first result of commandID.
func (h *harness) result(commandID string) received {
	h.t.Helper()
	h.waitFor("result of "+commandID, 30*time.Second, func() bool { return len(h.results[commandID]) > 0 })
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.results[commandID][0]
}

// answered returns a channel closed once commandID has a result (never,
// if it gets none before the test ends).
func (h *harness) answered(commandID string) <-chan struct{} {
	done := make(chan struct{})
	stop := make(chan struct{})
	h.t.Cleanup(func() { close(stop) })
	go func() {
		for {
			h.mu.Lock()
			ok := len(h.results[commandID]) > 0
			ch := h.changed
			h.mu.Unlock()
			if ok {
				close(done)
				return
			}
			select {
			case <-ch:
			case <-stop:
				return
			}
		}
	}()
	return done
}

func (h *harness) resultCount(commandID string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.results[commandID])
}

func (h *harness) produce(topic string, msgs ...kafka.Message) {
	h.t.Helper()
	for i := range msgs {
		msgs[i].Topic = topic
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.writer.WriteMessages(ctx, msgs...); err != nil {
		h.t.Fatalf("produce to %s: %v", topic, err)
	}
}

// event publishes a payment event built from fields over a valid base.
func (h *harness) event(session string, fields map[string]any) {
	h.t.Helper()
	ev := map[string]any{
		"event_id": fmt.Sprintf("%s-%d", session, time.Now().UnixNano()), "session_id": session,
		"state": "paid", "timestamp_utc": "2026-11-02 09:00:07", "amount": "12.500", "currency_code": "KWD",
		"customer_email": "layla@example.com", "customer_phone": "+96550001234",
		"customer_first_name": "Layla", "language": "en",
		"notifications": map[string][]string{"email": {}, "sms": {}, "whatsapp": {}},
	}
	for k, v := range fields {
		if v == nil {
			delete(ev, k)
		} else {
			ev[k] = v
		}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		h.t.Fatal(err)
	}
	h.produce(h.topics.PaymentEvents, kafka.Message{Key: []byte(session), Value: b})
}

// command publishes a resend command keyed by its session_id or order_no.
func (h *harness) command(cmd map[string]any) {
	h.t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	key, _ := cmd["session_id"].(string)
	if key == "" {
		key, _ = cmd["order_no"].(string)
	}
	h.produce(h.topics.Commands, kafka.Message{Key: []byte(key), Value: b})
}

// instance is one running Service.
type instance struct {
	svc      *Service
	dir      string
	provider *recordingProvider
	cancel   context.CancelFunc
	done     chan error
}

type instanceOpts struct {
	dir         string
	channels    []schemas.Channel // providers configured (default all)
	templates   dispatch.TemplateConfig
	catchUpWait time.Duration
	retry       dispatch.RetryPolicy
	cooldown    time.Duration // processing.cooldown (default off)
	provider    *recordingProvider
	shutdown    time.Duration // processing.shutdown_timeout (default 10s)
	concurrency int           // processing.concurrency (default 64)
	registry    *prometheus.Registry
	hooks       hooks         // seams (hooks.go)
	minFree     *int64        // store.min_free_bytes (default: a share of the filesystem)
	session     time.Duration // kafka.session_timeout and rebalance_timeout (default notifyd's)
	ballast     *int64        // store.ballast_bytes (default: a share of the filesystem)
	compile     MerchantCompiler
	// merchantKinds lets merchants' settings build providers (console
	// providers print to io.Discard).
	merchantKinds bool
}

func (h *harness) start(o instanceOpts) *instance {
	h.t.Helper()
	if o.dir == "" {
		o.dir = h.t.TempDir()
	}
	if o.channels == nil {
		o.channels = schemas.Channels
	}
	if o.templates == nil {
		o.templates = dispatch.DefaultTemplates()
	}
	if o.catchUpWait == 0 {
		o.catchUpWait = 2 * time.Second
	}
	if o.retry.MaxAttempts == 0 {
		o.retry = dispatch.RetryPolicy{MaxAttempts: 3, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxElapsed: 5 * time.Second, AttemptTimeout: 2 * time.Second}
	}
	if o.provider == nil {
		o.provider = newRecordingProvider()
	}
	if o.shutdown == 0 {
		o.shutdown = 10 * time.Second
	}
	tpl, err := dispatch.ParseTemplates(o.templates)
	if err != nil {
		h.t.Fatal(err)
	}
	dcfg := dispatch.Config{Routes: map[schemas.Channel][]dispatch.Route{}, Templates: tpl, Cooldown: o.cooldown}
	if o.merchantKinds {
		dcfg.Merchants = dispatch.MerchantConfig{Kinds: dispatch.NewRegistry(), Env: dispatch.Env{Console: io.Discard}}
	}
	for _, ch := range o.channels {
		dcfg.Routes[ch] = []dispatch.Route{{Provider: o.provider, Retry: o.retry}}
	}
	svc, err := New(Config{
		Brokers: h.brokers, GroupID: "notifyd-" + h.topics.Commands, ClientID: "test", Topics: h.topics, TLS: h.conn.TLS, SASL: h.conn.SASL,
		StoreDir: o.dir, CatchUpWait: o.catchUpWait, ShutdownTimeout: o.shutdown, Registerer: registerer(o.registry),
		Concurrency: o.concurrency, MinFreeBytes: o.minFree, BallastBytes: o.ballast, SessionTimeout: o.session, RebalanceTimeout: o.session,
		CompileMerchant: o.compile,
	}, dcfg, slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		h.t.Fatal(err)
	}
	svc.hooks = o.hooks
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{svc: svc, dir: o.dir, provider: o.provider, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- svc.Run(ctx) }()
	h.t.Cleanup(func() { in.stop(h.t) })
	select {
	case <-svc.Running():
	case err := <-in.done:
		in.cancel = nil // stop has nothing left to wait for
		h.t.Fatalf("service stopped at start: %v", err)
	case <-time.After(30 * time.Second):
		h.t.Fatal("service did not start in 30s")
	}
	return in
}

// registerer avoids a typed nil interface.
func registerer(r *prometheus.Registry) prometheus.Registerer {
	if r == nil {
		return nil
	}
	return r
}

// stop stops the instance and checks it shut down cleanly.
func (in *instance) stop(t testing.TB) {
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("service stopped with error: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Error("service did not stop within 40s")
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// recordingProvider is an in-process provider that records what it is
// asked to send and fails on chosen recipients: contacts whose local part
// or digits start with "reject"/"+1555000" fail permanently, with
// "down"/"+1555999" transiently. With a barrier, each call waits until
// barrierAt calls are in flight at once (failing the test after 20 s).
// With a gate, each call announces itself on entered (its command_id) and
// waits until the gate is closed.
type recordingProvider struct {
	mu        sync.Mutex
	sent      []dispatch.Message
	calls     int
	inFlight  int
	maxFlight int
	since     int // index into sent of the last reset
	delay     time.Duration
	barrier   chan struct{}
	barrierAt int
	gate      chan struct{}
	entered   chan string
}

// hold makes every call wait, announcing itself on the channel returned,
// until open is called.
func (p *recordingProvider) hold() (entered <-chan string, open func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate, p.entered = make(chan struct{}), make(chan string, 64)
	gate := p.gate
	var once sync.Once
	return p.entered, func() { once.Do(func() { close(gate) }) }
}

func newRecordingProvider() *recordingProvider { return &recordingProvider{} }

func (p *recordingProvider) Name() string { return "recording" }

func (p *recordingProvider) Send(ctx context.Context, m dispatch.Message) (dispatch.Receipt, error) {
	p.mu.Lock()
	p.calls++
	n := p.calls
	p.inFlight++
	p.maxFlight = max(p.maxFlight, p.inFlight)
	barrier := p.barrier
	if barrier != nil && p.inFlight >= p.barrierAt {
		close(barrier)
		p.barrier = nil
	}
	gate, entered := p.gate, p.entered
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inFlight--
		p.mu.Unlock()
	}()
	if gate != nil {
		entered <- m.CommandID
		select {
		case <-gate:
		case <-ctx.Done():
			return dispatch.Receipt{}, ctx.Err()
		}
	}
	if barrier != nil {
		select {
		case <-barrier:
		case <-time.After(20 * time.Second):
			return dispatch.Receipt{}, dispatch.Permanent("barrier never reached: calls are not concurrent", nil)
		}
	}
	if p.delay > 0 {
		select {
		case <-time.After(p.delay):
		case <-ctx.Done():
			return dispatch.Receipt{}, ctx.Err()
		}
	}
	switch {
	case strings.HasPrefix(m.To, "reject") || strings.HasPrefix(m.To, "+1555000"):
		return dispatch.Receipt{}, dispatch.Permanent("recipient refused", errors.New("refused"))
	case strings.HasPrefix(m.To, "down") || strings.HasPrefix(m.To, "+1555999"):
		return dispatch.Receipt{}, dispatch.Transient("provider down", 0, errors.New("unavailable"))
	}
	p.mu.Lock()
	p.sent = append(p.sent, m)
	p.mu.Unlock()
	return dispatch.Receipt{MessageID: fmt.Sprintf("rec-%d", n)}, nil
}

// reset clears the call counters and sets a new delay.
func (p *recordingProvider) reset(delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls, p.maxFlight, p.since, p.delay = 0, 0, len(p.sent), delay
}

// sentFor returns the messages sent for a command.
func (p *recordingProvider) sentFor(commandID string) []dispatch.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []dispatch.Message
	for _, m := range p.sent {
		if m.CommandID == commandID {
			out = append(out, m)
		}
	}
	return out
}

// sentSince returns the messages sent since the last reset, in order.
func (p *recordingProvider) sentSince() []dispatch.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]dispatch.Message(nil), p.sent[p.since:]...)
}

func (p *recordingProvider) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sent)
}

func (p *recordingProvider) callCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

func (p *recordingProvider) maxInFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxFlight
}
