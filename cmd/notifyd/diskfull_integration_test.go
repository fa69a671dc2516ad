//go:build integration

package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/projection"

	"github.com/notifyd/notifyd/internal/testkit"
)

// The disk-full suite runs notifyd with its store.dir on a real small
// filesystem (a 48 MiB tmpfs: CI runs as root) and fills it during
// traffic, with the broker's log on the same filesystem (notifyd's own
// embedded broker) and elsewhere (NOTIFYD_TEST_BROKERS: Apache Kafka in
// the real-Kafka stage).

const tmpfsSize = 48 << 20

// smallDisk mounts a tmpfs of tmpfsSize and returns its path.
func smallDisk(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", tmpfsSize), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// fill writes a filler file in dir until the filesystem has at most
// leave bytes free (0: until it refuses a write), and returns its path.
func fill(t *testing.T, dir string, leave uint64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	for {
		free, err := projection.FreeBytes(dir)
		if err != nil {
			t.Fatal(err)
		}
		if free <= leave {
			return path
		}
		n := min(uint64(len(buf)), free-leave)
		if _, err := f.Write(buf[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// diskFullCase is one placement of the broker's log.
type diskFullCase struct {
	name string
	// own: the process runs its own embedded broker, its log on the disk.
	own bool
}

// setUp mounts the small disk and makes the cluster: its provider, its
// logs off the disk, its brokers unless the process runs its own. store
// is the process's store.dir on the disk.
func (tc diskFullCase) setUp(t *testing.T) (c *cluster, disk, store string) {
	t.Helper()
	disk = smallDisk(t)
	c = newProviders(t, 5*time.Millisecond)
	c.logDir = t.TempDir()
	if !tc.own {
		c.attach(testBrokers(t))
	}
	return c, disk, filepath.Join(disk, "store")
}

func diskFullCases() []diskFullCase {
	return []diskFullCase{{name: "broker-on-the-disk", own: true}, {name: "broker-elsewhere"}}
}

// startOnDisk starts a process with store.dir in dir (on the small disk);
// with c.own its embedded broker's log is there too, and the cluster is
// attached to it once it listens.
func startOnDisk(t *testing.T, c *cluster, own bool, dir, listen, store string) *proc {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The log is kept off the small disk: it must say what happened when
	// the disk is full.
	o := procOpts{name: "disk", dir: dir, logDir: c.logDir, store: store, concurrency: 16, readyMaxLag: 100}
	if own {
		o.embedded = listen
	}
	p := c.start(o)
	if own && c.brokers == nil {
		c.attach([]string{listen})
	}
	return p
}

// TestDiskFullPaused: the disk fills during traffic. From the watermark on
// the instance is paused: /readyz 503 naming the disk,
// notifyd_store_paused 1, its ballast released; nothing is dead-lettered.
// When space returns it resumes by itself (the same process) and every
// command is answered exactly once, no send repeated.
func TestDiskFullPaused(t *testing.T) {
	for _, tc := range diskFullCases() {
		t.Run(tc.name, func(t *testing.T) {
			c, disk, store := tc.setUp(t)
			const minFree, ballast = 12 << 20, 4 << 20
			p := startOnDisk(t, c, tc.own, store, freePort(t), fmt.Sprintf("min_free_bytes: %d, ballast_bytes: %d", minFree, ballast))
			ballastPath := filepath.Join(store, "EMERGENCY_BALLAST")
			testkit.Eventually(t, "the ballast", time.Minute, func() bool {
				st, err := os.Stat(ballastPath)
				return err == nil && st.Size() == ballast
			})
			const n = 400
			sessions, ids, cmds := sessionsAndCommands(n, "full")
			c.events(sessions, "paid", 1)
			first := c.publishInBackground(c.topics.Commands, cmds[:n/2])
			testkit.Eventually(t, "some commands answered", 3*time.Minute, func() bool { return c.answered(ids) >= n/8 })

			filler := fill(t, disk, minFree-(2<<20))
			testkit.Eventually(t, "paused, /readyz naming the disk", time.Minute, func() bool {
				code, body := p.get("/readyz")
				return code == http.StatusServiceUnavailable && strings.Contains(string(body), "disk nearly full")
			})
			_, metrics := p.get("/metrics")
			if !strings.Contains(string(metrics), "notifyd_store_paused 1") {
				t.Errorf("notifyd_store_paused is not 1 while paused")
			}
			if _, err := os.Stat(ballastPath); !os.IsNotExist(err) {
				t.Errorf("ballast not released while paused: %v", err)
			}
			<-first
			// Commands keep arriving while paused: they wait on the topic.
			second := c.publishInBackground(c.topics.Commands, cmds[n/2:])
			<-second
			pausedAnswered := c.answered(ids)
			if pausedAnswered > n/2 {
				t.Errorf("%d commands answered while paused; only the %d published before the pause may be", pausedAnswered, n/2)
			}

			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			c.waitAnswered(ids, 3*time.Minute)
			testkit.Eventually(t, "ready again", time.Minute, func() bool { code, _ := p.get("/readyz"); return code == http.StatusOK })
			if !p.running() {
				t.Fatal("notifyd exited: it should have resumed by itself")
			}
			if st, err := os.Stat(ballastPath); err != nil || st.Size() != ballast {
				t.Errorf("ballast not re-created after resuming: %v", err)
			}
			if replayed := c.checkResults(ids); replayed != 0 {
				t.Errorf("%d commands answered more than once", replayed)
			}
			if dups := c.calls.duplicates(); len(dups) != 0 {
				t.Errorf("%d sends repeated", len(dups))
			}
			c.noDeadLetters()
			if lines := c.logLines(`"level":"ERROR"`); len(lines) != 0 {
				t.Errorf("error log lines:\n%s", strings.Join(lines, "\n"))
			}
			t.Logf("%s: %d commands, %d answered when paused, all answered once after the filler went, %d provider calls",
				tc.name, n, pausedAnswered, c.calls.total())
		})
	}
}

// TestDiskFullWall: the guard is off (store.min_free_bytes: 0, no
// ballast) and the disk fills to the last byte during traffic. Nothing is
// dead-lettered for a store error. The store fails (notifyd logs it with
// its file and free space, and exits with status 75), or the broker on
// the same disk refuses its writes (KAFKA_STORAGE_ERROR) first; either
// way /readyz is 503 meanwhile, and once space returns (and the process
// is started again, when it exited) every command is answered, none with
// two different results, sends repeated within the crash bound.
func TestDiskFullWall(t *testing.T) {
	for _, tc := range diskFullCases() {
		t.Run(tc.name, func(t *testing.T) {
			c, disk, store := tc.setUp(t)
			listen := freePort(t)
			const storeCfg = "min_free_bytes: 0, ballast_bytes: 0"
			p := startOnDisk(t, c, tc.own, store, listen, storeCfg)
			const n, concurrency = 600, 16
			sessions, ids, cmds := sessionsAndCommands(n, "wall")
			c.events(sessions, "paid", 1)
			testkit.Eventually(t, "ready", time.Minute, func() bool { code, _ := p.get("/readyz"); return code == http.StatusOK })
			published := c.publishInBackground(c.topics.Commands, cmds)
			testkit.Eventually(t, "some commands answered", 3*time.Minute, func() bool { return c.answered(ids) >= n/10 })

			filler := fill(t, disk, 0)
			// Payment events keep coming (version 2 of each): the store must
			// write, and hits the wall unless the broker refuses first.
			more := make([]kafka.Message, 0, n)
			for _, s := range sessions {
				more = append(more, kafka.Message{Key: []byte(s), Value: eventJSON(s, "paid", 2)})
			}
			events := c.publishInBackground(c.topics.PaymentEvents, more)
			testkit.Eventually(t, "the store failed (exit 75) or the instance not ready", 3*time.Minute, func() bool {
				if !p.running() {
					return true
				}
				code, body := p.get("/readyz")
				return code == http.StatusServiceUnavailable &&
					(strings.Contains(string(body), "KAFKA_STORAGE_ERROR") || strings.Contains(string(body), "store failed"))
			})
			if !tc.own {
				// The broker is elsewhere: only the store can fail, and it does
				// once its log needs a block.
				testkit.Eventually(t, "exit after the store failed", 3*time.Minute, func() bool { return !p.running() })
			}
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			// With room again: every command answered and ready, the process
			// started again (once) if it exited.
			restarts := 0
			for {
				testkit.Eventually(t, "every command answered and ready again, or the process exited", 4*time.Minute, func() bool {
					if !p.running() {
						return true
					}
					code, _ := p.get("/readyz")
					return c.answered(ids) == n && code == http.StatusOK
				})
				if p.running() {
					break
				}
				err := <-p.exited
				p.exited <- err
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != ExitStoreFailed {
					t.Fatalf("notifyd exited with %v, want status %d", err, ExitStoreFailed)
				}
				if restarts++; restarts > 1 {
					t.Fatal("the store failed again after the restart with room")
				}
				if lines := c.logLines(`"msg":"store failed`); len(lines) != 1 || !strings.Contains(lines[0], `"free_bytes"`) || !strings.Contains(lines[0], `"file"`) {
					t.Errorf("store-failed lines naming the file and the free space: want 1:\n%s", strings.Join(lines, "\n"))
				}
				if lines := c.logLines(`exiting with status 75`); len(lines) != 1 {
					t.Errorf("exit lines: %d, want 1", len(lines))
				}
				p = startOnDisk(t, c, tc.own, store, listen, storeCfg)
			}
			exited := restarts > 0
			<-published
			<-events
			replayed := c.checkResults(ids)
			dups := c.calls.duplicates()
			if len(dups) > concurrency {
				t.Errorf("%d sends repeated, more than the %d in flight", len(dups), concurrency)
			}
			c.noDeadLetters()
			if lines := c.logLines(`"reason":"panic"`); len(lines) != 0 {
				t.Errorf("panics:\n%s", strings.Join(lines, "\n"))
			}
			t.Logf("%s: store failed and restarted: %v; %d commands answered, %d published twice (the same result), %d sends repeated (bound %d)",
				tc.name, exited, n, replayed, len(dups), concurrency)
		})
	}
}

// noDeadLetters fails the test if any command was dead-lettered.
func (c *cluster) noDeadLetters() {
	c.t.Helper()
	c.mu.Lock()
	n := len(c.dlq)
	c.mu.Unlock()
	if n != 0 {
		c.t.Errorf("%d commands dead-lettered", n)
	}
}
