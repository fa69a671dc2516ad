package projection

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// delivery is a delivery event for message id with status, at t0 +
// minute minutes, correlated as the results topic would have it when
// session is set.
func delivery(id string, status schemas.DeliveryStatus, minute int, session, commandID string, ch schemas.Channel) schemas.DeliveryEvent {
	at := t0.Add(time.Duration(minute) * time.Minute)
	return schemas.DeliveryEvent{DeliveryID: "d-" + id + "-" + string(status), CommandID: commandID, SessionID: session, Channel: ch,
		Provider: "twilio", ProviderMessageID: id, Status: status, ProviderStatus: string(status), OccurredAt: at, ReceivedAt: at}
}

func applyDeliveries(t *testing.T, s *Store, offset *int64, evs ...schemas.DeliveryEvent) {
	t.Helper()
	var rs []Record
	for _, ev := range evs {
		v, _ := json.Marshal(ev)
		rs = append(rs, Record{Offset: *offset, Value: v})
		*offset++
	}
	if err := s.ApplyDeliveries(0, rs); err != nil {
		t.Fatal(err)
	}
}

func statusOf(t *testing.T, s *Store, id string) schemas.DeliveryStatus {
	t.Helper()
	ev, ok, err := s.Delivery(id)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return ""
	}
	return ev.Status
}

// TestDeliveries: a sent channel's message correlates to its command; the
// furthest status wins whatever the order and repetition of the events; an
// undelivered message of a channel's latest attempt needs attention, whether
// its event is read before or after the result, until the channel is sent
// again; and the offsets survive a reopen.
func TestDeliveries(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	var roff, doff int64
	applyResults(t, s, 0, &roff,
		result("c1", "s1", 1, "sms:sent::twilio:SM1", "email:sent::smtp:mail-1"),
		result("c2", "s2", 2, "sms:sent::twilio:SM2"))

	c, ok, err := s.Correlate("SM1")
	if err != nil || !ok || c != (Correlation{CommandID: "c1", ResultID: "r-c1", SessionID: "s1", OrderNo: "o-s1", Channel: schemas.ChannelSMS, Provider: "twilio"}) {
		t.Fatalf("Correlate(SM1) = %+v, %v, %v", c, ok, err)
	}
	// Every sent channel of a result, not only its first.
	if c, ok, err := s.Correlate("mail-1"); err != nil || !ok || c.Channel != schemas.ChannelEmail || c.CommandID != "c1" {
		t.Fatalf("Correlate(mail-1) = %+v, %v, %v", c, ok, err)
	}
	if _, ok, _ := s.Correlate("SM-unknown"); ok {
		t.Fatal("an unknown message correlates")
	}

	// Out of order and repeated: read, then delivered and sent again.
	applyDeliveries(t, s, &doff,
		delivery("SM1", schemas.DeliveryRead, 3, "s1", "c1", schemas.ChannelSMS),
		delivery("SM1", schemas.DeliveryDelivered, 2, "s1", "c1", schemas.ChannelSMS),
		delivery("SM1", schemas.DeliverySent, 1, "s1", "c1", schemas.ChannelSMS),
		delivery("SM1", schemas.DeliveryUndelivered, 4, "s1", "c1", schemas.ChannelSMS))
	if got := statusOf(t, s, "SM1"); got != schemas.DeliveryRead {
		t.Errorf("SM1: %q, want read", got)
	}
	if got := attentionOf(t, s, AttentionFilter{}); len(got) != 0 {
		t.Errorf("attention after a read message: %v", got)
	}

	// Undelivered: s2/sms needs attention.
	applyDeliveries(t, s, &doff, delivery("SM2", schemas.DeliveryUndelivered, 5, "s2", "c2", schemas.ChannelSMS))
	items, _, err := s.Attention(AttentionFilter{})
	if err != nil || len(items) != 1 || items[0].SessionID != "s2" || items[0].Delivery != schemas.DeliveryUndelivered ||
		items[0].CommandID != "c2" || items[0].Reason != "" {
		t.Fatalf("attention after an undelivered message: %+v, %v", items, err)
	}
	// A later send of the channel clears it.
	applyResults(t, s, 0, &roff, result("c3", "s2", 6, "sms:sent::twilio:SM3"))
	if got := attentionOf(t, s, AttentionFilter{}); len(got) != 0 {
		t.Errorf("attention after the channel was sent again: %v", got)
	}

	// The event before its result (the topics are read independently).
	applyDeliveries(t, s, &doff, delivery("SM4", schemas.DeliveryFailed, 8, "", "", ""))
	applyResults(t, s, 1, new(int64), result("c4", "s4", 7, "sms:sent::twilio:SM4"))
	if got := attentionOf(t, s, AttentionFilter{}); !slices.Equal(got, []string{"s4/sms//twilio@8"}) {
		t.Errorf("attention for a failure read before its result: %v", got)
	}

	// RecordDelivery: an event published here; a repeat changes nothing.
	ev := delivery("SM3", schemas.DeliveryDelivered, 9, "s2", "c3", schemas.ChannelSMS)
	for i, want := range []bool{true, false} {
		if changed, err := s.RecordDelivery(ev); err != nil || changed != want {
			t.Errorf("RecordDelivery #%d = %v, %v; want %v", i+1, changed, err, want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	defer s.Close()
	if got := s.DeliveryOffsets(); got[0] != doff {
		t.Errorf("deliveries offsets after reopen: %v, want partition 0 at %d", got, doff)
	}
	if got := statusOf(t, s, "SM3"); got != schemas.DeliveryDelivered {
		t.Errorf("SM3 after reopen: %q", got)
	}
}
