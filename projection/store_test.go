package projection

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

func openTest(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{EventsTopic: "payment-events", ResultsTopic: "notification-results", DeliveriesTopic: "notification-deliveries"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func event(session, order string, state schemas.State, version int64, email string) []byte {
	m := map[string]any{
		"event_id": fmt.Sprintf("%s-%s-%d", session, state, version), "session_id": session,
		"state": state, "timestamp_utc": "2026-11-02T09:00:07Z", "customer_email": email,
		"notifications": map[string][]string{"email": {}},
	}
	if order != "" {
		m["order_no"] = order
	}
	if version > 0 {
		m["version"] = version
	}
	b, _ := json.Marshal(m)
	return b
}

func recs(values ...[]byte) []Record {
	out := make([]Record, len(values))
	for i, v := range values {
		out[i] = Record{Offset: int64(i), Value: v}
	}
	return out
}

func TestApplyEvents(t *testing.T) {
	type want struct {
		session string
		found   bool
		state   schemas.State
		email   string
	}
	cases := []struct {
		name     string
		records  []Record
		stats    ApplyStats
		sessions []want
		orders   map[string]string // order_no -> session ("" = unmapped)
		count    int64
	}{
		{
			name:     "snapshot replaces the stored view",
			records:  recs(event("s1", "o1", "created", 0, "a@x.com"), event("s1", "o1", "paid", 0, "b@x.com")),
			stats:    ApplyStats{Applied: 2},
			sessions: []want{{"s1", true, "paid", "b@x.com"}},
			orders:   map[string]string{"o1": "s1"},
			count:    1,
		},
		{
			name:     "stale version is ignored",
			records:  recs(event("s1", "", "paid", 3, "a@x.com"), event("s1", "", "created", 2, "b@x.com"), event("s1", "", "failed", 3, "c@x.com")),
			stats:    ApplyStats{Applied: 1, Stale: 2},
			sessions: []want{{"s1", true, "paid", "a@x.com"}},
			count:    1,
		},
		{
			// The versionless event replaces the snapshot, so the stored
			// snapshot has no version and the next versioned event applies.
			name:     "event without version applies in log order",
			records:  recs(event("s1", "", "paid", 3, "a@x.com"), event("s1", "", "created", 0, "b@x.com"), event("s1", "", "failed", 1, "c@x.com")),
			stats:    ApplyStats{Applied: 3},
			sessions: []want{{"s1", true, "failed", "c@x.com"}},
			count:    1,
		},
		{
			name:     "tombstone forgets session, order and version",
			records:  []Record{{Offset: 0, Value: event("s1", "o1", "paid", 5, "a@x.com")}, {Offset: 1, Key: []byte("s1")}, {Offset: 2, Value: event("s1", "", "created", 1, "b@x.com")}},
			stats:    ApplyStats{Applied: 2, Tombstones: 1},
			sessions: []want{{"s1", true, "created", "b@x.com"}},
			orders:   map[string]string{"o1": ""},
			count:    1,
		},
		{
			name:     "tombstone of unknown session",
			records:  []Record{{Offset: 0, Key: []byte("nope")}},
			stats:    ApplyStats{Tombstones: 1},
			sessions: []want{{"nope", false, "", ""}},
		},
		{
			name:     "order_no change moves the mapping",
			records:  recs(event("s1", "o1", "created", 0, ""), event("s1", "o2", "paid", 0, "")),
			stats:    ApplyStats{Applied: 2},
			sessions: []want{{"s1", true, "paid", ""}},
			orders:   map[string]string{"o1": "", "o2": "s1"},
			count:    1,
		},
		{
			name:     "reused order_no names the later session and survives the earlier's tombstone",
			records:  []Record{{Offset: 0, Value: event("s1", "o1", "failed", 0, "")}, {Offset: 1, Value: event("s2", "o1", "created", 0, "")}, {Offset: 2, Key: []byte("s1")}},
			stats:    ApplyStats{Applied: 2, Tombstones: 1},
			sessions: []want{{"s1", false, "", ""}, {"s2", true, "created", ""}},
			orders:   map[string]string{"o1": "s2"},
			count:    1,
		},
		{
			name:     "invalid records are skipped and counted",
			records:  recs([]byte("{not json"), []byte(`{"event_id":"e","session_id":"s1","state":"bogus","timestamp_utc":"2026-01-01T00:00:00Z"}`), []byte(`[]`), event("s2", "", "paid", 0, "")),
			stats:    ApplyStats{Applied: 1, Invalid: 3},
			sessions: []want{{"s1", false, "", ""}, {"s2", true, "paid", ""}},
			count:    1,
		},
	}
	// Each case runs three ways, which must answer alike: in one batch
	// with the session filter answering; with the filter never complete
	// (every event reads its head); one record a batch, the store reopened
	// before each (the filter filled from the heads on disk).
	modes := []string{"filter", "no filter", "reopened"}
	for _, tc := range cases {
		for _, mode := range modes {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				dir := t.TempDir()
				s := openTest(t, dir)
				defer func() { s.Close() }()
				<-s.fillDone
				var st ApplyStats
				switch mode {
				case "filter":
					if !s.sessions.complete.Load() {
						t.Fatal("filter of an empty store not complete")
					}
					var err error
					if st, err = s.ApplyEvents(0, tc.records); err != nil {
						t.Fatal(err)
					}
				case "no filter":
					s.sessions.complete.Store(false)
					var err error
					if st, err = s.ApplyEvents(0, tc.records); err != nil {
						t.Fatal(err)
					}
				case "reopened":
					for i := range tc.records {
						one, err := s.ApplyEvents(0, tc.records[i:i+1])
						if err != nil {
							t.Fatal(err)
						}
						st.Add(one)
						if err := s.Close(); err != nil {
							t.Fatal(err)
						}
						s = openTest(t, dir)
						<-s.fillDone
						if !s.sessions.complete.Load() {
							t.Fatal("filter not complete after its fill")
						}
					}
				}
				if st != tc.stats {
					t.Errorf("stats = %+v, want %+v", st, tc.stats)
				}
				for _, w := range tc.sessions {
					ev, found, err := s.Transaction(w.session)
					if err != nil {
						t.Fatal(err)
					}
					if found != w.found || ev.State != w.state || ev.CustomerEmail != w.email {
						t.Errorf("session %s = (%v, %s, %q), want (%v, %s, %q)", w.session, found, ev.State, ev.CustomerEmail, w.found, w.state, w.email)
					}
				}
				for order, wantSession := range tc.orders {
					got, found, err := s.SessionForOrder("", order)
					if err != nil {
						t.Fatal(err)
					}
					if (wantSession != "") != found || got != wantSession {
						t.Errorf("order %s -> %q (%v), want %q", order, got, found, wantSession)
					}
				}
				if got := s.Transactions(); got != tc.count {
					t.Errorf("transactions = %d, want %d", got, tc.count)
				}
				if got := s.EventOffsets()[0]; got != int64(len(tc.records)) {
					t.Errorf("next offset = %d, want %d", got, len(tc.records))
				}
			})
		}
	}
}

func TestOffsetsAndStateSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	if _, err := s.ApplyEvents(3, []Record{{Offset: 41, Value: event("s1", "o1", "paid", 0, "a@x.com")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyResults(1, []Record{{Offset: 7, Value: []byte(`{"command_id":"c1","result_id":"r1"}`)}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	defer s.Close()
	if got := s.EventOffsets(); got[3] != 42 || len(got) != 1 {
		t.Errorf("event offsets after reopen = %v", got)
	}
	if got := s.ResultOffsets(); got[1] != 8 || len(got) != 1 {
		t.Errorf("result offsets after reopen = %v", got)
	}
	if ev, found, _ := s.Transaction("s1"); !found || ev.State != "paid" {
		t.Errorf("snapshot after reopen = %v %+v", found, ev)
	}
	if s.Transactions() != 1 {
		t.Errorf("count after reopen = %d", s.Transactions())
	}
	if v, found, _ := s.Result("c1"); !found || string(v) != `{"command_id":"c1","result_id":"r1"}` {
		t.Errorf("result after reopen = %v %s", found, v)
	}
}

// TestFirstResultOnTopicWins: the first result of a command_id read from the
// topic is its answer; one recorded here and not yet read back is kept only
// until the topic says otherwise; later results of the command_id never
// replace the answer.
func TestFirstResultOnTopicWins(t *testing.T) {
	r := func(id string) []byte { return []byte(`{"command_id":"c1","result_id":"` + id + `"}`) }
	for _, tc := range []struct {
		name   string
		local  string   // recorded here first ("" none)
		topic  []string // then read from the topic, in order
		answer string
	}{
		{name: "local only: pending answer", local: "mine", answer: "mine"},
		{name: "local, then the same from the topic", local: "mine", topic: []string{"mine", "theirs"}, answer: "mine"},
		{name: "local, but another instance's came first on the topic", local: "mine", topic: []string{"theirs", "mine"}, answer: "theirs"},
		{name: "topic only: first wins", topic: []string{"first", "second"}, answer: "first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, t.TempDir())
			defer s.Close()
			if tc.local != "" {
				if stored, err := s.RecordResult("c1", r(tc.local)); err != nil || string(stored) != string(r(tc.local)) {
					t.Fatalf("RecordResult = %s, %v", stored, err)
				}
			}
			for i, id := range tc.topic {
				added, err := s.ApplyResults(0, []Record{{Offset: int64(i), Value: r(id)}})
				if err != nil {
					t.Fatal(err)
				}
				// Only the first result on the topic is news for waiters.
				if want := i == 0; (len(added) == 1 && added[0].CommandID == "c1" && string(added[0].Value) == string(r(id))) != want || len(added) > 1 {
					t.Errorf("ApplyResults of topic result %d added %v", i, added)
				}
			}
			// PublishedResult is the topic's answer only, never the pending one.
			pub, pubFound, err := s.PublishedResult("c1")
			if err != nil || pubFound != (len(tc.topic) > 0) || (pubFound && string(pub) != string(r(tc.answer))) {
				t.Errorf("PublishedResult = %s, %v, %v", pub, pubFound, err)
			}
			v, found, err := s.Result("c1")
			if err != nil || !found || string(v) != string(r(tc.answer)) {
				t.Fatalf("Result = %s, %v, %v; want %s", v, found, err, r(tc.answer))
			}
			// A later decision of the same command_id gets the answer back.
			if stored, err := s.RecordResult("c1", r("later")); err != nil || string(stored) != string(r(tc.answer)) {
				t.Errorf("RecordResult of a decided command = %s, %v", stored, err)
			}
		})
	}
}

func TestUndecodableResultsSkipped(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	if _, err := s.ApplyResults(0, []Record{
		{Offset: 0, Value: []byte(`{"command_id":"c1","result_id":"first"}`)},
		{Offset: 1, Value: []byte(`garbage`)},
		// Not a result notifyd could publish again: never stored.
		{Offset: 2, Value: []byte(`{"command_id":"c2","result_id":"x","processed_at":"yesterday"}`)},
		{Offset: 3, Value: []byte(`{"command_id":"c3"}`)},
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c2", "c3"} {
		if _, found, _ := s.Result(id); found {
			t.Errorf("undecodable result of %s was stored", id)
		}
	}
	if s.ResultOffsets()[0] != 4 {
		t.Errorf("offset = %v", s.ResultOffsets())
	}
}

func TestWaitEvents(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.WaitEvents(ctx, map[int]int64{0: 2, 1: 0}) }()
	if _, err := s.ApplyEvents(0, []Record{{Offset: 0, Value: event("s1", "", "paid", 0, "")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("wait returned before catch-up: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := s.ApplyEvents(0, []Record{{Offset: 1, Value: event("s2", "", "paid", 0, "")}}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("wait: %v", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := s.WaitEvents(short, map[int]int64{5: 1}); err == nil {
		t.Fatal("wait on a partition never applied returned nil")
	}
}

func TestDigest(t *testing.T) {
	a, b := openTest(t, t.TempDir()), openTest(t, t.TempDir())
	defer a.Close()
	defer b.Close()
	evs := []Record{{Offset: 0, Value: event("s1", "o1", "paid", 0, "a@x.com")}, {Offset: 1, Value: event("s2", "", "created", 0, "")}}
	// a applies in one batch, b in two and from another partition; the
	// offsets differ, the state does not.
	if _, err := a.ApplyEvents(0, evs); err != nil {
		t.Fatal(err)
	}
	for i := range evs {
		if _, err := b.ApplyEvents(3, evs[i:i+1]); err != nil {
			t.Fatal(err)
		}
	}
	res := func(id string) []byte { return []byte(`{"command_id":"` + id + `","result_id":"r-` + id + `"}`) }
	// a recorded c1 and c3 itself and has read only c0, c2 and c3 back from
	// the topic; b read all four from the topic.
	for _, id := range []string{"c1", "c3"} {
		if _, err := a.RecordResult(id, res(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.ApplyResults(0, []Record{{Offset: 0, Value: res("c0")}, {Offset: 1, Value: res("c2")}, {Offset: 2, Value: res("c3")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ApplyResults(0, []Record{{Offset: 5, Value: res("c3")}, {Offset: 6, Value: res("c1")}, {Offset: 7, Value: res("c2")}, {Offset: 8, Value: res("c0")}}); err != nil {
		t.Fatal(err)
	}
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, _ := b.Digest()
	if da != db || len(da) != 64 {
		t.Fatalf("digests differ: %s %s", da, db)
	}
	if _, err := b.ApplyEvents(3, []Record{{Offset: 9, Value: event("s2", "", "paid", 0, "")}}); err != nil {
		t.Fatal(err)
	}
	if db2, _ := b.Digest(); db2 == da {
		t.Fatal("digest did not change with the state")
	}
}

// TestUpgradeProjectionMovesHeads: a store written by projection version 1
// (the head in front of the JSON in t/, no a/ entries) answers as before
// after Open moves the heads, and keeps deciding versions and order_no
// moves from them.
func TestUpgradeProjectionMovesHeads(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	raw := event("s1", "o1", "paid", 5, "a@x.com")
	if _, err := s.ApplyEvents(0, []Record{{Offset: 0, Value: raw}}); err != nil {
		t.Fatal(err)
	}
	// s2 stays as version 2 wrote it, as if an upgrade had stopped
	// half-way; s1 is rewritten as version 1 wrote it.
	if _, err := s.ApplyEvents(1, []Record{{Offset: 0, Value: event("s2", "o9", "created", 1, "b@x.com")}}); err != nil {
		t.Fatal(err)
	}
	b := s.db.NewBatch()
	for _, err := range []error{
		b.Set([]byte(prefixTxn+"s1"), append(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint64(nil, 5), 2), "o1"+string(raw)...), nil),
		b.Delete([]byte(prefixHead+"s1"), nil),
		b.Delete([]byte(keyProjectionVersion), nil),
		b.Commit(nil),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	defer s.Close()
	if ev, found, err := s.Transaction("s1"); err != nil || !found || ev.State != "paid" || ev.Version != 5 {
		t.Fatalf("after upgrade: %+v %v %v", ev, found, err)
	}
	if ev, found, err := s.Transaction("s2"); err != nil || !found || ev.State != "created" || ev.CustomerEmail != "b@x.com" {
		t.Fatalf("already converted, after upgrade: %+v %v %v", ev, found, err)
	}
	st, err := s.ApplyEvents(0, []Record{
		{Offset: 1, Value: event("s1", "o1", "failed", 4, "a@x.com")},
		{Offset: 2, Value: event("s1", "o2", "captured", 6, "a@x.com")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if st != (ApplyStats{Applied: 1, Stale: 1}) {
		t.Errorf("stats = %+v", st)
	}
	if _, found, _ := s.SessionForOrder("", "o1"); found {
		t.Error("o1 still mapped after the move to o2")
	}
	if sid, found, _ := s.SessionForOrder("", "o2"); !found || sid != "s1" {
		t.Errorf("o2 -> %q %v", sid, found)
	}
	if s.Transactions() != 2 {
		t.Errorf("transactions = %d", s.Transactions())
	}
	if v, err := s.getInt(keyProjectionVersion); err != nil || v != projectionVersion {
		t.Errorf("projection version = %d %v", v, err)
	}
}

func TestSessionFilterHasNoFalseNegatives(t *testing.T) {
	f := newSessionFilter()
	f.complete.Store(true)
	const n = 3 * filterMinCapacity // grows twice
	for i := range n {
		f.Add(fmt.Appendf(nil, "sess-%d", i))
	}
	if len(f.blooms) < 2 {
		t.Fatalf("filter did not grow: %d blooms", len(f.blooms))
	}
	falsePositives := 0
	for i := range n {
		if f.SurelyAbsent(fmt.Appendf(nil, "sess-%d", i)) {
			t.Fatalf("sess-%d added, but the filter says surely absent", i)
		}
		if !f.SurelyAbsent(fmt.Appendf(nil, "other-%d", i)) {
			falsePositives++
		}
	}
	// 16 bits and 11 hashes a key: about 0.05 % per bloom, a few blooms.
	if rate := float64(falsePositives) / n; rate > 0.005 {
		t.Errorf("false positive rate %.4f", rate)
	}
	f.complete.Store(false)
	if f.SurelyAbsent([]byte("never-added")) {
		t.Error("an incomplete filter answered")
	}
}
