package api

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// The console's needs-attention list and bulk recovery pages (the
// recovery's publishing is recovery.go's).

// attentionReasons are the reason filter's choices: the provider failures
// and the receipts' final statuses.
var attentionReasons = []string{string(schemas.ReasonProviderUnavailable), string(schemas.ReasonProviderRejected),
	string(schemas.DeliveryUndelivered), string(schemas.DeliveryFailed)}

// filterOf reads the needs-attention filter of a request by who: merchant
// (a platform user's choice; a merchant's user has its own), channel,
// provider, reason, since and until (datetime-local values, in UTC).
func filterOf(who viewer, v url.Values) (projection.AttentionFilter, error) {
	f := projection.AttentionFilter{Merchant: who.Merchant, Channel: schemas.Channel(v.Get("channel")), Provider: strings.TrimSpace(v.Get("provider"))}
	if m := strings.TrimSpace(v.Get("merchant")); who.Merchant == "" && m != "" {
		if !schemas.ValidMerchantID(m) {
			return f, errors.New("not a merchant_id")
		}
		f.Merchant = m
	}
	if f.Channel != "" && !f.Channel.Valid() {
		return f, errors.New("unknown channel")
	}
	switch reason := v.Get("reason"); reason {
	case "":
	case string(schemas.ReasonProviderUnavailable), string(schemas.ReasonProviderRejected):
		f.Reason = schemas.Reason(reason)
	case string(schemas.DeliveryUndelivered), string(schemas.DeliveryFailed):
		f.Delivery = schemas.DeliveryStatus(reason)
	default:
		return f, errors.New("the reason is provider_unavailable, provider_rejected, undelivered or failed")
	}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if s := strings.TrimSpace(v.Get(t.name)); s != "" {
			var err error
			if *t.dst, err = projection.ParseTime(s); err != nil {
				return f, fmt.Errorf("%s: want a time such as 2026-11-02T09:00 (UTC)", t.name)
			}
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, errors.New("since must be before until")
	}
	return f, nil
}

// attentionRow is a line of the needs-attention list: the entry, the
// transaction's customer (name, and the channel's contact masked) and the
// row's tick value (its cursor).
type attentionRow struct {
	projection.AttentionItem
	Customer, Recipient, Pick string
}

// attention lists the channels that need attention, newest first, a page
// at a time, with how many the filter selects and the customer of each.
func (c *console) attention(w http.ResponseWriter, r *http.Request, v viewer) {
	q := r.URL.Query()
	f, err := filterOf(v, q)
	data := map[string]any{"Filter": f, "Channels": schemas.Channels,
		"Reasons": attentionReasons}
	if err != nil {
		data["Error"] = err.Error()
		c.render(w, http.StatusBadRequest, "attention", v, data)
		return
	}
	// The total, counted up to attentionTotal entries (each is read: a
	// larger backlog is said as "10000+" to keep the page quick).
	all := f
	all.Limit = attentionTotal
	everything, beyond, err := c.backend.Attention(all)
	if err != nil {
		c.unavailable(w, v, err)
		return
	}
	data["Total"], data["TotalMore"] = len(everything), beyond != ""
	f.After, f.Limit = q.Get("after"), attentionRows
	items, next, err := c.backend.Attention(f)
	if err != nil {
		if strings.Contains(err.Error(), "cursor") {
			data["Error"] = "That page is gone: start from the first."
			c.render(w, http.StatusBadRequest, "attention", v, data)
			return
		}
		c.unavailable(w, v, err)
		return
	}
	rows := make([]attentionRow, len(items))
	for i, it := range items {
		rows[i] = attentionRow{AttentionItem: it, Pick: it.Cursor()}
		txn, found, err := c.backend.Lookup(it.MerchantID, it.SessionID, "")
		if err != nil {
			c.unavailable(w, v, err)
			return
		}
		if found {
			rows[i].Customer = strings.TrimSpace(txn.CustomerFirstName + " " + txn.CustomerLastName)
			contact := txn.CustomerPhone
			if it.Channel == schemas.ChannelEmail {
				contact = txn.CustomerEmail
			}
			rows[i].Recipient = dispatch.MaskRecipient(it.Channel, contact)
		}
	}
	data["Items"] = rows
	if next != "" {
		nq := url.Values{}
		for _, k := range []string{"merchant", "channel", "provider", "reason", "since", "until"} {
			if q.Get(k) != "" {
				nq.Set(k, q.Get(k))
			}
		}
		nq.Set("after", next)
		data["Next"] = consolePrefix + "attention?" + nq.Encode()
	}
	c.render(w, http.StatusOK, "attention", v, data)
}

// previewRow is a transaction of a recovery's preview: what its command
// resends, its order_no and when its latest failure was.
type previewRow struct {
	schemas.ResendCommand
	OrderNo  string
	FailedAt time.Time
}

// recover previews a bulk recovery (action=preview: how many commands,
// which transactions, a sample) or starts it (action=confirm) and shows
// its progress. With scope=ticked (or picks carried by the preview's
// confirmation) it recovers only the ticked rows (pick: their cursors).
func (c *console) recover(w http.ResponseWriter, r *http.Request, v viewer) {
	f, err := filterOf(v, r.PostForm)
	data := map[string]any{"Filter": f}
	if err == nil && r.PostForm.Get("scope") == "ticked" && len(r.PostForm["pick"]) == 0 {
		err = errors.New("tick the rows to recover, or recover all of them")
	}
	if err != nil {
		data["Error"] = err.Error()
		c.render(w, http.StatusBadRequest, "recover", v, data)
		return
	}
	if f.Until.IsZero() {
		// The window closes now, at the preview; the confirmation carries
		// it, so that it recovers what the preview showed and nothing that
		// failed since.
		f.Until = time.Now().UTC().Truncate(time.Second)
		data["Filter"] = f
	}
	f.Limit = maxRecovery
	items, more, err := c.backend.Attention(f)
	if err != nil {
		c.unavailable(w, v, err)
		return
	}
	var picks []string
	if r.PostForm.Get("scope") != "all" {
		picks = r.PostForm["pick"]
	}
	if len(picks) > 0 {
		items = slices.DeleteFunc(items, func(it projection.AttentionItem) bool { return !slices.Contains(picks, it.Cursor()) })
		more = ""
	}
	plan := projection.PlanRecovery(f, items, "console:"+v.Name, time.Now())
	if len(picks) > 0 {
		plan.BatchID = pickedBatchID(plan.BatchID, picks)
	}
	if r.PostForm.Get("action") != "confirm" {
		data["Plan"] = plan
		data["Sample"] = previewRows(plan, items, recoverySample)
		data["More"] = more != ""
		data["Picks"] = picks
		c.render(w, http.StatusOK, "recover", v, data)
		return
	}
	c.recoveries.confirm(plan, f, v.Name)
	http.Redirect(w, r, consolePrefix+"recover/"+plan.BatchID, http.StatusSeeOther)
}

// pickedBatchID names the recovery of some rows of a filter: the filter's
// batch id and the rows', so that it has its own progress page.
func pickedBatchID(filterBatch string, picks []string) string {
	sorted := slices.Sorted(slices.Values(picks))
	sum := sha256.Sum256([]byte(strings.Join(sorted, "\x00")))
	return filterBatch + "-" + hex.EncodeToString(sum[:4])
}

// previewRows are the first n transactions of a plan, each with its
// order_no and its latest failure among items.
func previewRows(plan projection.RecoveryPlan, items []projection.AttentionItem, n int) []previewRow {
	rows := make([]previewRow, 0, min(n, len(plan.Commands)))
	for _, cmd := range plan.Commands[:min(n, len(plan.Commands))] {
		row := previewRow{ResendCommand: cmd}
		for _, it := range items {
			if it.SessionID == cmd.SessionID {
				row.OrderNo = cmp.Or(row.OrderNo, it.OrderNo)
				if it.ProcessedAt.After(row.FailedAt) {
					row.FailedAt = it.ProcessedAt
				}
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// batchPage shows a recovery's progress: commands published, and results
// in (from the results every instance follows), refreshed while it runs.
func (c *console) batchPage(w http.ResponseWriter, r *http.Request, v viewer) {
	id := r.PathValue("batch")
	p, commands, ok := c.recoveries.progress(id)
	if !ok || (v.Merchant != "" && p.Filter.Merchant != v.Merchant) { // another merchant's batch: as one that does not exist
		ok = false
	}
	if !ok {
		c.render(w, http.StatusNotFound, "batch", v, map[string]any{"Missing": id})
		return
	}
	for _, cmd := range commands {
		raw, found, err := c.s.deps.Results.Result(cmd.CommandID)
		if err != nil {
			c.unavailable(w, v, err)
			return
		}
		if !found {
			continue
		}
		p.Decided++
		var res schemas.DeliveryResult
		if json.Unmarshal(raw, &res) == nil && res.Outcome == schemas.OutcomeNotified {
			p.Sent++
		} else {
			p.NotSent++
		}
	}
	data := map[string]any{"Batch": p}
	if !p.Done || p.Decided < p.Published {
		data["Refresh"] = pendingRefresh
	}
	c.render(w, http.StatusOK, "batch", v, data)
}
