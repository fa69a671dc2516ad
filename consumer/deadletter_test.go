package consumer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/schemas"

	"github.com/notifyd/notifyd/internal/testkit"
)

// nearLimitValue is just under what the commands topic takes by default
// (kafka-go's 1 MiB BatchBytes, Kafka's 1 MiB + 12 bytes message.max.bytes):
// the command fits, its dead letter (the same bytes plus headers) does not.
const nearLimitValue = 1<<20 - 100

// TestOversizedDeadLetter: an invalid command just under the topic's size
// limit is dead-lettered once, truncated with headers saying so, and the
// next command with its key is answered.
func TestOversizedDeadLetter(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		resultID    string // the command_id of its invalid_command result, "" none
	}{
		{name: "not json", value: strings.Repeat("x", nearLimitValue)},
		{name: "invalid command", resultID: "big",
			value: `{"command_id":"big","session_id":"s1","channels":["fax"],"padding":"` + strings.Repeat("p", nearLimitValue-80) + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.start(instanceOpts{})
			h.event("s1", nil)
			h.produce(h.topics.Commands, kafka.Message{Key: []byte("s1"), Value: []byte(tc.value)})
			h.command(map[string]any{"command_id": "after", "session_id": "s1", "channels": []string{"email"}})
			if r := h.result("after").result; r.Outcome != schemas.OutcomeNotified {
				t.Fatalf("the command after the oversized one: %+v", r)
			}
			// A second poison record on the same key: its dead letter comes
			// after any repeat of the first's (one partition, in order).
			h.produce(h.topics.Commands, kafka.Message{Key: []byte("s1"), Value: []byte("second poison")})
			h.waitFor("the second dead letter", 30*time.Second, func() bool {
				return len(h.dlq) > 0 && string(h.dlq[len(h.dlq)-1].msg.Value) == "second poison"
			})
			h.mu.Lock()
			dlq := append([]received(nil), h.dlq...)
			h.mu.Unlock()
			if len(dlq) != 2 {
				t.Fatalf("%d dead letters, want 2 (the oversized one once, then the second)", len(dlq))
			}
			d := dlq[0].msg
			sum := sha256.Sum256([]byte(tc.value))
			for k, want := range map[string]string{
				HeaderTruncated: "true", HeaderOriginalSize: strconv.Itoa(len(tc.value)),
				HeaderOriginalSHA256: hex.EncodeToString(sum[:]), HeaderOriginalTopic: h.topics.Commands,
			} {
				if got, _ := header(d, k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if string(d.Key) != "s1" || len(d.Value) == 0 || !strings.HasPrefix(tc.value, string(d.Value)) || len(d.Value) >= len(tc.value) {
				t.Errorf("dead letter key %q, %d bytes: not a proper prefix of the %d-byte original", d.Key, len(d.Value), len(tc.value))
			}
			if tc.resultID != "" {
				if r := h.result(tc.resultID).result; r.Reason != schemas.ReasonInvalidCommand {
					t.Errorf("oversized invalid command: %+v", r)
				}
			}
		})
	}
}

// TestDeadLetterFailureIsVisible: while the dead-letter topic cannot be
// written, the bad command's key waits without a hot loop (retries back
// off), readiness and the metric say so, and other keys go on; once the
// topic is back the dead letter is written and the key moves on.
func TestDeadLetterFailureIsVisible(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	backoffs := make(chan [2]time.Duration, 64)
	in := h.start(instanceOpts{registry: reg, hooks: hooks{deadLetterRetry: func(wait, ceiling time.Duration) {
		select {
		case backoffs <- [2]time.Duration{wait, ceiling}:
		default: // the test reads the first few only
		}
	}}})
	h.event("s1", nil)
	h.event("s2", nil)
	deleteTopic(t, h, h.topics.DeadLetter)

	h.produce(h.topics.Commands, kafka.Message{Key: []byte("s1"), Value: []byte("{not json")})
	h.command(map[string]any{"command_id": "same-key", "session_id": "s1", "channels": []string{"email"}})
	h.command(map[string]any{"command_id": "other-key", "session_id": "s2", "channels": []string{"email"}})
	if r := h.result("other-key").result; r.Outcome != schemas.OutcomeNotified {
		t.Fatalf("a command of another key: %+v", r)
	}
	testkit.Until(t, 30*time.Second, func() error {
		if r := in.svc.Readiness(); !strings.Contains(r.Reason, "dead-letter topic failing") {
			return fmt.Errorf("readiness does not report the failing dead letters: %+v", r)
		}
		return nil
	})
	// Each failed write waits before the next, up to a ceiling twice as
	// long each time (jittered below it): a backoff, not a loop.
	want := deadLetterFirstBackoff
	for i := 0; i < 3; i++ {
		if got := <-backoffs; got[1] != want || got[0] < 0 || got[0] > got[1] {
			t.Errorf("retry %d after %s (ceiling %s), want a ceiling of %s", i+1, got[0], got[1], want)
		}
		want *= 2
	}
	if errs := testutil.ToFloat64(in.svc.metrics.deadLetterErrors); errs < 3 {
		t.Errorf("notifyd_dead_letter_errors_total = %v after 3 failed writes", errs)
	}
	if h.resultCount("same-key") != 0 {
		t.Error("a command was answered before the dead letter ahead of it on its key was written")
	}
	if r := in.svc.Readiness(); r.Ready {
		t.Errorf("ready while dead letters fail: %+v", r)
	}

	createTopic(t, h, h.topics.DeadLetter)
	if r := h.result("same-key").result; r.Outcome != schemas.OutcomeNotified {
		t.Errorf("the key's next command: %+v", r)
	}
	h.waitFor("the dead letter", 30*time.Second, func() bool { return len(h.dlq) == 1 })
	testkit.Until(t, 30*time.Second, func() error {
		if r := in.svc.Readiness(); !r.Ready {
			return fmt.Errorf("not ready again after the dead-letter topic came back: %+v", r)
		}
		return nil
	})
	t.Logf("%v failed dead-letter writes, then written once the topic was back", testutil.ToFloat64(in.svc.metrics.deadLetterErrors))
}

func deleteTopic(t *testing.T, h *harness, topic string) {
	t.Helper()
	res, err := h.client.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err != nil || res.Errors[topic] != nil {
		t.Fatalf("delete topic %s: %v %v", topic, err, res)
	}
	// Wait until the broker no longer knows it (Kafka deletes asynchronously).
	testkit.Until(t, 30*time.Second, func() error {
		md, err := h.client.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && (len(md.Topics) == 0 || md.Topics[0].Error != nil) {
			return nil
		}
		return fmt.Errorf("topic %s still there after delete: %v", topic, err)
	})
}

func createTopic(t *testing.T, h *harness, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		err := EnsureTopics(ctx, h.client, []TopicSpec{{Name: topic, Partitions: testPartitions, ReplicationFactor: 1}}, true)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("create topic %s: %v", topic, err)
		}
		time.Sleep(200 * time.Millisecond) // a deletion still in progress
	}
}
