package dispatch

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notifyd/notifyd/schemas"
)

// Metrics are the Prometheus collectors of dispatch. A nil *Metrics
// records nothing. Labels are bounded: channels, statuses, reasons and
// provider names, never identifiers or contacts.
type Metrics struct {
	channelResults   *prometheus.CounterVec
	providerRequests *prometheus.CounterVec
	providerDuration *prometheus.HistogramVec
	providerRetries  *prometheus.CounterVec
	circuitState     *prometheus.GaugeVec
	failovers        *prometheus.CounterVec
}

// NewMetrics creates dispatch's collectors and registers them with reg:
// notifyd_channel_results_total{channel,status,reason},
// notifyd_provider_requests_total{provider,channel,result} (result is
// success, transient_error or permanent_error),
// notifyd_provider_request_duration_seconds{provider,channel} and
// notifyd_provider_retries_total{provider,channel},
// notifyd_provider_circuit_state{provider,channel} (0 closed, 1 half-open,
// 2 open) and notifyd_provider_failovers_total{provider,channel} (channels
// that moved on from the provider to the next one).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		channelResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_channel_results_total",
			Help: "Channel outcomes of decided commands, by channel, status (sent, rejected, failed) and reason (empty when sent).",
		}, []string{"channel", "status", "reason"}),
		providerRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_provider_requests_total",
			Help: "Provider calls, by provider, channel and result (success, transient_error, permanent_error).",
		}, []string{"provider", "channel", "result"}),
		providerDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "notifyd_provider_request_duration_seconds",
			Help:    "Duration of provider calls, by provider and channel.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"provider", "channel"}),
		providerRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_provider_retries_total",
			Help: "Provider calls that were retries of a failed call, by provider and channel.",
		}, []string{"provider", "channel"}),
		circuitState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "notifyd_provider_circuit_state",
			Help: "State of each provider's circuit breaker: 0 closed, 1 half-open (one trial call), 2 open (no calls; the channel fails over).",
		}, []string{"provider", "channel"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_provider_failovers_total",
			Help: "Channels that moved on from the provider to the channel's next provider (unavailable, circuit open, or an account fault).",
		}, []string{"provider", "channel"}),
	}
	reg.MustRegister(m.channelResults, m.providerRequests, m.providerDuration, m.providerRetries, m.circuitState, m.failovers)
	return m
}

// init creates every series of the known label combinations at zero, so
// that the first failure of a kind is a change rate() sees and the
// dashboard's queries return data on a fresh instance: each channel's
// outcomes (sent; rejected and failed with each of their reasons), and
// each configured provider's requests by result, durations and retries.
func (m *Metrics) init(routes map[schemas.Channel][]*route) {
	if m == nil {
		return
	}
	for _, ch := range schemas.Channels {
		m.channelResults.WithLabelValues(string(ch), string(schemas.StatusSent), "")
		for _, r := range schemas.RejectionReasons() {
			m.channelResults.WithLabelValues(string(ch), string(schemas.StatusRejected), string(r))
		}
		for _, r := range schemas.FailureReasons() {
			m.channelResults.WithLabelValues(string(ch), string(schemas.StatusFailed), string(r))
		}
	}
	for ch, rs := range routes {
		for _, r := range rs {
			for _, result := range []string{"success", "transient_error", "permanent_error"} {
				m.providerRequests.WithLabelValues(r.name, string(ch), result)
			}
			m.providerDuration.WithLabelValues(r.name, string(ch))
			m.providerRetries.WithLabelValues(r.name, string(ch))
			m.circuitState.WithLabelValues(r.name, string(ch)).Set(0)
			m.failovers.WithLabelValues(r.name, string(ch))
		}
	}
}

// circuit records a breaker's new state.
func (m *Metrics) circuit(provider string, ch schemas.Channel, state float64) {
	if m == nil {
		return
	}
	m.circuitState.WithLabelValues(provider, string(ch)).Set(state)
}

// failover records a channel moving on from provider.
func (m *Metrics) failover(provider string, ch schemas.Channel) {
	if m == nil {
		return
	}
	m.failovers.WithLabelValues(provider, string(ch)).Inc()
}

// attempt records one provider call.
func (m *Metrics) attempt(provider string, ch schemas.Channel, n int, took time.Duration, err error) {
	if m == nil {
		return
	}
	result := "success"
	switch {
	case err != nil && IsPermanent(err):
		result = "permanent_error"
	case err != nil:
		result = "transient_error"
	}
	m.providerRequests.WithLabelValues(provider, string(ch), result).Inc()
	m.providerDuration.WithLabelValues(provider, string(ch)).Observe(took.Seconds())
	if n > 1 {
		m.providerRetries.WithLabelValues(provider, string(ch)).Inc()
	}
}

// results records the channel outcomes of a decided command.
func (m *Metrics) results(rs []schemas.ChannelResult) {
	if m == nil {
		return
	}
	for _, r := range rs {
		m.channelResults.WithLabelValues(string(r.Channel), string(r.Status), string(r.Reason)).Inc()
	}
}
