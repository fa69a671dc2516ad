//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/consumer/embedded"
	"github.com/notifyd/notifyd/schemas"

	"github.com/notifyd/notifyd/internal/testkit"
)

// The reliability suite runs the notifyd binary as a separate process
// against a real Kafka broker (NOTIFYD_TEST_BROKERS, started by .ci/run with
// scripts/kafka-local), kills it, restarts the broker, deletes its disk, and
// checks that nothing is lost. Providers are webhooks served by the test,
// so every call notifyd makes is recorded outside its process.

// notifydBin is the binary built once by TestMain.
var notifydBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "notifyd-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	notifydBin = filepath.Join(dir, "notifyd")
	args := []string{"build", "-o", notifydBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build notifyd:", err)
		os.Exit(1)
	}
	code := m.Run()
	if sharedEmbedded.broker != nil {
		sharedEmbedded.broker.Close()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// testBrokers returns NOTIFYD_TEST_BROKERS: host:port list of a real Kafka,
// or "embedded" for the embedded Kafka-protocol broker, started once in the
// test process and shared by the processes of every test (the broker
// notifyd runs by default; tests that restart the broker need a real one).
func testBrokers(t testing.TB) []string {
	t.Helper()
	env := os.Getenv("NOTIFYD_TEST_BROKERS")
	switch env {
	case "":
		t.Fatal("the integration tests need a broker: NOTIFYD_TEST_BROKERS=host:port (see scripts/kafka-local) or NOTIFYD_TEST_BROKERS=embedded")
	case "embedded":
		sharedEmbedded.once.Do(func() {
			dir, err := os.MkdirTemp("", "notifyd-it-broker-")
			if err == nil {
				sharedEmbedded.broker, err = embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: dir})
			}
			sharedEmbedded.err = err
		})
		if sharedEmbedded.err != nil {
			t.Fatalf("embedded broker: %v", sharedEmbedded.err)
		}
		return []string{sharedEmbedded.broker.Addr()}
	}
	return strings.Split(env, ",")
}

// sharedEmbedded is the embedded broker of NOTIFYD_TEST_BROKERS=embedded.
var sharedEmbedded struct {
	once   sync.Once
	broker *embedded.Broker
	err    error
}

// cluster is what one reliability test shares: the brokers, its own
// topics, the recording provider, and followers of results and dead
// letters.
type cluster struct {
	t       testing.TB
	brokers []string
	topics  consumer.Topics
	writer  *kafka.Writer
	calls   *callLog
	srv     *httptest.Server

	logs    []string // log files of the processes started
	logDir  string   // where processes log (default: their store.dir)
	started int      // processes started without a name

	mu      sync.Mutex
	results map[string][]kafka.Message // command_id -> results
	dlq     []kafka.Message
	invalid int // results with reason invalid_command
	// onResult, when set, is called with the command_id of every result
	// as the test's follower reads it.
	onResult func(commandID string)
}

func newCluster(t testing.TB, providerDelay time.Duration) *cluster {
	t.Helper()
	c := newProviders(t, providerDelay)
	c.attach(testBrokers(t))
	return c
}

// newProviders is a cluster with its topic names and its provider, not
// yet attached to brokers (attach): for processes that run the broker
// themselves.
func newProviders(t testing.TB, providerDelay time.Duration) *cluster {
	t.Helper()
	prefix := fmt.Sprintf("it-%s-%d-", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), time.Now().UnixNano())
	c := &cluster{
		t: t,
		topics: consumer.Topics{PaymentEvents: prefix + "payment-events", Commands: prefix + "notification-commands",
			Results: prefix + "notification-results", DeadLetter: prefix + "notification-commands-dlq", Deliveries: prefix + "notification-deliveries",
			ConsoleSessions: prefix + "console-sessions", MerchantSettings: prefix + "merchant-settings"},
		calls:   &callLog{delay: providerDelay, counts: map[string][]time.Time{}},
		results: map[string][]kafka.Message{},
	}
	c.srv = httptest.NewServer(c.calls)
	t.Cleanup(c.srv.Close)
	return c
}

// attach creates the cluster's topics on brokers and follows its results
// and dead letters there.
func (c *cluster) attach(brokers []string) {
	t := c.t
	t.Helper()
	c.brokers = brokers
	c.writer = consumer.Conn{Brokers: brokers, ClientID: "it"}.Writer()
	// Metadata of the topics it writes only: a long series of tests leaves
	// hundreds of topics on the broker.
	c.writer.Transport.(*kafka.Transport).MetadataTopics = []string{c.topics.PaymentEvents, c.topics.Commands}
	t.Cleanup(func() { c.writer.Close() })
	// A transport of its own: kafka.DefaultTransport would keep connections
	// to a broker an earlier test restarted (TestBrokerRestart), whose next
	// request fails with unexpected EOF.
	transport := &kafka.Transport{MetadataTopics: []string{c.topics.PaymentEvents, c.topics.Commands, c.topics.Results, c.topics.DeadLetter, c.topics.Deliveries, c.topics.ConsoleSessions,
		c.topics.MerchantSettings}}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: transport}
	var specs []consumer.TopicSpec
	for _, n := range []string{c.topics.PaymentEvents, c.topics.Commands, c.topics.Results, c.topics.DeadLetter, c.topics.Deliveries, c.topics.ConsoleSessions,
		c.topics.MerchantSettings} {
		specs = append(specs, consumer.TopicSpec{Name: n, Partitions: 4, ReplicationFactor: 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := consumer.RetryUnreachable(ctx, nil, "create topics", func(ctx context.Context) error {
		return consumer.EnsureTopics(ctx, client, specs, true)
	})
	if err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	follow := func(topic string, fn func(kafka.Message)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for fctx.Err() == nil {
				_ = consumer.Follow(fctx, consumer.Conn{Brokers: brokers}, topic, false, func(m kafka.Message) bool { fn(m); return true })
			}
		}()
	}
	follow(c.topics.Results, func(m kafka.Message) {
		var r schemas.DeliveryResult
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Errorf("result is not JSON: %q", m.Value)
			return
		}
		c.mu.Lock()
		c.results[r.CommandID] = append(c.results[r.CommandID], m)
		if r.Reason == schemas.ReasonInvalidCommand && len(c.results[r.CommandID]) == 1 {
			c.invalid++
		}
		notify := c.onResult
		c.mu.Unlock()
		if notify != nil {
			notify(r.CommandID)
		}
	})
	follow(c.topics.DeadLetter, func(m kafka.Message) {
		c.mu.Lock()
		c.dlq = append(c.dlq, m)
		c.mu.Unlock()
	})
}

// produce writes records, retrying while the broker is unavailable.
func (c *cluster) produce(topic string, msgs ...kafka.Message) {
	c.t.Helper()
	for i := range msgs {
		msgs[i].Topic = topic
	}
	testkit.Until(c.t, 2*time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := c.writer.WriteMessages(ctx, msgs...); err != nil {
			return fmt.Errorf("produce to %s: %w", topic, err)
		}
		return nil
	})
}

func eventJSON(session, state string, version int) []byte {
	return []byte(fmt.Sprintf(`{"event_id":"%s-%d","session_id":"%s","order_no":"o-%s","state":"%s","version":%d,"timestamp_utc":"2026-11-02T09:00:07Z","amount":"12.500","currency_code":"KWD","customer_email":"c-%s@example.com","customer_phone":"+96550001234","customer_first_name":"Layla","language":"en","notifications":{"email":[],"sms":[]}}`,
		session, version, session, session, state, version, session))
}

func commandJSON(id, session string, channels ...string) []byte {
	b, _ := json.Marshal(map[string]any{"command_id": id, "session_id": session, "channels": channels})
	return b
}

// events publishes one payment event per session, in batches.
func (c *cluster) events(sessions []string, state string, version int) {
	const batch = 2000
	msgs := make([]kafka.Message, 0, batch)
	for i, s := range sessions {
		msgs = append(msgs, kafka.Message{Key: []byte(s), Value: eventJSON(s, state, version)})
		if len(msgs) == batch || i == len(sessions)-1 {
			c.produce(c.topics.PaymentEvents, msgs...)
			msgs = msgs[:0]
		}
	}
}

func (c *cluster) answered(ids []string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, id := range ids {
		if len(c.results[id]) > 0 {
			n++
		}
	}
	return n
}

// firstResult returns the first result read for id, decoded, and its
// bytes (the zero result and nil before one is read).
func (c *cluster) firstResult(id string) (schemas.DeliveryResult, []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var r schemas.DeliveryResult
	if len(c.results[id]) == 0 {
		return r, nil
	}
	v := c.results[id][0].Value
	if err := json.Unmarshal(v, &r); err != nil {
		c.t.Errorf("result of %s: %v: %s", id, err, v)
	}
	return r, v
}

// waitAnswered waits until every id has a result.
func (c *cluster) waitAnswered(ids []string, timeout time.Duration) {
	c.t.Helper()
	c.waitUntilAnswered(ids, len(ids), timeout)
}

// conflicts returns the command_ids with two different results (two
// decisions, where a replay repeats the same record value).
func (c *cluster) conflicts(ids []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, id := range ids {
		rs := c.results[id]
		for _, r := range rs[1:] {
			if !bytes.Equal(r.Value, rs[0].Value) {
				out = append(out, id)
				break
			}
		}
	}
	return out
}

// checkResults fails the test for every command with two different
// results and returns how many commands were answered more than once.
func (c *cluster) checkResults(ids []string) (replayed int) {
	c.t.Helper()
	for _, id := range c.conflicts(ids) {
		c.t.Errorf("command %s has two different results: %s", id, c.describeResults(id))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if len(c.results[id]) > 1 {
			replayed++
		}
	}
	return replayed
}

// callLog is the webhook provider's far end: it records every call as
// (command_id, channel) with the time it started, waits delay, and answers
// with a message id.
type callLog struct {
	delay time.Duration

	mu       sync.Mutex
	counts   map[string][]time.Time
	calls    []call
	inFlight int
	maxIn    int
}

// call is one provider call: which instance made it (the first element of
// the webhook path), for which command and channel, when it arrived and
// when it was answered (zero while in flight).
type call struct {
	instance, key string
	at, done      time.Time
}

func (l *callLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Channel   string `json:"channel"`
		CommandID string `json:"command_id"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil || req.CommandID == "" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	key := req.CommandID + "/" + req.Channel
	instance, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	l.mu.Lock()
	now := time.Now()
	l.counts[key] = append(l.counts[key], now)
	l.calls = append(l.calls, call{instance: instance, key: key, at: now})
	i := len(l.calls) - 1
	l.inFlight++
	l.maxIn = max(l.maxIn, l.inFlight)
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.inFlight--
		l.calls[i].done = time.Now()
		l.mu.Unlock()
	}()
	select {
	case <-time.After(l.delay):
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"wh-%d"}`, rand.Int64())
}

// snapshot returns a copy of the calls so far.
func (l *callLog) snapshot() []call {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]call(nil), l.calls...)
}

func (l *callLog) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.counts {
		n += len(c)
	}
	return n
}

// duplicates returns the (command_id/channel) keys called more than once,
// with the time of their first call.
func (l *callLog) duplicates() map[string]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]time.Time{}
	for k, ts := range l.counts {
		if len(ts) > 1 {
			out[k] = ts[0]
		}
	}
	return out
}

// proc is one notifyd process.
type proc struct {
	t        testing.TB
	name     string
	cmd      *exec.Cmd
	dir      string
	httpAddr string
	logPath  string
	exited   chan error
}

type procOpts struct {
	name         string // the instance's name in provider calls; a new one when empty
	dir          string // store.dir; a new one when empty
	concurrency  int
	session      time.Duration // kafka.session_timeout and rebalance_timeout (default: notifyd's)
	readyMaxLag  int           // 0: ready only when fully caught up
	catchUpWait  time.Duration
	waitForReady bool
	api          string // the api block (YAML flow mapping); "" none
	// brokers replaces the cluster's brokers in kafka.brokers, and kafka
	// is added to the kafka block (YAML lines indented by two spaces):
	// a process reaching the cluster's broker on another listener.
	brokers []string
	kafka   string
	// providers replaces the providers block (YAML lines indented by two
	// spaces) when set.
	providers string
	// store is added to the store block (YAML flow-mapping entries, such
	// as "min_free_bytes: 1000").
	store string
	// logDir holds the process's log (default: dir).
	logDir string
	// embedded, when set, runs the process's own embedded broker there
	// (embedded_broker.listen; its log in store.dir) instead of kafka.brokers.
	embedded string
	// extra is added to the configuration (top-level YAML lines).
	extra string
}

func (c *cluster) config(o procOpts, httpAddr string) string {
	group := ""
	if o.session > 0 {
		group = fmt.Sprintf("  session_timeout: %s\n  rebalance_timeout: %s\n", o.session, o.session)
	}
	apiBlock := ""
	if o.api != "" {
		apiBlock = "api: " + o.api + "\n"
	}
	brokers := c.brokers
	if o.brokers != nil {
		brokers = o.brokers
	}
	group += o.kafka
	providers := o.providers
	if providers == "" {
		providers = fmt.Sprintf(`  email: {kind: webhook, webhook: {url: %q}, retry: {max_attempts: 3, initial_backoff: 50ms, attempt_timeout: 5s}}
  sms: {kind: webhook, webhook: {url: %q}, retry: {max_attempts: 3, initial_backoff: 50ms, attempt_timeout: 5s}}`,
			c.srv.URL+"/"+o.name+"/email", c.srv.URL+"/"+o.name+"/sms")
	}
	brokersLine := fmt.Sprintf("brokers: [%s]", strings.Join(brokers, ", "))
	embeddedBlock := ""
	if o.embedded != "" {
		brokersLine = "brokers: []"
		embeddedBlock = fmt.Sprintf("embedded_broker: {listen: %q}\n", o.embedded)
	}
	storeExtra := ""
	if o.store != "" {
		storeExtra = ", " + o.store
	}
	return fmt.Sprintf(`
%skafka:
  %s
  group_id: %s
  client_id: it-%s
%s  topics: {payment_events: %q, commands: %q, results: %q, dead_letter: %q, deliveries: %q, console_sessions: %q, merchant_settings: %q}
store: {dir: %q%s}
http: {listen: %q}
log: {format: json, level: info}
processing: {concurrency: %d, catch_up_wait: %s, ready_max_lag: %d, shutdown_timeout: 20s}
providers:
%s
templates:
  email:
    created: {en: {subject: "Order {{.OrderNo}}", text: "Created {{.Amount}}"}}
    paid: {en: {subject: "Order {{.OrderNo}}", text: "Paid {{.Amount}}"}}
  sms:
    created: {en: {text: "Created {{.Amount}}"}}
    paid: {en: {text: "Paid {{.Amount}}"}}
  whatsapp:
    paid: {en: {name: payment_paid, language: en_US, params: ["{{.Amount}}"]}}
%s%s`, embeddedBlock, brokersLine, "g-"+c.topics.Commands, o.name, group, c.topics.PaymentEvents, c.topics.Commands, c.topics.Results, c.topics.DeadLetter,
		c.topics.Deliveries, c.topics.ConsoleSessions, c.topics.MerchantSettings, o.dir, storeExtra, httpAddr, o.concurrency, o.catchUpWait, o.readyMaxLag, providers,
		apiBlock, o.extra)
}

// start starts a notifyd process and waits until its /healthz answers
// (and /readyz says ready, with waitForReady).
func (c *cluster) start(o procOpts) *proc {
	c.t.Helper()
	if o.dir == "" {
		o.dir = c.t.TempDir()
	}
	if o.concurrency == 0 {
		o.concurrency = 64
	}
	if o.catchUpWait == 0 {
		o.catchUpWait = 10 * time.Second
	}
	if o.name == "" {
		c.started++
		o.name = fmt.Sprintf("p%d", c.started)
	}
	p := &proc{t: c.t, name: o.name, dir: o.dir, httpAddr: freePort(c.t), exited: make(chan error, 1)}
	cfgPath := filepath.Join(o.dir, "notifyd.yaml")
	if err := os.WriteFile(cfgPath, []byte(c.config(o, p.httpAddr)), 0o600); err != nil {
		c.t.Fatal(err)
	}
	if o.logDir == "" {
		o.logDir = c.logDir
	}
	if o.logDir == "" {
		o.logDir = o.dir
	}
	p.logPath = filepath.Join(o.logDir, fmt.Sprintf("notifyd-%d.log", time.Now().UnixNano()))
	c.logs = append(c.logs, p.logPath)
	logf, err := os.Create(p.logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	p.cmd = exec.Command(notifydBin, "serve", "-config", cfgPath)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait(); logf.Close() }()
	c.t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		b, _ := os.ReadFile(p.logPath)
		if c.t.Failed() {
			c.t.Logf("notifyd log %s (last 4 KiB):\n%s", p.logPath, lastBytes(b, 4096))
		}
		// NOTIFYD_TEST_KEEP_LOGS=dir keeps every process's log.
		if dir := os.Getenv("NOTIFYD_TEST_KEEP_LOGS"); dir != "" {
			keep := filepath.Join(dir, strings.ReplaceAll(c.t.Name(), "/", "-")+"-"+p.name+"-"+filepath.Base(p.logPath))
			if err := os.WriteFile(keep, b, 0o600); err == nil {
				c.t.Logf("log kept as %s", keep)
			}
		}
	})
	testkit.Until(c.t, 60*time.Second, func() error {
		select {
		case err := <-p.exited:
			b, _ := os.ReadFile(p.logPath)
			c.t.Fatalf("notifyd exited at start (%v):\n%s", err, lastBytes(b, 4096))
		default:
		}
		if code, _ := p.get("/healthz"); code != http.StatusOK {
			b, _ := os.ReadFile(p.logPath)
			return fmt.Errorf("notifyd not up:\n%s", lastBytes(b, 4096))
		}
		if code, _ := p.get("/readyz"); o.waitForReady && code != http.StatusOK {
			b, _ := os.ReadFile(p.logPath)
			return fmt.Errorf("notifyd not ready:\n%s", lastBytes(b, 4096))
		}
		return nil
	})
	return p
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// get requests a path of the process's HTTP server.
func (p *proc) get(path string) (int, []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.httpAddr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// kill9 kills the process with SIGKILL.
func (p *proc) kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatal(err)
	}
	<-p.exited
}

// stop sends SIGTERM and checks a clean exit within 30 s.
func (p *proc) stop() {
	p.t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			b, _ := os.ReadFile(p.logPath)
			p.t.Fatalf("notifyd exited with %v after SIGTERM:\n%s", err, lastBytes(b, 4096))
		}
		p.t.Logf("notifyd stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		p.t.Fatal("notifyd did not exit within 30 s of SIGTERM")
	}
}

func (p *proc) running() bool {
	select {
	case err := <-p.exited:
		p.exited <- err
		return false
	default:
		return true
	}
}

// logLines returns the lines of every process's log that contain s.
func (c *cluster) logLines(s string) []string {
	var out []string
	for _, path := range c.logs {
		b, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, s) {
				out = append(out, filepath.Base(path)+": "+l)
			}
		}
	}
	return out
}
