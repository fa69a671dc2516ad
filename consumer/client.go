package consumer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// NewWriter returns a kafka-go Writer configured the way notifyd writes:
// acknowledged by all in-sync replicas (kafka-go defaults to none), batches
// flushed after 1 ms instead of kafka-go's 1 s (a synchronous write would
// otherwise wait a second), keys hashed with murmur2 like the Java client so
// that a key lands on the partition other producers put it on.
func NewWriter(brokers []string, clientID string) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
		WriteTimeout: 10 * time.Second,
		Transport:    &kafka.Transport{ClientID: clientID, DialTimeout: 5 * time.Second},
	}
}

// Follow reads every partition of topic, starting at the end of each
// partition as of the call (fromEnd) or at the beginning, and calls fn for
// each record (from one goroutine at a time) until fn returns false or ctx
// ends. It returns nil when fn stopped it, else the context's error.
func Follow(ctx context.Context, brokers []string, topic string, fromEnd bool, fn func(kafka.Message) bool) error {
	transport := &kafka.Transport{MetadataTopics: []string{topic}}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: transport}
	offs, err := ListOffsets(ctx, client, topic)
	if err != nil {
		return err
	}
	return FollowFrom(ctx, brokers, topic, offs[topic], fromEnd, fn)
}

// FollowFrom is Follow with the partition bounds already known, so that a
// caller can take them before it publishes the record it waits for.
func FollowFrom(ctx context.Context, brokers []string, topic string, offs map[int]Offsets, fromEnd bool, fn func(kafka.Message) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		stopped bool
		wg      sync.WaitGroup
	)
	for p, o := range offs {
		start := o.First
		if fromEnd {
			start = o.End
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 250 * time.Millisecond})
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
