package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/consumer/wmkafka"
	"github.com/notifyd/notifyd/internal/backoff"
	"github.com/notifyd/notifyd/projection"
)

// followBatch is the most records applied to the store in one batch.
const followBatch = 5000

// follower reads every partition of one topic from the offsets stored in the
// projection and applies the records in batches. It is not a group member:
// every instance follows every partition, because every instance keeps the
// whole projection. Partitions are started by Follow, which is called at
// start-up and whenever a high-water-mark round sees a partition not yet
// followed, so partitions added to the topic later are picked up.
type follower struct {
	topic   string
	brokers []string
	dialer  *kafka.Dialer
	client  *kafka.Client
	// stored returns the next offset to read of every partition the store
	// has applied records of; a partition absent starts at the earliest.
	stored func() map[int]int64
	apply  func(partition int, records []projection.Record) error
	fail   func(error)
	// gate waits while the free-space guard pauses (diskGuard.wait).
	gate func(context.Context) error
	log  *slog.Logger

	ctx context.Context
	wg  sync.WaitGroup
	// applied counts the records applied since start.
	applied atomic.Int64

	mu    sync.Mutex
	parts map[int]bool
	// ends is the highest end offset (high-water mark) seen per partition,
	// from fetched records and from high-water-mark rounds.
	ends map[int]int64
}

// noteEnds records end offsets read from the broker. A partition with no
// records (First == End) has nothing to apply: it adds no lag.
func (f *follower) noteEnds(offs map[int]Offsets) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p, o := range offs {
		if o.End > o.First {
			f.noteEndLocked(p, o.End)
		}
	}
}

func (f *follower) noteEndLocked(p int, end int64) {
	if f.ends == nil {
		f.ends = make(map[int]int64)
	}
	if end > f.ends[p] {
		f.ends[p] = end
	}
}

// lag returns the records known to exist that the store has not applied:
// the sum over partitions of lagByPartition.
func (f *follower) lag() int64 {
	var lag int64
	for _, l := range f.lagByPartition() {
		lag += l
	}
	return lag
}

// lagByPartition returns, per partition, the end offset seen minus the next
// offset stored.
func (f *follower) lagByPartition() map[int]int64 {
	next := f.stored()
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[int]int64, len(f.ends))
	for p, end := range f.ends {
		out[p] = max(end-next[p], 0)
	}
	return out
}

// Follow starts readers for the partitions not followed yet.
func (f *follower) Follow(partitions []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.parts == nil {
		f.parts = make(map[int]bool)
	}
	if f.ctx.Err() != nil {
		return
	}
	for _, p := range partitions {
		if f.parts[p] {
			continue
		}
		f.parts[p] = true
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.run(p)
		}()
	}
}

// Wait waits for every partition reader to stop (after the context ends).
func (f *follower) Wait() { f.wg.Wait() }

func (f *follower) run(partition int) {
	log := f.log.With("topic", f.topic, "partition", partition)
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   f.brokers,
		Topic:     f.topic,
		Partition: partition,
		Dialer:    f.dialer,
		MinBytes:  1,
		MaxBytes:  16 << 20,
		// MaxWait bounds Close as well as an idle fetch.
		MaxWait:               250 * time.Millisecond,
		QueueCapacity:         1024,
		OffsetOutOfRangeError: true,
		ErrorLogger:           kafka.LoggerFunc(func(msg string, args ...any) { log.Debug(fmt.Sprintf(msg, args...)) }),
	})
	defer r.Close()
	start := kafka.FirstOffset
	if off, ok := f.stored()[partition]; ok {
		start = off
	}
	if err := r.SetOffset(start); err != nil {
		f.fail(fmt.Errorf("follow %s/%d: set offset %d: %w", f.topic, partition, start, err))
		return
	}
	msgs := make(chan kafka.Message, followBatch)
	go func() {
		defer close(msgs)
		f.fetch(r, partition, msgs, log)
	}()
	batch := make([]projection.Record, 0, followBatch)
	for m := range msgs {
		batch = append(batch[:0], record(m))
		last := m
	drain:
		for len(batch) < followBatch {
			select {
			case m, ok := <-msgs:
				if !ok {
					break drain
				}
				batch = append(batch, record(m))
				last = m
			default:
				break drain
			}
		}
		if f.gate != nil && f.gate(f.ctx) != nil {
			for range msgs {
			}
			return
		}
		if err := f.applyRetrying(partition, batch, log); err != nil {
			f.fail(err)
			// Drain so the fetcher can see the cancelled context.
			for range msgs {
			}
			return
		}
		f.applied.Add(int64(len(batch)))
		f.mu.Lock()
		f.noteEndLocked(partition, last.HighWaterMark)
		f.mu.Unlock()
	}
}

func record(m kafka.Message) projection.Record {
	return projection.Record{Offset: m.Offset, Key: m.Key, Value: m.Value}
}

// applyRetrying applies a batch, retrying a few times: a store that keeps
// failing is fatal, since the projection cannot advance without it.
func (f *follower) applyRetrying(partition int, batch []projection.Record, log *slog.Logger) error {
	var err error
	wait := backoff.Backoff{First: 200 * time.Millisecond, Max: 2 * time.Second}
	for attempt := 0; attempt < 5; attempt++ {
		if err = f.apply(partition, batch); err == nil {
			return nil
		}
		if errors.Is(err, projection.ErrClosed) || f.ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, projection.ErrStoreFailed) {
			// Not worth repeating: the service stops (the store's
			// failure was logged, with its file and the free space).
			return fmt.Errorf("follow %s/%d: %w", f.topic, partition, err)
		}
		log.Error("apply to store failed, retrying", "error", err, "attempt", attempt+1)
		if wait.Wait(f.ctx) != nil {
			return nil
		}
	}
	return fmt.Errorf("follow %s/%d: %w", f.topic, partition, err)
}

func (f *follower) fetch(r *kafka.Reader, partition int, out chan<- kafka.Message, log *slog.Logger) {
	var fetchErrors wmkafka.FetchErrors
	for {
		m, err := r.FetchMessage(f.ctx)
		if err == nil {
			fetchErrors.Succeeded()
			select {
			case out <- m:
				continue
			case <-f.ctx.Done():
				return
			}
		}
		if f.ctx.Err() != nil {
			return
		}
		if errors.Is(err, kafka.OffsetOutOfRange) {
			if ferr := f.recoverOutOfRange(r, partition, log); ferr != nil {
				f.fail(ferr)
				return
			}
			continue
		}
		if !fetchErrors.Failed(f.ctx, time.Now(), func(suppressed int) {
			log.Warn("fetch failed, retrying", "error", err, "failures_not_logged", suppressed)
		}) {
			return
		}
	}
}

// recoverOutOfRange handles a stored offset the log no longer has. Below the
// log start, the records were deleted by retention: resume at the earliest
// offset (nothing of them can be applied any more). Beyond the end, the
// topic was recreated or notifyd points at another cluster: the store does
// not describe this log, and start-up (which checks for this) must rebuild.
func (f *follower) recoverOutOfRange(r *kafka.Reader, partition int, log *slog.Logger) error {
	offs, err := ListOffsets(f.ctx, f.client, f.topic)
	if err != nil {
		return nil // transient: the next fetch retries
	}
	b, ok := offs[f.topic][partition]
	if !ok {
		return fmt.Errorf("follow %s/%d: partition vanished", f.topic, partition)
	}
	cur := r.Offset()
	if cur > b.End {
		return fmt.Errorf("follow %s/%d: stored offset %d is beyond the end of the log (%d): the topic was recreated; stop notifyd and delete store.dir to rebuild", f.topic, partition, cur, b.End)
	}
	log.Warn("records deleted by retention before they were applied; resuming at the earliest offset", "from", cur, "earliest", b.First)
	return r.SetOffset(b.First)
}
