package consumer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Follow reads every partition of topic, starting at the end of each
// partition as of the call (fromEnd) or at the beginning, and calls fn for
// each record (from one goroutine at a time) until fn returns false or ctx
// ends. It returns nil when fn stopped it, else the context's error.
func Follow(ctx context.Context, conn Conn, topic string, fromEnd bool, fn func(kafka.Message) bool) error {
	transport := conn.Transport(topic)
	defer transport.CloseIdleConnections()
	offs, err := ListOffsets(ctx, conn.Client(transport), topic)
	if err != nil {
		return err
	}
	return FollowFrom(ctx, conn, topic, offs[topic], fromEnd, fn)
}

// FollowFrom is Follow with the partition bounds already known, so that a
// caller can take them before it publishes the record it waits for.
func FollowFrom(ctx context.Context, conn Conn, topic string, offs map[int]Offsets, fromEnd bool, fn func(kafka.Message) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		stopped bool
		wg      sync.WaitGroup
	)
	dialer := conn.Dialer()
	for p, o := range offs {
		start := o.First
		if fromEnd {
			start = o.End
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: conn.Brokers, Dialer: dialer, Topic: topic, Partition: p, MaxWait: 250 * time.Millisecond})
		if err := r.SetOffset(start); err != nil {
			r.Close()
			return fmt.Errorf("follow %s/%d: %w", topic, p, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				if !stopped && !fn(m) {
					stopped = true
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if stopped {
		return nil
	}
	return ctx.Err()
}
