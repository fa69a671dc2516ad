package consumer

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/consumer/embedded"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/internal/faultfs"
	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

func bytesPtr(n int64) *int64 { return &n }

// TestDiskFullWhileSending: the disk fills while a command is being sent,
// so its decision cannot be recorded. The command is not dead-lettered
// and not sent again: its decision is published from memory, once; the
// store is failed and the service stops with projection.ErrStoreFailed
// (the process exits 75 for a restart), not ready meanwhile. An instance
// started afterwards (the restart) answers a duplicate of the command
// from the results topic without sending.
func TestDiskFullWhileSending(t *testing.T) {
	h := newHarness(t)
	disk := &faultfs.Disk{}
	reg := prometheus.NewRegistry()
	in := h.start(instanceOpts{registry: reg, minFree: bytesPtr(0), hooks: hooks{storeFS: disk.FS()}})
	h.event("s-full", nil)
	entered, open := in.provider.hold()
	defer open()
	h.command(map[string]any{"command_id": "full-1", "session_id": "s-full", "channels": []string{"email", "sms"}})
	<-entered
	<-entered
	disk.SetFull(true)
	open()
	h.waitFor("the command's result", 30*time.Second, func() bool { return len(h.results["full-1"]) >= 1 })
	var err error
	select {
	case err = <-in.done:
		in.cancel = nil
	case <-time.After(60 * time.Second):
		t.Fatal("the service did not stop after its store failed")
	}
	if !errors.Is(err, projection.ErrStoreFailed) {
		t.Fatalf("Run returned %v, want projection.ErrStoreFailed", err)
	}
	if r := in.svc.Readiness(); r.Ready {
		t.Fatalf("ready after the store failed: %+v", r)
	}
	res := h.result("full-1")
	if res.result.Outcome != schemas.OutcomeNotified || len(res.result.Channels) != 2 {
		t.Fatalf("published result: %+v, want both channels sent", res.result)
	}
	if n := in.provider.callCount(); n != 2 {
		t.Fatalf("provider calls: %d, want 2 (one per channel, none repeated)", n)
	}
	h.mu.Lock()
	dlq := len(h.dlq)
	h.mu.Unlock()
	if dlq != 0 {
		t.Fatalf("%d dead letters, want none", dlq)
	}
	if got := testutil.ToFloat64(in.svc.metrics.unrecorded); got != 1 {
		t.Errorf("notifyd_decisions_unrecorded_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(in.svc.metrics.storeErrors.WithLabelValues("record_result")); got < 1 {
		t.Errorf(`notifyd_store_errors_total{op="record_result"} = %v, want >= 1`, got)
	}
	if got := testutil.ToFloat64(in.svc.metrics.deadLetters.WithLabelValues(deadLetterPanic)); got != 0 {
		t.Errorf("panics dead-lettered: %v", got)
	}

	// The restart, with room: a duplicate is answered from the topic.
	again := h.start(instanceOpts{provider: in.provider})
	h.command(map[string]any{"command_id": "full-1", "session_id": "s-full", "channels": []string{"email", "sms"}})
	h.waitFor("the duplicate's answer", 30*time.Second, func() bool { return len(h.results["full-1"]) >= 2 })
	h.mu.Lock()
	first, second := h.results["full-1"][0].result.ResultID, h.results["full-1"][1].result.ResultID
	h.mu.Unlock()
	if first != second {
		t.Fatalf("the duplicate was answered %s, want the published decision %s", second, first)
	}
	if n := in.provider.callCount(); n != 2 {
		t.Fatalf("provider calls after the duplicate: %d, want still 2", n)
	}
	_ = again
}

// TestDiskGuardPausesAndResumes: below store.min_free_bytes the instance
// pauses (not ready, naming the disk; notifyd_store_paused 1; its ballast
// released) and takes no new command or event; with room again it
// re-creates the ballast and resumes by itself, and what waited on the
// topics is answered, once.
func TestDiskGuardPausesAndResumes(t *testing.T) {
	h := newHarness(t)
	var free atomic.Uint64
	free.Store(10 << 20)
	waits := make(chan struct{}, 64)
	reg := prometheus.NewRegistry()
	in := h.start(instanceOpts{registry: reg, minFree: bytesPtr(1 << 20), ballast: bytesPtr(64 << 10), hooks: hooks{
		diskSpace: func(string) (uint64, uint64, error) { return free.Load(), 1 << 30, nil },
		diskWait: func() {
			select {
			case waits <- struct{}{}:
			default:
			}
		},
	}})
	ballast := filepath.Join(in.dir, ballastName)
	h.poll("the ballast", 30*time.Second, func() bool {
		st, err := os.Stat(ballast)
		return err == nil && st.Size() == 64<<10 && st.Mode().Perm() == 0o600
	})
	h.event("s-guard", nil)
	h.poll("the event applied", 30*time.Second, func() bool {
		_, ok, err := in.svc.Store().Transaction("s-guard")
		return err == nil && ok
	})

	free.Store(1<<20 - 1)
	h.poll("paused", 30*time.Second, func() bool { return strings.HasPrefix(in.svc.Readiness().Reason, "paused: disk nearly full") })
	if r := in.svc.Readiness(); r.Ready || r.Serving {
		t.Fatalf("readiness while paused: %+v", r)
	}
	if _, err := os.Stat(ballast); !os.IsNotExist(err) {
		t.Fatalf("ballast not released while paused: %v", err)
	}
	if got := gauge(t, reg, "notifyd_store_paused"); got != 1 {
		t.Fatalf("notifyd_store_paused = %v, want 1", got)
	}
	h.event("s-guard-2", nil)
	h.command(map[string]any{"command_id": "guard-1", "session_id": "s-guard", "channels": []string{"email"}})
	// Both the command and the payment-events follower wait for room.
	for range 2 {
		select {
		case <-waits:
		case <-time.After(30 * time.Second):
			t.Fatal("the command and the follower did not both wait for room")
		}
	}
	if n := in.provider.callCount(); n != 0 {
		t.Fatalf("%d provider calls while paused", n)
	}
	if _, ok, _ := in.svc.Store().Transaction("s-guard-2"); ok {
		t.Fatal("an event was applied while paused")
	}
	free.Store(1<<20 + 1<<19 + 64<<10) // one and a half times the watermark plus the ballast (TestDiskGuardRule)
	h.waitFor("the command's answer after resuming", 30*time.Second, func() bool { return len(h.results["guard-1"]) == 1 })
	if r := h.result("guard-1"); r.result.Outcome != schemas.OutcomeNotified {
		t.Fatalf("result after resuming: %+v", r.result)
	}
	h.poll("ready again", 30*time.Second, func() bool { return in.svc.Readiness().Ready })
	if st, err := os.Stat(ballast); err != nil || st.Size() != 64<<10 {
		t.Fatalf("ballast not re-created: %v", err)
	}
	if got := gauge(t, reg, "notifyd_store_paused"); got != 0 {
		t.Fatalf("notifyd_store_paused = %v after resuming", got)
	}
	if _, ok, _ := in.svc.Store().Transaction("s-guard-2"); !ok {
		t.Fatal("the event published while paused was not applied after resuming")
	}
	if n := in.provider.callCount(); n != 1 {
		t.Fatalf("provider calls: %d, want 1", n)
	}
}

// gauge reads one unlabelled gauge from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s on the registry", name)
	return 0
}

// TestDiskGuardRule: the guard's rule, step by step on free-space
// readings: pause below the watermark (releasing the ballast), stay paused
// until one and a half times the watermark plus the ballast (hysteresis),
// re-create the ballast as it resumes; a ballast is made only with room
// for it above the resume level; the defaults are shares of the
// filesystem; 0 turns the guard off.
func TestDiskGuardRule(t *testing.T) {
	const low, ballastSize = 1000, 100
	const resume = low + low/2 + ballastSize
	steps := []struct {
		free         uint64
		paused       bool
		ballastAfter bool
	}{
		{resume - 1, false, false}, // no room for a ballast above resume: none made
		{resume, false, true},      // made
		{low, false, true},         // at the watermark: still running
		{low - 1, true, false},     // below: paused, ballast released
		{low - 1, true, false},
		{resume - 1, true, false}, // room, not enough: still paused
		{low, true, false},
		{resume, false, true}, // resumed, ballast re-created
		{low + 1, false, true},
		{0, true, false},
	}
	dir := t.TempDir()
	var free uint64
	g := newDiskGuard(dir, bytesPtr(low), bytesPtr(ballastSize), slogDiscard())
	g.space = func(string) (uint64, uint64, error) { return free, 1 << 40, nil }
	for i, st := range steps {
		free = st.free
		g.check()
		paused, gotFree, gotLow, _ := g.state()
		_, err := os.Stat(filepath.Join(dir, ballastName))
		if paused != st.paused || gotFree != st.free || gotLow != low || (err == nil) != st.ballastAfter {
			t.Fatalf("step %d (free %d): paused %v, ballast %v; want paused %v, ballast %v", i, st.free, paused, err == nil, st.paused, st.ballastAfter)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if waitErr := g.wait(ctx); (waitErr != nil) != st.paused {
			t.Fatalf("step %d: wait returned %v while paused=%v", i, waitErr, st.paused)
		}
	}

	for _, c := range []struct{ size, minFree, ballast uint64 }{
		{1 << 30, 1 << 30 / 20, 1 << 30 / 100},    // 1 GiB: 5 %, 1 %
		{100 << 30, 1 << 30, 64 << 20},            // 100 GiB: the ceilings
		{48 << 20, 48 << 20 / 20, 48 << 20 / 100}, // a 48 MiB tmpfs
	} {
		if m, b := DiskDefaults(c.size); m != c.minFree || b != c.ballast {
			t.Errorf("DiskDefaults(%d) = %d, %d; want %d, %d", c.size, m, b, c.minFree, c.ballast)
		}
	}
	def := newDiskGuard(dir, nil, nil, slogDiscard())
	def.space = func(string) (uint64, uint64, error) { return 10 << 30, 100 << 30, nil }
	def.check()
	if _, _, gotLow, known := def.state(); !known || gotLow != 1<<30 {
		t.Errorf("default watermark on 100 GiB: %d", gotLow)
	}

	// A filesystem that cannot be read keeps the state, and is logged once,
	// not every second.
	var logs strings.Builder
	g.log = slog.New(slog.NewTextHandler(&logs, nil))
	g.space = func(string) (uint64, uint64, error) { return 0, 0, errors.New("statfs: input/output error") }
	for range 3 {
		g.check()
	}
	if paused, _, _, _ := g.state(); !paused {
		t.Error("an unreadable filesystem changed the guard's state")
	}
	if n := strings.Count(logs.String(), "cannot read the free space"); n != 1 {
		t.Errorf("unreadable filesystem logged %d times, want once:\n%s", n, logs.String())
	}

	off := newDiskGuard(dir, bytesPtr(0), nil, slogDiscard())
	off.space = func(string) (uint64, uint64, error) { return 0, 1 << 40, nil }
	off.check()
	if paused, _, _, _ := off.state(); paused || off.wait(context.Background()) != nil {
		t.Error("a guard turned off (store.min_free_bytes: 0) paused")
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestReadyOnlyWhenConsumingAfterOutage: after a broker outage the
// instance says ready only once it is back in the commands group: at the
// first ready answer after the broker returns, the broker describes the
// group as stable with this instance holding the commands partitions.
func TestReadyOnlyWhenConsumingAfterOutage(t *testing.T) {
	addr, dir := freeAddr(t), t.TempDir()
	b, err := embedded.Start(embedded.Config{Listen: addr, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessOn(t, Conn{Brokers: []string{addr}, ClientID: "test"})
	in := h.start(instanceOpts{session: 6 * time.Second})
	h.poll("ready", time.Minute, func() bool { return in.svc.Readiness().Ready })
	b.Close()
	h.poll("not ready during the outage", time.Minute, func() bool { return !in.svc.Readiness().Ready })
	b, err = embedded.Start(embedded.Config{Listen: addr, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	h.poll("ready after the outage", 2*time.Minute, func() bool { return in.svc.Readiness().Ready })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := h.conn.Client(nil).DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{"notifyd-" + h.topics.Commands}})
	if err != nil || len(resp.Groups) != 1 {
		t.Fatalf("describe the group: %v %+v", err, resp)
	}
	g := resp.Groups[0]
	assigned := 0
	for _, m := range g.Members {
		for _, topic := range m.MemberAssignments.Topics {
			if topic.Topic == h.topics.Commands {
				assigned += len(topic.Partitions)
			}
		}
	}
	if g.GroupState != "Stable" || assigned != testPartitions {
		t.Fatalf("ready while the group is %s with %d of %d partitions assigned", g.GroupState, assigned, testPartitions)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestStartWaitsForRoom: an instance started with store.dir below its
// watermark does not open its store: it waits, not ready and saying why,
// and starts by itself once there is room.
func TestStartWaitsForRoom(t *testing.T) {
	h := newHarness(t)
	var free atomic.Uint64
	free.Store(1000)
	dir := t.TempDir()
	tpl, err := dispatch.ParseTemplates(dispatch.DefaultTemplates())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Brokers: h.brokers, GroupID: "notifyd-" + h.topics.Commands, ClientID: "test", Topics: h.topics,
		TLS: h.conn.TLS, SASL: h.conn.SASL, StoreDir: dir, MinFreeBytes: bytesPtr(1 << 20), BallastBytes: bytesPtr(0)},
		dispatch.Config{Routes: map[schemas.Channel][]dispatch.Route{schemas.ChannelEmail: {{Provider: newRecordingProvider()}}}, Templates: tpl},
		slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{}, 1)
	svc.hooks.diskSpace = func(string) (uint64, uint64, error) { return free.Load(), 1 << 30, nil }
	svc.hooks.diskWait = func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(40 * time.Second):
			t.Error("Run did not return within 40 s of the stop")
		}
	}()
	select {
	case <-waiting:
	case <-time.After(30 * time.Second):
		t.Fatal("start-up did not wait for room")
	}
	if svc.Store() != nil {
		t.Fatal("the store was opened below the watermark")
	}
	if _, err := os.Stat(filepath.Join(dir, "projection")); !os.IsNotExist(err) {
		t.Fatalf("the store's directory was made below the watermark: %v", err)
	}
	if r := svc.Readiness(); r.Ready || !strings.HasPrefix(r.Reason, "paused: disk nearly full") {
		t.Fatalf("readiness while waiting for room: %+v", r)
	}
	free.Store(10 << 20)
	select {
	case <-svc.Running():
	case err := <-done:
		done <- err // for the deferred stop
		t.Fatalf("Run returned %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the service did not start once there was room")
	}
}
