package consumer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/internal/testkit"
	"github.com/notifyd/notifyd/schemas"
)

func header(m kafka.Message, key string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// sendable is the channel matrix as the product's source document
// (../shared/reference/message-notifications-api.txt, "Valid Payment States
// for Sending Message Notifications") writes it, by hand, never computed
// from the code under test: email and sms for created, paid, canceled,
// failed, expired, authorized, voided, refunded and captured; whatsapp for
// created, paid, canceled, failed, expired and authorized; nothing for
// pending, attempted, invalided, cod, refund_queued and refund_rejected.
var sendable = map[schemas.State][]schemas.Channel{
	"created":         {"email", "sms", "whatsapp"},
	"paid":            {"email", "sms", "whatsapp"},
	"canceled":        {"email", "sms", "whatsapp"},
	"failed":          {"email", "sms", "whatsapp"},
	"expired":         {"email", "sms", "whatsapp"},
	"authorized":      {"email", "sms", "whatsapp"},
	"voided":          {"email", "sms"},
	"refunded":        {"email", "sms"},
	"captured":        {"email", "sms"},
	"pending":         {},
	"attempted":       {},
	"invalided":       {},
	"cod":             {},
	"refund_queued":   {},
	"refund_rejected": {},
}

// TestMatrixEndToEnd sends one command per state x channel cell through
// Kafka: the cells of the channel matrix (sendable) are sent, every other
// cell is rejected as state_not_supported.
func TestMatrixEndToEnd(t *testing.T) {
	if len(sendable) != len(schemas.States) {
		t.Fatalf("the table has %d states, schemas %d", len(sendable), len(schemas.States))
	}
	h := newHarness(t)
	in := h.start(instanceOpts{})
	for _, st := range schemas.States {
		h.event("s-"+string(st), map[string]any{"state": st, "order_no": "o-" + string(st)})
	}
	for _, st := range schemas.States {
		for _, ch := range schemas.Channels {
			h.command(map[string]any{"command_id": fmt.Sprintf("c-%s-%s", st, ch), "session_id": "s-" + string(st), "channels": []string{string(ch)}})
		}
	}
	for _, st := range schemas.States {
		for _, ch := range schemas.Channels {
			id := fmt.Sprintf("c-%s-%s", st, ch)
			r := h.result(id).result
			if len(r.Channels) != 1 || r.State == nil || *r.State != st {
				t.Fatalf("%s: result %+v", id, r)
			}
			c := r.Channels[0]
			if slices.Contains(sendable[st], ch) {
				if r.Outcome != schemas.OutcomeNotified || r.Message != schemas.MessageNotified || c.Status != schemas.StatusSent || c.Attempts != 1 || c.ProviderMessageID == "" {
					t.Errorf("%s: want sent, got %+v %+v", id, r, c)
				}
				if got := in.provider.sentFor(id); len(got) != 1 || got[0].Channel != ch {
					t.Errorf("%s: provider got %+v", id, got)
				}
			} else {
				if r.Outcome != schemas.OutcomeNotNotified || c.Status != schemas.StatusRejected || c.Reason != schemas.ReasonStateNotSupported || c.Attempts != 0 {
					t.Errorf("%s: want rejected state_not_supported, got %+v %+v", id, r, c)
				}
				if got := in.provider.sentFor(id); len(got) != 0 {
					t.Errorf("%s: provider called for a rejected cell", id)
				}
			}
		}
	}
}

// TestReasonsEndToEnd reaches every per-channel reason and every
// whole-command reason through Kafka.
func TestReasonsEndToEnd(t *testing.T) {
	h := newHarness(t)
	// WhatsApp has no provider; sms has no template for "paid" but has one
	// for "created".
	tpl := dispatch.DefaultTemplates()
	delete(tpl["sms"], "paid")
	h.start(instanceOpts{channels: []schemas.Channel{schemas.ChannelEmail, schemas.ChannelSMS}, templates: tpl})

	h.event("s-enabled", map[string]any{"notifications": map[string][]string{"email": {"created"}}})
	h.event("s-nocontact", map[string]any{"customer_email": nil, "customer_phone": ""})
	h.event("s-badcontact", map[string]any{"customer_email": "not-an-email", "customer_phone": "12345"})
	h.event("s-ok", map[string]any{"order_no": "o-ok"})
	h.event("s-reject", map[string]any{"customer_email": "reject@example.com"})
	h.event("s-down", map[string]any{"customer_email": "down@example.com"})
	h.event("s-other", map[string]any{"order_no": "o-other"})
	h.event("s-created", map[string]any{"state": "created"})

	type want struct {
		status   schemas.ChannelStatus
		reason   schemas.Reason
		attempts int
	}
	cases := []struct {
		id      string
		cmd     map[string]any
		outcome schemas.Outcome
		reason  schemas.Reason // whole-command
		chans   []want
	}{
		{id: "state-not-supported", cmd: map[string]any{"session_id": "s-ok", "channels": []string{"email"}}, outcome: schemas.OutcomeNotified,
			chans: []want{{schemas.StatusSent, "", 1}}},
		{id: "channel-not-enabled", cmd: map[string]any{"session_id": "s-enabled", "channels": []string{"sms"}}, outcome: schemas.OutcomeNotNotified,
			chans: []want{{schemas.StatusRejected, schemas.ReasonChannelNotEnabled, 0}}},
		{id: "state-not-enabled", cmd: map[string]any{"session_id": "s-enabled", "channels": []string{"email"}}, outcome: schemas.OutcomeNotNotified,
			chans: []want{{schemas.StatusRejected, schemas.ReasonStateNotEnabled, 0}}},
		{id: "missing-contact", cmd: map[string]any{"session_id": "s-nocontact", "channels": []string{"email", "sms"}}, outcome: schemas.OutcomeNotNotified,
			chans: []want{{schemas.StatusRejected, schemas.ReasonMissingContact, 0}, {schemas.StatusRejected, schemas.ReasonMissingContact, 0}}},
		{id: "invalid-contact", cmd: map[string]any{"session_id": "s-badcontact", "channels": []string{"email", "sms"}}, outcome: schemas.OutcomeNotNotified,
			chans: []want{{schemas.StatusRejected, schemas.ReasonInvalidContact, 0}, {schemas.StatusRejected, schemas.ReasonInvalidContact, 0}}},
		{id: "provider-not-configured", cmd: map[string]any{"session_id": "s-ok", "channels": []string{"whatsapp", "email"}}, outcome: schemas.OutcomePartiallyNotified,
			chans: []want{{schemas.StatusRejected, schemas.ReasonProviderNotConfigured, 0}, {schemas.StatusSent, "", 1}}},
		{id: "template-not-configured", cmd: map[string]any{"order_no": "o-ok", "channels": []string{"sms"}}, outcome: schemas.OutcomeNotNotified,
			chans: []want{{schemas.StatusRejected, schemas.ReasonTemplateNotConfigured, 0}}},
		{id: "sms-template-other-state", cmd: map[string]any{"session_id": "s-created", "channels": []string{"sms"}}, outcome: schemas.OutcomeNotified,
			chans: []want{{schemas.StatusSent, "", 1}}},
		{id: "provider-rejected", cmd: map[string]any{"session_id": "s-reject", "channels": []string{"email", "sms"}}, outcome: schemas.OutcomeNotNotified,
			chans: []want{{schemas.StatusFailed, schemas.ReasonProviderRejected, 1}, {schemas.StatusRejected, schemas.ReasonTemplateNotConfigured, 0}}},
		{id: "provider-unavailable", cmd: map[string]any{"session_id": "s-down", "channels": []string{"email"}}, outcome: schemas.OutcomeNotNotified,
			chans: []want{{schemas.StatusFailed, schemas.ReasonProviderUnavailable, 3}}},
		{id: "unknown-transaction", cmd: map[string]any{"session_id": "s-nope", "channels": []string{"email"}}, outcome: schemas.OutcomeNotNotified,
			reason: schemas.ReasonUnknownTransaction},
		{id: "identifier-mismatch", cmd: map[string]any{"session_id": "s-ok", "order_no": "o-other", "channels": []string{"email"}}, outcome: schemas.OutcomeNotNotified,
			reason: schemas.ReasonIdentifierMismatch},
		{id: "identifier-match", cmd: map[string]any{"session_id": "s-ok", "order_no": "o-ok", "channels": []string{"email"}}, outcome: schemas.OutcomeNotified,
			chans: []want{{schemas.StatusSent, "", 1}}},
	}
	// The first case is a sent email, the matrix test covers rejection by
	// state; here the command hits a known state on a supported channel.
	for _, tc := range cases {
		tc.cmd["command_id"] = tc.id
		tc.cmd["requested_by"] = "ops@merchant"
		h.command(tc.cmd)
	}
	for _, tc := range cases {
		t.Run(tc.id, func(t *testing.T) {
			got := h.result(tc.id)
			r := got.result
			if r.Outcome != tc.outcome || r.Reason != tc.reason || len(r.Channels) != len(tc.chans) {
				t.Fatalf("result = %s", got.msg.Value)
			}
			if r.RequestedBy != "ops@merchant" {
				t.Errorf("requested_by = %q", r.RequestedBy)
			}
			if (r.Outcome == schemas.OutcomeNotified) != (r.Message == schemas.MessageNotified) {
				t.Errorf("message %q for outcome %s", r.Message, r.Outcome)
			}
			if tc.reason != "" && (r.Detail == "" || len(r.Channels) != 0 || !strings.Contains(string(got.msg.Value), `"channels":[]`)) {
				t.Errorf("whole-command failure must have detail and empty channels: %s", got.msg.Value)
			}
			for i, w := range tc.chans {
				c := r.Channels[i]
				if c.Status != w.status || c.Reason != w.reason || c.Attempts != w.attempts {
					t.Errorf("channel %d = %+v, want %+v", i, c, w)
				}
			}
			key := r.SessionID
			if key == "" {
				key = r.OrderNo
			}
			if string(got.msg.Key) != key {
				t.Errorf("result key %q, want %q", got.msg.Key, key)
			}
		})
	}
	// Masked recipients, never the contact itself.
	r := h.result("identifier-match")
	if c := r.result.Channels[0]; c.Recipient != "l***@example.com" {
		t.Errorf("recipient = %q", c.Recipient)
	}
	if strings.Contains(string(r.msg.Value), "layla@example.com") {
		t.Errorf("result leaks the contact: %s", r.msg.Value)
	}
	for k, want := range map[string]string{"ce_specversion": "1.0", "ce_id": r.result.ResultID, "ce_type": CEType, "content-type": "application/json"} {
		if got, _ := header(r.msg, k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"ce_source", "ce_time"} {
		if v, _ := header(r.msg, k); v == "" {
			t.Errorf("header %s missing", k)
		}
	}
}

// TestCommandExpired answers a command older than max_command_age, by its
// Kafka timestamp, without dispatching it. Both commands are published
// before the instance first starts: a new group reads from the earliest
// offset, so they are answered.
func TestCommandExpired(t *testing.T) {
	h := newHarness(t)
	h.event("s1", nil)
	h.produce(h.topics.Commands, kafka.Message{Key: []byte("s1"), Time: time.Now().Add(-25 * time.Hour),
		Value: []byte(`{"command_id":"old","session_id":"s1","channels":["email"]}`)})
	h.command(map[string]any{"command_id": "fresh", "session_id": "s1", "channels": []string{"email"}})
	in := h.start(instanceOpts{})
	if r := h.result("old").result; r.Reason != schemas.ReasonCommandExpired || r.Outcome != schemas.OutcomeNotNotified || len(r.Channels) != 0 {
		t.Errorf("old command: %+v", r)
	}
	if r := h.result("fresh").result; r.Outcome != schemas.OutcomeNotified {
		t.Errorf("fresh command: %+v", r)
	}
	if n := len(in.provider.sentFor("old")); n != 0 {
		t.Errorf("expired command dispatched %d messages", n)
	}
}

// TestProjectionRules: stale versions are ignored, tombstones forget, the
// latest contacts are used.
func TestProjectionRules(t *testing.T) {
	h := newHarness(t)
	in := h.start(instanceOpts{})
	h.event("s-stale", map[string]any{"state": "paid", "version": 2})
	h.event("s-stale", map[string]any{"state": "created", "version": 1})
	h.event("s-contact", map[string]any{"customer_email": "old@example.com"})
	h.event("s-contact", map[string]any{"customer_email": "new@example.com"})
	h.event("s-gone", map[string]any{"order_no": "o-gone"})
	h.produce(h.topics.PaymentEvents, kafka.Message{Key: []byte("s-gone")})
	h.command(map[string]any{"command_id": "stale", "session_id": "s-stale", "channels": []string{"email"}})
	h.command(map[string]any{"command_id": "contact", "session_id": "s-contact", "channels": []string{"email"}})
	h.command(map[string]any{"command_id": "gone", "order_no": "o-gone", "channels": []string{"email"}})
	if r := h.result("stale").result; r.State == nil || *r.State != schemas.StatePaid {
		t.Errorf("stale version applied: %+v", r)
	}
	if r := h.result("contact").result; r.Outcome != schemas.OutcomeNotified || r.Channels[0].Recipient != "n***@example.com" {
		t.Errorf("contact change: %+v", r)
	}
	if got := in.provider.sentFor("contact"); len(got) != 1 || got[0].To != "new@example.com" {
		t.Errorf("sent to %+v, want the new contact", got)
	}
	if r := h.result("gone").result; r.Reason != schemas.ReasonUnknownTransaction {
		t.Errorf("tombstoned transaction: %+v", r)
	}
}

// TestCommandBeforeEvent: a command that arrives before its transaction
// waits for it (read-your-writes across producers).
func TestCommandBeforeEvent(t *testing.T) {
	h := newHarness(t)
	waiting := make(chan string, 1)
	in := h.start(instanceOpts{catchUpWait: 10 * time.Second, hooks: hooks{unknownWait: func(id string) {
		select {
		case waiting <- id:
		default:
		}
	}}})
	h.command(map[string]any{"command_id": "early", "session_id": "s-late", "channels": []string{"sms"}})
	if id := <-waiting; id != "early" { // the command came first, and waits for its transaction
		t.Fatalf("waiting: %s", id)
	}
	h.event("s-late", nil)
	if r := h.result("early").result; r.Outcome != schemas.OutcomeNotified {
		t.Errorf("early command: %+v", r)
	}
	if n := len(in.provider.sentFor("early")); n != 1 {
		t.Errorf("sent %d", n)
	}
}

// TestDuplicateCommand: the same command_id is dispatched once; the
// duplicate republishes the stored result unchanged.
func TestDuplicateCommand(t *testing.T) {
	h := newHarness(t)
	in := h.start(instanceOpts{})
	h.event("s1", nil)
	cmd := map[string]any{"command_id": "dup", "session_id": "s1", "channels": []string{"email", "sms"}}
	h.command(cmd)
	first := h.result("dup")
	h.command(cmd)
	h.command(map[string]any{"command_id": "dup", "order_no": "other-key", "channels": []string{"email"}})
	h.waitFor("three results of dup", 30*time.Second, func() bool { return len(h.results["dup"]) == 3 })
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.results["dup"][1:] {
		if string(r.msg.Value) != string(first.msg.Value) {
			t.Errorf("replayed result differs:\n%s\n%s", r.msg.Value, first.msg.Value)
		}
		if id, _ := header(r.msg, "ce_id"); id != first.result.ResultID {
			t.Errorf("ce_id %q", id)
		}
	}
	if n := len(in.provider.sentFor("dup")); n != 2 {
		t.Errorf("provider called %d times, want 2 (one per channel, once)", n)
	}
}

// TestPoisonMessages: malformed commands go to the dead-letter topic with
// their bytes, key and headers, schema-breaking ones with a command_id also
// get an invalid_command result, and the consumer keeps going.
func TestPoisonMessages(t *testing.T) {
	h := newHarness(t)
	h.start(instanceOpts{})
	h.event("s1", nil)
	poison := []kafka.Message{
		{Key: []byte("k1"), Value: []byte("{not json"), Headers: []kafka.Header{{Key: "trace", Value: []byte("t-1")}}},
		{Key: []byte("k2"), Value: []byte(`{"command_id":"bad-channels","session_id":"s1","channels":["fax"]}`)},
		{Key: []byte("k3"), Value: []byte(`{"session_id":"s1","channels":["email"]}`)},
		{Key: []byte("k4"), Value: []byte(`{"command_id":"` + strings.Repeat("x", 129) + `","session_id":"s1","channels":["email"]}`)},
		{Key: []byte("k5"), Value: []byte{0xff, 0xfe, 0x00}},
		{Key: []byte("k6"), Value: []byte(`{"command_id":"bad-type","session_id":42,"channels":["email"]}`)},
	}
	h.produce(h.topics.Commands, poison...)
	h.command(map[string]any{"command_id": "after", "session_id": "s1", "channels": []string{"email"}})
	if r := h.result("after").result; r.Outcome != schemas.OutcomeNotified {
		t.Errorf("valid command after poison: %+v", r)
	}
	h.waitFor("every poison message dead-lettered", 30*time.Second, func() bool { return len(h.dlq) == len(poison) })
	h.mu.Lock()
	dlq := append([]received(nil), h.dlq...)
	h.mu.Unlock()
	byKey := map[string]kafka.Message{}
	for _, d := range dlq {
		byKey[string(d.msg.Key)] = d.msg
	}
	for _, p := range poison {
		d, ok := byKey[string(p.Key)]
		if !ok {
			t.Errorf("key %s not dead-lettered", p.Key)
			continue
		}
		if string(d.Value) != string(p.Value) {
			t.Errorf("key %s: value changed: %q", p.Key, d.Value)
		}
		if v, _ := header(d, HeaderOriginalTopic); v != h.topics.Commands {
			t.Errorf("key %s: original_topic %q", p.Key, v)
		}
		for _, k := range []string{HeaderError, HeaderOriginalPartition, HeaderOriginalOffset} {
			if v, _ := header(d, k); v == "" {
				t.Errorf("key %s: header %s missing", p.Key, k)
			}
		}
		for _, ph := range p.Headers {
			if v, _ := header(d, ph.Key); v != string(ph.Value) {
				t.Errorf("key %s: original header %s = %q", p.Key, ph.Key, v)
			}
		}
		if len(d.Headers) != len(p.Headers)+4 {
			t.Errorf("key %s: headers %v", p.Key, d.Headers)
		}
	}
	for _, id := range []string{"bad-channels", "bad-type"} {
		r := h.result(id)
		if r.result.Reason != schemas.ReasonInvalidCommand || r.result.Detail == "" || len(r.result.Channels) != 0 {
			t.Errorf("%s: %s", id, r.msg.Value)
		}
	}
	if k := string(h.result("bad-channels").msg.Key); k != "s1" {
		t.Errorf("invalid_command result keyed %q, want the session_id", k)
	}
	if k := string(h.result("bad-type").msg.Key); k != "bad-type" {
		t.Errorf("invalid_command result keyed %q, want the command_id", k)
	}
}

// TestRestartResumesWithoutReplay: a restarted instance resumes from its
// stored offsets; an instance with an empty store rebuilds the projection
// and the idempotency table from the topics.
func TestRestartResumesWithoutReplay(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	provider := newRecordingProvider()
	in := h.start(instanceOpts{dir: dir, provider: provider})
	for i := 0; i < 50; i++ {
		h.event(fmt.Sprintf("s%d", i), nil)
	}
	h.command(map[string]any{"command_id": "c1", "session_id": "s49", "channels": []string{"email"}})
	first := h.result("c1")
	applied := in.svc.Stats().EventsApplied
	if applied != 50 {
		t.Fatalf("first run applied %d events, want 50", applied)
	}
	in.stop(t)

	h.event("s50", nil)
	in = h.start(instanceOpts{dir: dir, provider: provider})
	h.command(map[string]any{"command_id": "c2", "session_id": "s50", "channels": []string{"email"}})
	if r := h.result("c2").result; r.Outcome != schemas.OutcomeNotified {
		t.Fatalf("after restart: %+v", r)
	}
	if got := in.svc.Stats().EventsApplied; got != 1 {
		t.Errorf("restart applied %d events, want only the 1 new one (no replay)", got)
	}
	in.stop(t)

	// Lost disk: rebuild everything from the topics.
	if err := os.RemoveAll(filepath.Join(dir, "projection")); err != nil {
		t.Fatal(err)
	}
	in = h.start(instanceOpts{dir: dir, provider: provider})
	h.command(map[string]any{"command_id": "c1", "session_id": "s49", "channels": []string{"email"}})
	h.command(map[string]any{"command_id": "c3", "session_id": "s0", "channels": []string{"sms"}})
	if r := h.result("c3").result; r.Outcome != schemas.OutcomeNotified {
		t.Fatalf("after rebuild: %+v", r)
	}
	h.waitFor("replayed c1", 30*time.Second, func() bool { return len(h.results["c1"]) == 2 })
	h.mu.Lock()
	replay := h.results["c1"][1]
	h.mu.Unlock()
	if string(replay.msg.Value) != string(first.msg.Value) {
		t.Errorf("rebuilt idempotency table answered differently:\n%s\n%s", replay.msg.Value, first.msg.Value)
	}
	if n := len(provider.sentFor("c1")); n != 1 {
		t.Errorf("c1 dispatched %d times across restarts", n)
	}
	if got := in.svc.Stats().EventsApplied; got != 51 {
		t.Errorf("rebuild applied %d events, want 51", got)
	}
}

// TestTwoInstancesShareCommands: two instances in one group split the
// commands; each command is dispatched once, and answered with one result
// (published again, identical, when a rebalance redelivers it). Commands are
// published in waves until the group has rebalanced and both instances have
// worked (bounded), since the second member joins asynchronously.
func TestTwoInstancesShareCommands(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	a := h.start(instanceOpts{registry: reg})
	b := h.start(instanceOpts{})
	const wave = 20
	n := 0
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && (a.provider.total() == 0 || b.provider.total() == 0) {
		for i := n; i < n+wave; i++ {
			h.event(fmt.Sprintf("s%d", i), nil)
		}
		for i := n; i < n+wave; i++ {
			h.command(map[string]any{"command_id": fmt.Sprintf("c%d", i), "session_id": fmt.Sprintf("s%d", i), "channels": []string{"email"}})
		}
		for i := n; i < n+wave; i++ {
			if r := h.result(fmt.Sprintf("c%d", i)).result; r.Outcome != schemas.OutcomeNotified {
				t.Errorf("c%d: %+v", i, r)
			}
		}
		n += wave
		time.Sleep(200 * time.Millisecond)
	}
	if a.provider.total() == 0 || b.provider.total() == 0 {
		t.Fatalf("after %d commands one instance still did all the work: %d / %d", n, a.provider.total(), b.provider.total())
	}
	if a.provider.total()+b.provider.total() != n {
		t.Errorf("sent %d + %d, want %d in all", a.provider.total(), b.provider.total(), n)
	}
	// A rebalance hands uncommitted commands to the other member, which
	// answers them again from the idempotency table: the same result, never
	// a second dispatch (checked above).
	replays := 0
	h.mu.Lock()
	for i := 0; i < n; i++ {
		rs := h.results[fmt.Sprintf("c%d", i)]
		for _, r := range rs[1:] {
			replays++
			if string(r.msg.Value) != string(rs[0].msg.Value) {
				t.Errorf("c%d answered twice with different results:\n%s\n%s", i, rs[0].msg.Value, r.msg.Value)
			}
		}
	}
	h.mu.Unlock()
	// The first instance handed partitions over to the second one when it
	// joined: its metrics say so.
	handOvers, _ := testkit.Metric(t, reg, "notifyd_group_handovers_total", nil)
	generation, _ := testkit.Metric(t, reg, "notifyd_group_generation", nil)
	if handOvers < 1 || generation < 2 {
		t.Errorf("after the second instance joined: notifyd_group_handovers_total %v, notifyd_group_generation %v", handOvers, generation)
	}
	t.Logf("%d commands: %d on one instance, %d on the other, %d results replayed after the rebalance; the first instance handed over %v time(s), generation %v",
		n, a.provider.total(), b.provider.total(), replays, handOvers, generation)
}

// TestConcurrencyAndKeyOrder: commands of different keys are sent at the
// same time (the provider holds every call until 16 are in flight at once,
// and fails the test otherwise), while commands of one key are handled one
// at a time, in the order published.
func TestConcurrencyAndKeyOrder(t *testing.T) {
	h := newHarness(t)
	p := newRecordingProvider()
	const parallel = 16
	p.barrier = make(chan struct{})
	p.barrierAt = parallel
	in := h.start(instanceOpts{provider: p})
	for i := 0; i < parallel; i++ {
		h.event(fmt.Sprintf("s%d", i), nil)
	}
	for i := 0; i < parallel; i++ {
		h.command(map[string]any{"command_id": fmt.Sprintf("c%d", i), "session_id": fmt.Sprintf("s%d", i), "channels": []string{"email"}})
	}
	for i := 0; i < parallel; i++ {
		if r := h.result(fmt.Sprintf("c%d", i)).result; r.Outcome != schemas.OutcomeNotified {
			t.Fatalf("c%d: %s", i, h.result(fmt.Sprintf("c%d", i)).msg.Value)
		}
	}
	if got := p.maxInFlight(); got < parallel {
		t.Errorf("at most %d provider calls in flight, want %d", got, parallel)
	}

	// One key: ten commands, each with a slow provider call.
	p.reset(20 * time.Millisecond)
	h.event("same", nil)
	for i := 0; i < 10; i++ {
		h.command(map[string]any{"command_id": fmt.Sprintf("k%d", i), "session_id": "same", "channels": []string{"sms"}})
	}
	for i := 0; i < 10; i++ {
		h.result(fmt.Sprintf("k%d", i))
	}
	var order []string
	for _, m := range in.provider.sentSince() {
		order = append(order, m.CommandID)
	}
	want := []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("same-key commands sent in order %v", order)
	}
	if got := p.maxInFlight(); got != 1 {
		t.Errorf("%d calls of one key in flight at once, want 1", got)
	}
}

// TestConcurrencyBoundsProviderCalls: processing.concurrency is the
// provider calls in flight. Twice as many commands are handed out, but
// those beyond it wait for a sending slot before any call.
func TestConcurrencyBoundsProviderCalls(t *testing.T) {
	h := newHarness(t)
	p := newRecordingProvider()
	p.delay = 50 * time.Millisecond
	const concurrency, n = 4, 40
	h.start(instanceOpts{provider: p, concurrency: concurrency})
	for i := 0; i < n; i++ {
		h.event(fmt.Sprintf("s%d", i), nil)
	}
	for i := 0; i < n; i++ {
		h.command(map[string]any{"command_id": fmt.Sprintf("c%d", i), "session_id": fmt.Sprintf("s%d", i), "channels": []string{"email"}})
	}
	for i := 0; i < n; i++ {
		if r := h.result(fmt.Sprintf("c%d", i)).result; r.Outcome != schemas.OutcomeNotified {
			t.Fatalf("c%d: %s", i, h.result(fmt.Sprintf("c%d", i)).msg.Value)
		}
	}
	if got := p.maxInFlight(); got != concurrency {
		t.Errorf("at most %d provider calls in flight, want exactly processing.concurrency = %d", got, concurrency)
	}
}

// TestGracefulShutdown: a stop lets in-flight commands finish and publish
// their results, and commits them, so a restart dispatches none again.
func TestGracefulShutdown(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	p := newRecordingProvider()
	p.delay = 500 * time.Millisecond
	in := h.start(instanceOpts{dir: dir, provider: p})
	const n = 20
	for i := 0; i < n; i++ {
		h.event(fmt.Sprintf("s%d", i), nil)
	}
	for i := 0; i < n; i++ {
		h.command(map[string]any{"command_id": fmt.Sprintf("c%d", i), "session_id": fmt.Sprintf("s%d", i), "channels": []string{"email"}})
	}
	h.poll(fmt.Sprintf("%d commands at the provider", n), 30*time.Second, func() bool { return p.callCount() >= n })
	in.stop(t) // every call is in flight now
	for i := 0; i < n; i++ {
		if r := h.result(fmt.Sprintf("c%d", i)).result; r.Outcome != schemas.OutcomeNotified {
			t.Errorf("c%d: %+v", i, r)
		}
	}
	p.reset(0)
	h.start(instanceOpts{dir: dir, provider: p})
	h.event("s-after", nil)
	h.command(map[string]any{"command_id": "after", "session_id": "s-after", "channels": []string{"email"}})
	h.result("after")
	if got := p.callCount(); got != 1 {
		t.Errorf("after restart the provider was called %d times, want 1 (nothing redone)", got)
	}
	for i := 0; i < n; i++ {
		if c := h.resultCount(fmt.Sprintf("c%d", i)); c != 1 {
			t.Errorf("c%d answered %d times", i, c)
		}
	}
}

// TestShutdownDeadlineLeavesCommandUndecided: a command whose provider call
// outlives processing.shutdown_timeout is not answered provider_unavailable
// on the way out; it stays unacked and the next instance decides it.
func TestShutdownDeadlineLeavesCommandUndecided(t *testing.T) {
	h := newHarness(t)
	slow := newRecordingProvider()
	slow.delay = time.Minute
	in := h.start(instanceOpts{provider: slow, shutdown: 500 * time.Millisecond})
	h.event("s1", nil)
	h.command(map[string]any{"command_id": "c1", "session_id": "s1", "channels": []string{"email"}})
	h.poll("the command at the provider", 30*time.Second, func() bool { return slow.callCount() > 0 })
	in.stop(t)
	// Had the stopped instance answered c1 (provider_unavailable), its
	// result would be the first on the topic, and the one the next
	// instance replays.
	h.start(instanceOpts{})
	if r := h.result("c1").result; r.Outcome != schemas.OutcomeNotified {
		t.Errorf("the first result of c1: %+v, want the next instance's, notified", r)
	}
}

// TestEmptiedPartitionsDoNotBlock: partitions whose records were all
// deleted (retention, DeleteRecords) have end offsets above 0 and nothing
// to read; a new store must not wait for them.
func TestEmptiedPartitionsDoNotBlock(t *testing.T) {
	h := newHarness(t)
	var old []kafka.Message
	for i := 0; i < 40; i++ {
		old = append(old, kafka.Message{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf(
			`{"result_id":"r%d","command_id":"old-%d","outcome":"not_notified","message":"x","channels":[],"processed_at":"2026-01-01T00:00:00Z","state":null}`, i, i))})
	}
	h.produce(h.topics.Results, old...)
	for i := range old {
		old[i].Value = []byte(fmt.Sprintf(`{"event_id":"e%d","session_id":"gone-%d","state":"paid","timestamp_utc":"2026-01-01T00:00:00Z"}`, i, i))
	}
	h.produce(h.topics.PaymentEvents, old...)
	deleteAllRecords(t, h.conn, h.topics.Results, h.topics.PaymentEvents)
	offs, err := ListOffsets(context.Background(), h.client, h.topics.Results, h.topics.PaymentEvents)
	if err != nil {
		t.Fatal(err)
	}
	for topic, parts := range offs {
		for p, o := range parts {
			if o.First != o.End {
				t.Fatalf("%s/%d still has records [%d, %d)", topic, p, o.First, o.End)
			}
		}
	}
	in := h.start(instanceOpts{})
	h.event("s1", nil)
	h.command(map[string]any{"command_id": "c1", "session_id": "s1", "channels": []string{"email"}})
	if r := h.result("c1").result; r.Outcome != schemas.OutcomeNotified {
		t.Errorf("c1: %+v", r)
	}
	if r := in.svc.Readiness(); r.ProjectionLag != 0 || r.ResultsLag != 0 {
		t.Errorf("readiness counts emptied partitions as lag: %+v", r)
	}
}

// deleteAllRecords deletes every record of the topics' partitions (up to
// their high-water marks) with a DeleteRecords request. kafka-go has no
// such call; the test uses franz-go's request types for it, with the TLS
// and SASL of conn (SASL from NOTIFYD_TEST_SECURE_*, as testConn reads it).
func deleteAllRecords(t *testing.T, conn Conn, topics ...string) {
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(conn.Brokers...)}
	if conn.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(conn.TLS.Clone()))
	}
	if conn.SASL != nil {
		auth := scram.Auth{User: os.Getenv("NOTIFYD_TEST_SECURE_USERNAME"), Pass: os.Getenv("NOTIFYD_TEST_SECURE_PASSWORD")}
		switch conn.SASL.Name() {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: auth.User, Pass: auth.Pass}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(auth.AsSha256Mechanism()))
		default:
			opts = append(opts, kgo.SASL(auth.AsSha512Mechanism()))
		}
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteRecordsRequest()
	req.TimeoutMillis = 10000
	for _, topic := range topics {
		rt := kmsg.NewDeleteRecordsRequestTopic()
		rt.Topic = topic
		for p := 0; p < testPartitions; p++ {
			rp := kmsg.NewDeleteRecordsRequestTopicPartition()
			rp.Partition = int32(p)
			rp.Offset = -1 // the high-water mark
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	shards := cl.RequestSharded(ctx, req)
	for _, sh := range shards {
		if sh.Err != nil {
			t.Fatalf("delete records: %v", sh.Err)
		}
		for _, rt := range sh.Resp.(*kmsg.DeleteRecordsResponse).Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					t.Fatalf("delete records %s/%d: %v", rt.Topic, rp.Partition, err)
				}
			}
		}
	}
}

// TestCooldownEndToEnd: with processing.cooldown, a second resend of a
// channel sent for the same state is rejected cooldown_active once the
// first result is read back from the results topic; force sends it; a new
// state (the transaction moved on) is not cooling down; and a store
// rebuilt from the topics knows the send too.
func TestCooldownEndToEnd(t *testing.T) {
	h := newHarness(t)
	in := h.start(instanceOpts{cooldown: time.Hour})
	h.event("s-cool", nil)
	h.command(map[string]any{"command_id": "cool-1", "session_id": "s-cool", "channels": []string{"sms", "email"}})
	if r := h.result("cool-1").result; r.Outcome != schemas.OutcomeNotified {
		t.Fatalf("first resend: %+v", r)
	}
	h.poll("the first send in the store", 30*time.Second, func() bool {
		_, ok, err := in.svc.Store().LastSent("s-cool", schemas.ChannelSMS, schemas.StatePaid)
		return ok && err == nil
	})

	h.command(map[string]any{"command_id": "cool-2", "session_id": "s-cool", "channels": []string{"sms"}})
	r := h.result("cool-2").result
	if r.Outcome != schemas.OutcomeNotNotified || len(r.Channels) != 1 || r.Channels[0].Reason != schemas.ReasonCooldownActive ||
		!strings.Contains(r.Channels[0].Detail, "processing.cooldown (1h0m0s)") {
		t.Fatalf("second resend within the cooldown: %+v", r)
	}
	if n := len(in.provider.sentFor("cool-2")); n != 0 {
		t.Errorf("provider called %d times for a command in cooldown", n)
	}

	h.command(map[string]any{"command_id": "cool-3", "session_id": "s-cool", "channels": []string{"sms"}, "force": true})
	if r := h.result("cool-3").result; r.Outcome != schemas.OutcomeNotified {
		t.Fatalf("forced resend: %+v", r)
	}

	h.event("s-cool", map[string]any{"state": "refunded"})
	h.poll("the refund in the store", 30*time.Second, func() bool {
		txn, ok, _ := in.svc.Store().Transaction("s-cool")
		return ok && txn.State == schemas.StateRefunded
	})
	h.command(map[string]any{"command_id": "cool-4", "session_id": "s-cool", "channels": []string{"sms"}})
	if r := h.result("cool-4").result; r.Outcome != schemas.OutcomeNotified {
		t.Fatalf("resend of a new state: %+v", r)
	}

	// A new store, rebuilt from the topics, rejects a resend of paid email.
	in.stop(t)
	in2 := h.start(instanceOpts{cooldown: time.Hour})
	h.event("s-cool", map[string]any{"state": "paid"})
	h.poll("paid again in the rebuilt store", 30*time.Second, func() bool {
		txn, ok, _ := in2.svc.Store().Transaction("s-cool")
		_, sent, _ := in2.svc.Store().LastSent("s-cool", schemas.ChannelEmail, schemas.StatePaid)
		return ok && txn.State == schemas.StatePaid && sent
	})
	h.command(map[string]any{"command_id": "cool-5", "session_id": "s-cool", "channels": []string{"email"}})
	if r := h.result("cool-5").result; len(r.Channels) != 1 || r.Channels[0].Reason != schemas.ReasonCooldownActive {
		t.Fatalf("resend after a rebuild: %+v", r)
	}
}
