//go:build integration

package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/internal/testkit"
)

// The rebalance suite: notifyd processes join, leave, restart and pause
// while commands flow, and every provider call is recorded by the test's
// webhook peer with the instance that made it. A command is decided once
// means: no (command, channel) reaches the provider twice and no command
// gets two different results, except, for a process paused past its
// session timeout, the commands it was sending when it was paused.

// publishSteady publishes msgs at about perSecond from a goroutine, in
// batches of a tenth of a second.
func (c *cluster) publishSteady(topic string, msgs []kafka.Message, perSecond int) <-chan struct{} {
	done := make(chan struct{})
	batch := max(perSecond/10, 1)
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < len(msgs); i += batch {
			c.produce(topic, msgs[i:min(i+batch, len(msgs))]...)
			<-tick.C
		}
	}()
	return done
}

// waitUntilAnswered waits until at least n of ids have a result.
func (c *cluster) waitUntilAnswered(ids []string, n int, timeout time.Duration) {
	c.t.Helper()
	testkit.Until(c.t, timeout, func() error {
		if got := c.answered(ids); got < n {
			return fmt.Errorf("only %d of %d commands answered", got, n)
		}
		return nil
	})
}

// describeResults says who published each result of a command, and when.
func (c *cluster) describeResults(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.results[id] {
		src := ""
		for _, h := range m.Headers {
			if h.Key == "ce_source" {
				src = string(h.Value)
			}
		}
		out = append(out, fmt.Sprintf("%s at %s offset %d/%d: %.120s", src, m.Time.Format("15:04:05.000"), m.Partition, m.Offset, m.Value))
	}
	return strings.Join(out, "; ")
}

// handOvers returns how long each hand-over logged by the processes took.
func (c *cluster) handOvers() []time.Duration {
	var out []time.Duration
	for _, l := range c.logLines(`"Handed over partitions"`) {
		_, js, _ := strings.Cut(l, ": ")
		var rec struct {
			Took string `json:"took"`
		}
		if json.Unmarshal([]byte(js), &rec) != nil {
			continue
		}
		if d, err := time.ParseDuration(rec.Took); err == nil {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// requireOneDecision fails the test for every repeated send and every
// command with two different results, naming the instances involved.
func (c *cluster) requireOneDecision(ids []string) (replayed int) {
	c.t.Helper()
	byKey := map[string][]string{}
	for _, cl := range c.calls.snapshot() {
		byKey[cl.key] = append(byKey[cl.key], cl.instance+"@"+cl.at.Format("15:04:05.000"))
	}
	for k, ts := range c.calls.duplicates() {
		c.t.Errorf("%s reached the provider %d times (first %s): %v", k, len(byKey[k]), ts.Format("15:04:05.000"), byKey[k])
	}
	if lines := c.logLines("Partition restarted from a lower offset"); len(lines) > 0 {
		c.t.Errorf("a partition was re-read within a generation:\n%s", strings.Join(lines, "\n"))
	}
	return c.checkResults(ids)
}

func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d, median %s, max %s", len(ds), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
}

// TestScaleOut: 1,500 commands at a steady rate; a second and then a third
// instance join mid-stream. Every command is sent once.
func TestScaleOut(t *testing.T) {
	const n = 1500
	c := newCluster(t, 20*time.Millisecond)
	sessions, ids, cmds := sessionsAndCommands(n, "scale")
	c.events(sessions, "paid", 1)
	c.start(procOpts{waitForReady: true})
	start := time.Now()
	published := c.publishSteady(c.topics.Commands, cmds, 150)
	c.waitUntilAnswered(ids, n/4, 2*time.Minute)
	c.start(procOpts{waitForReady: true})
	c.waitUntilAnswered(ids, n/2, 2*time.Minute)
	c.start(procOpts{waitForReady: true})
	<-published
	c.waitAnswered(ids, 3*time.Minute)
	replayed := c.requireOneDecision(ids)
	perInstance := map[string]int{}
	for _, cl := range c.calls.snapshot() {
		perInstance[cl.instance]++
	}
	t.Logf("scale-out: %d commands in %s; sends per instance %v; %d repeated sends; %d results published again; hand-overs: %s",
		n, time.Since(start).Round(time.Millisecond), perInstance, len(c.calls.duplicates()), replayed, durations(c.handOvers()))
	if len(perInstance) < 3 {
		t.Errorf("only %d instances sent anything: the joins did not take partitions", len(perInstance))
	}
}

// TestRollingRestart: three instances are stopped (SIGTERM) and started
// again one by one, as a rolling deploy does, while 2,000 commands flow.
func TestRollingRestart(t *testing.T) {
	const n = 2000
	c := newCluster(t, 20*time.Millisecond)
	sessions, ids, cmds := sessionsAndCommands(n, "roll")
	c.events(sessions, "paid", 1)
	procs := make([]*proc, 3)
	dirs := make([]string, 3)
	for i := range procs {
		dirs[i] = t.TempDir()
		procs[i] = c.start(procOpts{name: fmt.Sprintf("r%d", i), dir: dirs[i], waitForReady: true})
	}
	start := time.Now()
	published := c.publishSteady(c.topics.Commands, cmds, 100)
	var stops []time.Duration
	for i := range procs {
		c.waitUntilAnswered(ids, (i+1)*n/5, 2*time.Minute)
		procs[i].stop()
		stops = append(stops, stopTook(procs[i]))
		procs[i] = c.start(procOpts{name: fmt.Sprintf("r%d", i), dir: dirs[i], waitForReady: true})
	}
	<-published
	c.waitAnswered(ids, 3*time.Minute)
	replayed := c.requireOneDecision(ids)
	sort.Slice(stops, func(i, j int) bool { return stops[i] < stops[j] })
	t.Logf("rolling restart: %d commands in %s; 3 stops (SIGTERM noticed to stopped) of %v; %d repeated sends; %d results published again; hand-overs: %s",
		n, time.Since(start).Round(time.Millisecond), stops, len(c.calls.duplicates()), replayed, durations(c.handOvers()))
}

// TestPausedInstance: one of two instances is paused (SIGSTOP) past its
// session timeout while commands flow, then resumed (SIGCONT). The other
// takes its partitions. Only commands the paused one had begun (called a
// provider for) before it stopped may reach the provider twice or get a
// second, different result (one whose result it was publishing when it
// stopped); once resumed it sends nothing until it has joined the group
// again.
func TestPausedInstance(t *testing.T) {
	const n, session = 1500, 6 * time.Second
	// Slow provider calls, so that the pause catches several in flight.
	c := newCluster(t, 300*time.Millisecond)
	sessions, ids, cmds := sessionsAndCommands(n, "pause")
	c.events(sessions, "paid", 1)
	a := c.start(procOpts{name: "a", session: session, waitForReady: true})
	c.start(procOpts{name: "b", session: session, waitForReady: true})
	published := c.publishSteady(c.topics.Commands, cmds, 100)
	c.waitUntilAnswered(ids, n/5, 2*time.Minute)
	// Pause only once a is sending: otherwise the test shows nothing.
	testkit.Eventually(t, "instance a sending", time.Minute, func() bool {
		return slices.ContainsFunc(c.calls.snapshot(), func(cl call) bool { return cl.instance == "a" && cl.at.After(time.Now().Add(-time.Second)) })
	})
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	pausedAt := time.Now()
	time.Sleep(session + 4*time.Second)
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumedAt := time.Now()
	// What a had begun before it stopped: provider calls (a stopped process
	// sends nothing, so every call of a the peer read before the resume was
	// sent before the pause, even when the peer read it after, on a busy
	// machine), and among them the ones not answered yet at the pause.
	sentBefore, inFlight := map[string]bool{}, map[string]bool{}
	for _, cl := range c.calls.snapshot() {
		if cl.instance == "a" && cl.at.Before(resumedAt) {
			sentBefore[cl.key] = true
			if cl.done.IsZero() || cl.done.After(pausedAt) {
				inFlight[cl.key] = true
			}
		}
	}
	<-published
	c.waitAnswered(ids, 3*time.Minute)
	if !a.running() {
		t.Fatal("the paused instance exited after SIGCONT")
	}
	rejoinedAt := time.Time{}
	testkit.Eventually(t, "the resumed instance to join the group again", time.Minute, func() bool {
		for _, l := range procLines(a, `"Joined consumer group generation"`) {
			var rec struct {
				Time time.Time `json:"time"`
			}
			if json.Unmarshal([]byte(l), &rec) == nil && rec.Time.After(resumedAt) {
				rejoinedAt = rec.Time
				return true
			}
		}
		return false
	})

	// The commands a had in flight (handed out, not yet answered on the
	// topic) when it stopped are the only ones whose sends may repeat, or
	// which may get a second result: they are among those it had called a
	// provider for. Everything a does after resuming, until it joins the
	// group again, is refused; after that it is new work.
	dups := c.calls.duplicates()
	for k := range dups {
		if !sentBefore[k] {
			t.Errorf("%s reached the provider twice, but the paused instance had not sent it before the pause", k)
		}
	}
	newAfterResume := 0
	for _, cl := range c.calls.snapshot() {
		if cl.instance != "a" || !cl.at.After(resumedAt) {
			continue
		}
		newAfterResume++
		if cl.at.Before(rejoinedAt) {
			t.Errorf("%s: sent by the paused instance %s after it resumed, before it joined the group again", cl.key, cl.at.Sub(resumedAt).Round(time.Millisecond))
		}
	}
	conflicts := c.conflicts(ids)
	for _, id := range conflicts {
		if !sentBefore[id+"/email"] {
			t.Errorf("command %s has two different results, but the paused instance had not sent it before the pause", id)
		}
		t.Logf("command %s, being answered by the paused instance when it stopped, has two results: %s", id, c.describeResults(id))
	}
	if len(inFlight) == 0 {
		t.Error("no call of the paused instance was in flight at the pause: the test showed nothing")
	}
	refused := len(procLines(a, `"command handed over undecided"`))
	rejoined := rejoinedAt.Sub(resumedAt)
	t.Logf("paused instance: paused %s (session timeout %s); %d of its provider calls in flight at the pause; %d repeated sends, %d commands with a second, different result (all of them commands it was answering); after SIGCONT: it rejoined in %s, %d of its commands were handed over undecided (claims refused), 0 sends before it rejoined, %d since; hand-overs: %s",
		resumedAt.Sub(pausedAt).Round(time.Millisecond), session, len(inFlight), len(dups), len(conflicts), rejoined.Round(time.Millisecond), refused, newAfterResume, durations(c.handOvers()))
}

// stopTook is how long the process took from noticing SIGTERM to its last
// log line ("stopped"): the test's own SIGTERM-to-exit time also counts the
// race detector's teardown at exit (about a second).
func stopTook(p *proc) time.Duration {
	var from, to time.Time
	for _, l := range procLines(p, `"msg":"stop`) {
		var rec struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(l), &rec) != nil {
			continue
		}
		switch {
		case strings.HasPrefix(rec.Msg, "stop requested"):
			from = rec.Time
		case rec.Msg == "stopped":
			to = rec.Time
		}
	}
	if from.IsZero() || to.Before(from) {
		return -1
	}
	return to.Sub(from)
}

// procLines returns the lines of one process's log that contain s.
func procLines(p *proc, s string) []string {
	b, _ := os.ReadFile(p.logPath)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// TestOversizedPoison: an invalid command just under the commands topic's
// size limit is dead-lettered once (truncated) and the next command with its
// key is answered; the process stays ready.
func TestOversizedPoison(t *testing.T) {
	c := newCluster(t, 0)
	sessions, ids, cmds := sessionsAndCommands(1, "big")
	c.events(sessions, "paid", 1)
	p := c.start(procOpts{waitForReady: true})
	big := `{"command_id":"big","session_id":"` + sessions[0] + `","channels":["fax"],"padding":"` + strings.Repeat("p", 1<<20-200) + `"}`
	c.produce(c.topics.Commands, kafka.Message{Key: []byte(sessions[0]), Value: []byte(big)})
	c.produce(c.topics.Commands, cmds...)
	c.waitAnswered(ids, time.Minute)
	// A second poison record on the same key: its dead letter comes after
	// any repeat of the first's (one partition, in order).
	c.produce(c.topics.Commands, kafka.Message{Key: []byte(sessions[0]), Value: []byte("second poison")})
	testkit.Eventually(t, "the second dead letter", 30*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.dlq) > 0 && string(c.dlq[len(c.dlq)-1].Value) == "second poison"
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.dlq) != 2 {
		t.Fatalf("%d dead letters, want 2 (the oversized one once, then the second)", len(c.dlq))
	}
	d := c.dlq[0]
	var truncated, size string
	for _, h := range d.Headers {
		switch h.Key {
		case "truncated":
			truncated = string(h.Value)
		case "original_size":
			size = string(h.Value)
		}
	}
	if truncated != "true" || size != fmt.Sprint(len(big)) || !strings.HasPrefix(big, string(d.Value)) {
		t.Errorf("dead letter: truncated=%q original_size=%q, %d bytes", truncated, size, len(d.Value))
	}
	if code, body := p.get("/readyz"); code != 200 {
		t.Errorf("not ready after the oversized command: %s", body)
	}
	if len(c.results["big"]) != 1 {
		t.Errorf("the oversized invalid command has %d results, want 1 (invalid_command)", len(c.results["big"]))
	}
	t.Logf("oversized poison: a %d-byte invalid command dead-lettered once as %d bytes (truncated), its invalid_command result published, the next command of its key answered",
		len(big), len(d.Value))
}

// TestMembershipChurn: while 3,000 commands flow, instances are started and
// stopped (SIGTERM) every one to three seconds, some stops landing while
// another instance is joining the group. Every command is sent once.
func TestMembershipChurn(t *testing.T) {
	const n = 3000
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	c := newCluster(t, 20*time.Millisecond)
	sessions, ids, cmds := sessionsAndCommands(n, "churn")
	c.events(sessions, "paid", 1)
	live := []*proc{c.start(procOpts{waitForReady: true}), c.start(procOpts{waitForReady: true})}
	start := time.Now()
	published := c.publishSteady(c.topics.Commands, cmds, 150)
	joins, stops, stopsDuringJoin := 0, 0, 0
	join := func(wait bool) {
		live = append(live, c.start(procOpts{waitForReady: wait}))
		joins++
	}
	stop := func() {
		k := rng.IntN(len(live))
		live[k].stop()
		live = append(live[:k:k], live[k+1:]...)
		stops++
	}
	// Join, stop one while another joins (the group is rebalancing), stop;
	// again, every one to two seconds; between one and three instances.
	for i := 0; time.Since(start) < 16*time.Second; i++ {
		time.Sleep(time.Duration(1000+rng.IntN(1000)) * time.Millisecond)
		switch {
		case i%3 == 0 && len(live) < 3, len(live) == 1:
			join(true)
		case i%3 == 1:
			join(false)
			live[len(live)-1], live[0] = live[0], live[len(live)-1] // not the joining one
			k := 1 + rng.IntN(len(live)-1)
			live[k].stop()
			live = append(live[:k:k], live[k+1:]...)
			stops++
			stopsDuringJoin++
		default:
			stop()
		}
	}
	<-published
	c.waitAnswered(ids, 3*time.Minute)
	replayed := c.requireOneDecision(ids)
	t.Logf("membership churn (seed %d): %d commands in %s; %d joins, %d stops (%d while another instance joined), %d instances at the end; %d repeated sends; %d results published again; hand-overs: %s",
		seed, n, time.Since(start).Round(time.Millisecond), joins, stops, stopsDuringJoin, len(live), len(c.calls.duplicates()), replayed, durations(c.handOvers()))
}
