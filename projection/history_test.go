package projection

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/notifyd/notifyd/schemas"
)

// t0 is when the test results were processed, from t0 + 1 minute on.
var t0 = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

// result is a delivery result of command id about session, processed at
// t0 + minute minutes, with a channel result per
// "channel:status[:reason[:provider[:provider_message_id]]]".
func result(id, session string, minute int, channels ...string) []byte {
	st := schemas.StatePaid
	r := schemas.DeliveryResult{
		ResultID: "r-" + id, CommandID: id, SessionID: session, OrderNo: "o-" + session, State: &st,
		Outcome: schemas.OutcomeNotified, Message: "m", Channels: []schemas.ChannelResult{},
		RequestedBy: "tester", ProcessedAt: t0.Add(time.Duration(minute) * time.Minute),
	}
	for _, c := range channels {
		fields := append(strings.Split(c, ":"), "", "", "", "")
		ch, status, reason, provider, msgID := fields[0], fields[1], fields[2], fields[3], fields[4]
		r.Channels = append(r.Channels, schemas.ChannelResult{Channel: schemas.Channel(ch), Status: schemas.ChannelStatus(status),
			Reason: schemas.Reason(reason), Provider: provider, ProviderMessageID: msgID, Attempts: 1})
	}
	b, _ := json.Marshal(r)
	return b
}

func applyResults(t *testing.T, s *Store, partition int, offset *int64, values ...[]byte) {
	t.Helper()
	rs := make([]Record, len(values))
	for i, v := range values {
		rs[i] = Record{Offset: *offset, Value: v}
		*offset++
	}
	if _, err := s.ApplyResults(partition, rs); err != nil {
		t.Fatal(err)
	}
}

func attentionOf(t *testing.T, s *Store, f AttentionFilter) []string {
	t.Helper()
	items, _, err := s.Attention(f)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, it := range items {
		out = append(out, fmt.Sprintf("%s/%s/%s/%s@%d", it.SessionID, it.Channel, it.Reason, it.Provider, int(it.ProcessedAt.Sub(t0)/time.Minute)))
	}
	return out
}

// TestHistoryIndex: the history of a transaction lists the first result of
// each command newest first; a channel needs attention while its latest
// attempt failed with provider_unavailable or provider_rejected, until a
// later attempt sends it; rejections and older results change nothing.
func TestHistoryIndex(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var off int64
	applyResults(t, s, 0, &off,
		result("c1", "s1", 1, "sms:failed:provider_unavailable:twilio", "email:sent::smtp"),
		result("c2", "s2", 2, "sms:failed:provider_rejected:twilio"),
		result("c3", "s3", 3, "whatsapp:failed:provider_unavailable:meta"),
		result("c4", "s1", 4, "sms:rejected:state_not_enabled"), // nothing tried: s1/sms still needs attention
		result("c5", "s3", 5, "whatsapp:sent::meta"),            // sent since: s3 leaves the list
		result("c6", "s4", 6, "email:failed:provider_unavailable:smtp"),
	)
	// An older attempt of s4/email, read later, does not override the newer.
	applyResults(t, s, 1, new(int64), result("c0", "s4", 0, "email:sent::smtp"))
	// A replay of c2 (the same bytes) changes nothing; a second, different
	// result of c2 is not its answer and is not indexed.
	applyResults(t, s, 0, &off, result("c2", "s2", 2, "sms:failed:provider_rejected:twilio"), result("c2", "s2", 9, "sms:sent::twilio"))
	// Results about no known transaction are not indexed.
	unknown, _ := json.Marshal(schemas.DeliveryResult{ResultID: "r-u", CommandID: "cu", SessionID: "nope", Outcome: schemas.OutcomeNotNotified,
		Message: "m", Reason: schemas.ReasonUnknownTransaction, Channels: []schemas.ChannelResult{}, ProcessedAt: t0})
	applyResults(t, s, 0, &off, unknown)

	if got, want := attentionOf(t, s, AttentionFilter{}), []string{
		"s4/email/provider_unavailable/smtp@6", "s2/sms/provider_rejected/twilio@2", "s1/sms/provider_unavailable/twilio@1",
	}; !slices.Equal(got, want) {
		t.Errorf("attention:\n got %q\nwant %q", got, want)
	}
	hist, err := s.History("s1", 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, h := range hist {
		var r schemas.DeliveryResult
		if err := json.Unmarshal(h, &r); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.CommandID)
	}
	if !slices.Equal(ids, []string{"c4", "c1"}) {
		t.Errorf("history of s1: %v, want c4, c1", ids)
	}
	for session, want := range map[string]int{"s2": 1, "s4": 2, "nope": 0, "s": 0} {
		if h, _ := s.History(session, 0); len(h) != want {
			t.Errorf("history of %s: %d results, want %d", session, len(h), want)
		}
	}
	if h, _ := s.History("s1", 1); len(h) != 1 {
		t.Errorf("history limit 1: %d", len(h))
	}

	// A later success of s1/sms takes it off the list.
	applyResults(t, s, 0, &off, result("c7", "s1", 7, "sms:sent::twilio"))
	if got := attentionOf(t, s, AttentionFilter{Channel: schemas.ChannelSMS}); !slices.Equal(got, []string{"s2/sms/provider_rejected/twilio@2"}) {
		t.Errorf("sms attention after s1 sent: %q", got)
	}
}

// TestAttentionFilter: the listing filters by channel, provider, reason and
// a time window [since, until), newest first, in pages.
func TestAttentionFilter(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var off int64
	var values [][]byte
	for i := 0; i < 10; i++ {
		reason := "provider_unavailable"
		if i%3 == 0 {
			reason = "provider_rejected"
		}
		provider := "twilio"
		if i%2 == 1 {
			provider = "backup"
		}
		values = append(values, result(fmt.Sprintf("c%d", i), fmt.Sprintf("s%d", i), i*10, "sms:failed:"+reason+":"+provider,
			"email:failed:provider_unavailable:smtp"))
	}
	applyResults(t, s, 0, &off, values...)
	for _, tc := range []struct {
		name string
		f    AttentionFilter
		want []string
	}{
		{"channel and reason", AttentionFilter{Channel: "sms", Reason: "provider_rejected"},
			[]string{"s9/sms/provider_rejected/backup@90", "s6/sms/provider_rejected/twilio@60", "s3/sms/provider_rejected/backup@30", "s0/sms/provider_rejected/twilio@0"}},
		{"provider", AttentionFilter{Channel: "sms", Provider: "twilio", Reason: "provider_unavailable"},
			[]string{"s8/sms/provider_unavailable/twilio@80", "s4/sms/provider_unavailable/twilio@40", "s2/sms/provider_unavailable/twilio@20"}},
		{"window: since inclusive, until exclusive", AttentionFilter{Channel: "email", Since: t0.Add(20 * time.Minute), Until: t0.Add(50 * time.Minute)},
			[]string{"s4/email/provider_unavailable/smtp@40", "s3/email/provider_unavailable/smtp@30", "s2/email/provider_unavailable/smtp@20"}},
		{"nothing", AttentionFilter{Channel: "whatsapp"}, []string{}},
	} {
		if got := attentionOf(t, s, tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
	// Pages of 3 of the 20 entries, in order, none twice.
	var all []string
	f := AttentionFilter{Limit: 3}
	for pages := 0; ; pages++ {
		items, next, err := s.Attention(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			all = append(all, it.SessionID+"/"+string(it.Channel))
		}
		if next == "" {
			break
		}
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		f.After = next
	}
	if len(all) != 20 || (all[0] != "s9/email" && all[0] != "s9/sms") {
		t.Errorf("pages: %d entries %v, want 20 from s9's", len(all), all)
	}
	seen := map[string]bool{}
	for _, a := range all {
		if seen[a] {
			t.Errorf("%s listed twice", a)
		}
		seen[a] = true
	}
	if _, _, err := s.Attention(AttentionFilter{After: "zz"}); err == nil {
		t.Error("a bad cursor was accepted")
	}
}

// TestHistoryRebuiltEqualsLive: the history index built as results arrive
// in small batches equals the one built by reading them all again into an
// empty store, and a store from before the index re-reads the results topic
// to build it.
func TestHistoryRebuiltEqualsLive(t *testing.T) {
	var values [][]byte
	for i := 0; i < 200; i++ {
		status := "sms:failed:provider_unavailable:twilio"
		if i%4 == 3 {
			status = "sms:sent::twilio"
		}
		values = append(values, result(fmt.Sprintf("c%d", i), fmt.Sprintf("s%d", i%37), i, status, "email:sent::smtp"))
	}
	live := openTest(t, t.TempDir())
	defer live.Close()
	var off int64
	for i := 0; i < len(values); i += 7 {
		applyResults(t, live, 0, &off, values[i:min(i+7, len(values))]...)
	}
	rebuilt := openTest(t, t.TempDir())
	defer rebuilt.Close()
	off = 0
	applyResults(t, rebuilt, 0, &off, values...)
	a, err := live.Digest()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := rebuilt.Digest()
	if a != b {
		t.Errorf("digests differ: live %s, rebuilt %s", a, b)
	}
	if n := len(attentionOf(t, rebuilt, AttentionFilter{})); n == 0 || n > 37 {
		t.Errorf("%d channels need attention", n)
	}

	// A store without the index's version: its results offsets are
	// forgotten at open, so the follower reads the topic again.
	dir := t.TempDir()
	old := openTest(t, dir)
	off = 0
	applyResults(t, old, 0, &off, values[:10]...)
	if err := old.db.Delete([]byte(keyHistoryVersion), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	old.Close()
	reopened := openTest(t, dir)
	if offs := reopened.ResultOffsets(); len(offs) != 0 {
		t.Errorf("result offsets %v kept: the index would never be built", offs)
	}
	if v, _ := reopened.getInt(keyHistoryVersion); v != historyVersion {
		t.Errorf("history version %d", v)
	}
	// Forgotten on disk too: stopped before reading the topic again, the
	// store still starts from its beginning.
	reopened.Close()
	again := openTest(t, dir)
	defer again.Close()
	if offs := again.ResultOffsets(); len(offs) != 0 {
		t.Errorf("result offsets %v back after another restart: the index would never be built", offs)
	}
}

// TestHistoryKeysAndTombstones: a session_id that starts like another's
// (NUL included) never shows in its history; deleting a transaction takes
// it off the needs-attention list and keeps its history.
func TestHistoryKeysAndTombstones(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	if _, err := s.ApplyEvents(0, recs(event("a", "oa", schemas.StatePaid, 0, "a@example.com"), event("a\x00x", "ox", schemas.StatePaid, 0, "x@example.com"))); err != nil {
		t.Fatal(err)
	}
	var off int64
	applyResults(t, s, 0, &off,
		result("ca", "a", 1, "sms:failed:provider_unavailable:twilio"),
		result("cx", "a\x00x", 2, "sms:failed:provider_unavailable:twilio"))
	if h, _ := s.History("a", 0); len(h) != 1 {
		t.Errorf("history of a: %d results, want 1 (not a\\x00x's)", len(h))
	}
	if _, err := s.ApplyEvents(0, []Record{{Offset: 2, Key: []byte("a")}}); err != nil {
		t.Fatal(err)
	}
	if got := attentionOf(t, s, AttentionFilter{}); !slices.Equal(got, []string{"a\x00x/sms/provider_unavailable/twilio@2"}) {
		t.Errorf("attention after deleting a: %q", got)
	}
	if h, _ := s.History("a", 0); len(h) != 1 {
		t.Errorf("a deleted transaction lost its history: %d", len(h))
	}
}

func TestLastSent(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var off int64
	applyResults(t, s, 0, &off,
		result("c1", "s1", 5, "sms:sent", "email:failed:provider_unavailable"),
		result("c2", "s1", 3, "sms:sent"), // older, read later: kept out
		result("c3", "s2", 7, "email:rejected:channel_not_enabled"),
	)
	for _, tc := range []struct {
		session string
		ch      schemas.Channel
		state   schemas.State
		want    int // minute, -1: never sent
	}{
		{"s1", "sms", "paid", 5},
		{"s1", "email", "paid", -1},   // failed
		{"s1", "sms", "refunded", -1}, // another state
		{"s2", "email", "paid", -1},   // rejected
		{"s3", "sms", "paid", -1},     // unknown
	} {
		at, ok, err := s.LastSent(tc.session, tc.ch, tc.state)
		if err != nil {
			t.Fatal(err)
		}
		if got := int(at.Sub(t0) / time.Minute); (tc.want < 0) == ok || ok && got != tc.want {
			t.Errorf("LastSent(%s, %s, %s) = %v (minute %d), %v; want minute %d", tc.session, tc.ch, tc.state, at, got, ok, tc.want)
		}
	}
	// A tombstone forgets the sends.
	if _, err := s.ApplyEvents(0, []Record{{Offset: 0, Key: []byte("s1"), Value: event("s1", "o1", schemas.StatePaid, 1, "a@example.com")},
		{Offset: 1, Key: []byte("s1")}}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.LastSent("s1", "sms", "paid"); ok {
		t.Error("a deleted transaction still has a last send")
	}
}
