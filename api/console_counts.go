package api

import (
	"cmp"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// The console's per-merchant counts page: channel results (sent, failed,
// rejected) by merchant, UTC day and channel, read from the store
// (projection/counts.go), so that metrics need no merchant label.

// Limits of the counts page.
const (
	countsDays      = 7   // the days shown when none are chosen, today's included
	maxCountsDays   = 366 // the most days one page sums
	countsMerchants = 50  // merchants per page of every merchant's totals
	dateLayout      = "2006-01-02"
)

// countsRow is a line of the counts page: a day's (or the range's) results
// of one channel.
type countsRow struct {
	MerchantID string
	Day        string // empty on a total
	Channel    schemas.Channel
	projection.ChannelCounts
}

// countsFilterOf reads the counts page's filter of a request by who:
// merchant (a platform user's choice; a merchant's user has its own), from
// and to (UTC days, to today and the countsDays before it by default).
func countsFilterOf(who viewer, v url.Values, today time.Time) (projection.CountsFilter, error) {
	f := projection.CountsFilter{Merchant: who.Merchant, To: today, From: today.AddDate(0, 0, 1-countsDays)}
	if m := strings.TrimSpace(v.Get("merchant")); who.Merchant == "" && m != "" {
		if !schemas.ValidMerchantID(m) {
			return f, errors.New("not a merchant_id")
		}
		f.Merchant = m
	}
	for _, d := range []struct {
		name string
		dst  *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		if s := strings.TrimSpace(v.Get(d.name)); s != "" {
			t, err := time.Parse(dateLayout, s)
			if err != nil {
				return f, errors.New(d.name + ": want a day such as 2026-11-02")
			}
			*d.dst = t
		}
	}
	switch {
	case f.To.Before(f.From):
		return f, errors.New("from must not be after to")
	case f.To.Sub(f.From) >= maxCountsDays*24*time.Hour:
		return f, errors.New("at most 366 days at a time")
	}
	return f, nil
}

// counts shows the per-merchant counts: one merchant's by day and channel
// (a merchant's user always sees its own), or, for a platform user with no
// merchant chosen, every merchant's totals over the days, a page of
// merchants at a time.
func (c *console) counts(w http.ResponseWriter, r *http.Request, v viewer) {
	q := r.URL.Query()
	f, err := countsFilterOf(v, q, time.Now().UTC().Truncate(24*time.Hour))
	data := map[string]any{"From": f.From.Format(dateLayout), "To": f.To.Format(dateLayout), "Merchant": f.Merchant}
	if err != nil {
		data["Error"] = err.Error()
		c.render(w, http.StatusBadRequest, "counts", v, data)
		return
	}
	perMerchant := f.Merchant == ""
	if perMerchant {
		f.After, f.Merchants = q.Get("after"), countsMerchants
	}
	counts, next, err := c.backend.Counts(f)
	if err != nil {
		c.unavailable(w, v, err)
		return
	}
	// Totals by merchant and channel over the days; one merchant's days
	// newest first.
	var totals, days []countsRow
	for _, n := range counts {
		i := slices.IndexFunc(totals, func(t countsRow) bool { return t.MerchantID == n.MerchantID && t.Channel == n.Channel })
		if i < 0 {
			totals = append(totals, countsRow{MerchantID: n.MerchantID, Channel: n.Channel})
			i = len(totals) - 1
		}
		totals[i].Sent += n.Sent
		totals[i].Failed += n.Failed
		totals[i].Rejected += n.Rejected
		if !perMerchant {
			days = append(days, countsRow{MerchantID: n.MerchantID, Day: n.Day.Format(dateLayout), Channel: n.Channel, ChannelCounts: n})
		}
	}
	slices.SortStableFunc(totals, func(a, b countsRow) int {
		return cmp.Or(strings.Compare(a.MerchantID, b.MerchantID), strings.Compare(string(a.Channel), string(b.Channel)))
	})
	slices.SortStableFunc(days, func(a, b countsRow) int { return strings.Compare(b.Day, a.Day) })
	data["Totals"], data["Days"], data["PerMerchant"] = totals, days, perMerchant
	if next != "" {
		nq := url.Values{"from": {data["From"].(string)}, "to": {data["To"].(string)}, "after": {next}}
		data["Next"] = consolePrefix + "counts?" + nq.Encode()
	}
	c.render(w, http.StatusOK, "counts", v, data)
}
