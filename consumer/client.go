package consumer

import (
	"context"
	"fmt"
	"slices"
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

// ReadAll reads every record of topic present when it is called (each
// partition from its first offset up to its end as of then) and hands
// them to fn a batch at a time, one partition after the other, in offset
// order. It is how a command-line tool builds what notifyd derives from a
// topic (`notifyd recover` reads the results topic into a store of its own).
func ReadAll(ctx context.Context, conn Conn, topic string, fn func(partition int, batch []kafka.Message) error) error {
	transport := conn.Transport(topic)
	defer transport.CloseIdleConnections()
	offs, err := ListOffsets(ctx, conn.Client(transport), topic)
	if err != nil {
		return err
	}
	dialer := conn.Dialer()
	const batchSize = 1000
	parts := partitionsOf(offs[topic])
	slices.Sort(parts)
	for _, p := range parts {
		o := offs[topic][p]
		if o.First >= o.End {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: conn.Brokers, Dialer: dialer, Topic: topic, Partition: p, MaxWait: 250 * time.Millisecond})
		if err := r.SetOffset(o.First); err != nil {
			r.Close()
			return fmt.Errorf("read %s/%d: %w", topic, p, err)
		}
		batch := make([]kafka.Message, 0, batchSize)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return fmt.Errorf("read %s/%d: %w", topic, p, err)
			}
			batch = append(batch, m)
			last := m.Offset >= o.End-1
			if len(batch) == batchSize || last {
				if err := fn(p, batch); err != nil {
					r.Close()
					return err
				}
				batch = batch[:0]
			}
			if last {
				break
			}
		}
		r.Close()
	}
	return nil
}
