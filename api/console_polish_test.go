package api

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// TestConsoleAttentionTicked: the needs-attention list says how many
// channels the filter selects and whose they are (the customer, the
// contact masked); an empty list offers no recovery; ticking rows
// recovers only those (their own batch, its preview naming them), and
// ticking none is refused; the progress page says how many customers were
// notified and how many not, in red when any were not.
func TestConsoleAttentionTicked(t *testing.T) {
	var events [][]byte
	for i := range 6 {
		events = append(events, event(fmt.Sprintf("s%d", i), fmt.Sprintf("o%d", i), "paid", nil))
	}
	f := newConsoleFixture(t, events...)
	paid := schemas.StatePaid
	base := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	var rs []schemas.DeliveryResult
	for i := range 6 {
		rs = append(rs, schemas.DeliveryResult{ResultID: fmt.Sprint("r", i), CommandID: fmt.Sprint("c", i), SessionID: fmt.Sprint("s", i),
			OrderNo: fmt.Sprint("o", i), State: &paid, Outcome: schemas.OutcomeNotNotified, Message: "m", RequestedBy: "shop",
			Channels:    []schemas.ChannelResult{{Channel: "email", Status: "failed", Reason: "provider_unavailable", Provider: "smtp", Attempts: 5}},
			ProcessedAt: base.Add(time.Duration(i) * time.Minute)})
	}
	f.results(rs...)
	b := f.browser()
	b.signIn("ops", "ops pass")
	p := b.get("/console/attention")
	if !strings.Contains(p.text(), "6 channels need attention for this filter") || !strings.Contains(p.text(), "Recover all 6") {
		t.Errorf("no total: %s", p.text())
	}
	if !strings.Contains(p.text(), "s3 o3 Layla l***@example.com email provider_unavailable smtp") {
		t.Errorf("no customer on the row: %s", p.text())
	}
	if strings.Contains(p.body, "layla@example.com") {
		t.Error("a contact unmasked")
	}
	if e := b.get("/console/attention?channel=whatsapp"); !strings.Contains(e.text(), "Nothing needs attention") ||
		strings.Contains(e.body, `id="recover"`) || strings.Contains(e.body, `id="recover-ticked"`) {
		t.Errorf("an empty list offers a recovery: %s", e.text())
	}
	picks := regexp.MustCompile(`name="pick" value="([0-9a-f]+)"`).FindAllStringSubmatch(p.body, -1)
	if len(picks) != 6 {
		t.Fatalf("%d rows to tick", len(picks))
	}
	// The list is newest first: ticking rows 2 and 4 picks s3 and s1.
	form := url.Values{"action": {"preview"}, "scope": {"ticked"}, "pick": {picks[2][1], picks[4][1]}, "until": {"2026-11-02T10:00"}}
	preview := b.post("/console/recover", form)
	if preview.status != 200 || !strings.Contains(preview.text(), "2 transactions will get one resend each, covering 2 channels that need attention (the 2 ticked rows)") ||
		!strings.Contains(preview.text(), "Failures from the first one to 2026-11-02 10:00:00 UTC") {
		t.Fatalf("preview of the ticked: %d %s", preview.status, preview.text())
	}
	if !strings.Contains(preview.text(), "s3 o3 2026-11-02 09:03:00 UTC email") || !strings.Contains(preview.text(), "s1 o1 2026-11-02 09:01:00 UTC email") {
		t.Errorf("the preview's rows lack order_no or the failure's time: %s", preview.text())
	}
	// The confirmation carries the picks.
	confirm := url.Values{"action": {"confirm"}}
	for _, m := range regexp.MustCompile(`<input type="hidden" name="(\w+)" value="([^"]*)">`).FindAllStringSubmatch(preview.body, -1) {
		if m[1] != "action" {
			confirm.Add(m[1], html.UnescapeString(m[2]))
		}
	}
	done := b.post("/console/recover", confirm)
	if done.status != http.StatusSeeOther {
		t.Fatalf("confirm: %d %s", done.status, done.text())
	}
	var sessions []string
	ids := map[string]string{}
	for range 2 {
		select {
		case cmd := <-f.kafka.onPublish:
			sessions = append(sessions, cmd.SessionID)
			ids[cmd.SessionID] = cmd.CommandID
		case <-time.After(10 * time.Second):
			t.Fatalf("published %v", sessions)
		}
	}
	slices.Sort(sessions)
	if !slices.Equal(sessions, []string{"s1", "s3"}) {
		t.Errorf("the ticked recovery published for %v", sessions)
	}
	time.Sleep(50 * time.Millisecond)
	if n := f.kafka.publishedCount(); n != 2 {
		t.Errorf("%d commands published, want the 2 ticked", n)
	}
	// Its own batch: not the whole filter's.
	all := url.Values{"action": {"preview"}, "scope": {"all"}, "pick": {picks[2][1]}, "until": {"2026-11-02T10:00"}}
	whole := b.post("/console/recover", all)
	if !strings.Contains(whole.text(), "6 transactions will get one resend each") {
		t.Errorf("recover all with a row ticked: %s", whole.text())
	}
	batchOf := func(p page) string { return regexp.MustCompile(`id="batch">([^<]+)<`).FindStringSubmatch(p.body)[1] }
	if batchOf(whole) == batchOf(preview) {
		t.Error("the ticked rows' recovery shares the whole filter's batch")
	}
	if p := b.post("/console/recover", url.Values{"action": {"preview"}, "scope": {"ticked"}}); p.status != 400 || !strings.Contains(p.text(), "tick the rows") {
		t.Errorf("ticked with none ticked: %d %s", p.status, p.text())
	}
	// The results come in: one notified, one not.
	f.results(schemas.DeliveryResult{ResultID: "rr1", CommandID: ids["s1"], SessionID: "s1", State: &paid, Outcome: schemas.OutcomeNotified,
		Message: "m", RequestedBy: "console:ops", Channels: []schemas.ChannelResult{{Channel: "email", Status: "sent", Attempts: 1}}, ProcessedAt: base.Add(time.Hour)},
		schemas.DeliveryResult{ResultID: "rr2", CommandID: ids["s3"], SessionID: "s3", State: &paid, Outcome: schemas.OutcomeNotNotified,
			Message: "m", RequestedBy: "console:ops", Channels: []schemas.ChannelResult{{Channel: "email", Status: "failed", Reason: "provider_unavailable", Attempts: 5}}, ProcessedAt: base.Add(time.Hour)})
	var progress page
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if progress = b.get(done.location); strings.Contains(progress.text(), "Done:") {
			break
		}
	}
	if !strings.Contains(progress.text(), "Done: 1 of 2 customers notified; 1 not notified") || !strings.Contains(progress.body, `<p id="state" class="bad">`) {
		t.Errorf("progress: %s", progress.text())
	}
}

// TestConsoleHistoryPolish: a status is coloured by a class on the cell
// that says it; long message ids are shortened with the whole id in the
// title and a copy button; times carry their datetime; the history pages
// past 50 results.
func TestConsoleHistoryPolish(t *testing.T) {
	f := newConsoleFixture(t, event("s-h", "o-h", "paid", nil))
	paid := schemas.StatePaid
	base := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	var rs []schemas.DeliveryResult
	for i := range 53 {
		rs = append(rs, schemas.DeliveryResult{ResultID: fmt.Sprint("r", i), CommandID: fmt.Sprint("c", i), SessionID: "s-h", OrderNo: "o-h", State: &paid,
			Outcome: schemas.OutcomePartiallyNotified, Message: "m", RequestedBy: "shop", ProcessedAt: base.Add(time.Duration(i) * time.Minute),
			Channels: []schemas.ChannelResult{
				{Channel: "email", Status: "failed", Reason: "provider_unavailable", Provider: "smtp", Attempts: 5},
				{Channel: "sms", Status: "sent", Provider: "twilio", ProviderMessageID: fmt.Sprintf("SM0123456789abcdef0123456789abc%03d", i), Attempts: 1},
			}})
	}
	f.results(rs...)
	b := f.browser()
	b.signIn("look", "look pass")
	p := b.get("/console/txn?session_id=s-h")
	if !strings.Contains(p.body, `<td class="status status-sent">sent</td>`) || !strings.Contains(p.body, `<td class="status status-failed">failed</td>`) {
		t.Errorf("the status cells lack their class: %s", p.body)
	}
	if !strings.Contains(p.body, `<code title="SM0123456789abcdef0123456789abc052">SM01234567…</code> <button type="button" class="copy" data-copy="SM0123456789abcdef0123456789abc052" hidden>Copy</button>`) {
		t.Error("the message id is not shortened with its whole id kept")
	}
	if !strings.Contains(p.body, `<time datetime="2026-11-02T09:52:00Z">2026-11-02 09:52:00 UTC</time>`) || !strings.Contains(p.body, `outcome-partially_notified">partially notified<`) {
		t.Error("the time or the outcome is not marked up")
	}
	if n := strings.Count(p.body, `<td class="when"`); n != 50 {
		t.Errorf("%d results on the first page", n)
	}
	older := regexp.MustCompile(`href="([^"]+)" id="older"`).FindStringSubmatch(p.body)
	if older == nil || strings.Contains(p.body, `id="newer"`) {
		t.Fatal("no link to the older results")
	}
	p2 := b.get(html.UnescapeString(older[1]))
	if n := strings.Count(p2.body, `<td class="when"`); n != 3 || !strings.Contains(p2.body, "2026-11-02 09:00:00 UTC") || strings.Contains(p2.body, `id="older"`) || !strings.Contains(p2.body, `id="newer"`) {
		t.Errorf("the older page: %d results", n)
	}
	if p := b.get("/console/static/console.js"); p.status != 200 || !strings.Contains(p.body, "navigator.clipboard") {
		t.Errorf("the console's script: %d", p.status)
	}
	if csp := p.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP %q", csp)
	}
}
