package projection

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/notifyd/notifyd/schemas"
)

// Key prefixes of the store. Offsets are kept per topic name so that a
// change of topic in the configuration starts that topic from the beginning.
const (
	prefixHead          = "a/" // a/<session_id> -> version, order_no, merchant_id and listing time of its snapshot (see encodeHead)
	prefixTxn           = "t/" // t/<session_id> -> its snapshot: the payment event decoded (see snapshot.go)
	prefixOrder         = "o/" // o/<order_no> -> session_id, merchant default's (see orderKey)
	prefixMerchantOrder = "O/" // O/<merchant_id>/<order_no> -> session_id, another merchant's
	prefixEventOffset   = "p/" // p/<topic>/<partition BE32> -> next offset BE64
	prefixPending       = "l/" // l/<command_id> -> a result recorded here, not yet read back from the topic
	prefixResult        = "r/" // r/<command_id> -> the first delivery result of the command on the topic
	prefixResultOffset  = "q/" // q/<topic>/<partition BE32> -> next offset BE64
	keyTxnCount         = "m/transactions"
	// keyProjectionVersion is the layout of the t/ entries: absent or 1,
	// the head in front of the event's JSON; 2, the head in its own a/
	// entry and the event in snapshot.go's binary form.
	keyProjectionVersion = "m/projection-version"
	projectionVersion    = 2
)

// Record is one log record handed to the store: its offset, key and value.
type Record struct {
	Offset int64
	Key    []byte
	Value  []byte
}

// Options configures a Store.
type Options struct {
	// EventsTopic and ResultsTopic name the topics whose offsets are
	// stored. They are part of the offset keys.
	EventsTopic  string
	ResultsTopic string
	// DeliveriesTopic names the topic of delivery events, whose offsets
	// are stored; empty: ApplyDeliveries is an error.
	DeliveriesTopic string
	// SessionsTopic names the console-sessions topic, whose offsets are
	// stored; empty: ApplySessionEnds is an error.
	SessionsTopic string
	// MerchantsTopic names the merchant-settings topic, whose offsets are
	// stored; empty: ApplyMerchantSettings is an error.
	MerchantsTopic string
	// Logger receives the store's own log lines; nil discards them.
	Logger *slog.Logger
	// OnError, when set, is told of every failed store operation (its op,
	// as in StoreError) and of Pebble's background errors (flush,
	// compaction), as they happen.
	OnError func(op string, err error)
	// FS is the filesystem the store lives on; nil is the operating
	// system's. Tests inject faults through it (vfs/errorfs).
	FS vfs.FS
	// Reject, when set, is told of each payment event refused with a
	// reason (RejectMerchantMismatch) while its batch is applied, before
	// the batch commits: an error fails the batch (nothing of it is
	// applied; the caller retries it), so a refusal is never lost behind
	// a stored offset. Nil refuses with a log line only.
	Reject func(partition int, r Record, reason, detail string) error
}

// reject tells Reject of a refused record.
func (o *Options) reject(partition int, r Record, reason, detail string) error {
	if o.Reject == nil {
		return nil
	}
	if err := o.Reject(partition, r, reason, detail); err != nil {
		return fmt.Errorf("refuse record at offset %d (%s): %w", r.Offset, reason, err)
	}
	return nil
}

// Store is the local projection. All methods are safe for concurrent use;
// Apply calls for the same topic partition must not run concurrently.
type Store struct {
	db   *pebble.DB
	opts Options
	log  *slog.Logger
	// health is the database's failure, once it failed (failure.go).
	health *failure
	// abandoned are the batches commit gave up on when the database
	// failed: release must not close them.
	abandonMu sync.Mutex
	abandoned map[*pebble.Batch]bool

	// commitMu orders the commits of payment-event batches, which carry
	// the transaction count.
	commitMu sync.Mutex

	mu            sync.Mutex
	eventOffsets  map[int]int64
	resultOffsets map[int]int64
	// deliveryOffsets are the deliveries topic's (see deliveries.go),
	// sessionOffsets the console-sessions topic's (sessions.go).
	deliveryOffsets map[int]int64
	sessionOffsets  map[int]int64
	// merchantOffsets are the merchant-settings topic's (merchants.go).
	merchantOffsets map[int]int64
	txnCount        int64
	changed         chan struct{}
	closed          bool

	// sessions spares reading the store for events of new sessions (see
	// sessionFilter); fillDone is closed when its background fill ends,
	// which stopFill asks for early.
	sessions *sessionFilter
	stopFill chan struct{}
	fillDone chan struct{}
}

// Open opens (creating if needed) the store in dir and loads its offsets.
func Open(dir string, opts Options) (*Store, error) {
	if opts.EventsTopic == "" || opts.ResultsTopic == "" {
		return nil, errors.New("open store: EventsTopic and ResultsTopic are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	health := newFailure(dir, log, opts.OnError)
	popts := pebbleOptions(log, health)
	if opts.FS != nil {
		popts.FS = opts.FS
	}
	db, err := pebble.Open(dir, popts)
	// Open took its own reference to the cache.
	popts.Cache.Unref()
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if err := health.current(); err != nil {
		// A write of the manifest or the log failed while opening: the
		// database cannot be used (nor closed: see Close).
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s := &Store{db: db, opts: opts, log: log, health: health, changed: make(chan struct{})}
	if s.eventOffsets, err = s.loadOffsets(prefixEventOffset, opts.EventsTopic); err == nil {
		s.resultOffsets, err = s.loadOffsets(prefixResultOffset, opts.ResultsTopic)
	}
	if err == nil {
		s.deliveryOffsets, err = s.loadOffsets(prefixDeliveryOffset, opts.DeliveriesTopic)
	}
	if err == nil {
		s.sessionOffsets, err = s.loadOffsets(prefixSessionOffset, opts.SessionsTopic)
	}
	if err == nil {
		s.merchantOffsets, err = s.loadOffsets(prefixMerchantOffset, opts.MerchantsTopic)
	}
	if err == nil {
		s.txnCount, err = s.getInt(keyTxnCount)
	}
	if err == nil {
		err = s.upgradeHistory()
	}
	if err == nil {
		err = s.upgradeProjection()
	}
	if err == nil {
		err = s.upgradeCounts()
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s.sessions = newSessionFilter()
	s.stopFill, s.fillDone = make(chan struct{}), make(chan struct{})
	go s.fillSessions()
	return s, nil
}

// fillSessions adds every session with a head in the store to the session
// filter, then marks it complete. Heads written meanwhile are added by
// ApplyEvents itself, so none is missed: the scan reads the store as it was
// when it started. About 0.6 s for 3 M sessions on 2 cores; until then
// every event reads its head, as without the filter.
func (s *Store) fillSessions() {
	defer close(s.fillDone)
	start := time.Now()
	upper := []byte(prefixHead)
	upper[len(upper)-1]++
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefixHead), UpperBound: upper})
	if err != nil {
		s.log.Warn("store: session filter not built; every event reads its head", "error", err)
		return
	}
	defer it.Close()
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if n++; n%4096 == 0 {
			select {
			case <-s.stopFill:
				return
			default:
			}
		}
		s.sessions.Add(it.Key()[len(prefixHead):])
	}
	if err := it.Error(); err != nil {
		s.log.Warn("store: session filter not built; every event reads its head", "error", err)
		return
	}
	s.sessions.complete.Store(true)
	s.log.Info(SessionFilterFilled, "sessions", n, "filter_bytes", s.sessions.Bytes(), "took", time.Since(start).Round(time.Millisecond))
}

// SessionFilterFilled is the message the store logs, at Info, when its
// session filter is complete after Open.
const SessionFilterFilled = "store: session filter filled"

// upgradeHistory makes a store whose history index does not cover the
// results it applied (one written before the index existed) read the
// results topic again from the start: the idempotency table keeps what it
// has, the index is built from the same records.
func (s *Store) upgradeHistory() error {
	v, err := s.getInt(keyHistoryVersion)
	if err != nil || v >= historyVersion {
		return err
	}
	b := s.db.NewBatch()
	defer s.release(b)
	if len(s.resultOffsets) > 0 {
		lower := offsetKey(prefixResultOffset, s.opts.ResultsTopic, 0)
		lower = lower[:len(lower)-4]
		upper := append([]byte(nil), lower...)
		upper[len(upper)-1]++
		if err := b.DeleteRange(lower, upper, nil); err != nil {
			return err
		}
		s.log.Info("store: building the history index: the results topic is read again from its start")
		s.resultOffsets = map[int]int64{}
	}
	if err := b.Set([]byte(keyHistoryVersion), binary.BigEndian.AppendUint64(nil, historyVersion), nil); err != nil {
		return err
	}
	return s.commit("upgrade", b, pebble.Sync)
}

// upgradeProjection rewrites every snapshot written by projection version 1
// (version and order_no in front of the event's JSON) as a head in its own
// a/ entry and the binary snapshot, once, in batches (an upgrade stopped
// half-way resumes); the offsets are untouched, so nothing is read again
// from the topic.
func (s *Store) upgradeProjection() error {
	v, err := s.getInt(keyProjectionVersion)
	if err != nil || v >= projectionVersion {
		return err
	}
	upper := []byte(prefixTxn)
	upper[len(upper)-1]++
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefixTxn), UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	b := s.db.NewBatch()
	defer func() { s.release(b) }()
	moved := 0
	for it.First(); it.Valid(); it.Next() {
		if _, err := decodeSnapshot(it.Value()); err == nil {
			// Converted by an upgrade that stopped before its end (its head
			// was written in the same batch). A version-1 value starts with
			// a big-endian version, never with snapshotTag.
			continue
		}
		version, orderNo, raw, err := decodeHead(it.Value())
		if err != nil {
			return fmt.Errorf("upgrade snapshot %q: %w", it.Key(), err)
		}
		sid := it.Key()[len(prefixTxn):]
		ev, err := schemas.DecodePaymentEvent(raw)
		if err != nil {
			return fmt.Errorf("upgrade snapshot of session %s (delete store.dir to rebuild it from the topics): %w", sid, err)
		}
		snap, err := encodeSnapshot(&ev)
		if err != nil {
			return err
		}
		at := recentAt(&ev)
		if err := b.Set(append([]byte(prefixHead), sid...), encodeHead(version, orderNo, ev.MerchantID, at), nil); err != nil {
			return err
		}
		if err := listRecent(b, ev.MerchantID, at, string(sid)); err != nil {
			return err
		}
		if err := b.Set(it.Key(), snap, nil); err != nil {
			return err
		}
		if moved++; moved%10000 == 0 {
			if err := s.commit("upgrade", b, pebble.NoSync); err != nil {
				return err
			}
			b.Close()
			b = s.db.NewBatch()
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	if moved > 0 {
		s.log.Info("store: snapshot heads moved to their own entries", "transactions", moved)
	}
	if err := b.Set([]byte(keyProjectionVersion), binary.BigEndian.AppendUint64(nil, projectionVersion), nil); err != nil {
		return err
	}
	return s.commit("upgrade", b, pebble.Sync)
}

// Close flushes and closes the store. Waiters are released with an error.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.changed)
	s.mu.Unlock()
	close(s.stopFill)
	<-s.fillDone
	if err := s.Err(); err != nil {
		// Flush and Close would wait behind the failed commit for good; the
		// process is about to exit, which releases the files. What was
		// written before the failure is in the log: the next Open replays
		// it.
		return fmt.Errorf("close store: not flushed: %w", err)
	}
	if err := s.db.Flush(); err != nil {
		_ = s.db.Close()
		return fmt.Errorf("close store: flush: %w", err)
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// commit commits b: the one place the store writes. A store whose database
// failed refuses at once (a commit would wait behind the failed one for
// good), and a commit during which it failed is a failed write even though
// Pebble returned nil (see pebbleLogger.Fatalf). Errors are reported as
// *StoreError with op.
func (s *Store) commit(op string, b *pebble.Batch, opts *pebble.WriteOptions) error {
	if err := s.Err(); err != nil {
		return s.health.report(op, err)
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return &StoreError{Op: op, Err: ErrClosed}
	}
	done := make(chan error, 1)
	go func() { done <- b.Commit(opts) }()
	var err error
	select {
	case err = <-done:
	case <-s.health.ch:
		// The database failed while b was in its commit pipeline, where it
		// may wait for good behind the failed batch: b is given up (never
		// closed: Pebble may still hold it), and the caller is answered
		// now, so that it can publish what it decided and stop.
		select {
		case err = <-done:
		default:
			s.abandonMu.Lock()
			if s.abandoned == nil {
				s.abandoned = make(map[*pebble.Batch]bool)
			}
			s.abandoned[b] = true
			s.abandonMu.Unlock()
		}
	}
	if ferr := s.Err(); ferr != nil {
		err = ferr
	}
	if err != nil {
		return s.health.report(op, err)
	}
	return nil
}

// release closes b unless commit gave it up (see commit).
func (s *Store) release(b *pebble.Batch) {
	s.abandonMu.Lock()
	gone := s.abandoned[b]
	delete(s.abandoned, b)
	s.abandonMu.Unlock()
	if !gone {
		_ = b.Close()
	}
}

// pebbleOptions tunes Pebble for the projection's access pattern: every
// applied event first looks up its session_id, which for a new transaction
// is a miss, so bloom filters on every level spare the block reads; a
// larger memtable and cache absorb a rebuild of hundreds of thousands of
// events without stalling on flushes.
func pebbleOptions(log *slog.Logger, health *failure) *pebble.Options {
	opts := &pebble.Options{
		Logger: pebbleLogger{log: log, health: health},
		EventListener: &pebble.EventListener{
			// Flushes and compactions that fail are retried by Pebble: the
			// store works again once the disk has room; each failure is
			// counted (store errors) and logged.
			BackgroundError: func(err error) {
				_ = health.report("background", err)
				log.Warn("store: background flush or compaction failed (retried)", "error", err, "disk_full", DiskFull(err))
			},
		},
		Cache:        pebble.NewCache(64 << 20),
		MemTableSize: 64 << 20,
		Levels:       make([]pebble.LevelOptions, 7),
	}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		opts.Levels[i].FilterType = pebble.TableFilter
	}
	return opts.EnsureDefaults()
}

func offsetKey(prefix, topic string, partition int) []byte {
	k := make([]byte, 0, len(prefix)+len(topic)+5)
	k = append(k, prefix...)
	k = append(k, topic...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint32(k, uint32(partition))
}

func (s *Store) loadOffsets(prefix, topic string) (map[int]int64, error) {
	lower := offsetKey(prefix, topic, 0)
	lower = lower[:len(lower)-4]
	upper := append([]byte(nil), lower...)
	upper[len(upper)-1]++ // '/' -> '0'
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("load offsets of %s: %w", topic, err)
	}
	defer it.Close()
	out := make(map[int]int64)
	for it.First(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != len(lower)+4 || len(v) != 8 {
			return nil, fmt.Errorf("load offsets of %s: corrupt entry %q", topic, k)
		}
		out[int(binary.BigEndian.Uint32(k[len(lower):]))] = int64(binary.BigEndian.Uint64(v))
	}
	return out, it.Error()
}

func (s *Store) getInt(key string) (int64, error) {
	v, closer, err := s.db.Get([]byte(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("corrupt %s", key)
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// EventOffsets returns, per payment-events partition, the next offset to
// read. A partition absent from the map has never been read: start it at
// the earliest offset.
func (s *Store) EventOffsets() map[int]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.eventOffsets)
}

// ResultOffsets is EventOffsets for the results topic.
func (s *Store) ResultOffsets() map[int]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.resultOffsets)
}

// Transactions returns the number of transactions in the projection.
func (s *Store) Transactions() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.txnCount
}

// Changed returns a channel that is closed the next time the store applies a
// batch (or is closed). Call it again for the next change.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// ErrClosed is returned by waits when the store is closed.
var ErrClosed = errors.New("projection store closed")

// WaitEvents blocks until, for every partition in hwm, the next offset to
// read from payment-events is at least hwm[partition] (the high-water mark:
// every record below it has been applied), or ctx ends.
func (s *Store) WaitEvents(ctx context.Context, hwm map[int]int64) error {
	return s.wait(ctx, hwm, func() map[int]int64 { return s.eventOffsets })
}

// WaitResults is WaitEvents for the results topic.
func (s *Store) WaitResults(ctx context.Context, hwm map[int]int64) error {
	return s.wait(ctx, hwm, func() map[int]int64 { return s.resultOffsets })
}

func (s *Store) wait(ctx context.Context, hwm map[int]int64, offsets func() map[int]int64) error {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		done := true
		cur := offsets()
		for p, h := range hwm {
			if h > 0 && cur[p] < h {
				done = false
				break
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for projection to catch up: %w", context.Cause(ctx))
		case <-ch:
		}
	}
}

// publish records new offsets in memory and wakes waiters. Called after a
// batch has been committed.
func (s *Store) publish(offsets map[int]int64, partition int, next int64, txnDelta int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	offsets[partition] = next
	s.txnCount += txnDelta
	close(s.changed)
	s.changed = make(chan struct{})
}

// pebbleLogger routes Pebble's log lines to slog, and its fatal errors to
// the store's failure.
type pebbleLogger struct {
	log    *slog.Logger
	health *failure
}

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf is Pebble's word that its database cannot go on: a write of its
// log or manifest failed. The store is marked failed (every later write is
// refused, the failure logged once with the file and the free space) and
// nothing panics:
//   - a failed commit returns to the committing goroutine, inside
//     Store.commit, which sees the failure and reports the write as failed
//     (Pebble would return nil after Fatalf);
//   - any other caller (a flush or compaction writing the manifest) is
//     parked for good, so that Pebble does nothing more on disk (it would
//     otherwise go on as if the manifest were written, and delete files it
//     still names); the process stops soon after (Failed).
func (l pebbleLogger) Fatalf(format string, args ...any) {
	err := fmt.Errorf(format, args...)
	op := "fatal"
	if strings.HasPrefix(format, "pebble: fatal commit error") {
		op = "commit"
	}
	// Counted before Failed is closed: whoever sees the failure sees it
	// reported (notifyd_store_errors_total{op}).
	_ = l.health.report(op, err)
	l.health.fail(op, err)
	if op == "commit" {
		return
	}
	select {}
}

func getCopy(r interface {
	Get([]byte) ([]byte, io.Closer, error)
}, key []byte) ([]byte, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	return out, true, closer.Close()
}

// Digest returns a SHA-256 over the projection, the history index and the
// idempotency table (every snapshot, order_no mapping, recent-transactions
// entry, history entry, channel state, needs-attention entry, last send,
// correlation, delivery status, console sessions' end and result, in key
// order), leaving out
// offsets and counters. A result recorded here and not yet read back from
// the topic counts as if it had been (it is the one the topic will hold,
// unless another instance's came first). Two stores that applied the same
// records have the same digest, however they got there: it is how the
// tests show that a store rebuilt from the topics equals the one lost.
func (s *Store) Digest() (string, error) {
	h := sha256.New()
	write := func(k, v []byte) {
		for _, b := range [][]byte{k, v} {
			_ = binary.Write(h, binary.BigEndian, uint32(len(b)))
			h.Write(b)
		}
	}
	for _, prefix := range []string{prefixHead, prefixTxn, prefixOrder, prefixMerchantOrder, prefixRecent, prefixHistory, prefixChannel, prefixAttention, prefixSent,
		prefixCorrelation, prefixDelivery, prefixSessionEnd, prefixMerchantSettings} {
		if err := s.scan(prefix, func(k, v []byte) { write(k, v) }); err != nil {
			return "", fmt.Errorf("digest: %w", err)
		}
	}
	// Results: the topic's, merged in command_id order with the pending
	// ones that have none.
	var pending [][2][]byte
	if err := s.scan(prefixPending, func(k, v []byte) {
		pending = append(pending, [2][]byte{[]byte(prefixResult + string(k[len(prefixPending):])), bytes.Clone(v)})
	}); err != nil {
		return "", fmt.Errorf("digest: %w", err)
	}
	i := 0
	if err := s.scan(prefixResult, func(k, v []byte) {
		for ; i < len(pending) && bytes.Compare(pending[i][0], k) < 0; i++ {
			write(pending[i][0], pending[i][1])
		}
		if i < len(pending) && bytes.Equal(pending[i][0], k) {
			i++ // the topic's result supersedes it
		}
		write(k, v)
	}); err != nil {
		return "", fmt.Errorf("digest: %w", err)
	}
	for ; i < len(pending); i++ {
		write(pending[i][0], pending[i][1])
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// scan calls fn for every key with prefix, in key order.
func (s *Store) scan(prefix string, fn func(k, v []byte)) error {
	upper := []byte(prefix)
	upper[len(upper)-1]++
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: upper})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		fn(it.Key(), it.Value())
	}
	return it.Close()
}
