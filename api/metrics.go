package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's collectors: notifyd_api_requests_total{code},
// notifyd_api_request_duration_seconds and notifyd_api_waiting (requests
// waiting for a result now). Labels are bounded: HTTP status codes only.
type metrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	waiting  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_api_requests_total",
			Help: "HTTP API requests answered, by status code.",
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
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.waiting)
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
