package projection

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/schemas"
)

// The tests in this file hold edges of the projection's rules that the
// other tests did not reach, each found by a mutant that survived them
// (scripts/mutation).

// TestLongIdentifiers: order numbers and customer names of any length are
// stored and found, before and after a reopen.
func TestLongIdentifiers(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	order := "ORD-2026-11-000000123456" // longer than a head's fixed part
	if _, err := s.ApplyEvents(0, recs(event("s1", order, schemas.StatePaid, 3, "a@x.com"))); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir)
	defer s.Close()
	if sid, ok, err := s.SessionForOrder("", order); err != nil || !ok || sid != "s1" {
		t.Fatalf("SessionForOrder(%s) = %q %v %v", order, sid, ok, err)
	}
	// Stale and newer versions are still told apart by the long head.
	st, err := s.ApplyEvents(0, []Record{{Offset: 1, Value: event("s1", order, schemas.StateCreated, 2, "")}, {Offset: 2, Value: event("s1", order, schemas.StateRefunded, 4, "")}})
	if err != nil || st != (ApplyStats{Applied: 1, Stale: 1}) {
		t.Fatalf("stats %+v, %v", st, err)
	}

	// Each text field of a snapshot, alone much longer than the others.
	base := schemas.PaymentEvent{EventID: "e", SessionID: "s", OrderNo: "o", MerchantID: schemas.MerchantDefault, State: schemas.StatePaid, CustomerEmail: "a@x.com",
		CustomerFirstName: "L", CustomerLastName: "H"}
	long := strings.Repeat("x", 4096)
	for name, set := range map[string]func(*schemas.PaymentEvent){
		"event_id":            func(e *schemas.PaymentEvent) { e.EventID = long },
		"session_id":          func(e *schemas.PaymentEvent) { e.SessionID = long },
		"order_no":            func(e *schemas.PaymentEvent) { e.OrderNo = long },
		"customer_email":      func(e *schemas.PaymentEvent) { e.CustomerEmail = long },
		"customer_first_name": func(e *schemas.PaymentEvent) { e.CustomerFirstName = long },
		"customer_last_name":  func(e *schemas.PaymentEvent) { e.CustomerLastName = long },
	} {
		ev := base
		set(&ev)
		snap, err := encodeSnapshot(&ev)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, err := decodeSnapshot(snap); err != nil || !reflect.DeepEqual(got, ev) {
			t.Errorf("a long %s: %+v, %v", name, got, err)
		}
	}
}

// TestDecodeHeadCorrupt: a head shorter than its fixed part, or than the
// order_no its length announces, is corrupt.
func TestDecodeHeadCorrupt(t *testing.T) {
	good := encodeHead(7, "ORD-1", schemas.MerchantDefault, 42)
	v, o, rest, err := decodeHead(good)
	if err != nil || v != 7 || o != "ORD-1" {
		t.Fatalf("decodeHead = %d %q %q %v", v, o, rest, err)
	}
	if m, at, listed := headRecent(rest); m != schemas.MerchantDefault || at != 42 || !listed {
		t.Fatalf("headRecent = %q %d %v", m, at, listed)
	}
	for n := range 10 + len("ORD-1") {
		if _, _, _, err := decodeHead(good[:n]); err == nil {
			t.Errorf("a head cut to %d of %d bytes decoded", n, len(good))
		}
	}
}

// TestRecoveryCommandIDLength: the readable form is kept up to 128
// characters exactly; one more, or a session_id starting with a control
// character, makes it the hashed form.
func TestRecoveryCommandIDLength(t *testing.T) {
	failures := []AttentionItem{{Channel: schemas.ChannelSMS, CommandID: "c1"}}
	fixed := len("recover-") + len("-") + 12
	for _, tt := range []struct {
		sessionID string
		readable  bool
	}{
		{strings.Repeat("s", schemas.MaxIDLength-fixed), true},
		{strings.Repeat("s", schemas.MaxIDLength-fixed+1), false},
		{"\x01s", false},
		{"s\x01", false},
	} {
		id := RecoveryCommandID(tt.sessionID, failures)
		if readable := strings.HasPrefix(id, "recover-"+tt.sessionID+"-"); readable != tt.readable || len(id) > schemas.MaxIDLength {
			t.Errorf("session_id of %d (%q...): %q (%d), want readable=%v", len(tt.sessionID), tt.sessionID[:2], id, len(id), tt.readable)
		}
	}
}

// TestAttentionByDelivery: the listing filters by delivery status.
func TestAttentionByDelivery(t *testing.T) {
	item := AttentionItem{Channel: schemas.ChannelSMS, Delivery: schemas.DeliveryUndelivered}
	for _, tt := range []struct {
		f    AttentionFilter
		want bool
	}{
		{AttentionFilter{}, true},
		{AttentionFilter{Delivery: schemas.DeliveryUndelivered}, true},
		{AttentionFilter{Delivery: schemas.DeliveryFailed}, false},
	} {
		if got := tt.f.Matches(item); got != tt.want {
			t.Errorf("%+v matches an undelivered item: %v, want %v", tt.f, got, tt.want)
		}
	}
}

// TestTombstoneTakesEveryChannelOff: deleting a transaction takes each of
// its channels off the needs-attention list, not only the first.
func TestTombstoneTakesEveryChannelOff(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	if _, err := s.ApplyEvents(0, recs(event("s1", "o1", schemas.StatePaid, 0, "a@x.com"))); err != nil {
		t.Fatal(err)
	}
	var off int64
	applyResults(t, s, 0, &off, result("c1", "s1", 1, "sms:failed:provider_unavailable:twilio",
		"email:failed:provider_unavailable:smtp", "whatsapp:failed:provider_rejected:meta"))
	if n := len(attentionOf(t, s, AttentionFilter{})); n != 3 {
		t.Fatalf("%d channels need attention, want 3", n)
	}
	if _, err := s.ApplyEvents(0, []Record{{Offset: 1, Key: []byte("s1")}}); err != nil {
		t.Fatal(err)
	}
	if got := attentionOf(t, s, AttentionFilter{}); len(got) != 0 {
		t.Errorf("after the tombstone: %q", got)
	}
}

// TestLastSentEveryChannel: each channel a result sent has its last send.
func TestLastSentEveryChannel(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var off int64
	applyResults(t, s, 0, &off, result("c1", "s1", 2, "email:sent::smtp", "sms:sent::twilio", "whatsapp:sent::meta"))
	for _, ch := range []schemas.Channel{schemas.ChannelEmail, schemas.ChannelSMS, schemas.ChannelWhatsApp} {
		if _, ok, err := s.LastSent("s1", ch, schemas.StatePaid); err != nil || !ok {
			t.Errorf("%s: no last send (%v)", ch, err)
		}
	}
}

// TestSessionFilterSize: the filter takes filterBitsPerKey bits per key of
// its capacity, in whole words, and grows by a segment once a segment
// holds its capacity.
func TestSessionFilterSize(t *testing.T) {
	words := func(capacity int) int { return (capacity*filterBitsPerKey + filterWordBits - 1) / filterWordBits }
	f := newSessionFilter()
	first := words(filterMinCapacity) * 8
	if first*8 < filterMinCapacity*filterBitsPerKey || first*8 >= filterMinCapacity*filterBitsPerKey+filterWordBits {
		t.Fatalf("the filter's size is not capacity × bits per key in whole words")
	}
	if got := f.Bytes(); got != first {
		t.Fatalf("an empty filter takes %d bytes, want %d", got, first)
	}
	for i := range filterMinCapacity {
		f.Add(fmt.Appendf(nil, "s%d", i))
	}
	if got := f.Bytes(); got != first {
		t.Errorf("a full first segment: %d bytes, want %d", got, first)
	}
	f.Add([]byte("one more"))
	if got, want := f.Bytes(), first+words(filterMinCapacity*filterGrowthFactor)*8; got != want {
		t.Errorf("one key past the first segment: %d bytes, want %d", got, want)
	}
	for i := range filterMinCapacity {
		if f.SurelyAbsent(fmt.Appendf(nil, "s%d", i)) {
			t.Fatalf("s%d reported absent", i)
		}
	}
}

// TestDigestPending: a result recorded here and not yet read back is in
// the digest as the topic's would be, wherever it sorts; one the topic's
// result superseded (the race RecordResult allows) is not.
func TestDigestPending(t *testing.T) {
	a, b := openTest(t, t.TempDir()), openTest(t, t.TempDir())
	defer a.Close()
	defer b.Close()
	res := func(id, v string) []byte {
		return []byte(`{"command_id":"` + id + `","result_id":"` + v + `-` + id + `"}`)
	}
	// a: c1 from the topic; c1 also pending with another value (recorded
	// as the topic's arrived); c0 and c9 pending, before and after it.
	if _, err := a.ApplyResults(0, []Record{{Offset: 0, Value: res("c1", "topic")}}); err != nil {
		t.Fatal(err)
	}
	if err := a.db.Set([]byte(prefixPending+"c1"), res("c1", "mine"), nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c0", "c9"} {
		if _, err := a.RecordResult(id, res(id, "mine")); err != nil {
			t.Fatal(err)
		}
	}
	// b read all three from the topic.
	if _, err := b.ApplyResults(0, []Record{{Offset: 0, Value: res("c0", "mine")}, {Offset: 1, Value: res("c1", "topic")}, {Offset: 2, Value: res("c9", "mine")}}); err != nil {
		t.Fatal(err)
	}
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if db, _ := b.Digest(); da != db {
		t.Errorf("digests differ: %s with pending results, %s read from the topic", da, db)
	}
}

// TestForeignClaimBeforeResult: a failure receipt read before the result,
// from another sender than the one the result names, puts nothing on the
// needs-attention list; the sender's own does.
func TestForeignClaimBeforeResult(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var roff, doff int64
	foreign := delivery("SM1", schemas.DeliveryUndelivered, 3, "", "", "")
	foreign.Provider = "meta"
	own := delivery("SM2", schemas.DeliveryUndelivered, 3, "", "", "")
	otherAccount := delivery("SM3", schemas.DeliveryUndelivered, 3, "", "", "")
	otherAccount.ProviderAccount = "AC-other"
	applyDeliveries(t, s, &doff, foreign, own, otherAccount)
	applyResults(t, s, 0, &roff,
		result("c1", "s1", 1, "sms:sent::twilio:SM1"),
		result("c2", "s2", 1, "sms:sent::twilio:SM2"))
	withAccount, _ := resultWithAccount("c3", "s3", "SM3", "AC-mine")
	applyResults(t, s, 0, &roff, withAccount)
	if got, want := attentionOf(t, s, AttentionFilter{}), []string{"s2/sms//twilio@3"}; !slices.Equal(got, want) {
		t.Errorf("attention: %q, want %q", got, want)
	}
}

// TestDeliveryAttentionDetail: an item of an undelivered message says the
// provider's status, its words and its error code.
func TestDeliveryAttentionDetail(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var roff, doff int64
	applyResults(t, s, 0, &roff, result("c1", "s1", 1, "sms:sent::twilio:SM1"), result("c2", "s2", 1, "sms:sent::twilio:SM2"))
	coded := delivery("SM1", schemas.DeliveryUndelivered, 2, "s1", "c1", schemas.ChannelSMS)
	coded.ErrorCode, coded.ErrorDetail = "30003", "Unreachable destination handset"
	plain := delivery("SM2", schemas.DeliveryFailed, 2, "s2", "c2", schemas.ChannelSMS)
	plain.ErrorDetail = "Queue overflow"
	applyDeliveries(t, s, &doff, coded, plain)
	items, _, err := s.Attention(AttentionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, it := range items {
		got[it.SessionID] = it.Detail
	}
	want := map[string]string{"s1": "undelivered Unreachable destination handset (error 30003)", "s2": "Queue overflow"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("details %q, want %q", got, want)
	}
}

// resultWithAccount is a result of command id about session whose sms
// was sent by twilio account account as message msgID.
func resultWithAccount(id, session, msgID, account string) ([]byte, error) {
	var r schemas.DeliveryResult
	if err := json.Unmarshal(result(id, session, 1, "sms:sent::twilio:"+msgID), &r); err != nil {
		return nil, err
	}
	r.Channels[0].ProviderAccount = account
	return json.Marshal(r)
}
