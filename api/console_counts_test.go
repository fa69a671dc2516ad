package api

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/notifyd/notifyd/schemas"
)

// TestConsoleCounts: the counts page shows the channel results of every
// command answered, by merchant, UTC day and channel; a merchant's user
// sees its own merchant's only, whatever it asks for; a platform user sees
// every merchant's totals a page of merchants at a time, and one
// merchant's days; a filter that is not one is 400.
func TestConsoleCounts(t *testing.T) {
	f := newConsoleFixture(t)
	today := time.Now().UTC().Truncate(24 * time.Hour)
	n := 0
	res := func(merchant string, at time.Time, chs ...string) schemas.DeliveryResult {
		n++
		r := schemas.DeliveryResult{ResultID: fmt.Sprint("r", n), CommandID: fmt.Sprint("c", n), MerchantID: merchant,
			Outcome: schemas.OutcomeNotNotified, Message: "m", RequestedBy: "t", ProcessedAt: at}
		for _, c := range chs {
			ch, st, _ := strings.Cut(c, ":")
			r.Channels = append(r.Channels, schemas.ChannelResult{Channel: schemas.Channel(ch), Status: schemas.ChannelStatus(st)})
		}
		return r
	}
	rs := []schemas.DeliveryResult{
		res("acme", today.Add(time.Hour), "sms:sent", "email:failed"),
		res("acme", today.Add(-time.Hour), "sms:sent"),
		res("globex", today.Add(2*time.Hour), "sms:sent", "email:sent"),
		res("", today.Add(3*time.Hour), "whatsapp:rejected"),
		res("acme", today.AddDate(0, 0, -10), "sms:sent"), // before the 7 days shown by default
	}
	for i := range 50 {
		rs = append(rs, res(fmt.Sprintf("m%02d", i), today, "sms:sent"))
	}
	f.results(rs...)
	bc, _ := bcrypt.GenerateFromPassword([]byte("acme pass"), bcrypt.MinCost)
	h := f.instance(func(c *Config) {
		c.Users = append(c.Users, User{Username: "acme-look", Bcrypt: string(bc), Role: RoleViewer, Merchant: "acme"})
	}).Handler()
	platform, merchant := signIn(t, h, "look", "look pass"), signIn(t, h, "acme-look", "acme pass")
	rows := tableRows
	get := func(cookie, path string) (int, string) {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Cookie", cookie)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	day := func(d int) string { return today.AddDate(0, 0, d).Format("2006-01-02") }
	acmeDays := []string{day(0) + " email 0 1 0", day(0) + " sms 1 0 0", day(-1) + " sms 1 0 0"}
	for _, c := range []struct {
		name, cookie, path string
		totals, days       []string
	}{
		{"a merchant's user: its own", merchant, "/console/counts", []string{"email 0 1 0", "sms 2 0 0"}, acmeDays},
		{"a merchant's user naming another merchant: its own", merchant, "/console/counts?merchant=globex", []string{"email 0 1 0", "sms 2 0 0"}, acmeDays},
		{"a merchant's user, more days", merchant, "/console/counts?from=" + day(-10) + "&to=" + day(0), []string{"email 0 1 0", "sms 3 0 0"},
			append(slices.Clone(acmeDays), day(-10)+" sms 1 0 0")},
		{"platform: one merchant", platform, "/console/counts?merchant=acme", []string{"acme email 0 1 0", "acme sms 2 0 0"}, acmeDays},
		{"platform: the default merchant", platform, "/console/counts?merchant=default", []string{"default whatsapp 0 0 1"}, []string{day(0) + " whatsapp 0 0 1"}},
		{"platform: one day", platform, "/console/counts?merchant=acme&from=" + day(-1) + "&to=" + day(-1), []string{"acme sms 1 0 0"}, acmeDays[2:]},
		{"platform: every merchant", platform, "/console/counts",
			append([]string{"acme email 0 1 0", "acme sms 2 0 0", "default whatsapp 0 0 1", "globex email 1 0 0", "globex sms 1 0 0"},
				func() (s []string) {
					for i := range 47 {
						s = append(s, fmt.Sprintf("m%02d sms 1 0 0", i))
					}
					return s
				}()...), []string{}},
		{"platform: the next merchants", platform, "/console/counts?from=" + day(-6) + "&to=" + day(0) + "&after=m46", []string{"m47 sms 1 0 0", "m48 sms 1 0 0", "m49 sms 1 0 0"}, []string{}},
		{"platform: days with none", platform, "/console/counts?from=2020-01-01&to=2020-01-31", []string{"No results in these days."}, []string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := get(c.cookie, c.path)
			if status != http.StatusOK {
				t.Fatalf("%d %s", status, body)
			}
			if got := rows(body, "totals"); !slices.Equal(got, c.totals) {
				t.Errorf("totals\n%q\nwant\n%q", got, c.totals)
			}
			if got := rows(body, "days"); !slices.Equal(got, c.days) && (got != nil || len(c.days) != 0) {
				t.Errorf("days\n%q\nwant\n%q", got, c.days)
			}
			if c.cookie == merchant && strings.Contains(body, "globex") {
				t.Error("a merchant's user sees another merchant")
			}
		})
	}
	if _, body := get(platform, "/console/counts"); !strings.Contains(body, `id="next"`) ||
		!strings.Contains(body, "after=m46") {
		t.Error("no link to the next merchants")
	}
	if _, body := get(platform, "/console/counts?after=m46"); strings.Contains(body, `id="next"`) {
		t.Error("a link past the last merchant")
	}
	for _, q := range []string{"from=2026-13-01", "to=yesterday", "from=" + day(0) + "&to=" + day(-1), "from=" + day(-366) + "&to=" + day(0), "merchant=a/b"} {
		if status, body := get(platform, "/console/counts?"+q); status != http.StatusBadRequest || !strings.Contains(body, `id="error"`) {
			t.Errorf("%s: %d", q, status)
		}
	}
	if status, _ := get(platform, "/console/counts?from="+day(-365)+"&to="+day(0)); status != http.StatusOK {
		t.Errorf("366 days: %d", status)
	}
	if status, body := get("", "/console/counts"); status != http.StatusSeeOther {
		t.Errorf("signed out: %d %s", status, body)
	}
}
