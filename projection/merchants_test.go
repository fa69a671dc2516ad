package projection

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// merchantEvent is a payment event of merchant ("" publishes none).
func merchantEvent(merchant, session, order string, version int64) []byte {
	m := map[string]any{
		"event_id": fmt.Sprintf("%s-%d", session, version), "session_id": session, "state": "paid",
		"timestamp_utc": "2026-11-02T09:00:07Z", "order_no": order, "version": version,
	}
	if merchant != "" {
		m["merchant_id"] = merchant
	}
	b, _ := json.Marshal(m)
	return b
}

type rejection struct {
	offset int64
	reason string
}

// TestMerchants: a transaction belongs to one merchant, order_no is unique
// per merchant, and an event moving a session to another merchant is
// refused (told to Reject before its batch commits) without changing
// anything; the default merchant's order index keeps a single-merchant
// store's layout.
func TestMerchants(t *testing.T) {
	var rejected []rejection
	s, err := Open(t.TempDir(), Options{EventsTopic: "e", ResultsTopic: "r", Reject: func(_ int, r Record, reason, detail string) error {
		rejected = append(rejected, rejection{r.Offset, reason})
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.ApplyEvents(0, recs(
		merchantEvent("acme", "s-acme", "1001", 1),
		merchantEvent("globex", "s-globex", "1001", 1),
		merchantEvent("", "s-default", "1001", 1),
		merchantEvent("globex", "s-acme", "1001", 2),     // moves acme's session: refused
		merchantEvent("globex", "s-acme", "1001", 1),     // stale and another merchant: refused
		merchantEvent("default", "s-default", "1002", 2), // "default" named is the default
	))
	if err != nil {
		t.Fatal(err)
	}
	if want := (ApplyStats{Applied: 4, Mismatched: 2}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if want := []rejection{{3, RejectMerchantMismatch}, {4, RejectMerchantMismatch}}; fmt.Sprint(rejected) != fmt.Sprint(want) {
		t.Errorf("rejected %v, want %v", rejected, want)
	}
	for _, c := range []struct {
		merchant, order, want string
	}{
		{"acme", "1001", "s-acme"},
		{"globex", "1001", "s-globex"},
		{"", "1001", ""}, // s-default moved to 1002
		{schemas.MerchantDefault, "1002", "s-default"},
		{"", "1002", "s-default"},
		{"acme", "1002", ""},
		{"initech", "1001", ""},
	} {
		sid, ok, err := s.SessionForOrder(c.merchant, c.order)
		if err != nil || ok != (c.want != "") || sid != c.want {
			t.Errorf("SessionForOrder(%q, %q) = %q %v %v, want %q", c.merchant, c.order, sid, ok, err, c.want)
		}
	}
	for sid, want := range map[string]struct {
		merchant string
		version  int64
	}{"s-acme": {"acme", 1}, "s-globex": {"globex", 1}, "s-default": {schemas.MerchantDefault, 2}} {
		txn, ok, err := s.Transaction(sid)
		if err != nil || !ok || txn.MerchantID != want.merchant || txn.Version != want.version {
			t.Errorf("Transaction(%s) = merchant %q version %d %v %v, want %+v", sid, txn.MerchantID, txn.Version, ok, err, want)
		}
	}
	// A tombstone and an order change remove the merchant's own mapping only.
	if _, err := s.ApplyEvents(0, []Record{{Offset: 6, Key: []byte("s-globex")}, {Offset: 7, Value: merchantEvent("acme", "s-acme", "1003", 3)}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ merchant, order, want string }{{"globex", "1001", ""}, {"acme", "1001", ""}, {"acme", "1003", "s-acme"}} {
		if sid, _, _ := s.SessionForOrder(c.merchant, c.order); sid != c.want {
			t.Errorf("after the tombstone: SessionForOrder(%q, %q) = %q, want %q", c.merchant, c.order, sid, c.want)
		}
	}
	// The session is forgotten, so another merchant may now use it.
	if st, err := s.ApplyEvents(0, recs(merchantEvent("initech", "s-globex", "7", 1))); err != nil || st.Applied != 1 {
		t.Errorf("a forgotten session for another merchant: %+v %v", st, err)
	}
}

// TestMerchantRejectFailure: when Reject cannot take a refusal, nothing of
// the batch is applied and its offset is not stored, so the batch is read
// again.
func TestMerchantRejectFailure(t *testing.T) {
	fail := errors.New("dead-letter topic unavailable")
	s, err := Open(t.TempDir(), Options{EventsTopic: "e", ResultsTopic: "r", Reject: func(int, Record, string, string) error { return fail }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.ApplyEvents(0, recs(merchantEvent("acme", "s1", "1", 1))); err != nil {
		t.Fatal(err)
	}
	_, err = s.ApplyEvents(0, []Record{{Offset: 1, Value: merchantEvent("acme", "s2", "2", 1)}, {Offset: 2, Value: merchantEvent("globex", "s1", "1", 2)}})
	if !errors.Is(err, fail) {
		t.Fatalf("ApplyEvents = %v, want the Reject error", err)
	}
	if _, ok, _ := s.Transaction("s2"); ok {
		t.Error("s2 stored from a failed batch")
	}
	if next := s.EventOffsets()[0]; next != 1 {
		t.Errorf("next offset %d, want 1", next)
	}
}

// TestMerchantSettingsStored: accepted settings are kept by merchant_id
// (the last one wins, a nil value removes), the offset advances past
// refused records too, and both survive a reopen.
func TestMerchantSettingsStored(t *testing.T) {
	dir := t.TempDir()
	opts := Options{EventsTopic: "e", ResultsTopic: "r", MerchantsTopic: "m"}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyMerchantSettings(0, []Record{
		{Offset: 0, Key: []byte("acme"), Value: []byte(`{"merchant_id":"acme","display_name":"1"}`)},
		{Offset: 1, Key: []byte("globex"), Value: []byte(`{"merchant_id":"globex"}`)},
		{Offset: 3, Key: []byte("acme"), Value: []byte(`{"merchant_id":"acme","display_name":"2"}`)},
	}, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyMerchantSettings(1, []Record{{Offset: 0, Key: []byte("initech"), Value: []byte(`{"merchant_id":"initech"}`)}}, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyMerchantSettings(0, []Record{{Offset: 5, Key: []byte("globex")}}, 6); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := map[string]string{}
	if err := s.MerchantSettings(func(id string, v []byte) { got[id] = string(v) }); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"acme": `{"merchant_id":"acme","display_name":"2"}`, "initech": `{"merchant_id":"initech"}`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("settings %v, want %v", got, want)
	}
	if offs := s.MerchantOffsets(); offs[0] != 6 || offs[1] != 1 || len(offs) != 2 {
		t.Errorf("offsets %v, want 0:6 1:1", offs)
	}
	if err := (&Store{}).ApplyMerchantSettings(0, nil, 1); err == nil {
		t.Error("applied without a MerchantsTopic")
	}
}

// TestMerchantAttention: the needs-attention filter by merchant (an entry
// of before merchants is the default's), its batch id, and recovery
// commands limited to each transaction's merchant.
func TestMerchantAttention(t *testing.T) {
	acme := AttentionItem{SessionID: "s1", MerchantID: "acme", Channel: schemas.ChannelSMS, CommandID: "c1"}
	old := AttentionItem{SessionID: "s2", Channel: schemas.ChannelSMS, CommandID: "c2"}
	named := AttentionItem{SessionID: "s3", MerchantID: schemas.MerchantDefault, Channel: schemas.ChannelSMS, CommandID: "c3"}
	for _, c := range []struct {
		merchant string
		item     AttentionItem
		want     bool
	}{
		{"", acme, true}, {"", old, true}, {"acme", acme, true}, {"acme", old, false}, {"globex", acme, false},
		{schemas.MerchantDefault, old, true}, {schemas.MerchantDefault, named, true}, {schemas.MerchantDefault, acme, false},
	} {
		if got := (AttentionFilter{Merchant: c.merchant}).Matches(c.item); got != c.want {
			t.Errorf("merchant %q matches %+v: %v, want %v", c.merchant, c.item, got, c.want)
		}
	}
	f := AttentionFilter{Channel: schemas.ChannelSMS}
	platform := BatchID(f)
	// A platform-wide batch keeps the id it had before merchants: the
	// hash of the five fields of the filter.
	sum := sha256.Sum256([]byte("notifyd-recovery-v1\x00" + strings.Join([]string{"sms", "", "", "", ""}, "\x00")))
	if want := hex.EncodeToString(sum[:6]); platform != want {
		t.Errorf("the platform's batch id %s, want %s as before merchants", platform, want)
	}
	f.Merchant = "acme"
	if BatchID(f) == platform {
		t.Error("a merchant's batch has the platform's batch id")
	}
	f.Merchant = ""
	if BatchID(f) != platform {
		t.Error("the batch id changed without a merchant")
	}
	plan := PlanRecovery(AttentionFilter{}, []AttentionItem{acme, old}, "ops", time.Unix(0, 0))
	if len(plan.Commands) != 2 || plan.Commands[0].MerchantID != "acme" || plan.Commands[1].MerchantID != "" {
		t.Errorf("recovery commands %+v", plan.Commands)
	}
	var st ApplyStats
	st.Add(ApplyStats{Mismatched: 2})
	st.Add(ApplyStats{Mismatched: 3, Applied: 1})
	if st.Mismatched != 5 || st.Applied != 1 {
		t.Errorf("ApplyStats.Add: %+v", st)
	}
}

// TestMerchantSnapshots: the default merchant's snapshots keep the layout
// of before merchants (readable by the version before); another
// merchant's carry its id, which must be one.
func TestMerchantSnapshots(t *testing.T) {
	ev := schemas.PaymentEvent{EventID: "e", SessionID: "s", MerchantID: schemas.MerchantDefault, State: schemas.StatePaid}
	snap, err := encodeSnapshot(&ev)
	if err != nil || snap[0] != snapshotTag {
		t.Fatalf("default merchant's snapshot starts %x (%v), want %x", snap[0], err, snapshotTag)
	}
	ev.MerchantID = "acme"
	snap, _ = encodeSnapshot(&ev)
	if snap[0] != snapshotMerchantTag {
		t.Fatalf("acme's snapshot starts %x", snap[0])
	}
	if got, err := decodeSnapshot(snap); err != nil || got.MerchantID != "acme" {
		t.Errorf("decoded %+v %v", got, err)
	}
	bad := append(snap[:len(snap)-len("acme")-1:len(snap)-len("acme")-1], appendString(nil, "a/b")...)
	if _, err := decodeSnapshot(bad); err == nil {
		t.Error("a snapshot with a merchant_id that is not one decoded")
	}
	long := strings.Repeat("m", schemas.MaxMerchantIDLength)
	if _, _, rest, err := decodeHead(encodeHead(1, "", long, 5)); err != nil || headMerchant(rest) != long {
		t.Errorf("a head with a %d-character merchant_id and no order_no: %q %v", len(long), rest, err)
	}
	if h := encodeHead(1, "o", schemas.MerchantDefault, 5); len(h) != 20 {
		t.Errorf("default merchant's head is %d bytes, want 20 (its merchant_id takes none)", len(h))
	}
	// A head written before the recent-transactions index (no NUL and time
	// after the merchant_id) reads as not listed, whatever the merchant_id's
	// length.
	for _, m := range []string{"", "acme", "merchant1x", long} {
		for _, order := range []string{"o", ""} { // "" and the default merchant: 10 bytes, the shortest head
			old := append(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint64(nil, 1), uint16(len(order))), order+m...)
			if _, gotOrder, rest, err := decodeHead(old); err != nil || gotOrder != order {
				t.Fatalf("an old head of %q, order_no %q: %q %v", m, order, gotOrder, err)
			} else if got, _, listed := headRecent(rest); got != schemas.MerchantOf(m) || listed {
				t.Errorf("an old head of %q read as %q listed=%v", m, got, listed)
			}
		}
	}
}
