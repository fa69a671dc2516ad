package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// BenchmarkConsolePages renders the console's pages over a store holding
// NOTIFYD_BENCH_TRANSACTIONS transactions (default 1,000,000), one in
// twenty with a result in its history and one in a hundred needing
// attention, beside the same pages over a store of 1,000 (the baseline, in
// the same run): a page's cost must not grow with the store. (The
// needs-attention list reads its entries newest first and filters them in
// memory: its cost grows with the entries, one in a hundred transactions
// here, not with the store.)
//
//	go test -run '^$' -bench ConsolePages -benchtime 200x ./api/
func BenchmarkConsolePages(b *testing.B) {
	big := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("NOTIFYD_BENCH_TRANSACTIONS")); err == nil && v > 0 {
		big = v
	}
	for _, n := range []int{1_000, big} {
		f := newConsoleFixture(b)
		fillStore(b, f, n)
		br := f.browser()
		br.signIn("ops", "ops pass")
		mid := n / 2
		pages := map[string]string{
			"transaction":      fmt.Sprintf("/console/txn?q=o%07d&by=order_no", mid-mid%20), // one with history
			"attention":        "/console/attention?channel=sms&reason=provider_unavailable",
			"attention-window": "/console/attention?" + url.Values{"since": {"2026-11-02T10:00"}, "until": {"2026-11-02T11:00"}}.Encode(),
			"not-found":        "/console/txn?q=nope&by=session_id",
			// A filter no entry matches: every needs-attention entry is read.
			"attention-no-match": "/console/attention?provider=nobody",
		}
		for _, name := range []string{"transaction", "attention", "attention-window", "attention-no-match", "not-found"} {
			b.Run(fmt.Sprintf("%s/transactions=%d", name, n), func(b *testing.B) {
				for b.Loop() {
					if p := br.get(pages[name]); p.status != 200 && p.status != 404 {
						b.Fatalf("%s: %d", name, p.status)
					}
				}
			})
		}
	}
}

// fillStore puts n transactions in the store, results for one in twenty
// (every fifth of them failed for sms: needing attention).
func fillStore(b testing.TB, f *consoleFixture, n int) {
	const batch = 10_000
	paid := schemas.StatePaid
	base := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	var evs []projection.Record
	var rs []projection.Record
	flush := func() {
		if len(evs) > 0 {
			if _, err := f.store.ApplyEvents(0, evs); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
		if len(rs) > 0 {
			if _, err := f.store.ApplyResults(0, rs); err != nil {
				b.Fatal(err)
			}
			rs = rs[:0]
		}
	}
	for i := range n {
		sid, order := fmt.Sprintf("s%07d", i), fmt.Sprintf("o%07d", i)
		evs = append(evs, projection.Record{Offset: f.offsets["e"], Value: event(sid, order, "paid", nil)})
		f.offsets["e"]++
		if i%20 == 0 {
			sms := schemas.ChannelResult{Channel: "sms", Status: "sent", Provider: "twilio", ProviderMessageID: "SM" + sid, Attempts: 1}
			if i%100 == 0 {
				sms = schemas.ChannelResult{Channel: "sms", Status: "failed", Reason: "provider_unavailable", Provider: "twilio", Attempts: 5}
			}
			v, _ := json.Marshal(schemas.DeliveryResult{ResultID: "r" + sid, CommandID: "c" + sid, SessionID: sid, OrderNo: order, State: &paid,
				Outcome: schemas.OutcomeNotified, Message: "m", RequestedBy: "shop", ProcessedAt: base.Add(time.Duration(i) * time.Second / 100),
				Channels: []schemas.ChannelResult{sms}})
			rs = append(rs, projection.Record{Offset: f.offsets["r"], Value: v})
			f.offsets["r"]++
		}
		if len(evs) == batch {
			flush()
		}
	}
	flush()
}
