package projection

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/notifyd/notifyd/schemas"
)

// timedEvent is a payment event of merchant ("" publishes none) at minute
// past 09:00 on 2 November 2026.
func timedEvent(merchant, session, order string, version int64, minute int) []byte {
	m := map[string]any{
		"event_id": fmt.Sprintf("%s-%d", session, version), "session_id": session, "state": "paid",
		"timestamp_utc": time.Date(2026, 11, 2, 9, minute, 0, 0, time.UTC), "version": version,
	}
	if order != "" {
		m["order_no"] = order
	}
	if merchant != "" {
		m["merchant_id"] = merchant
	}
	b, _ := json.Marshal(m)
	return b
}

func sessionsOf(txns []schemas.PaymentEvent) []string {
	out := make([]string, len(txns))
	for i, t := range txns {
		out[i] = t.SessionID
	}
	return out
}

// tombstone is a payment-events tombstone of a session_id, for applyAll.
type tombstone string

// applyAll applies events ([]byte) and tombstones to partition 0 from
// offset *off.
func applyAll(t *testing.T, s *Store, off *int64, items ...any) {
	t.Helper()
	rs := make([]Record, len(items))
	for i, item := range items {
		switch v := item.(type) {
		case []byte:
			rs[i] = Record{Offset: *off, Value: v}
		case tombstone:
			rs[i] = Record{Offset: *off, Key: []byte(v)}
		default:
			t.Fatalf("applyAll: %T", item)
		}
		*off++
	}
	if _, err := s.ApplyEvents(0, rs); err != nil {
		t.Fatal(err)
	}
}

// TestRecent: each transaction is listed once, by the time of its latest
// event, newest first, in its merchant's list; a
// newer event moves it, a stale one or another merchant's does not, a
// tombstone removes it; pages follow each other without a gap or a repeat.
func TestRecent(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var off int64
	applyAll(t, s, &off,
		timedEvent("", "s1", "o1", 1, 1),
		timedEvent("acme", "a1", "1001", 1, 2),
		timedEvent("", "s2", "o2", 1, 3),
		timedEvent("acme", "a2", "1002", 1, 4),
		timedEvent("globex", "g1", "1001", 1, 5),
		timedEvent("acme-2", "x1", "1001", 1, 6), // a merchant_id acme's starts
	)
	recent := func(f RecentFilter) []string {
		t.Helper()
		if f.Limit == 0 {
			f.Limit = 10
		}
		txns, _, err := s.Recent(f)
		if err != nil {
			t.Fatal(err)
		}
		return sessionsOf(txns)
	}
	steps := []struct {
		name   string
		apply  []any
		globex []string
		acme   []string
		defalt []string
	}{
		{"as applied", nil, []string{"g1"}, []string{"a2", "a1"}, []string{"s2", "s1"}},
		{"a newer event moves s1 first", []any{timedEvent("", "s1", "o1", 2, 9)},
			[]string{"g1"}, []string{"a2", "a1"}, []string{"s1", "s2"}},
		{"a stale one moves nothing", []any{timedEvent("acme", "a1", "1001", 1, 30)},
			[]string{"g1"}, []string{"a2", "a1"}, []string{"s1", "s2"}},
		{"another merchant's is refused", []any{timedEvent("globex", "a1", "1001", 5, 40)},
			[]string{"g1"}, []string{"a2", "a1"}, []string{"s1", "s2"}},
		{"an older time with a newer version moves it back", []any{timedEvent("acme", "a2", "1002", 2, 0)},
			[]string{"g1"}, []string{"a1", "a2"}, []string{"s1", "s2"}},
		{"a tombstone removes it", []any{tombstone("s2")},
			[]string{"g1"}, []string{"a1", "a2"}, []string{"s1"}},
	}
	for _, st := range steps {
		if st.apply != nil {
			applyAll(t, s, &off, st.apply...)
		}
		if got := recent(RecentFilter{MerchantID: "globex"}); !slices.Equal(got, st.globex) {
			t.Errorf("%s: globex's %q, want %q", st.name, got, st.globex)
		}
		if got := recent(RecentFilter{}); !slices.Equal(got, st.defalt) {
			t.Errorf("%s: no merchant named: %q, want the default's %q", st.name, got, st.defalt)
		}
		if got := recent(RecentFilter{MerchantID: "acme"}); !slices.Equal(got, st.acme) {
			t.Errorf("%s: acme's %q, want %q", st.name, got, st.acme)
		}
		if got := recent(RecentFilter{MerchantID: schemas.MerchantDefault}); !slices.Equal(got, st.defalt) {
			t.Errorf("%s: default's %q, want %q", st.name, got, st.defalt)
		}
	}
	if got := recent(RecentFilter{MerchantID: "nobody"}); len(got) != 0 {
		t.Errorf("a merchant without transactions: %q", got)
	}
	// The snapshot comes with its entry.
	txns, _, _ := s.Recent(RecentFilter{Limit: 1})
	if len(txns) != 1 || txns[0].OrderNo != "o1" || txns[0].Version != 2 || txns[0].MerchantID != schemas.MerchantDefault {
		t.Errorf("first entry: %+v", txns)
	}

	// More of the default merchant's, then pages of 3, then 1: every one
	// once, in order, then no cursor.
	applyAll(t, s, &off, timedEvent("", "s3", "", 1, 8), timedEvent("", "s4", "", 1, 7), timedEvent("", "s5", "", 1, 6))
	var got []string
	after := ""
	for page := 0; ; page++ {
		txns, next, err := s.Recent(RecentFilter{Limit: 3, After: after})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, sessionsOf(txns)...)
		if next == "" {
			break
		}
		if page > 3 {
			t.Fatal("paging does not end")
		}
		after = next
	}
	if want := []string{"s1", "s3", "s4", "s5"}; !slices.Equal(got, want) {
		t.Errorf("paged %q, want %q", got, want)
	}
	if txns, next, err := s.Recent(RecentFilter{Limit: 4}); err != nil || len(txns) != 4 || next != "" {
		t.Errorf("a page holding the last entry gives a cursor: %d %q %v", len(txns), next, err)
	}
	// A cursor of another list, or none, is refused.
	_, acmeNext, _ := s.Recent(RecentFilter{MerchantID: "acme", Limit: 1})
	for _, bad := range []string{"zz", "00", acmeNext} {
		if _, _, err := s.Recent(RecentFilter{Limit: 3, After: bad}); err == nil {
			t.Errorf("cursor %q accepted by the default merchant's list", bad)
		}
	}
}

// TestRecentOldHeads: a head written before the index is not listed until
// its next event, which lists it once; its tombstone deletes nothing else.
func TestRecentOldHeads(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var off int64
	applyAll(t, s, &off, timedEvent("acme", "old", "1", 1, 1), timedEvent("acme", "new", "2", 1, 2))
	// Rewrite old's head as before the index, and drop its entries.
	b := s.db.NewBatch()
	head := append(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint64(nil, 1), 1), "1acme"...)
	_ = b.Set([]byte(prefixHead+"old"), head, nil)
	at := time.Date(2026, 11, 2, 9, 1, 0, 0, time.UTC).UnixNano()
	_ = b.Delete(recentKey("acme", at, "old"), nil)
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	if txns, _, _ := s.Recent(RecentFilter{MerchantID: "acme", Limit: 10}); !slices.Equal(sessionsOf(txns), []string{"new"}) {
		t.Fatalf("before its next event: %q", sessionsOf(txns))
	}
	applyAll(t, s, &off, timedEvent("acme", "old", "1", 2, 3))
	if txns, _, _ := s.Recent(RecentFilter{MerchantID: "acme", Limit: 10}); !slices.Equal(sessionsOf(txns), []string{"old", "new"}) {
		t.Errorf("after its next event: %q", sessionsOf(txns))
	}
}

// TestFindPrefix: session_ids and order_nos by their start, a merchant's
// only when one is named (order_nos: the default merchant's when none is),
// in identifier order, at most Limit with more said.
func TestFindPrefix(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var off int64
	applyAll(t, s, &off,
		timedEvent("", "cs_100", "ord-1", 1, 1),
		timedEvent("", "cs_101", "ord-2", 1, 1),
		timedEvent("acme", "cs_102", "ord-1", 1, 1),
		timedEvent("acme", "cs_2", "ord-10", 1, 1),
		timedEvent("globex", "cs_103", "ord-11", 1, 1),
		timedEvent("", "cs_gone", "ord-3", 1, 1),
		tombstone("cs_gone"),
	)
	cases := []struct {
		f    PrefixFilter
		want []string
		more bool
	}{
		{PrefixFilter{Prefix: "cs_1"}, []string{"cs_100", "cs_101", "cs_102", "cs_103"}, false},
		{PrefixFilter{Prefix: "cs_1", Limit: 2}, []string{"cs_100", "cs_101"}, true},
		{PrefixFilter{Prefix: "cs_1", MerchantID: "acme"}, []string{"cs_102"}, false},
		{PrefixFilter{Prefix: "cs_", MerchantID: "acme"}, []string{"cs_102", "cs_2"}, false},
		{PrefixFilter{Prefix: "cs_1", MerchantID: schemas.MerchantDefault}, []string{"cs_100", "cs_101"}, false},
		{PrefixFilter{Prefix: "cs_g"}, nil, false},
		{PrefixFilter{Prefix: "cs_100x"}, nil, false},
		{PrefixFilter{Prefix: "ord-1", OrderNo: true}, []string{"cs_100"}, false},
		{PrefixFilter{Prefix: "ord-", OrderNo: true}, []string{"cs_100", "cs_101"}, false},
		{PrefixFilter{Prefix: "ord-1", OrderNo: true, MerchantID: "acme"}, []string{"cs_102", "cs_2"}, false},
		{PrefixFilter{Prefix: "ord-1", OrderNo: true, MerchantID: "globex"}, []string{"cs_103"}, false},
		{PrefixFilter{Prefix: "ord-1", OrderNo: true, MerchantID: "acm"}, nil, false},
		{PrefixFilter{Prefix: "cs_1", MerchantID: "acm"}, nil, false},
	}
	for _, c := range cases {
		if c.f.Limit == 0 {
			c.f.Limit = 10
		}
		txns, more, err := s.FindPrefix(c.f)
		if err != nil {
			t.Fatalf("%+v: %v", c.f, err)
		}
		if got := sessionsOf(txns); !slices.Equal(got, c.want) || more != c.more {
			t.Errorf("%+v: %q more=%v, want %q more=%v", c.f, got, more, c.want, c.more)
		}
	}
	if _, _, err := s.FindPrefix(PrefixFilter{Limit: 1}); err == nil {
		t.Error("an empty prefix searched")
	}
}

// TestRecentCorrupt: an entry too short to hold its time is an error, and
// so is one whose transaction is not stored.
func TestRecentCorrupt(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var off int64
	applyAll(t, s, &off, timedEvent("acme", "a1", "", 1, 1))
	short := append([]byte(prefixRecent+"acme\x00"), make([]byte, 8)...)
	if err := s.db.Set(append(bytes.Clone(short), 0), nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Recent(RecentFilter{MerchantID: "acme", Limit: 5}); err == nil || !strings.Contains(err.Error(), "without its transaction") {
		t.Errorf("an entry of no session: %v", err)
	}
	if err := s.db.Set(short, nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Recent(RecentFilter{MerchantID: "acme", Limit: 5}); err == nil {
		t.Error("an entry without its time read")
	}
}

func TestPrefixEnd(t *testing.T) {
	for in, want := range map[string]string{
		"ab": "ac", "a\xff": "b", "a\xff\xff": "b", "\x01\xff": "\x02", "\xfe": "\xff", "\xff\xff": "", "": "",
	} {
		if got := prefixEnd([]byte(in)); string(got) != want || (want == "" && got != nil) {
			t.Errorf("prefixEnd(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFindPrefixBounded: a merchant's session_ids among many of another's
// are searched up to prefixScanned entries, then more is said.
func TestFindPrefixBounded(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var off int64
	values := make([]any, 0, prefixScanned+1)
	for i := range prefixScanned {
		values = append(values, timedEvent("big", fmt.Sprintf("s%06d", i), "", 1, 1))
	}
	values = append(values, timedEvent("small", "s999999", "", 1, 1))
	applyAll(t, s, &off, values...)
	txns, more, err := s.FindPrefix(PrefixFilter{Prefix: "s", MerchantID: "small", Limit: 10})
	if err != nil || len(txns) != 0 || !more {
		t.Errorf("past the bound: %q more=%v %v", sessionsOf(txns), more, err)
	}
	txns, more, err = s.FindPrefix(PrefixFilter{Prefix: "s9", MerchantID: "small", Limit: 10})
	if err != nil || !slices.Equal(sessionsOf(txns), []string{"s999999"}) || more {
		t.Errorf("a longer prefix: %q more=%v %v", sessionsOf(txns), more, err)
	}
	// The last of exactly prefixScanned entries is read.
	s2 := openTest(t, t.TempDir())
	defer s2.Close()
	off = 0
	values[prefixScanned-1] = values[prefixScanned]
	applyAll(t, s2, &off, values[:prefixScanned]...)
	txns, more, err = s2.FindPrefix(PrefixFilter{Prefix: "s", MerchantID: "small", Limit: 10})
	if err != nil || !slices.Equal(sessionsOf(txns), []string{"s999999"}) || more {
		t.Errorf("the last entry within the bound: %q more=%v %v", sessionsOf(txns), more, err)
	}
}

// TestRecentWhileForgetting: tombstones applied while the list is read
// never make it an error (entries and snapshots are read from one view).
func TestRecentWhileForgetting(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var off int64
	const n = 300
	values := make([]any, n)
	for i := range n {
		values[i] = timedEvent("acme", fmt.Sprintf("s%03d", i), "", 1, i%60)
	}
	applyAll(t, s, &off, values...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			if _, err := s.ApplyEvents(1, []Record{{Offset: int64(i), Key: []byte(fmt.Sprintf("s%03d", i))}}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for reads := 0; ; reads++ {
		select {
		case <-done:
			if txns, _, err := s.Recent(RecentFilter{MerchantID: "acme", Limit: 10}); err != nil || len(txns) != 0 {
				t.Errorf("after every tombstone: %d %v", len(txns), err)
			}
			return
		default:
		}
		if _, _, err := s.Recent(RecentFilter{MerchantID: "acme", Limit: n}); err != nil {
			t.Fatalf("read %d: %v", reads, err)
		}
	}
}
