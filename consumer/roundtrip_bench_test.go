package consumer

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// benchEnv reads a benchmark's size from the environment (scripts/bench
// sets them), def when unset.
func benchEnv(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// BenchmarkRoundTrip: a command's round trip at a fixed rate
// (NOTIFYD_BENCH_RATE commands/s, default 200, for
// NOTIFYD_BENCH_SECONDS, default 10), from its publication to its result
// read from the results topic, with an instant provider; beside it
// (sub-benchmark echo) the same through a raw kafka-go echo that reads each
// command and writes it back to the results topic at once: the least any
// consumer of these topics could do. It reports p50-ms and p99-ms;
// scripts/bench prints notifyd's over the echo's.
func BenchmarkRoundTrip(b *testing.B) {
	rate := benchEnv(b, "NOTIFYD_BENCH_RATE", 200)
	seconds := benchEnv(b, "NOTIFYD_BENCH_SECONDS", 10)
	for _, who := range []string{"echo", "notifyd"} {
		b.Run(who, func(b *testing.B) {
			h := newHarness(b)
			n := rate * seconds
			warm := 20
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if who == "notifyd" {
				events := make([]kafka.Message, 0, n+warm)
				for i := range n + warm {
					s := fmt.Sprintf("sess-%d", i)
					events = append(events, kafka.Message{Key: []byte(s), Value: []byte(fmt.Sprintf(
						`{"event_id":"e-%d","session_id":"%s","state":"paid","timestamp_utc":"2026-11-02T09:00:07Z","customer_email":"c%d@example.com","notifications":{"email":[]}}`, i, s, i))})
				}
				h.produce(h.topics.PaymentEvents, events...)
				h.start(instanceOpts{})
			} else {
				go echo(ctx, h)
			}
			send := func(i int) time.Time {
				s := fmt.Sprintf("sess-%d", i)
				at := time.Now()
				h.produce(h.topics.Commands, kafka.Message{Key: []byte(s), Value: []byte(fmt.Sprintf(
					`{"command_id":"cmd-%d","session_id":"%s","channels":["email"]}`, i, s))})
				return at
			}
			// Warm up: the group joined, connections open.
			for i := n; i < n+warm; i++ {
				send(i)
			}
			h.waitFor("the warm-up results", 2*time.Minute, func() bool {
				for i := n; i < n+warm; i++ {
					if len(h.results[fmt.Sprintf("cmd-%d", i)]) == 0 {
						return false
					}
				}
				return true
			})
			sent := make([]time.Time, n)
			var wg sync.WaitGroup
			tick := time.NewTicker(time.Second / time.Duration(rate))
			defer tick.Stop()
			b.ResetTimer()
			for i := range n {
				<-tick.C
				wg.Add(1)
				go func() {
					defer wg.Done()
					sent[i] = send(i)
				}()
			}
			wg.Wait()
			h.waitFor("every result", 5*time.Minute, func() bool {
				for i := range n {
					if len(h.results[fmt.Sprintf("cmd-%d", i)]) == 0 {
						return false
					}
				}
				return true
			})
			b.StopTimer()
			lat := make([]time.Duration, n)
			h.mu.Lock()
			for i := range n {
				lat[i] = h.results[fmt.Sprintf("cmd-%d", i)][0].at.Sub(sent[i])
			}
			h.mu.Unlock()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[n/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[n*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// echo reads the commands topic in a group of its own and writes each
// command back to the results topic, as a result naming its command_id.
func echo(ctx context.Context, h *harness) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: h.brokers, GroupID: "echo-" + h.topics.Commands, Topic: h.topics.Commands,
		Dialer: h.conn.Dialer(), MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 10 * time.Millisecond, CommitInterval: 100 * time.Millisecond, StartOffset: kafka.FirstOffset})
	defer r.Close()
	w := h.conn.Writer()
	defer w.Close()
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return
		}
		var id string
		if _, err := fmt.Sscanf(string(m.Value), `{"command_id":%q`, &id); err != nil {
			h.t.Errorf("echo: %s: %v", m.Value, err)
			return
		}
		_ = w.WriteMessages(ctx, kafka.Message{Topic: h.topics.Results, Key: m.Key, Value: []byte(fmt.Sprintf(`{"command_id":%q}`, id))})
	}
}

// BenchmarkRestart: the time from an instance's start on a full store
// (NOTIFYD_BENCH_EVENTS transactions, default 200,000, applied by an
// instance before it) to the result of its first command, read from the
// results topic: what a restart costs the first customer. It reports
// first-answer-ms.
func BenchmarkRestart(b *testing.B) {
	n := benchEnv(b, "NOTIFYD_BENCH_EVENTS", 200_000)
	h := newHarness(b)
	const batch = 5000
	msgs := make([]kafka.Message, 0, batch)
	for i := range n {
		s := fmt.Sprintf("sess-%d", i)
		msgs = append(msgs, kafka.Message{Key: []byte(s), Value: []byte(fmt.Sprintf(
			`{"event_id":"e-%d","session_id":"%s","order_no":"o-%d","state":"paid","version":1,"timestamp_utc":"2026-11-02T09:00:07Z","amount":"12.500","currency_code":"KWD","customer_email":"c%d@example.com","customer_phone":"+96550001234","customer_first_name":"Layla","language":"ar","notifications":{"email":[],"sms":["paid"]}}`,
			i, s, i, i))})
		if len(msgs) == batch || i == n-1 {
			h.produce(h.topics.PaymentEvents, msgs...)
			msgs = msgs[:0]
		}
	}
	command := func(id string, session int) {
		s := fmt.Sprintf("sess-%d", session)
		h.produce(h.topics.Commands, kafka.Message{Key: []byte(s), Value: []byte(fmt.Sprintf(
			`{"command_id":%q,"session_id":%q,"channels":["email"]}`, id, s))})
		h.waitFor(id, 10*time.Minute, func() bool { return len(h.results[id]) > 0 })
	}
	dir := b.TempDir()
	first := h.start(instanceOpts{dir: dir, catchUpWait: 10 * time.Minute})
	command("fill", n-1) // answered once every event before it is applied
	first.stop(b)
	b.ResetTimer()
	var total time.Duration
	for i := range b.N {
		start := time.Now()
		in := h.start(instanceOpts{dir: dir})
		command(fmt.Sprintf("first-%d", i), i%n)
		total += time.Since(start)
		b.StopTimer()
		in.stop(b)
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "first-answer-ms")
	b.ReportMetric(0, "ns/op")
}
