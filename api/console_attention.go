package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

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

// attention lists the channels that need attention, newest first, a page
// at a time.
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
	data["Items"] = items
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

// recover previews a bulk recovery (action=preview: how many commands,
// which transactions, a sample) or starts it (action=confirm) and shows
// its progress.
func (c *console) recover(w http.ResponseWriter, r *http.Request, v viewer) {
	f, err := filterOf(v, r.PostForm)
	data := map[string]any{"Filter": f}
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
	plan := projection.PlanRecovery(f, items, "console:"+v.Name, time.Now())
	if r.PostForm.Get("action") != "confirm" {
		data["Plan"] = plan
		data["Sample"] = plan.Commands[:min(recoverySample, len(plan.Commands))]
		data["More"] = more != ""
		c.render(w, http.StatusOK, "recover", v, data)
		return
	}
	c.recoveries.confirm(plan, f, v.Name)
	http.Redirect(w, r, consolePrefix+"recover/"+plan.BatchID, http.StatusSeeOther)
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
