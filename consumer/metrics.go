package consumer

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// metrics are the consumer's Prometheus collectors. Labels are bounded:
// outcomes, reasons, results, topics and partitions; never identifiers.
type metrics struct {
	commands         *prometheus.CounterVec
	failures         *prometheus.CounterVec
	duration         prometheus.Histogram
	inFlight         prometheus.Gauge
	replayed         prometheus.Counter
	deadLetters      *prometheus.CounterVec
	deadLetterErrors prometheus.Counter
	handedOver       prometheus.Counter
	projectionEvents *prometheus.CounterVec
	deliveries       *prometheus.CounterVec
	// storeErrors counts failed store operations by op; unrecorded the
	// decisions published without their store record (command.go).
	storeErrors *prometheus.CounterVec
	// merchantSettings counts merchant-settings records by result.
	merchantSettings *prometheus.CounterVec
	unrecorded       prometheus.Counter
	// deliveryLabels are the (channel, provider) pairs of the configured
	// providers, whose delivery series start at zero.
	deliveryLabels [][2]string
}

// Dead-letter reasons (notifyd_dead_letters_total{reason}).
const (
	deadLetterNotJSON        = "not_json"
	deadLetterInvalidCommand = "invalid_command"
	deadLetterPanic          = "panic"
	// deadLetterMerchantMismatch: a payment event for a session stored
	// for another merchant (projection.RejectMerchantMismatch).
	deadLetterMerchantMismatch = projection.RejectMerchantMismatch
)

func newMetrics() *metrics {
	return &metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_commands_total",
			Help: "Commands decided, by outcome (a replayed duplicate is not counted again).",
		}, []string{"outcome"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_command_failures_total",
			Help: "Commands decided as whole-command failures, by reason.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "notifyd_command_duration_seconds",
			Help:    "Time from a command reaching the handler to its result being published.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notifyd_commands_in_flight",
			Help: "Commands being handled now.",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notifyd_commands_replayed_total",
			Help: "Commands whose command_id already had a result, answered by publishing it again.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_dead_letters_total",
			Help: "Records written to the dead-letter topic, by reason: commands (not_json, invalid_command, panic), payment events (merchant_mismatch), merchant settings (invalid_merchant_settings).",
		}, []string{"reason"}),
		deadLetterErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notifyd_dead_letter_errors_total",
			Help: "Failed attempts to write a dead letter (each is retried with backoff; the command's key waits meanwhile).",
		}),
		handedOver: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notifyd_commands_handed_over_total",
			Help: "Commands left undecided because their partition was handed over (rebalance, stop) before they were claimed or before the hand-over's deadline; the next owner decides them.",
		}),
		merchantSettings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_merchant_settings_total",
			Help: "Merchant-settings records read, by result: applied, removed (a null value), refused (dead-lettered invalid_merchant_settings, the previous settings kept; also stored settings that no longer apply at start).",
		}, []string{"result"}),
		projectionEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_projection_events_total",
			Help: "Payment-events records applied to the projection, by result (applied, stale, tombstone, invalid, merchant_mismatch: refused and dead-lettered).",
		}, []string{"result"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_store_errors_total",
			Help: "Failed operations of the local store, by op (apply_events, apply_results, apply_deliveries, apply_sessions, record_result, record_delivery, record_session_end, commit: the write that failed the store, background: a flush or compaction, retried).",
		}, []string{"op"}),
		unrecorded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notifyd_decisions_unrecorded_total",
			Help: "Commands sent whose decision the store could not record, answered by publishing the decision from memory (not sent again).",
		}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_deliveries_total",
			Help: "Delivery events published from providers' receipts, by channel, provider and status (sent, delivered, read, undelivered, failed); channel unknown when the message was not found among the results.",
		}, []string{"channel", "provider", "status"}),
	}
}

// init creates every series of the known label combinations at zero (see
// dispatch's Metrics.init for why).
func (m *metrics) init() {
	for _, o := range schemas.Outcomes() {
		m.commands.WithLabelValues(string(o))
	}
	for _, r := range schemas.CommandReasons() {
		m.failures.WithLabelValues(string(r))
	}
	for _, r := range []string{merchantApplied, merchantRemoved, merchantRefused} {
		m.merchantSettings.WithLabelValues(r)
	}
	for _, r := range []string{deadLetterNotJSON, deadLetterInvalidCommand, deadLetterPanic, deadLetterMerchantMismatch, deadLetterMerchantSettings} {
		m.deadLetters.WithLabelValues(r)
	}
	for _, r := range []string{"applied", "stale", "tombstone", "invalid", deadLetterMerchantMismatch} {
		m.projectionEvents.WithLabelValues(r)
	}
	for _, op := range []string{"apply_events", "apply_results", "apply_deliveries", "apply_sessions", "apply_merchants", "record_result", "commit"} {
		m.storeErrors.WithLabelValues(op)
	}
	for _, l := range m.deliveryLabels {
		for _, st := range schemas.DeliveryStatuses {
			m.deliveries.WithLabelValues(l[0], l[1], string(st))
		}
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	m.init()
	for _, c := range []prometheus.Collector{m.commands, m.failures, m.duration, m.inFlight, m.replayed, m.deadLetters, m.deadLetterErrors, m.handedOver, m.projectionEvents, m.merchantSettings,
		m.deliveries, m.storeErrors, m.unrecorded} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// decided records a newly decided result.
func (m *metrics) decided(r *schemas.DeliveryResult) {
	m.commands.WithLabelValues(string(r.Outcome)).Inc()
	if r.Reason != "" {
		m.failures.WithLabelValues(string(r.Reason)).Inc()
	}
}

func (m *metrics) applied(st projection.ApplyStats) {
	for result, n := range map[string]int{"applied": st.Applied, "stale": st.Stale, "tombstone": st.Tombstones, "invalid": st.Invalid,
		deadLetterMerchantMismatch: st.Mismatched} {
		if n > 0 {
			m.projectionEvents.WithLabelValues(result).Add(float64(n))
		}
	}
}

var (
	descTransactions = prometheus.NewDesc("notifyd_projection_transactions",
		"Transactions in the projection.", nil, nil)
	descProjectionLag = prometheus.NewDesc("notifyd_projection_lag_messages",
		"Payment-events records known to exist and not yet applied, by partition (high-water mark minus applied offset).", []string{"partition"}, nil)
	descConsumerLag = prometheus.NewDesc("notifyd_consumer_lag_messages",
		"Records of the commands topic not yet committed by the consumer group, by topic and partition.", []string{"topic", "partition"}, nil)
	descHandOvers = prometheus.NewDesc("notifyd_group_handovers_total",
		"Hand-overs of this instance's command partitions completed (rebalances and the stop).", nil, nil)
	descHandOverLast = prometheus.NewDesc("notifyd_group_handover_last_seconds",
		"How long the last hand-over took, from the end of the generation to the commit.", nil, nil)
	descGivenUp = prometheus.NewDesc("notifyd_group_given_up_total",
		"Commands a hand-over left undecided: handed out but not claimed yet (when=unclaimed), or still claimed at the drain deadline (when=deadline).", []string{"when"}, nil)
	descClaimsRefused = prometheus.NewDesc("notifyd_group_claims_refused_total",
		"Claims refused: the command's partition was being handed over, or the group membership was not confirmed recently enough.", nil, nil)
	descGeneration = prometheus.NewDesc("notifyd_group_generation",
		"The consumer-group generation this instance last took part in.", nil, nil)
	descStoreFree = prometheus.NewDesc("notifyd_store_free_bytes",
		"Bytes available to notifyd on the filesystem of store.dir, as the free-space guard last read them.", nil, nil)
	descStoreMinFree = prometheus.NewDesc("notifyd_store_min_free_bytes",
		"The free-space guard's watermark (store.min_free_bytes, resolved): below it the instance pauses.", nil, nil)
	descStorePaused = prometheus.NewDesc("notifyd_store_paused",
		"1 while the instance is paused because store.dir is nearly full (no new commands or events taken), else 0.", nil, nil)
)

// stateCollector reports the gauges that are read from the service's state
// at scrape time.
type stateCollector struct{ s *Service }

// Describe sends the descriptors of the state gauges.
func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descTransactions
	ch <- descProjectionLag
	ch <- descConsumerLag
	ch <- descHandOvers
	ch <- descHandOverLast
	ch <- descGivenUp
	ch <- descClaimsRefused
	ch <- descGeneration
	ch <- descStoreFree
	ch <- descStoreMinFree
	ch <- descStorePaused
}

// Collect reads the state gauges.
func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	p := s.parts()
	store, events, sub, guard := p.store, p.events, p.sub, p.guard
	var lag map[int]int64
	if l := s.consumerLag.Load(); l != nil {
		lag = *l
	}
	if guard != nil {
		if paused, free, low, known := guard.state(); known {
			p := 0.0
			if paused {
				p = 1
			}
			ch <- prometheus.MustNewConstMetric(descStoreFree, prometheus.GaugeValue, float64(free))
			ch <- prometheus.MustNewConstMetric(descStoreMinFree, prometheus.GaugeValue, float64(low))
			ch <- prometheus.MustNewConstMetric(descStorePaused, prometheus.GaugeValue, p)
		}
	}
	if sub != nil {
		for _, st := range sub.Stats() {
			ch <- prometheus.MustNewConstMetric(descHandOvers, prometheus.CounterValue, float64(st.HandOvers))
			ch <- prometheus.MustNewConstMetric(descHandOverLast, prometheus.GaugeValue, st.LastHandOver.Seconds())
			ch <- prometheus.MustNewConstMetric(descGivenUp, prometheus.CounterValue, float64(st.GivenUpUnclaimed), "unclaimed")
			ch <- prometheus.MustNewConstMetric(descGivenUp, prometheus.CounterValue, float64(st.GivenUpAtDeadline), "deadline")
			ch <- prometheus.MustNewConstMetric(descClaimsRefused, prometheus.CounterValue, float64(st.ClaimsRefused))
			ch <- prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(st.Generation))
		}
	}
	if store == nil || events == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descTransactions, prometheus.GaugeValue, float64(store.Transactions()))
	for p, l := range events.lagByPartition() {
		ch <- prometheus.MustNewConstMetric(descProjectionLag, prometheus.GaugeValue, float64(l), strconv.Itoa(p))
	}
	for p, l := range lag {
		ch <- prometheus.MustNewConstMetric(descConsumerLag, prometheus.GaugeValue, float64(l), s.cfg.Topics.Commands, strconv.Itoa(p))
	}
}

// refreshConsumerLag reads the group's committed offsets and the end
// offsets of the commands topic.
func (s *Service) refreshConsumerLag(ctx context.Context, client *kafka.Client) {
	ctx, cancel := context.WithTimeout(ctx, 2*refreshInterval)
	defer cancel()
	topic := s.cfg.Topics.Commands
	offs, err := ListOffsets(ctx, client, topic)
	if err != nil {
		return
	}
	parts := partitionsOf(offs[topic])
	resp, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: s.cfg.GroupID, Topics: map[string][]int{topic: parts}})
	if err != nil || resp.Error != nil {
		return
	}
	lag := make(map[int]int64, len(parts))
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			continue
		}
		b := offs[topic][p.Partition]
		from := max(p.CommittedOffset, b.First)
		lag[p.Partition] = max(b.End-from, 0)
	}
	s.consumerLag.Store(&lag)
}

// observe is called with a handled command's start time.
func (m *metrics) observe(start time.Time) { m.duration.Observe(time.Since(start).Seconds()) }
