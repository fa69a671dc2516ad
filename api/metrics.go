package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's collectors: notifyd_api_requests_total{code},
// notifyd_api_request_duration_seconds, notifyd_api_waiting (requests
// waiting for a result now), notifyd_callbacks_total{provider,result}
// (receipts) and notifyd_api_password_checks_total{result}. Labels are bounded: status codes, providers, results.
type metrics struct {
	requests  *prometheus.CounterVec
	duration  prometheus.Histogram
	waiting   prometheus.Gauge
	callbacks *prometheus.CounterVec
	// passwords counts password checks (Basic, console sign-ins) by
	// result: accepted, refused, throttled (429: failures backing off),
	// busy (503: too many at once).
	passwords *prometheus.CounterVec
}

// answeredCodes are the status codes notifyd_api_requests_total has from
// the start.
var answeredCodes = []int{200, 202, 400, 401, 403, 404, 429, 503}

// The results of password checks.
const (
	passwordAccepted  = "accepted"
	passwordRefused   = "refused"
	passwordThrottled = "throttled"
	passwordBusy      = "busy"
)

// callback records one answered receipt callback.
func (m *metrics) callback(provider, result string) {
	m.callbacks.WithLabelValues(provider, result).Inc()
}

// newMetrics makes the collectors, the callbacks' for each of callbacks
// (provider kinds) at zero.
func newMetrics(reg prometheus.Registerer, callbacks []string) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_api_requests_total",
			Help: "Requests answered on api.listen (the merchant API, the console, the receipt callbacks), by status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "notifyd_api_request_duration_seconds",
			Help:    "Time from an HTTP API request to its answer (a resend includes waiting for its delivery result).",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notifyd_api_waiting",
			Help: "HTTP API requests waiting for their delivery result now (at most api.max_in_flight).",
		}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_callbacks_total",
			Help: "Receipt callbacks answered, by provider (twilio, meta, webhook) and result: accepted, ignored (a status not tracked), foreign_message (about a message another provider account sent: nothing changed), bad_signature (401, nothing published), invalid (400), failed (503, the provider retries).",
		}, []string{"provider", "result"}),
		passwords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_api_password_checks_total",
			Help: "Password checks of Basic requests and console sign-ins, by result: accepted, refused (wrong password or unknown user), throttled (429 unchecked: failed sign-ins of the username or the client are backing off), busy (503 unchecked: too many checks at once).",
		}, []string{"result"}),
	}
	// The codes the dashboard and the alerts read, at zero from the
	// start: a first 401 or 503 is then a change rate() sees.
	for _, code := range answeredCodes {
		m.requests.WithLabelValues(strconv.Itoa(code))
	}
	for _, r := range []string{passwordAccepted, passwordRefused, passwordThrottled, passwordBusy} {
		m.passwords.WithLabelValues(r)
	}
	for _, p := range callbacks {
		for _, r := range callbackResults {
			m.callbacks.WithLabelValues(p, r)
		}
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.waiting, m.callbacks, m.passwords)
	}
	return m
}

// observe records one answered request; status 0 (the client left
// before an answer) is counted as 499, as proxies do.
func (m *metrics) observe(status int, took time.Duration) {
	if status == 0 {
		status = 499
	}
	m.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	m.duration.Observe(took.Seconds())
}
