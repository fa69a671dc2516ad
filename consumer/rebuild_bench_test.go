package consumer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/projection"
)

// rebuildPartitions is the partition count of the rebuild benchmark's
// topic, as issue 13 measured it.
const rebuildPartitions = 3

// BenchmarkRebuild measures a store rebuilt from payment-events beside a
// raw read of the same topic in the same run: b.N events of about 1 KB,
// each a new session_id with an order_no, on 3 partitions, are produced
// first (untimed); then
//
//   - raw: a kafka-go Reader per partition in a FetchMessage loop, doing
//     nothing with the records, until every partition's end;
//   - rebuild: notifyd's follower applying them into an empty store, until
//     the store has applied every one.
//
// It reports both rates and rebuild/raw. Run it with a fixed count:
// -benchtime 200000x (then 1000000x, 3000000x).
func BenchmarkRebuild(b *testing.B) {
	h := newHarness(b)
	topic := h.topics.PaymentEvents + "-rebuild"
	if err := EnsureTopics(context.Background(), h.client, []TopicSpec{{Name: topic, Partitions: rebuildPartitions, ReplicationFactor: 1}}, true); err != nil {
		b.Fatal(err)
	}
	produceRebuildEvents(b, h, topic, b.N)
	offs, err := ListOffsets(context.Background(), h.client, topic)
	if err != nil {
		b.Fatal(err)
	}
	ends := map[int]int64{}
	for p, o := range offs[topic] {
		ends[p] = o.End
	}
	b.ResetTimer()

	rawStart, rawCPU := time.Now(), cpuTime(b)
	n := rawRead(b, h, topic, ends)
	raw, rawCPU := time.Since(rawStart), cpuTime(b)-rawCPU
	if n != int64(b.N) {
		b.Fatalf("raw read %d records, want %d", n, b.N)
	}

	dir := b.TempDir()
	store, err := projection.Open(dir, projection.Options{EventsTopic: topic, ResultsTopic: h.topics.Results})
	if err != nil {
		b.Fatal(err)
	}
	// Whichever store is open at the end (Close is idempotent), before
	// TempDir's removal, which was registered earlier and so runs later.
	b.Cleanup(func() { _ = store.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &follower{topic: topic, brokers: h.brokers, dialer: h.conn.Dialer(), client: h.client,
		stored: store.EventOffsets, fail: func(err error) { b.Error(err) }, log: slog.New(slog.DiscardHandler), ctx: ctx,
		apply: func(p int, r []projection.Record) error {
			_, err := store.ApplyEvents(p, r)
			return err
		}}
	start, rebuildCPU := time.Now(), cpuTime(b)
	f.Follow(partitionsOf(offs[topic]))
	if err := store.WaitEvents(ctx, ends); err != nil {
		b.Fatal(err)
	}
	rebuild, rebuildCPU := time.Since(start), cpuTime(b)-rebuildCPU
	b.StopTimer()

	cancel()
	f.Wait()
	if got := store.Transactions(); got != int64(b.N) {
		b.Fatalf("projection holds %d transactions, want %d", got, b.N)
	}
	rawRate, rebuildRate := float64(b.N)/raw.Seconds(), float64(b.N)/rebuild.Seconds()
	b.ReportMetric(rawRate, "raw-events/s")
	b.ReportMetric(rebuildRate, "rebuild-events/s")
	b.ReportMetric(rebuildRate/rawRate, "rebuild/raw")
	// CPU time of this process (user and system) per event: what bounds
	// the rates on a machine whose cores are all busy.
	b.ReportMetric(float64(rawCPU.Nanoseconds())/float64(b.N)/1000, "raw-cpu-us/event")
	b.ReportMetric(float64(rebuildCPU.Nanoseconds())/float64(b.N)/1000, "rebuild-cpu-us/event")
	b.ReportMetric(0, "ns/op") // the rates above are the figures

	// What the issue also asks of a full store: the process's resident
	// memory once the garbage is returned, the store's size on disk beside
	// the payment events it holds, and a restart (Open, then the time until
	// the session filter is filled in the background).
	goruntime.GC()
	debug.FreeOSMemory()
	b.ReportMetric(float64(residentBytes(b))/(1<<20), "rss-MB")
	if err := store.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(dirBytes(b, dir))/float64(int64(b.N)*rebuildEventBytes), "disk/events")
	filled := make(chan time.Time, 1)
	logger := slog.New(handlerFunc(func(r slog.Record) {
		if r.Message == projection.SessionFilterFilled {
			filled <- time.Now()
		}
	}))
	start = time.Now()
	store, err = projection.Open(dir, projection.Options{EventsTopic: topic, ResultsTopic: h.topics.Results, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "reopen-ms")
	select {
	case at := <-filled:
		b.ReportMetric(float64(at.Sub(start).Microseconds())/1000, "filter-filled-ms")
	case <-time.After(time.Minute):
		b.Error("session filter not filled within a minute")
	}
}

// rebuildEventBytes is the size of each event produceRebuildEvents writes
// (its key aside), give or take the digits of its counters.
const rebuildEventBytes = 1024

// cpuTime returns the CPU time this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// residentBytes reads this process's resident set size.
func residentBytes(b *testing.B) int64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// dirBytes sums the sizes of the files under dir.
func dirBytes(b *testing.B, dir string) int64 {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		total += info.Size()
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return total
}

// handlerFunc is a slog.Handler calling a function with every record.
type handlerFunc func(slog.Record)

func (h handlerFunc) Enabled(context.Context, slog.Level) bool { return true }
func (h handlerFunc) Handle(_ context.Context, r slog.Record) error {
	h(r)
	return nil
}
func (h handlerFunc) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h handlerFunc) WithGroup(string) slog.Handler      { return h }

// produceRebuildEvents writes n payment events of about 1 KB, keyed by
// their session_id, with several writers at once.
func produceRebuildEvents(b *testing.B, h *harness, topic string, n int) {
	b.Helper()
	// The padding is hex digits, which compress about as badly as real
	// customer data (a run of one letter would flatter the store's size).
	const writers, batch = 4, 2000
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wr := h.conn.Writer()
			wr.BatchSize, wr.BatchBytes = batch, 16<<20
			defer wr.Close()
			msgs := make([]kafka.Message, 0, batch)
			for {
				start := next.Add(batch) - batch
				if start >= int64(n) {
					return
				}
				msgs = msgs[:0]
				for i := start; i < min(start+batch, int64(n)); i++ {
					s := fmt.Sprintf("sess-%09d", i)
					msgs = append(msgs, kafka.Message{Topic: topic, Key: []byte(s), Value: []byte(fmt.Sprintf(
						`{"event_id":"e-%d","session_id":"%s","order_no":"o-%09d","state":"paid","version":1,"timestamp_utc":"2026-11-02T09:00:07Z","amount":"12.500","currency_code":"KWD","customer_email":"c%d@example.com","customer_phone":"+96550001234","customer_first_name":"Layla","customer_last_name":"Al-Sabah","language":"ar","notifications":{"email":[],"sms":["paid"],"whatsapp":["paid"]},"merchant_reference":"%s"}`,
						i, s, i, i, rebuildPad(i)))})
				}
				if err := wr.WriteMessages(context.Background(), msgs...); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// rebuildPad returns 560 hex digits derived from i, which makes an event
// rebuildEventBytes long.
func rebuildPad(i int64) string {
	var pad []byte
	for j := uint64(0); len(pad) < 560; j++ {
		sum := sha256.Sum256(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(i)), j))
		pad = hex.AppendEncode(pad, sum[:])
	}
	return string(pad[:560])
}

// rawRead reads every partition of topic up to ends with a kafka-go Reader
// each, as fast as FetchMessage returns, and returns the records read.
func rawRead(b *testing.B, h *harness, topic string, ends map[int]int64) int64 {
	b.Helper()
	var total atomic.Int64
	var wg sync.WaitGroup
	for p, end := range ends {
		if end == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: h.brokers, Topic: topic, Partition: p, Dialer: h.conn.Dialer(),
				MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 250 * time.Millisecond, QueueCapacity: 1024})
			defer r.Close()
			if err := r.SetOffset(kafka.FirstOffset); err != nil {
				b.Error(err)
				return
			}
			for {
				m, err := r.FetchMessage(context.Background())
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						b.Error(err)
					}
					return
				}
				total.Add(1)
				if m.Offset >= end-1 {
					return
				}
			}
		}()
	}
	wg.Wait()
	return total.Load()
}
