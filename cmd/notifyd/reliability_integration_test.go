//go:build integration

package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"

	"github.com/notifyd/notifyd/internal/testkit"
)

func sessionsAndCommands(n int, prefix string) (sessions, ids []string, cmds []kafka.Message) {
	for i := 0; i < n; i++ {
		s := fmt.Sprintf("%s-s%d", prefix, i)
		id := fmt.Sprintf("%s-c%d", prefix, i)
		sessions = append(sessions, s)
		ids = append(ids, id)
		cmds = append(cmds, kafka.Message{Key: []byte(s), Value: commandJSON(id, s, "email")})
	}
	return sessions, ids, cmds
}

// publishInBackground publishes msgs in batches of 50 from a goroutine.
func (c *cluster) publishInBackground(topic string, msgs []kafka.Message) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < len(msgs); i += 50 {
			c.produce(topic, msgs[i:min(i+50, len(msgs))]...)
		}
	}()
	return done
}

// TestCrash: kill -9 notifyd in the middle of 2,000 commands (provider
// calls take 50 ms) and start it again. Every command gets a result; only
// commands in flight at the kill may reach the provider twice.
func TestCrash(t *testing.T) {
	const n, concurrency = 2000, 64
	c := newCluster(t, 50*time.Millisecond)
	sessions, ids, cmds := sessionsAndCommands(n, "crash")
	c.events(sessions, "paid", 1)
	dir := t.TempDir()
	p := c.start(procOpts{dir: dir, concurrency: concurrency, waitForReady: true})
	published := c.publishInBackground(c.topics.Commands, cmds)
	testkit.Eventually(t, "a third of the commands sent", 3*time.Minute, func() bool {
		if !p.running() {
			t.Fatal("notifyd exited")
		}
		return c.calls.total() >= n/3
	})
	p.kill9()
	// Taken once the process is gone: every call it made started before.
	killedAt := time.Now()
	before := c.answered(ids)
	c.start(procOpts{dir: dir, concurrency: concurrency})
	<-published
	c.waitAnswered(ids, 3*time.Minute)
	replayed := c.checkResults(ids)
	dups := c.calls.duplicates()
	for k, first := range dups {
		if first.After(killedAt) {
			t.Errorf("%s reached the provider twice, first after the kill; its log lines:\n%s", k, strings.Join(c.logLines(strings.Split(k, "/")[0]+`"`), "\n"))
		}
	}
	if len(dups) > concurrency {
		t.Errorf("%d sends repeated, more than the %d that can be in flight", len(dups), concurrency)
	}
	t.Logf("crash: %d commands, %d answered before the kill, %d provider calls, %d repeated (in flight at the kill, bound %d), %d results published again",
		n, before, c.calls.total(), len(dups), concurrency, replayed)
}

// TestBrokerRestart: the broker restarts in the middle of the stream;
// notifyd reconnects by itself and answers every command.
func TestBrokerRestart(t *testing.T) {
	ctl := kafkaLocal(t)
	const n = 1000
	c := newCluster(t, 10*time.Millisecond)
	sessions, ids, cmds := sessionsAndCommands(n, "brk")
	c.events(sessions, "paid", 1)
	p := c.start(procOpts{waitForReady: true})
	published := c.publishInBackground(c.topics.Commands, cmds)
	testkit.Eventually(t, "a quarter of the commands answered", 3*time.Minute, func() bool { return c.answered(ids) >= n/4 })
	start := time.Now()
	out, err := exec.Command(ctl, "restart").CombinedOutput()
	if err != nil {
		t.Fatalf("kafka-local restart: %v\n%s", err, out)
	}
	t.Logf("broker restarted in %s", time.Since(start).Round(time.Millisecond))
	<-published
	c.waitAnswered(ids, 4*time.Minute)
	if !p.running() {
		t.Fatal("notifyd exited during the broker restart")
	}
	replayed := c.checkResults(ids)
	dups := c.calls.duplicates()
	t.Logf("broker restart: %d commands answered without restarting notifyd; %d provider calls, %d repeated, %d results published again",
		n, c.calls.total(), len(dups), replayed)
	if len(dups) > 64 {
		t.Errorf("%d sends repeated, more than can be in flight", len(dups))
	}
}

// kafkaLocal returns the scripts/kafka-local that started the test broker.
func kafkaLocal(t *testing.T) string {
	t.Helper()
	ctl := os.Getenv("NOTIFYD_TEST_KAFKA_LOCAL")
	if ctl == "" {
		t.Fatal("NOTIFYD_TEST_KAFKA_LOCAL must name the scripts/kafka-local that started NOTIFYD_TEST_BROKERS (with its KAFKA_LOCAL_DIR), so the test can restart the broker")
	}
	return ctl
}

// TestTwoInstancesStopOne: two instances share the commands; one is
// stopped (SIGTERM) mid-stream and the other takes its partitions. A
// graceful stop hands over in-flight commands finished or undecided: no
// send is repeated and no command gets two different results.
func TestTwoInstancesStopOne(t *testing.T) {
	const n = 1500
	c := newCluster(t, 20*time.Millisecond)
	sessions, ids, cmds := sessionsAndCommands(n, "two")
	c.events(sessions, "paid", 1)
	a := c.start(procOpts{waitForReady: true})
	c.start(procOpts{waitForReady: true})
	published := c.publishInBackground(c.topics.Commands, cmds)
	testkit.Eventually(t, "a third of the commands answered", 3*time.Minute, func() bool { return c.answered(ids) >= n/3 })
	atStop := c.answered(ids)
	a.stop()
	stopped := stopTook(a)
	<-published
	c.waitAnswered(ids, 3*time.Minute)
	replayed := c.requireOneDecision(ids)
	t.Logf("two instances: %d commands, one stopped after %d answers (SIGTERM noticed to stopped: %s); %d repeated sends, %d results published again; hand-overs: %s",
		n, atStop, stopped.Round(time.Millisecond), len(c.calls.duplicates()), replayed, durations(c.handOvers()))
}

// TestLostDisk: the store is deleted while notifyd is stopped; on start it
// rebuilds the projection and the idempotency table from the topics and
// reaches the same state, digest for digest.
func TestLostDisk(t *testing.T) {
	c := newCluster(t, 0)
	sessions, ids, cmds := sessionsAndCommands(300, "disk")
	c.events(sessions, "created", 1)
	c.events(sessions[:100], "paid", 2)
	c.produce(c.topics.PaymentEvents, kafka.Message{Key: []byte(sessions[5])}) // a tombstone
	dir := t.TempDir()
	p := c.start(procOpts{dir: dir, waitForReady: true})
	c.produce(c.topics.Commands, cmds...)
	c.waitAnswered(ids, 2*time.Minute)
	p.stop()
	before := digest(t, c, dir)

	if err := os.RemoveAll(filepath.Join(dir, "projection")); err != nil {
		t.Fatal(err)
	}
	p = c.start(procOpts{dir: dir, readyMaxLag: 0, waitForReady: true})
	// A duplicate is answered from the rebuilt table, not sent again.
	calls := c.calls.total()
	c.produce(c.topics.Commands, cmds[0])
	testkit.Eventually(t, "the duplicate answered after the rebuild", time.Minute, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.results[ids[0]]) == 2
	})
	if c.calls.total() != calls {
		t.Errorf("a duplicate was sent again after the rebuild")
	}
	c.checkResults(ids)
	p.stop()
	after := digest(t, c, dir)
	if before != after {
		t.Fatalf("rebuilt store differs: %s before, %s after", before, after)
	}
	t.Logf("lost disk: rebuilt store digest %s equals the lost one", after[:16])
}

func digest(t *testing.T, c *cluster, dir string) string {
	t.Helper()
	s, err := projection.Open(filepath.Join(dir, "projection"), projection.Options{EventsTopic: c.topics.PaymentEvents, ResultsTopic: c.topics.Results})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPoison: 1,000 random-byte and schema-breaking commands interleaved
// with 1,000 valid ones. Every bad one is dead-lettered, every valid one
// answered, and the consumer never stalls.
func TestPoison(t *testing.T) {
	c := newCluster(t, 0)
	sessions, ids, valid := sessionsAndCommands(1000, "poison")
	c.events(sessions, "paid", 1)
	c.start(procOpts{waitForReady: true})
	rng := rand.New(rand.NewPCG(1, 2))
	var msgs []kafka.Message
	withID := 0
	for i := range valid {
		msgs = append(msgs, valid[i])
		var bad []byte
		switch i % 4 {
		case 0: // random bytes
			bad = make([]byte, 1+rng.IntN(300))
			for j := range bad {
				bad[j] = byte(rng.UintN(256))
			}
			if json.Valid(bad) {
				bad = append([]byte("{"), bad...)
			}
		case 1: // JSON, not an object
			bad = []byte(fmt.Sprintf(`[%d]`, i))
		case 2: // schema-breaking, usable command_id
			bad = []byte(fmt.Sprintf(`{"command_id":"bad-%d","session_id":%q,"channels":["pigeon"]}`, i, sessions[i]))
			withID++
		case 3: // schema-breaking, no command_id
			bad = []byte(fmt.Sprintf(`{"session_id":%q,"channels":[]}`, sessions[i]))
		}
		msgs = append(msgs, kafka.Message{Key: []byte(sessions[i]), Value: bad})
	}
	for i := 0; i < len(msgs); i += 100 {
		c.produce(c.topics.Commands, msgs[i:min(i+100, len(msgs))]...)
	}
	c.waitAnswered(ids, 2*time.Minute)
	testkit.Until(t, time.Minute, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.dlq) < 1000 || c.invalid < withID {
			return fmt.Errorf("dead letters %d of 1000, invalid_command results %d of %d", len(c.dlq), c.invalid, withID)
		}
		return nil
	})
	c.mu.Lock()
	if len(c.dlq) != 1000 {
		t.Errorf("%d dead letters, want 1000", len(c.dlq))
	}
	bad := map[string]bool{}
	for _, m := range msgs {
		if !strings.Contains(string(m.Value), `"command_id":"poison-`) {
			bad[string(m.Value)] = true
		}
	}
	for _, d := range c.dlq {
		if !bad[string(d.Value)] {
			t.Errorf("dead letter %q is not one of the bad commands (bytes changed?)", d.Value)
		}
	}
	invalid := c.invalid
	c.mu.Unlock()
	for _, id := range ids {
		if r, v := c.firstResult(id); r.Outcome != schemas.OutcomeNotified {
			t.Errorf("%s: %s", id, v)
		}
	}
	t.Logf("poison: 1000 bad commands dead-lettered (%d with an invalid_command result), 1000 valid ones notified", invalid)
}

// TestBacklog: 100,000 payment events are published while notifyd is
// down. On start it reports not ready until the projection has caught up,
// and commands arriving meanwhile are answered from the caught-up state.
func TestBacklog(t *testing.T) {
	const n = 100_000
	c := newCluster(t, 0)
	sessions := make([]string, n)
	for i := range sessions {
		sessions[i] = fmt.Sprintf("bl-s%d", i)
	}
	// The first 100 sessions are created early and paid at the very end.
	c.events(sessions[:100], "created", 1)
	c.events(sessions[100:], "paid", 1)
	c.events(sessions[:100], "paid", 2)
	var ids []string
	var cmds []kafka.Message
	for i := 0; i < 100; i++ {
		id := fmt.Sprintf("bl-c%d", i)
		ids = append(ids, id)
		cmds = append(cmds, kafka.Message{Key: []byte(sessions[i]), Value: commandJSON(id, sessions[i], "sms")})
	}
	start := time.Now()
	p := c.start(procOpts{readyMaxLag: 0})
	c.produce(c.topics.Commands, cmds...)
	catchingUp := 0
	testkit.Until(t, 3*time.Minute, func() error {
		code, body := p.get("/readyz")
		var r struct {
			Ready         bool   `json:"ready"`
			Reason        string `json:"reason"`
			ProjectionLag int64  `json:"projection_lag"`
		}
		_ = json.Unmarshal(body, &r)
		if code == 200 {
			if !r.Ready || r.ProjectionLag != 0 {
				t.Fatalf("ready with %s", body)
			}
			return nil
		}
		if r.ProjectionLag > 0 && strings.Contains(r.Reason, "projection catching up") {
			catchingUp++
		}
		return fmt.Errorf("not ready: %s", body)
	})
	readyAfter := time.Since(start)
	if catchingUp == 0 {
		t.Error("readiness never reported the projection catching up")
	}
	c.waitAnswered(ids, 2*time.Minute)
	for _, id := range ids {
		if r, v := c.firstResult(id); r.Outcome != schemas.OutcomeNotified || r.State == nil || *r.State != schemas.StatePaid {
			t.Errorf("%s answered from a stale projection: %s", id, v)
		}
	}
	t.Logf("backlog: %d events; ready after %s (%d not-ready answers while catching up); commands sent meanwhile all notified the final state",
		n+100, readyAfter.Round(time.Millisecond), catchingUp)
}
