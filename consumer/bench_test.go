package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// BenchmarkProjectionApply measures how fast a follower applies payment
// events from the broker to the store: b.N events are produced first
// (untimed), then the timer runs from the follower's start until the store
// has applied every one. Run it with a fixed count, e.g.
// -benchtime 200000x; it reports events/s.
func BenchmarkProjectionApply(b *testing.B) {
	h := newHarness(b)
	const batch = 1000
	msgs := make([]kafka.Message, 0, batch)
	for i := 0; i < b.N; i++ {
		s := fmt.Sprintf("sess-%d", i)
		msgs = append(msgs, kafka.Message{Key: []byte(s), Value: []byte(fmt.Sprintf(
			`{"event_id":"e-%d","session_id":"%s","order_no":"o-%d","state":"paid","version":1,"timestamp_utc":"2026-11-02T09:00:07Z","amount":"12.500","currency_code":"KWD","customer_email":"c%d@example.com","customer_phone":"+96550001234","customer_first_name":"Layla","language":"ar","notifications":{"email":[],"sms":["paid"]}}`,
			i, s, i, i))})
		if len(msgs) == batch || i == b.N-1 {
			h.produce(h.topics.PaymentEvents, msgs...)
			msgs = msgs[:0]
		}
	}
	store, err := projection.Open(b.TempDir(), projection.Options{EventsTopic: h.topics.PaymentEvents, ResultsTopic: h.topics.Results})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	offs, err := ListOffsets(ctx, h.client, h.topics.PaymentEvents)
	if err != nil {
		b.Fatal(err)
	}
	ends := map[int]int64{}
	for p, o := range offs[h.topics.PaymentEvents] {
		ends[p] = o.End
	}
	f := &follower{topic: h.topics.PaymentEvents, brokers: h.brokers, dialer: h.conn.Dialer(), client: h.client,
		stored: store.EventOffsets, fail: func(err error) { b.Error(err) }, log: slog.New(slog.DiscardHandler), ctx: ctx,
		apply: func(p int, r []projection.Record) error {
			_, err := store.ApplyEvents(p, r)
			return err
		}}
	b.ResetTimer()
	start := time.Now()
	f.Follow(partitionsOf(offs[h.topics.PaymentEvents]))
	if err := store.WaitEvents(ctx, ends); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	f.Wait()
	if got := store.Transactions(); got != int64(b.N) {
		b.Fatalf("projection holds %d transactions, want %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

// BenchmarkCommands100ms measures command throughput of one instance when
// every provider call takes 100 ms: b.N commands (one channel each, each on
// its own transaction) are published and the timer runs until every result
// is on the results topic. Run it with e.g. -benchtime 2000x; it reports
// commands/s.
func BenchmarkCommands100ms(b *testing.B) {
	h := newHarness(b)
	p := newRecordingProvider()
	p.delay = 100 * time.Millisecond
	h.start(instanceOpts{provider: p})
	events := make([]kafka.Message, 0, b.N)
	cmds := make([]kafka.Message, 0, b.N)
	for i := 0; i < b.N; i++ {
		s := fmt.Sprintf("sess-%d", i)
		events = append(events, kafka.Message{Key: []byte(s), Value: []byte(fmt.Sprintf(
			`{"event_id":"e-%d","session_id":"%s","state":"paid","timestamp_utc":"2026-11-02T09:00:07Z","customer_email":"c%d@example.com","notifications":{"email":[]}}`, i, s, i))})
		cmds = append(cmds, kafka.Message{Key: []byte(s), Value: []byte(fmt.Sprintf(
			`{"command_id":"cmd-%d","session_id":"%s","channels":["email"]}`, i, s))})
	}
	h.produce(h.topics.PaymentEvents, events...)
	b.ResetTimer()
	start := time.Now()
	h.produce(h.topics.Commands, cmds...)
	h.waitFor("every result", 10*time.Minute, func() bool { return len(h.results) == b.N })
	elapsed := time.Since(start)
	b.StopTimer()
	h.mu.Lock()
	for id, rs := range h.results {
		if rs[0].result.Outcome != schemas.OutcomeNotified {
			b.Errorf("%s: %s", id, rs[0].msg.Value)
		}
	}
	h.mu.Unlock()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commands/s")
}
