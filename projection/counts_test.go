package projection

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
)

// merchantResult is result() of merchant m ("" names none).
func merchantResult(m, id string, minute int, channels ...string) []byte {
	var r map[string]any
	_ = json.Unmarshal(result(id, "s-"+id, minute, channels...), &r)
	if m != "" {
		r["merchant_id"] = m
	}
	b, _ := json.Marshal(r)
	return b
}

// countsOf lists the counts the filter selects as
// "merchant day channel sent/failed/rejected", and the next cursor.
func countsOf(t *testing.T, s *Store, f CountsFilter) ([]string, string) {
	t.Helper()
	cs, next, err := s.Counts(f)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s %s %s %d/%d/%d", c.MerchantID, c.Day.Format("01-02"), c.Channel, c.Sent, c.Failed, c.Rejected))
	}
	return out, next
}

// day is minutes after t0 (09:00) on the day after t0's.
const day = 15 * 60

// TestCounts: each command's answer counts its channel results by merchant
// (none: default), UTC day and channel; a duplicate's result, another
// result of the same command_id and a batch read again count nothing; the
// filter selects a merchant, days and pages of merchants.
func TestCounts(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	var off int64
	first := merchantResult("acme", "c1", 0, "email:sent::smtp", "sms:failed:provider_unavailable:twilio")
	applyResults(t, s, 0, &off,
		first,
		merchantResult("acme", "c2", 1, "email:sent::smtp", "sms:sent::twilio", "whatsapp:rejected:channel_not_enabled"),
		merchantResult("acme", "c3", day, "sms:sent::twilio"),
		merchantResult("acme.x", "c4", 2, "email:failed:provider_rejected:smtp"),
		merchantResult("", "c5", day-1, "sms:sent::twilio"), // 23:59 UTC: the first day
		merchantResult("zed", "c6", day+24*60, "email:rejected:unknown_transaction"),
	)
	// Read again: the same result (a duplicate's answer republished) and
	// another instance's result of c1 count nothing.
	applyResults(t, s, 0, &off, first, merchantResult("acme", "c1", 5, "email:sent::smtp", "sms:sent::twilio"))
	// A batch read again (a replay from an older offset).
	if _, err := s.ApplyResults(0, []Record{{Offset: 1, Value: merchantResult("acme", "c2", 1, "email:sent::smtp")}}); err != nil {
		t.Fatal(err)
	}
	all := []string{
		"acme 11-02 email 2/0/0", "acme 11-02 sms 1/1/0", "acme 11-02 whatsapp 0/0/1", "acme 11-03 sms 1/0/0",
		"acme.x 11-02 email 0/1/0",
		"default 11-02 sms 1/0/0",
		"zed 11-04 email 0/0/1",
	}
	d0 := t0.Truncate(24 * time.Hour)
	for _, tc := range []struct {
		name string
		f    CountsFilter
		want []string
		next string
	}{
		{"everything", CountsFilter{}, all, ""},
		{"one merchant, not the one its name starts", CountsFilter{Merchant: "acme"}, all[:4], ""},
		{"the default merchant", CountsFilter{Merchant: "default"}, all[5:6], ""},
		{"a merchant with none", CountsFilter{Merchant: "nobody"}, []string{}, ""},
		{"from a day (time of day ignored)", CountsFilter{Merchant: "acme", From: d0.Add(36 * time.Hour)}, all[3:4], ""},
		{"to a day (time of day ignored)", CountsFilter{To: d0.Add(47 * time.Hour)}, all[:6], ""},
		{"one day", CountsFilter{From: d0, To: d0}, []string{all[0], all[1], all[2], all[4], all[5]}, ""},
		{"a day after all", CountsFilter{From: d0.AddDate(0, 0, 3)}, []string{}, ""},
		{"a page of two merchants", CountsFilter{Merchants: 2}, all[:5], "acme.x"},
		{"the next page", CountsFilter{Merchants: 2, After: "acme.x"}, all[5:], ""},
		{"a page of merchants with counts in the days", CountsFilter{Merchants: 2, From: d0.AddDate(0, 0, 1)}, []string{all[3], all[6]}, ""},
		{"merchants without counts in the days are not a page's", CountsFilter{Merchants: 1, To: d0}, all[:3], "acme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, next := countsOf(t, s, tc.f)
			if !slices.Equal(got, tc.want) || next != tc.next {
				t.Errorf("counts %q next %q, want %q next %q", got, next, tc.want, tc.next)
			}
		})
	}
}

// TestCountsUpgrade: a store written before the counts counts the results
// it holds, once, at open: the same counts as a store that counted them
// as they came; opened again it counts nothing twice.
func TestCountsUpgrade(t *testing.T) {
	var values [][]byte
	for i := range 120 {
		values = append(values, merchantResult(fmt.Sprintf("m%d", i%7), fmt.Sprintf("c%d", i), i*23, "sms:sent::twilio", "email:failed:provider_unavailable:smtp"))
	}
	live := openTest(t, t.TempDir())
	defer live.Close()
	var off int64
	for i := 0; i < len(values); i += 9 {
		applyResults(t, live, 0, &off, values[i:min(i+9, len(values))]...)
	}
	want, _ := countsOf(t, live, CountsFilter{})
	if len(want) < 7*2 {
		t.Fatalf("%d counts", len(want))
	}

	dir := t.TempDir()
	old := openTest(t, dir)
	off = 0
	applyResults(t, old, 0, &off, values...)
	upper := []byte(prefixCounts)
	upper[len(upper)-1]++
	b := old.db.NewBatch()
	_ = b.DeleteRange([]byte(prefixCounts), upper, nil)
	_ = b.Delete([]byte(keyCountsVersion), nil)
	// What an upgrade stopped half-way leaves: a count the results give
	// again, and one they do not (both gone once the upgrade counts).
	_ = b.Set(countsKey("m1", t0, "sms"), encodeCounts(ChannelCounts{Sent: 99}), nil)
	_ = b.Set(countsKey("ghost", t0, "sms"), encodeCounts(ChannelCounts{Sent: 7}), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	old.Close()
	// The store logs from its session-filter goroutine too: the buffer is
	// written and read under a lock.
	var logs lockedBuffer
	open := func() *Store {
		logs.Reset()
		s, err := Open(dir, Options{EventsTopic: "payment-events", ResultsTopic: "notification-results",
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	if got, _ := countsOf(t, s, CountsFilter{}); !slices.Equal(got, want) {
		t.Errorf("counts after the upgrade\n%q\nwant\n%q", got, want)
	}
	if !strings.Contains(logs.String(), "per-merchant counts built from the results held") || !strings.Contains(logs.String(), "results=120") {
		t.Errorf("the upgrade's log: %s", logs.String())
	}
	// Counted once: the next open counts nothing again (a count changed
	// since stays as it is).
	if err := s.db.Set(countsKey("m1", t0, "sms"), encodeCounts(ChannelCounts{Sent: 99}), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open()
	defer s.Close()
	if got, _ := countsOf(t, s, CountsFilter{Merchant: "m1", From: t0, To: t0}); !slices.Contains(got, "m1 11-02 sms 99/0/0") {
		t.Errorf("counted again at the next open: %q", got)
	}
	if strings.Contains(logs.String(), "per-merchant counts") {
		t.Errorf("the next open logged a count: %s", logs.String())
	}
	// A new store has nothing to count and says nothing.
	fresh, err := Open(t.TempDir(), Options{EventsTopic: "payment-events", ResultsTopic: "notification-results",
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	fresh.Close()
	if strings.Contains(logs.String(), "per-merchant counts") {
		t.Errorf("a new store logged a count: %s", logs.String())
	}
}

// TestCountsCorrupt: a counts entry that does not decode is an error, not
// a number.
func TestCountsCorrupt(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	if err := s.db.Set(countsKey("acme", t0, "sms"), []byte{1, 2}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Counts(CountsFilter{}); err == nil {
		t.Error("a corrupt value read as counts")
	}
	var off int64
	if _, err := s.ApplyResults(0, []Record{{Offset: off, Value: merchantResult("acme", "c1", 0, "sms:sent::twilio")}}); err == nil {
		t.Error("a result added to a corrupt value")
	}
	if err := s.db.Set(append([]byte(prefixCounts), "acme\x00bad"...), encodeCounts(ChannelCounts{}), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Counts(CountsFilter{Merchant: "acme"}); err == nil {
		t.Error("a corrupt key read as counts")
	}
}

// lockedBuffer is a log destination safe to write from the store's
// goroutines while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}
