// Package testkit holds the helpers notifyd's tests share, one home each:
// waiting for a condition, a buffer safe for concurrent writers, and
// reading a metric. It is imported by _test.go files only.
package testkit

import (
	"bytes"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// PollEvery is how often Eventually checks its condition.
const PollEvery = 10 * time.Millisecond

// Eventually waits until cond holds, checking every PollEvery, and fails tb
// naming what it waited for when timeout passes first. It is for conditions
// nothing announces (a store, a process's /metrics, a peer's records); the
// timeout only stops a hang, it is never the thing tested.
func Eventually(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(PollEvery)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads: a
// process's or a logger's output read while it runs.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Metric is the value of the sample of name with exactly labels (nil: no
// labels) in g: a counter's, a gauge's or an untyped sample's; ok is false
// when there is no such sample.
func Metric(tb testing.TB, g prometheus.Gatherer, name string, labels map[string]string) (value float64, ok bool) {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather metrics: %v", err)
	}
	families := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		families[mf.GetName()] = mf
	}
	return sample(families, name, labels)
}

// ScrapedMetric is Metric over a /metrics page in the text format.
func ScrapedMetric(tb testing.TB, page []byte, name string, labels map[string]string) (value float64, ok bool) {
	tb.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(page))
	if err != nil {
		tb.Fatalf("parse /metrics: %v", err)
	}
	return sample(families, name, labels)
}

func sample(families map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	for _, m := range families[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if maps.Equal(got, labels) || len(got) == 0 && len(labels) == 0 {
			return m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// Returns runs f and waits for it to return, failing tb naming what when
// timeout passes first. Like Eventually's, the timeout only stops a hang: a
// test that means "f does not wait for X" makes X take much longer than it.
func Returns(tb testing.TB, what string, timeout time.Duration, f func()) {
	tb.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		tb.Fatalf("%s did not return after %s", what, timeout)
	}
}
