package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/consumer/wmkafka"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"
)

// Topics names the topics of the contract.
type Topics struct {
	PaymentEvents string `yaml:"payment_events"`
	Commands      string `yaml:"commands"`
	Results       string `yaml:"results"`
	DeadLetter    string `yaml:"dead_letter"`
	// Deliveries carries the delivery events made of providers' receipts.
	Deliveries string `yaml:"deliveries"`
	// ConsoleSessions carries the ends of console sessions (sign-outs),
	// compacted by username, so that every instance refuses them.
	ConsoleSessions string `yaml:"console_sessions"`
	// MerchantSettings carries each merchant's settings, compacted by
	// merchant_id; every instance follows it (merchants.go).
	MerchantSettings string `yaml:"merchant_settings"`
}

// DefaultTopics are the contract's default topic names.
func DefaultTopics() Topics {
	return Topics{
		PaymentEvents: "payment-events",
		Commands:      "notification-commands",
		Results:       "notification-results",
		DeadLetter:    "notification-commands-dlq",
		Deliveries:    "notification-deliveries",
		// notifyd's own: not a topic of the contract.
		ConsoleSessions:  "notifyd-console-sessions",
		MerchantSettings: "merchant-settings",
	}
}

// DefaultTopicConfigs are the configs of created topics: payment-events is
// compacted (the projection needs the last snapshot of every transaction,
// forever), and so is console-sessions (the last end of every user's
// sessions); the others expire by time. Results are kept 30 days: a store
// rebuilt from the topics remembers the command_ids answered within them;
// delivery events as long, the time a console looks back.
func DefaultTopicConfigs() map[string]map[string]string {
	const day = 24 * 60 * 60 * 1000
	return map[string]map[string]string{
		"payment_events":   {"cleanup.policy": "compact"},
		"commands":         {"cleanup.policy": "delete", "retention.ms": strconv.Itoa(7 * day)},
		"results":          {"cleanup.policy": "delete", "retention.ms": strconv.Itoa(30 * day)},
		"dead_letter":      {"cleanup.policy": "delete", "retention.ms": strconv.Itoa(30 * day)},
		"deliveries":       {"cleanup.policy": "delete", "retention.ms": strconv.Itoa(30 * day)},
		"console_sessions": {"cleanup.policy": "compact"},
		// The last settings of every merchant, forever.
		"merchant_settings": {"cleanup.policy": "compact"},
	}
}

// WithDefaults returns t with every empty name replaced by its default.
func (t Topics) WithDefaults() Topics {
	d := DefaultTopics()
	for _, f := range []struct {
		v   *string
		def string
	}{
		{&t.PaymentEvents, d.PaymentEvents}, {&t.Commands, d.Commands},
		{&t.Results, d.Results}, {&t.DeadLetter, d.DeadLetter}, {&t.Deliveries, d.Deliveries},
		{&t.ConsoleSessions, d.ConsoleSessions}, {&t.MerchantSettings, d.MerchantSettings},
	} {
		if *f.v == "" {
			*f.v = f.def
		}
	}
	return t
}

// Service is one notifyd instance: it follows payment-events and results
// into the local store and answers the commands of its consumer group.
type Service struct {
	cfg     Config
	dcfg    dispatch.Config
	log     *slog.Logger
	running chan struct{}
	metrics *metrics

	deadLetters deadLetterHealth
	// sessionsRead is set once the console-sessions topic was read as far
	// as it reached at start-up (sessions.go).
	sessionsRead atomic.Bool
	// hooks are the tests' seams (hooks.go); zero in production.
	hooks hooks
	// waiters are the in-process requesters waiting for results
	// (requesters.go).
	waiters resultWaiters

	// now is what the current Run has started, as the readers see it
	// (running); nil while not running.
	now atomic.Pointer[running]
	// kafka is the outcome of the last high-water-mark round.
	kafka atomic.Pointer[kafkaHealth]
	// consumerLag is the commands group's lag per partition, refreshed
	// with the end offsets.
	consumerLag atomic.Pointer[map[int]int64]
	// merchants are the merchants' settings applied here (merchants.go).
	merchants *Merchants
}

// running is what one Run has started that the Service's readers use
// (the API's adapters, readiness, the metrics): a snapshot, never changed
// once published. The runtime publishes a new one as it starts a part and
// as it stops one (publish), so a reader sees every part it needs at once
// or ErrNotRunning, and no field is mirrored under a lock.
type running struct {
	guard      *diskGuard
	store      *projection.Store
	dispatcher *dispatch.Dispatcher
	events     *follower
	results    *follower
	// sessions follows console-sessions; sessionsWriter publishes to it.
	sessions       *follower
	sessionsWriter *kafka.Writer
	sub            *wmkafka.Subscriber
	// commands publishes the commands of in-process requesters.
	commands *kafka.Writer
	// receipts turns providers' receipts into delivery events.
	receipts *receipts
}

// parts returns the current snapshot (an empty one while not running).
func (s *Service) parts() running {
	if r := s.now.Load(); r != nil {
		return *r
	}
	return running{}
}

// kafkaHealth is the outcome of the last high-water-mark round: its error
// (nil once one succeeded) and when one last succeeded.
type kafkaHealth struct {
	err error
	ok  time.Time
}

// refreshInterval is how often the end offsets of the followed topics are
// read when no command asks for them: it keeps the lag (and readiness)
// current while the topics are idle or the fetchers are stuck.
const refreshInterval = 5 * time.Second

// Readiness says whether an instance should be considered ready, and why
// not. Served as JSON by /readyz.
type Readiness struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
	// Serving is whether the instance takes commands now: its store is
	// open, it consumes commands and Kafka answers. An instance catching
	// up (or whose dead-letter topic fails) is serving but not ready: its
	// answers are right, only later (read-your-writes), so in-process
	// requesters (the HTTP API) wait rather than refuse.
	Serving bool `json:"serving"`
	// ProjectionLag and ResultsLag are the records of payment-events and of
	// the results topic known to exist and not yet applied to the store.
	ProjectionLag int64 `json:"projection_lag"`
	ResultsLag    int64 `json:"results_lag"`
}

// Readiness reports whether the instance is ready: its store is open, the
// brokers answer, dead letters can be written, the store is within
// ReadyMaxLag records of both followed topics, the console-sessions topic
// was read as far as it reached at start-up, and commands are being
// consumed.
func (s *Service) Readiness() Readiness {
	p := s.parts()
	store, events, results, sessions, guard, sub := p.store, p.events, p.results, p.sessions, p.guard, p.sub
	var kerr error
	var kok time.Time
	if k := s.kafka.Load(); k != nil {
		kerr, kok = k.err, k.ok
	}
	if guard != nil {
		if reason := guard.pausedReason(); reason != "" {
			return Readiness{Reason: reason}
		}
	}
	if store == nil || events == nil {
		return Readiness{Reason: "starting: store not open yet"}
	}
	if err := store.Err(); err != nil {
		return Readiness{Reason: "store failed: " + err.Error()}
	}
	r := Readiness{ProjectionLag: events.lag(), ResultsLag: results.lag()}
	select {
	case <-s.running:
	default:
		r.Reason = "starting: not consuming commands yet"
		return r
	}
	dlqErr, dlqSince := s.deadLetters.failing()
	unreachable := kerr != nil && time.Since(kok) > 3*refreshInterval
	r.Serving = !unreachable
	switch {
	case unreachable:
		r.Reason = "kafka unreachable: " + kerr.Error()
	case dlqErr != nil:
		r.Reason = fmt.Sprintf("dead-letter topic failing for %s (the commands' keys wait): %v", time.Since(dlqSince).Round(time.Second), dlqErr)
	case r.ProjectionLag > *s.cfg.ReadyMaxLag:
		r.Reason = fmt.Sprintf("projection catching up: %d payment events behind", r.ProjectionLag)
	case r.ResultsLag > *s.cfg.ReadyMaxLag:
		r.Reason = fmt.Sprintf("idempotency table catching up: %d results behind", r.ResultsLag)
	case sessions == nil || !s.sessionsCaughtUp(sessions):
		r.Reason = "console sessions catching up: which sessions ended is not known yet"
	case s.merchants.broken.Load() > 0:
		r.Reason = fmt.Sprintf("the stored settings of %d merchant(s) do not apply (see the log: merchants.sealing_key?); publish them again", s.merchants.broken.Load())
	case sub != nil && !sub.Consuming():
		r.Reason = "joining the commands group: no confirmed assignment fetched from yet"
	default:
		r.Ready = true
	}
	return r
}

// refresh reads the end offsets of the followed topics every
// refreshInterval until ctx ends.
func (s *Service) refresh(ctx context.Context, client *kafka.Client, wm *watermarks, followers ...*follower) {
	// The consumer lag at once: notifyd_consumer_lag_messages is on
	// /metrics from the start, not after the first interval; while the
	// group's coordinator cannot answer yet (a new group, a broker just
	// started), asked again every second until it does.
	s.refreshConsumerLag(ctx, client)
	go func() {
		for s.consumerLag.Load() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			s.refreshConsumerLag(ctx, client)
		}
	}()
	t := time.NewTicker(refreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 2*refreshInterval)
		offs, err := wm.Get(rctx)
		cancel()
		s.noteRound(offs, err, followers...)
		s.refreshConsumerLag(ctx, client)
	}
}

// noteRound records the outcome of a high-water-mark round.
func (s *Service) noteRound(offs map[string]map[int]Offsets, err error, followers ...*follower) {
	h := kafkaHealth{err: err}
	if err == nil {
		h.ok = time.Now()
	} else if prev := s.kafka.Load(); prev != nil {
		h.ok = prev.ok
	}
	s.kafka.Store(&h)
	if err != nil {
		return
	}
	for _, f := range followers {
		f.noteEnds(offs[f.topic])
		f.Follow(partitionsOf(offs[f.topic]))
	}
}

// Stats are counters of one Run.
type Stats struct {
	// EventsApplied and ResultsApplied count the records of payment-events
	// and of the results topic applied to the store since Run started.
	EventsApplied, ResultsApplied int64
}

// Stats returns the counters of the current Run.
func (s *Service) Stats() Stats {
	p := s.parts()
	var st Stats
	if p.events != nil {
		st.EventsApplied = p.events.applied.Load()
		st.ResultsApplied = p.results.applied.Load()
	}
	return st
}

// New validates cfg and returns a Service; nothing is started before Run.
// dcfg configures dispatch; the Service supplies the projection it reads.
func New(cfg Config, dcfg dispatch.Config, log *slog.Logger) (*Service, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, dcfg: dcfg, log: log, running: make(chan struct{}), metrics: newMetrics(), merchants: newMerchants()}
	for ch, routes := range dcfg.Routes {
		for _, name := range dispatch.RouteNames(routes) {
			s.metrics.deliveryLabels = append(s.metrics.deliveryLabels, [2]string{string(ch), name})
		}
	}
	if cfg.Registerer != nil {
		if err := s.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
		if err := cfg.Registerer.Register(stateCollector{s}); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return s, nil
}

// Merchants are the merchants' settings this instance applies, kept
// current from the merchant-settings topic while it runs.
func (s *Service) Merchants() *Merchants { return s.merchants }

// Running is closed once the service consumes commands.
func (s *Service) Running() <-chan struct{} { return s.running }

// Store returns the open projection store, nil before Run opened it.
func (s *Service) Store() *projection.Store {
	return s.parts().store
}

// Run runs the service until ctx ends or a fatal error, then stops it. It
// returns nil after a clean stop. The order of start-up and of the stop is
// runtime's: start, then stop.
func (s *Service) Run(ctx context.Context) error {
	rt := &runtime{s: s, cfg: s.cfg, log: s.log}
	err := rt.start(ctx)
	if err == nil {
		err = rt.serve(ctx)
	}
	rt.stop()
	if err == nil {
		s.log.Info("stopped")
	}
	return err
}

func partitionsOf(m map[int]Offsets) []int {
	out := make([]int, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	return out
}

// ensureTopics creates or checks the topics, retrying while the brokers
// cannot be reached: a service started before its Kafka waits for it.
func (s *Service) ensureTopics(ctx context.Context, client *kafka.Client) error {
	cfg := s.cfg
	configs := DefaultTopicConfigs()
	for role, kv := range cfg.TopicConfigs {
		for k, v := range kv {
			configs[role][k] = v
		}
	}
	spec := func(name, role string) TopicSpec {
		return TopicSpec{Name: name, Partitions: cfg.TopicPartitions, ReplicationFactor: cfg.ReplicationFactor, Configs: configs[role]}
	}
	specs := []TopicSpec{
		spec(cfg.Topics.PaymentEvents, "payment_events"), spec(cfg.Topics.Commands, "commands"),
		spec(cfg.Topics.Results, "results"), spec(cfg.Topics.DeadLetter, "dead_letter"),
		spec(cfg.Topics.Deliveries, "deliveries"), spec(cfg.Topics.ConsoleSessions, "console_sessions"),
		spec(cfg.Topics.MerchantSettings, "merchant_settings"),
	}
	err := RetryUnreachable(ctx, s.log.With("brokers", cfg.Brokers), "start", func(ctx context.Context) error {
		return EnsureTopics(ctx, client, specs, *cfg.CreateTopics)
	})
	if hint, ok := SecurityProblem(err); ok {
		return fmt.Errorf("kafka: %s: %w", hint, err)
	}
	return err
}

// openStore opens the projection and checks that it describes the log it
// will follow: a stored offset beyond a partition's end means the topic was
// recreated or the brokers are another cluster, so the store is rebuilt
// from the topics rather than silently skipping records.
func (s *Service) openStore(ctx context.Context, client *kafka.Client, reject func(int, projection.Record, string, string) error) (*projection.Store, error) {
	dir := filepath.Join(s.cfg.StoreDir, "projection")
	opts := projection.Options{Reject: reject, EventsTopic: s.cfg.Topics.PaymentEvents, ResultsTopic: s.cfg.Topics.Results,
		DeliveriesTopic: s.cfg.Topics.Deliveries, SessionsTopic: s.cfg.Topics.ConsoleSessions,
		MerchantsTopic: s.cfg.Topics.MerchantSettings, Logger: s.log.With("component", "store"),
		OnError: func(op string, _ error) { s.metrics.storeErrors.WithLabelValues(op).Inc() }, FS: s.hooks.storeFS}
	store, err := projection.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	offs, err := ListOffsets(ctx, client, s.cfg.Topics.PaymentEvents, s.cfg.Topics.Results, s.cfg.Topics.Deliveries, s.cfg.Topics.ConsoleSessions,
		s.cfg.Topics.MerchantSettings)
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("start: %w", err)
	}
	check := func(topic string, stored map[int]int64) string {
		for p, next := range stored {
			if b, ok := offs[topic][p]; !ok || next > b.End {
				return topic + "/" + strconv.Itoa(p)
			}
		}
		return ""
	}
	bad := check(s.cfg.Topics.PaymentEvents, store.EventOffsets())
	if bad == "" {
		bad = check(s.cfg.Topics.Results, store.ResultOffsets())
	}
	if bad == "" {
		bad = check(s.cfg.Topics.Deliveries, store.DeliveryOffsets())
	}
	if bad == "" {
		bad = check(s.cfg.Topics.ConsoleSessions, store.SessionOffsets())
	}
	if bad == "" {
		bad = check(s.cfg.Topics.MerchantSettings, store.MerchantOffsets())
	}
	if bad == "" {
		return store, nil
	}
	s.log.Warn("store is ahead of the log (topic recreated or another cluster): rebuilding it from the topics", "partition", bad, "dir", dir)
	if err := store.Close(); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("rebuild store: %w", err)
	}
	return projection.Open(dir, opts)
}
