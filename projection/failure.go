package projection

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"syscall"
)

// ErrStoreFailed is the error of every write to a store whose database
// failed (a write to its log or manifest did not complete: a full disk, an
// I/O error). Pebble cannot be written again after such a failure (its
// commit pipeline stops at the failed batch), so the store refuses every
// later write at once rather than queueing behind it. Reads keep working on
// what was written before. Only a new process (a restart, once the disk has
// room) can open the store again: see Failed.
var ErrStoreFailed = errors.New("store failed: it cannot be written again in this process")

// StoreError is a store operation that failed: Op names it (apply_events,
// apply_results, apply_deliveries, apply_sessions, record_result,
// record_delivery, record_session_end, flush, compaction, ...), Err is the
// cause, ErrStoreFailed among them once the database failed.
type StoreError struct {
	Op  string
	Err error
}

func (e *StoreError) Error() string { return "store " + e.Op + ": " + e.Err.Error() }
func (e *StoreError) Unwrap() error { return e.Err }

// DiskFull reports whether err says the filesystem has no room left
// (ENOSPC, or EDQUOT: a quota reached).
func DiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		// Pebble reports a fatal commit error as text: its cause's errno is
		// lost on the way.
		(err != nil && strings.Contains(err.Error(), syscall.ENOSPC.Error()))
}

// failure is the store's health: nil until the database fails, then the
// failure, for good. It is told of every store error (onError) and logs
// the failure once, naming the operation, the file and the free space.
type failure struct {
	dir     string
	log     *slog.Logger
	onError func(op string, err error)

	once sync.Once
	mu   sync.Mutex
	err  error
	ch   chan struct{}
}

func newFailure(dir string, log *slog.Logger, onError func(op string, err error)) *failure {
	return &failure{dir: dir, log: log, onError: onError, ch: make(chan struct{})}
}

// current returns the failure, nil while the database is usable.
func (f *failure) current() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// fail records that the database failed in op with cause, once: the first
// failure is the one kept and logged.
func (f *failure) fail(op string, cause error) {
	f.once.Do(func() {
		f.mu.Lock()
		f.err = fmt.Errorf("%w: %s: %w", ErrStoreFailed, op, cause)
		f.mu.Unlock()
		free, ferr := FreeBytes(f.dir)
		attrs := []any{"op", op, "error", cause, "dir", f.dir, "disk_full", DiskFull(cause)}
		if file := failedFile(cause); file != "" {
			attrs = append(attrs, "file", file)
		}
		if ferr == nil {
			attrs = append(attrs, "free_bytes", free)
		}
		f.log.Error("store failed: no further writes in this process; notifyd stops and must be started again once the disk has room", attrs...)
		close(f.ch)
	})
}

// report tells onError of a failed store operation and returns it as a
// *StoreError.
func (f *failure) report(op string, err error) error {
	if f.onError != nil {
		f.onError(op, err)
	}
	var se *StoreError
	if errors.As(err, &se) {
		return err
	}
	return &StoreError{Op: op, Err: err}
}

// failedFile returns the path named by err (or by a cause of it), or the
// file Pebble's message names, or "".
func failedFile(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Path
	}
	// "... write /data/projection/000009.log: no space left on device"
	msg := err.Error()
	for _, verb := range []string{"write ", "sync ", "open ", "create ", "fallocate ", "rename "} {
		if i := strings.LastIndex(msg, verb); i >= 0 {
			rest := msg[i+len(verb):]
			if j := strings.Index(rest, ": "); j > 0 && strings.Contains(rest[:j], "/") {
				return rest[:j]
			}
		}
	}
	return ""
}

// Failed returns a channel closed when the store's database fails: from
// then on every write is refused with ErrStoreFailed, and the process must
// stop (Pebble cannot be reopened safely while goroutines may still wait in
// its commit pipeline).
func (s *Store) Failed() <-chan struct{} { return s.health.ch }

// Err returns the store's failure (wrapping ErrStoreFailed), nil while it
// can be written.
func (s *Store) Err() error { return s.health.current() }

// FreeBytes returns the bytes available to notifyd's user on the
// filesystem holding path.
func FreeBytes(path string) (uint64, error) {
	free, _, err := DiskSpace(path)
	return free, err
}
