package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/internal/testkit"
	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// deliveryLog collects the delivery events of a topic.
type deliveryLog struct {
	mu   sync.Mutex
	msgs []kafka.Message
	evs  []schemas.DeliveryEvent
}

func followDeliveries(h *harness) *deliveryLog {
	h.t.Helper()
	l := &deliveryLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	h.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		_ = Follow(ctx, h.conn, h.topics.Deliveries, false, func(m kafka.Message) bool {
			var ev schemas.DeliveryEvent
			if err := json.Unmarshal(m.Value, &ev); err != nil {
				h.t.Errorf("delivery event is not JSON: %s", m.Value)
			}
			l.mu.Lock()
			l.msgs, l.evs = append(l.msgs, m), append(l.evs, ev)
			l.mu.Unlock()
			return true
		})
	}()
	return l
}

func (l *deliveryLog) of(id string) []schemas.DeliveryEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []schemas.DeliveryEvent
	for _, ev := range l.evs {
		if ev.ProviderMessageID == id {
			out = append(out, ev)
		}
	}
	return out
}

func receipt(id string, status schemas.DeliveryStatus) schemas.DeliveryEvent {
	now := time.Now().UTC()
	return schemas.DeliveryEvent{Provider: "recording", Channel: schemas.ChannelSMS, ProviderMessageID: id, Status: status,
		ProviderStatus: string(status), OccurredAt: now, ReceivedAt: now}
}

// TestReceiptsEndToEnd: a receipt for a message a result reported sent is
// published as a delivery event correlated to its command, with
// CloudEvents headers and a masked detail; repeated and out-of-order
// receipts publish nothing; a further status publishes again; an undelivered
// message needs attention; a receipt that arrives before its result waits
// for it; a receipt for a message no result reports is published after the
// wait with what the provider said; and a new instance, rebuilt from the
// topics, knows the furthest status.
func TestReceiptsEndToEnd(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	in := h.start(instanceOpts{registry: reg, catchUpWait: 3 * time.Second})
	deliveries := followDeliveries(h)
	ctx := context.Background()

	h.event("s-rcpt", nil)
	h.command(map[string]any{"command_id": "rcpt-1", "session_id": "s-rcpt", "channels": []string{"sms"}})
	res := h.result("rcpt-1").result
	if res.Outcome != schemas.OutcomeNotified {
		t.Fatalf("result: %+v", res)
	}
	id := res.Channels[0].ProviderMessageID

	for _, st := range []schemas.DeliveryStatus{schemas.DeliveryDelivered, schemas.DeliveryDelivered, schemas.DeliverySent} {
		if err := in.svc.RecordReceipt(ctx, receipt(id, st), "", nil); err != nil {
			t.Fatalf("receipt %s: %v", st, err)
		}
	}
	h.poll("the delivered event", 30*time.Second, func() bool { return len(deliveries.of(id)) == 1 })
	ev := deliveries.of(id)[0]
	if ev.Status != schemas.DeliveryDelivered || ev.CommandID != "rcpt-1" || ev.ResultID != res.ResultID || ev.SessionID != "s-rcpt" ||
		ev.Channel != schemas.ChannelSMS || ev.Provider != "recording" || ev.DeliveryID == "" {
		t.Errorf("delivery event: %+v", ev)
	}
	deliveries.mu.Lock()
	m := deliveries.msgs[0]
	deliveries.mu.Unlock()
	headers := map[string]string{}
	for _, hd := range m.Headers {
		headers[hd.Key] = string(hd.Value)
	}
	if string(m.Key) != "s-rcpt" || headers["ce_type"] != CETypeDelivery || headers["ce_id"] != ev.DeliveryID || headers["ce_specversion"] != "1.0" {
		t.Errorf("record key %q, headers %v", m.Key, headers)
	}

	// Read moves it further; a late failure does not undo it.
	for _, st := range []schemas.DeliveryStatus{schemas.DeliveryRead, schemas.DeliveryUndelivered} {
		if err := in.svc.RecordReceipt(ctx, receipt(id, st), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	h.poll("the read event", 30*time.Second, func() bool { return len(deliveries.of(id)) >= 2 })

	// Undelivered, with the recipient in the provider's detail.
	h.command(map[string]any{"command_id": "rcpt-2", "session_id": "s-rcpt", "channels": []string{"sms"}, "force": true})
	id2 := h.result("rcpt-2").result.Channels[0].ProviderMessageID
	bad := receipt(id2, schemas.DeliveryUndelivered)
	bad.ErrorCode, bad.ErrorDetail = "30003", "Unreachable destination handset +96555001234"
	if err := in.svc.RecordReceipt(ctx, bad, "+96555001234", nil); err != nil {
		t.Fatal(err)
	}
	h.poll("the undelivered event", 30*time.Second, func() bool { return len(deliveries.of(id2)) == 1 })
	if ev := deliveries.of(id2)[0]; strings.Contains(ev.ErrorDetail, "55001234") || ev.ErrorCode != "30003" || ev.Status != schemas.DeliveryUndelivered {
		t.Errorf("undelivered event: %+v", ev)
	}
	h.poll("s-rcpt/sms needing attention", 30*time.Second, func() bool {
		items, _, err := in.svc.Store().Attention(projection.AttentionFilter{})
		return err == nil && len(items) == 1 && items[0].SessionID == "s-rcpt" && items[0].Delivery == schemas.DeliveryUndelivered
	})

	// Before its result: the receipt waits for the result.
	early := make(chan error, 1)
	go func() { early <- in.svc.RecordReceipt(ctx, receipt("rec-3", schemas.DeliveryDelivered), "", nil) }()
	h.command(map[string]any{"command_id": "rcpt-3", "session_id": "s-rcpt", "channels": []string{"sms"}, "force": true})
	if got := h.result("rcpt-3").result.Channels[0].ProviderMessageID; got != "rec-3" {
		t.Fatalf("the provider's third message id is %q, want rec-3", got)
	}
	if err := <-early; err != nil {
		t.Fatal(err)
	}
	h.poll("the early receipt's event", 30*time.Second, func() bool { return len(deliveries.of("rec-3")) == 1 })
	if ev := deliveries.of("rec-3")[0]; ev.CommandID != "rcpt-3" || ev.SessionID != "s-rcpt" {
		t.Errorf("a receipt before its result was published uncorrelated: %+v", ev)
	}

	// Unknown message: published after the wait, keyed by its id.
	unknown := receipt("SM-unknown", schemas.DeliveryFailed)
	unknown.Provider = "twilio"
	if err := in.svc.RecordReceipt(ctx, unknown, "", []string{"AC1"}); err != nil {
		t.Fatal(err)
	}
	h.poll("the unknown message's event", 30*time.Second, func() bool { return len(deliveries.of("SM-unknown")) == 1 })
	if ev := deliveries.of("SM-unknown")[0]; ev.CommandID != "" || ev.SessionID != "" || ev.Provider != "twilio" || ev.ProviderAccount != "AC1" {
		t.Errorf("unknown message's event: %+v", ev)
	}
	for _, c := range []struct {
		labels [3]string
		want   float64
	}{
		{[3]string{"sms", "recording", "delivered"}, 2}, {[3]string{"sms", "recording", "read"}, 1},
		{[3]string{"sms", "recording", "undelivered"}, 1}, {[3]string{"sms", "recording", "sent"}, 0},
		{[3]string{"sms", "twilio", "failed"}, 1}, // the channel the provider implies
	} {
		if got := deliveriesTotal(t, reg, c.labels[0], c.labels[1], c.labels[2]); got != c.want {
			t.Errorf("notifyd_deliveries_total%v = %v, want %v", c.labels, got, c.want)
		}
	}

	// A rebuilt store knows the furthest status: a repeat publishes nothing.
	in.stop(t)
	reg2 := prometheus.NewRegistry()
	in2 := h.start(instanceOpts{registry: reg2, catchUpWait: 3 * time.Second})
	h.poll("the rebuilt store's delivery status", 30*time.Second, func() bool {
		ev, ok, err := in2.svc.Store().Delivery(id)
		return err == nil && ok && ev.Status == schemas.DeliveryRead
	})
	if err := in2.svc.RecordReceipt(ctx, receipt(id, schemas.DeliveryDelivered), "", nil); err != nil {
		t.Fatal(err)
	}
	// RecordReceipt returns after publishing: the counter says whether it did.
	for _, st := range schemas.DeliveryStatuses {
		if got := deliveriesTotal(t, reg2, "sms", "recording", string(st)); got != 0 {
			t.Errorf("the rebuilt instance published a %s event for a repeated receipt", st)
		}
	}
}

// deliveriesTotal is notifyd_deliveries_total{channel, provider, status}
// in reg (0 when absent).
func deliveriesTotal(t *testing.T, reg *prometheus.Registry, channel, provider, status string) float64 {
	t.Helper()
	v, _ := testkit.Metric(t, reg, "notifyd_deliveries_total", map[string]string{"channel": channel, "provider": provider, "status": status})
	return v
}

// TestReceiptsOfAnotherProvider: a verified receipt about a message that
// another provider sent (another kind, or an account the receipt was not
// verified for) changes nothing (dispatch.ErrForeignReceipt); the sender's
// own receipts do. A claim posted for a message before it was sent
// (uncorrelated, from another sender) does not hold them back.
func TestReceiptsOfAnotherProvider(t *testing.T) {
	h := newHarness(t)
	in := h.start(instanceOpts{catchUpWait: 500 * time.Millisecond})
	deliveries := followDeliveries(h)
	ctx := context.Background()

	// rec-1 will be the provider's first message: a claim about it now is
	// uncorrelated (published after the wait) and names another sender.
	claim := receipt("rec-1", schemas.DeliveryRead)
	claim.Provider = "webhook"
	if err := in.svc.RecordReceipt(ctx, claim, "", []string{"hooks.example"}); err != nil {
		t.Fatal(err)
	}
	h.poll("the claim's event", 30*time.Second, func() bool { return len(deliveries.of("rec-1")) == 1 })

	h.event("s-own", nil)
	h.command(map[string]any{"command_id": "own-1", "session_id": "s-own", "channels": []string{"sms"}})
	if id := h.result("own-1").result.Channels[0].ProviderMessageID; id != "rec-1" {
		t.Fatalf("the provider's first message id is %q, want rec-1", id)
	}
	h.poll("the correlation of rec-1", 30*time.Second, func() bool {
		_, ok, err := in.svc.Store().Correlate("rec-1")
		return err == nil && ok
	})
	for _, kind := range []string{"twilio", "meta", "webhook"} {
		foreign := receipt("rec-1", schemas.DeliveryFailed)
		foreign.Provider = kind
		if err := in.svc.RecordReceipt(ctx, foreign, "", []string{"an-account"}); !errors.Is(err, dispatch.ErrForeignReceipt) {
			t.Errorf("%s receipt for the recording provider's message: %v, want ErrForeignReceipt", kind, err)
		}
	}
	if err := in.svc.RecordReceipt(ctx, receipt("rec-1", schemas.DeliveryDelivered), "", nil); err != nil {
		t.Fatal(err)
	}
	h.poll("the sender's own receipt", 30*time.Second, func() bool { return len(deliveries.of("rec-1")) == 2 })
	if ev := deliveries.of("rec-1")[1]; ev.Status != schemas.DeliveryDelivered || ev.CommandID != "own-1" || ev.Provider != "recording" {
		t.Errorf("the sender's receipt: %+v", ev)
	}
	h.poll("the store's furthest status", 30*time.Second, func() bool {
		ev, ok, err := in.svc.Store().Delivery("rec-1")
		return err == nil && ok && ev.Status == schemas.DeliveryDelivered && ev.CommandID == "own-1"
	})
}

// TestSentFrom is the ownership rule of receipts, for each pair of sender
// and receipt: the same kind, and the account the result recorded among
// those the receipt was verified for (a result from before accounts were
// recorded names none: the kind decides).
func TestSentFrom(t *testing.T) {
	senders := []projection.Correlation{
		{Provider: "twilio", Account: "AC1"}, {Provider: "twilio", Account: "AC2"}, {Provider: "meta", Account: "111"},
		{Provider: "meta#2", Account: "222"}, {Provider: "webhook", Account: "a.example"}, {Provider: "webhook#2", Account: "b.example"},
	}
	type verified struct {
		kind     string
		accounts []string
	}
	receipts := []verified{
		{"twilio", []string{"AC1"}}, {"twilio", []string{"AC2"}}, {"meta", []string{"111"}}, {"meta", []string{"222"}},
		{"webhook", []string{"a.example"}}, {"webhook", []string{"b.example"}},
	}
	for i, c := range senders {
		for j, r := range receipts {
			if got, want := sentFrom(c, r.kind, r.accounts), i == j; got != want {
				t.Errorf("sent by %s %s, receipt from %s %v: %v, want %v", c.Provider, c.Account, r.kind, r.accounts, got, want)
			}
		}
	}
	shared := verified{"webhook", []string{"a.example", "b.example"}} // one secret, two providers
	for _, c := range senders[4:] {
		if !sentFrom(c, shared.kind, shared.accounts) {
			t.Errorf("a receipt verified with the secret %s shares is not its", c.Provider)
		}
	}
	if !sentFrom(projection.Correlation{Provider: "twilio"}, "twilio", []string{"AC9"}) || sentFrom(projection.Correlation{Provider: "twilio"}, "meta", []string{"AC9"}) {
		t.Error("a result without an account: the kind decides")
	}
}
