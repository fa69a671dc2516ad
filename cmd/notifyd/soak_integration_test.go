//go:build integration

package main

import (
	"testing"
	"time"
)

// BenchmarkSoakCrash runs the crash test in a loop: each iteration sends
// 500 commands through a 50 ms provider, kills notifyd with SIGKILL after a
// random part of them, restarts it and waits (up to 2 minutes) for every
// result. It reports commands lost (no result) and sends repeated, per
// iteration. Not part of CI:
//
//	NOTIFYD_TEST_BROKERS=$(scripts/kafka-local start | tail -1) \
//	  go test -tags integration -run '^$' -bench SoakCrash -benchtime 20x ./cmd/notifyd/
func BenchmarkSoakCrash(b *testing.B) {
	const n = 500
	var lost, repeated, calls int
	for i := 0; i < b.N; i++ {
		c := newCluster(b, 50*time.Millisecond)
		sessions, ids, cmds := sessionsAndCommands(n, "soak")
		c.events(sessions, "paid", 1)
		dir := b.TempDir()
		p := c.start(procOpts{dir: dir, concurrency: 64, waitForReady: true})
		published := c.publishInBackground(c.topics.Commands, cmds)
		killAt := n/10 + (i*97)%(n/2)
		for c.calls.total() < killAt && p.running() {
			time.Sleep(2 * time.Millisecond)
		}
		p.kill9()
		c.start(procOpts{dir: dir, concurrency: 64})
		<-published
		deadline := time.Now().Add(2 * time.Minute)
		for c.answered(ids) < n && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		lost += n - c.answered(ids)
		repeated += len(c.calls.duplicates())
		calls += c.calls.total()
		c.checkResults(ids)
	}
	b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
	b.ReportMetric(float64(repeated)/float64(b.N), "repeated-sends/op")
	b.ReportMetric(float64(calls)/float64(b.N), "provider-calls/op")
}
