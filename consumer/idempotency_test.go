package consumer

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/schemas"
)

// TestConcurrentDuplicates: the same command_id keyed by its session_id
// and by its order_no (two partitions, handled at once by one instance)
// while its first copy is still sending: the second waits for the first
// (the in-process lock) and replays its result; each channel reaches the
// provider once. The provider holds the first copy until the second is
// seen waiting, or seen sending (the lock broken).
func TestConcurrentDuplicates(t *testing.T) {
	h := newHarness(t)
	waiting := make(chan string, 4)
	in := h.start(instanceOpts{hooks: hooks{lockWait: func(id string) { waiting <- id }}})
	h.event("s-dup", map[string]any{"order_no": "o-dup"})
	h.poll("the transaction in the store", 30*time.Second, func() bool {
		_, ok, err := in.svc.Store().Transaction("s-dup")
		return err == nil && ok
	})
	entered, open := in.provider.hold()
	defer open()
	h.command(map[string]any{"command_id": "dup-now", "session_id": "s-dup", "channels": []string{"email"}})
	h.command(map[string]any{"command_id": "dup-now", "order_no": "o-dup", "channels": []string{"email"}})
	<-entered // the first copy is sending
	select {
	case <-waiting: // the second waits for it
	case id := <-entered:
		t.Errorf("a second copy of %s reached the provider while the first was sending", id)
	case <-time.After(30 * time.Second):
		t.Fatal("the second copy neither waited nor sent")
	}
	open()
	h.waitFor("two results of dup-now", 30*time.Second, func() bool { return len(h.results["dup-now"]) == 2 })
	if n := len(in.provider.sentFor("dup-now")); n != 1 {
		t.Errorf("email sent %d times, want 1", n)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if a, b := h.results["dup-now"][0].result.ResultID, h.results["dup-now"][1].result.ResultID; a != b {
		t.Errorf("two results for one command_id: %s and %s", a, b)
	}
}

// TestAnotherInstanceDecidedFirst: while this instance is sending a
// command, another instance's result for the same command_id reaches the
// topic (and this instance's store); this instance then answers with that
// result, not its own: the first result on the topic is the answer.
func TestAnotherInstanceDecidedFirst(t *testing.T) {
	h := newHarness(t)
	in := h.start(instanceOpts{})
	h.event("s-race", nil)
	entered, open := in.provider.hold()
	defer open()
	h.command(map[string]any{"command_id": "race", "session_id": "s-race", "channels": []string{"sms"}})
	<-entered
	// Another instance's result, published while this one sends.
	paid := schemas.StatePaid
	other := schemas.DeliveryResult{ResultID: "decided-elsewhere", CommandID: "race", SessionID: "s-race", State: &paid,
		Outcome: schemas.OutcomeNotified, Message: schemas.MessageNotified,
		Channels:    []schemas.ChannelResult{{Channel: schemas.ChannelSMS, Status: schemas.StatusSent, Provider: "elsewhere", ProviderMessageID: "E1", Attempts: 1}},
		ProcessedAt: time.Now().UTC()}
	value, err := json.Marshal(other)
	if err != nil {
		t.Fatal(err)
	}
	h.produce(h.topics.Results, kafka.Message{Key: []byte("s-race"), Value: value})
	h.poll("the other result in this instance's store", 30*time.Second, func() bool {
		_, ok, err := in.svc.Store().Result("race")
		return err == nil && ok
	})
	open()
	h.waitFor("this instance's answer", 30*time.Second, func() bool { return len(h.results["race"]) == 2 })
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, r := range h.results["race"] {
		if r.result.ResultID != "decided-elsewhere" {
			t.Errorf("result %d on the topic: %s, want the other instance's decided-elsewhere", i, r.result.ResultID)
		}
	}
}

// TestCommandSeesWhatCameBefore: a contact change, and another instance's
// result, published just before a command are what the command is decided
// on: the command waits for the store to apply them (the catch-up step),
// however late the follower is. The followers are held until the command
// is seen waiting for them (or seen answered without them).
func TestCommandSeesWhatCameBefore(t *testing.T) {
	h := newHarness(t)
	gate := make(chan struct{})
	var holding atomic.Bool
	waiting := make(chan string, 4)
	in := h.start(instanceOpts{hooks: hooks{
		apply: func(topic string) {
			if holding.Load() && (topic == h.topics.PaymentEvents || topic == h.topics.Results) {
				<-gate
			}
		},
		catchUpWait: func(id, topic string) { waiting <- topic },
	}})
	h.event("s-moved", map[string]any{"customer_phone": "+96550001234"})
	h.poll("the first contact in the store", 30*time.Second, func() bool {
		txn, ok, err := in.svc.Store().Transaction("s-moved")
		return err == nil && ok && txn.CustomerPhone == "+96550001234"
	})
	// From now on the followers wait at the gate.
	holding.Store(true)
	h.event("s-moved", map[string]any{"customer_phone": "+96560009876"})
	paid := schemas.StatePaid
	value, _ := json.Marshal(schemas.DeliveryResult{ResultID: "earlier-answer", CommandID: "known", SessionID: "s-moved", State: &paid,
		Outcome: schemas.OutcomeNotified, Message: schemas.MessageNotified,
		Channels:    []schemas.ChannelResult{{Channel: schemas.ChannelSMS, Status: schemas.StatusSent, Provider: "elsewhere", Attempts: 1}},
		ProcessedAt: time.Now().UTC()})
	h.produce(h.topics.Results, kafka.Message{Key: []byte("s-moved"), Value: value})
	h.command(map[string]any{"command_id": "after-move", "session_id": "s-moved", "channels": []string{"sms"}})
	h.command(map[string]any{"command_id": "known", "session_id": "s-moved", "channels": []string{"sms"}})
	select {
	case <-waiting: // the first command waits for the store
	case <-h.answered("after-move"):
		t.Error("after-move was answered while the store had not applied what came before it")
	case <-time.After(30 * time.Second):
		t.Fatal("after-move neither waited for the store nor was answered")
	}
	close(gate)
	r := h.result("after-move").result
	if len(r.Channels) != 1 || r.Channels[0].Recipient != dispatch.MaskRecipient(schemas.ChannelSMS, "+96560009876") {
		t.Errorf("after-move was sent to %+v, want the new phone", r.Channels)
	}
	h.waitFor("the known command's answers", 30*time.Second, func() bool { return len(h.results["known"]) == 2 })
	h.mu.Lock()
	for i, got := range h.results["known"] {
		if got.result.ResultID != "earlier-answer" {
			t.Errorf("known's result %d: %s, want the earlier answer replayed", i, got.result.ResultID)
		}
	}
	h.mu.Unlock()
	if n := len(in.provider.sentFor("known")); n != 0 {
		t.Errorf("known, answered before, was sent %d times", n)
	}
}
