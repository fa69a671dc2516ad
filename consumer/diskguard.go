package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/notifyd/notifyd/projection"
)

// Defaults of the free-space guard, as shares of the store's filesystem
// with a ceiling (see DiskDefaults).
const (
	// defaultMinFreeShare of the filesystem, at most defaultMinFreeMax:
	// room for Pebble to flush a full memtable (64 MiB, and its log) and
	// compact several times over, on any disk larger than a few GB; on a
	// small one, a share that still leaves room to finish what is in
	// flight.
	defaultMinFreeShare = 0.05
	defaultMinFreeMax   = 1 << 30
	// defaultBallastShare of the filesystem, at most defaultBallastMax:
	// what one memtable flush and the records of the commands in flight
	// need once the watermark is crossed (CockroachDB reserves 1 %, at most
	// 1 GiB, for the same purpose; notifyd's memtable is 64 MiB).
	defaultBallastShare = 0.01
	defaultBallastMax   = 64 << 20
	// ballastName is the ballast's file in store.dir.
	ballastName = "EMERGENCY_BALLAST"
	// diskCheckInterval is how often the guard reads the free space.
	diskCheckInterval = time.Second
)

// DiskDefaults returns the watermark and the ballast the guard uses on a
// filesystem of size bytes when store.min_free_bytes and
// store.ballast_bytes are not set.
func DiskDefaults(size uint64) (minFree, ballast uint64) {
	return min(uint64(float64(size)*defaultMinFreeShare), defaultMinFreeMax),
		min(uint64(float64(size)*defaultBallastShare), defaultBallastMax)
}

// diskGuard keeps the store's filesystem from filling up. Every
// diskCheckInterval it reads the free space of store.dir:
//
//   - below the watermark (store.min_free_bytes) it pauses: the followers
//     stop applying and no new command is started (both wait in wait; the
//     records stay on their topics), what is in flight finishes, and the
//     ballast file is deleted so that it has room to;
//   - it resumes once the free space reaches one and a half times the
//     watermark plus the ballast (hysteresis: re-creating the ballast must
//     leave it above the watermark), re-creating the ballast first.
//
// The ballast (store.ballast_bytes, in store.dir/EMERGENCY_BALLAST) is made
// at start-up when there is room for it. A watermark of 0 turns the guard
// off (the ballast too). The instance reports not ready while paused.
type diskGuard struct {
	dir string
	// minFree and ballast are the configured values, nil for the defaults.
	minFree, ballastSize *int64
	log                  *slog.Logger
	// space reads the filesystem (projection.DiskSpace); interval is
	// diskCheckInterval. Tests replace both.
	space    func(string) (free, size uint64, err error)
	interval time.Duration
	// waiting, when set, is called when wait starts waiting (hooks).
	waiting func()

	mu      sync.Mutex
	low     uint64 // the watermark, resolved from the filesystem's size
	resume  uint64
	ballast uint64
	free    uint64
	known   bool // free was read at least once
	paused  bool
	lastErr string // the last error reading the filesystem, "" after a read
	// running is closed while not paused.
	running chan struct{}
}

func newDiskGuard(dir string, minFree, ballast *int64, log *slog.Logger) *diskGuard {
	running := make(chan struct{})
	close(running)
	return &diskGuard{dir: dir, minFree: minFree, ballastSize: ballast, log: log, space: projection.DiskSpace,
		interval: diskCheckInterval, running: running}
}

// off reports whether the guard is turned off (store.min_free_bytes: 0).
func (g *diskGuard) off() bool { return g.minFree != nil && *g.minFree == 0 }

// check reads the free space once and pauses or resumes.
func (g *diskGuard) check() {
	if g.off() {
		return
	}
	free, size, err := g.space(g.dir)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		// Logged when it starts or changes, not every second; the state
		// stays what it was.
		if msg := err.Error(); msg != g.lastErr {
			g.lastErr = msg
			g.log.Warn("free-space guard: cannot read the free space of store.dir", "dir", g.dir, "error", err)
		}
		return
	}
	g.lastErr = ""
	if !g.known {
		def, defBallast := DiskDefaults(size)
		g.low, g.ballast = def, defBallast
		if g.minFree != nil {
			g.low = uint64(*g.minFree)
		}
		if g.ballastSize != nil {
			g.ballast = uint64(*g.ballastSize)
		}
		g.resume = g.low + g.low/2 + g.ballast
		g.known = true
		g.log.Info("free-space guard", "dir", g.dir, "free_bytes", free, "min_free_bytes", g.low, "resume_bytes", g.resume,
			"ballast_bytes", g.ballast)
	}
	g.free = free
	switch {
	case !g.paused && free < g.low:
		g.paused = true
		g.running = make(chan struct{})
		released := g.releaseBallast()
		g.log.Warn("store.dir nearly full: paused (no new commands or events until there is room; nothing is lost)",
			"free_bytes", free, "min_free_bytes", g.low, "resume_bytes", g.resume, "ballast_released_bytes", released)
	case g.paused && free >= g.resume:
		if err := g.ensureBallast(free); err != nil {
			g.log.Warn("free-space guard: ballast not re-created", "error", err)
		}
		g.paused = false
		close(g.running)
		g.log.Info("store.dir has room again: resumed", "free_bytes", free, "min_free_bytes", g.low)
	case !g.paused:
		// Make the ballast at start-up, or after space came back with the
		// ballast not re-created, when it leaves the guard above resume.
		if free >= g.resume {
			if err := g.ensureBallast(free); err != nil {
				g.log.Warn("free-space guard: ballast not made", "error", err)
			}
		}
	}
}

// releaseBallast deletes the ballast and returns its size (0: none).
func (g *diskGuard) releaseBallast() int64 {
	path := filepath.Join(g.dir, ballastName)
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if err := os.Remove(path); err != nil {
		g.log.Error("free-space guard: ballast not released", "file", path, "error", err)
		return 0
	}
	return st.Size()
}

// ensureBallast makes the ballast (its whole size allocated, readable by
// notifyd's user only) unless it is there or none is configured.
func (g *diskGuard) ensureBallast(free uint64) error {
	if g.ballast == 0 {
		return nil
	}
	path := filepath.Join(g.dir, ballastName)
	if st, err := os.Stat(path); err == nil && st.Size() >= int64(g.ballast) {
		return nil
	}
	if free < g.ballast {
		return fmt.Errorf("ballast of %d bytes: %d free", g.ballast, free)
	}
	if err := allocate(path, int64(g.ballast)); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("ballast %s: %w", path, err)
	}
	return nil
}

// run checks every interval until ctx ends.
func (g *diskGuard) run(ctx context.Context) {
	if g.off() {
		g.log.Warn("store.min_free_bytes is 0: the free-space guard is off; a full disk stops notifyd (exit status 75)")
		return
	}
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		g.check()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// wait returns once the guard is not paused, or ctx's cause when ctx ends
// first.
func (g *diskGuard) wait(ctx context.Context) error {
	g.mu.Lock()
	running := g.running
	g.mu.Unlock()
	select {
	case <-running:
		return nil
	default:
	}
	if g.waiting != nil {
		g.waiting()
	}
	select {
	case <-running:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// state returns whether the guard pauses, the free space last read and
// the watermark (0 before the first read).
func (g *diskGuard) state() (paused bool, free, low uint64, known bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused, g.free, g.low, g.known
}

// pausedReason is readiness's reason while paused, "" otherwise.
func (g *diskGuard) pausedReason() string {
	paused, free, low, _ := g.state()
	if !paused {
		return ""
	}
	g.mu.Lock()
	resume := g.resume
	g.mu.Unlock()
	return fmt.Sprintf("paused: disk nearly full: %d bytes free in store.dir (paused below store.min_free_bytes, %d; resumes at %d, the ballast re-created)", free, low, resume)
}

// writeZeros writes size zero bytes to f.
func writeZeros(f *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	for size > 0 {
		n := min(size, int64(len(buf)))
		if _, err := f.Write(buf[:n]); err != nil {
			return err
		}
		size -= n
	}
	return nil
}
