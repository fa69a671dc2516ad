// Package testkit holds the helpers notifyd's tests share, one home each:
// waiting for a condition, a buffer safe for concurrent writers, and
// reading a metric. It is imported by _test.go files only.
package testkit

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// PollEvery is how often Eventually and Until check their condition.
const PollEvery = 10 * time.Millisecond

// Eventually waits until cond holds, checking every PollEvery, and fails tb
// naming what it waited for when timeout passes first. It is for conditions
// nothing announces (a store, a process's /metrics, a peer's records); the
// timeout only stops a hang, it is never the thing tested.
func Eventually(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	Until(tb, timeout, func() error {
		if cond() {
			return nil
		}
		return errors.New("waiting for " + what)
	})
}

// Until is Eventually for a check that says what is still missing: it
// waits until check returns nil, and on timeout fails tb with the last
// error check returned.
func Until(tb testing.TB, timeout time.Duration, check func() error) {
	tb.Helper()
	if err := Poll(timeout, check); err != nil {
		tb.Fatal(err)
	}
}

// Poll is Until for code without a testing.TB (a watermill constructor, a
// goroutine of the test): it returns nil once check does, or, when timeout
// passes first, an error wrapping check's last one.
func Poll(timeout time.Duration, check func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(PollEvery)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("timed out after %s: %w", timeout, err)
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

// NonZero returns the samples of the named counters in g that are not
// zero, as `name{label="value",...} value` lines in the exposition
// format's order.
func NonZero(tb testing.TB, g prometheus.Gatherer, names ...string) []string {
	tb.Helper()
	families, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather metrics: %v", err)
	}
	var out []string
	for _, f := range families {
		if !slices.Contains(names, f.GetName()) {
			continue
		}
		for _, m := range f.GetMetric() {
			v := m.GetCounter().GetValue()
			if v == 0 {
				continue
			}
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			out = append(out, fmt.Sprintf("%s{%s} %g", f.GetName(), strings.Join(labels, ","), v))
		}
	}
	return out
}

func sample(families map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	for _, m := range families[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if maps.Equal(got, labels) {
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
