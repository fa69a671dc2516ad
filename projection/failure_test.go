package projection

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/faultfs"
	"github.com/notifyd/notifyd/schemas"
)

type storeErrors struct {
	mu  sync.Mutex
	ops []string
}

func (e *storeErrors) add(op string, _ error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ops = append(e.ops, op)
}

func (e *storeErrors) seen() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.ops)
}

func openFaulty(t *testing.T, disk *faultfs.Disk, log *slog.Logger, errs *storeErrors) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{
		EventsTopic: "payment-events", ResultsTopic: "notification-results", DeliveriesTopic: "notification-deliveries",
		SessionsTopic: "console-sessions", Logger: log, OnError: errs.add, FS: disk.FS(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func resultFor(commandID string) []byte {
	return result(commandID, "s1", 1, "email:sent::console:m-"+commandID)
}

// A full disk fails the store: every write from then on is refused with
// ErrStoreFailed at once (no write waits behind the failed one), nothing of
// a refused batch is applied, reads keep answering from what was written,
// nothing panics, and the failure is logged once with the operation, the
// file and the free space.
func TestDiskFullFailsTheStore(t *testing.T) {
	end := schemas.SessionEnd{Username: "ops", EndedAt: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	endRec, _ := json.Marshal(end)
	deliveryRec, _ := json.Marshal(delivery("m-1", schemas.DeliveryDelivered, 1, "s1", "c-1", schemas.ChannelEmail))
	writes := []struct {
		op    string
		write func(s *Store) error
	}{
		{"apply_events", func(s *Store) error {
			_, err := s.ApplyEvents(0, []Record{{Offset: 5, Value: event("s2", "o2", schemas.StatePaid, 1, "b@example.com")}})
			return err
		}},
		{"apply_results", func(s *Store) error {
			_, err := s.ApplyResults(0, []Record{{Offset: 5, Value: resultFor("c-2")}})
			return err
		}},
		{"apply_deliveries", func(s *Store) error { return s.ApplyDeliveries(0, []Record{{Offset: 5, Value: deliveryRec}}) }},
		{"apply_sessions", func(s *Store) error { return s.ApplySessionEnds(0, []Record{{Offset: 5, Value: endRec}}) }},
		{"record_result", func(s *Store) error { _, err := s.RecordResult("c-3", resultFor("c-3")); return err }},
		{"record_delivery", func(s *Store) error {
			_, err := s.RecordDelivery(delivery("m-2", schemas.DeliveryDelivered, 1, "s1", "c-1", schemas.ChannelEmail))
			return err
		}},
		{"record_session_end", func(s *Store) error { return s.RecordSessionEnd(end) }},
	}
	for _, w := range writes {
		t.Run(w.op, func(t *testing.T) {
			disk := &faultfs.Disk{}
			var logs bytes.Buffer
			errs := &storeErrors{}
			s := openFaulty(t, disk, slog.New(slog.NewJSONHandler(&logs, nil)), errs)
			if _, err := s.ApplyEvents(0, recs(event("s1", "o1", schemas.StatePaid, 1, "a@example.com"))); err != nil {
				t.Fatal(err)
			}
			if _, err := s.RecordResult("c-1", resultFor("c-1")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-s.Failed():
				t.Fatal("failed before the disk filled")
			default:
			}

			disk.SetFull(true)
			// A synced write reaches the disk: it fails the database.
			_, err := s.RecordResult("c-0", resultFor("c-0"))
			if !errors.Is(err, ErrStoreFailed) || !DiskFull(err) {
				t.Fatalf("record on a full disk: %v, want ErrStoreFailed and disk full", err)
			}
			select {
			case <-s.Failed():
			default:
				t.Fatal("Failed not closed")
			}
			offsets := s.EventOffsets()
			// Every later write is refused up front, whatever it is.
			err = w.write(s)
			var se *StoreError
			if !errors.Is(err, ErrStoreFailed) || !errors.As(err, &se) || se.Op != w.op {
				t.Fatalf("%s after the failure: %v, want a StoreError %q wrapping ErrStoreFailed", w.op, err, w.op)
			}
			if got := s.EventOffsets(); got[0] != offsets[0] {
				t.Fatalf("a refused batch moved the offsets: %v -> %v", offsets, got)
			}
			// Reads answer from what was written before.
			if txn, found, err := s.Transaction("s1"); err != nil || !found || txn.State != schemas.StatePaid {
				t.Fatalf("read after the failure: %v %v %v", txn.State, found, err)
			}
			if v, found, err := s.Result("c-1"); err != nil || !found || !bytes.Equal(v, resultFor("c-1")) {
				t.Fatalf("recorded result after the failure: %s %v %v", v, found, err)
			}
			if ops := errs.seen(); !slices.Contains(ops, "commit") || !slices.Contains(ops, w.op) {
				t.Fatalf("store errors reported: %v, want commit and %s", ops, w.op)
			}
			if err := s.Close(); !errors.Is(err, ErrStoreFailed) {
				t.Fatalf("close of a failed store: %v", err)
			}
			var failed []map[string]any
			for line := range bytes.Lines(logs.Bytes()) {
				var m map[string]any
				if json.Unmarshal(line, &m) == nil && m["level"] == "ERROR" && bytes.Contains(line, []byte("store failed")) {
					failed = append(failed, m)
				}
			}
			if len(failed) != 1 {
				t.Fatalf("store-failed lines: %d, want 1:\n%s", len(failed), logs.String())
			}
			if m := failed[0]; m["op"] != "commit" || m["disk_full"] != true || m["free_bytes"] == nil || m["file"] == nil {
				t.Fatalf("store-failed line lacks op, disk_full, free_bytes or file: %v", m)
			}
		})
	}
}

func TestDiskFullClassification(t *testing.T) {
	for _, c := range []struct {
		err  error
		full bool
		file string
	}{
		{&os.PathError{Op: "write", Path: "/d/000009.log", Err: syscall.ENOSPC}, true, "/d/000009.log"},
		{&os.PathError{Op: "write", Path: "/d/q", Err: syscall.EDQUOT}, true, "/d/q"},
		{errors.New("pebble: fatal commit error: write /data/projection/000009.log: no space left on device"), true, "/data/projection/000009.log"},
		{errors.New("write /d/000011.log: no space left on device"), true, "/d/000011.log"},
		{&os.PathError{Op: "sync", Path: "/d/MANIFEST-000001", Err: syscall.EIO}, false, "/d/MANIFEST-000001"},
		{errors.New("pebble: closed"), false, ""},
	} {
		if got := DiskFull(c.err); got != c.full {
			t.Errorf("DiskFull(%v) = %v", c.err, got)
		}
		if got := failedFile(c.err); got != c.file {
			t.Errorf("failedFile(%v) = %q, want %q", c.err, got, c.file)
		}
	}
	if DiskFull(nil) {
		t.Error("DiskFull(nil)")
	}
}

// TestFatalCommitReturns: Pebble's fatal commit error marks the store
// failed and returns to the committing goroutine (which Store.commit
// answers with the failure); any other fatal error does not return.
func TestFatalCommitReturns(t *testing.T) {
	h := newFailure(t.TempDir(), slog.New(slog.DiscardHandler), nil)
	l := pebbleLogger{log: slog.New(slog.DiscardHandler), health: h}
	returned := make(chan struct{})
	go func() {
		l.Fatalf("pebble: fatal commit error: %v", &os.PathError{Op: "write", Path: "/d/000004.log", Err: syscall.ENOSPC})
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(30 * time.Second):
		t.Fatal("Fatalf of a commit did not return to the committing goroutine")
	}
	if err := h.current(); !errors.Is(err, ErrStoreFailed) || !DiskFull(err) {
		t.Fatalf("failure after a fatal commit error: %v", err)
	}
	// Any other fatal error marks the store failed and never returns (the
	// goroutine stays parked: this test leaks it on purpose).
	h2 := newFailure(t.TempDir(), slog.New(slog.DiscardHandler), nil)
	l2 := pebbleLogger{log: slog.New(slog.DiscardHandler), health: h2}
	parked := make(chan struct{})
	go func() {
		l2.Fatalf("MANIFEST sync failed: %v", syscall.EIO)
		close(parked)
	}()
	select {
	case <-parked:
		t.Fatal("Fatalf of a manifest write returned: Pebble would go on as if it were written")
	case <-h2.ch:
	}
	if err := h2.current(); !errors.Is(err, ErrStoreFailed) || DiskFull(err) {
		t.Fatalf("failure after a manifest write failed: %v", err)
	}
}

// TestDiskSpace: the free space and the size are in bytes, as statfs(2)
// reports them in blocks (coreutils' stat -f reads the same): the size
// exactly, the free space within what other processes may write meanwhile.
func TestDiskSpace(t *testing.T) {
	dir := t.TempDir()
	free, size, err := DiskSpace(dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("stat", "-f", "-c", "%a %b %S", dir).Output()
	if err != nil {
		t.Fatalf("stat -f: %v", err)
	}
	var avail, blocks, bsize uint64
	if _, err := fmt.Sscan(string(out), &avail, &blocks, &bsize); err != nil {
		t.Fatalf("stat -f output %q: %v", out, err)
	}
	if size != blocks*bsize {
		t.Errorf("size %d, want %d blocks of %d = %d", size, blocks, bsize, blocks*bsize)
	}
	const slack = 256 << 20
	if want := avail * bsize; free+slack < want || free > want+slack {
		t.Errorf("free %d, want about %d (%d blocks of %d)", free, want, avail, bsize)
	}
	if got, err := FreeBytes(dir); err != nil || got+slack < free || got > free+slack {
		t.Errorf("FreeBytes %d (%v), DiskSpace's free %d", got, err, free)
	}
	if _, _, err := DiskSpace(filepath.Join(dir, "nope")); err == nil {
		t.Error("DiskSpace of a missing directory: no error")
	}
}
