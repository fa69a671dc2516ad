package api

import (
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

var (
	rowRE  = regexp.MustCompile(`(?s)<tr>(.*?)</tr>`)
	cellRE = regexp.MustCompile(`(?s)<td[^>]*>(.*?)</td>`)
	tagRE  = regexp.MustCompile(`<[^>]*>`)
)

// tableRows is the rows of the page's table id, each one's cells as text
// joined by " ".
func tableRows(body, id string) []string {
	i := strings.Index(body, `<table id="`+id+`">`)
	if i < 0 {
		return nil
	}
	body = body[i:]
	body = body[:strings.Index(body, "</table>")]
	out := []string{}
	for _, r := range rowRE.FindAllStringSubmatch(body, -1) {
		var cells []string
		for _, c := range cellRE.FindAllStringSubmatch(r[1], -1) {
			cells = append(cells, strings.Join(strings.Fields(html.UnescapeString(tagRE.ReplaceAllString(c[1], ""))), " "))
		}
		if cells != nil {
			out = append(out, strings.Join(cells, " "))
		}
	}
	return out
}

// TestConsoleFind: the find page lists the most recent transactions (the
// viewer's merchant's; a platform user's of the merchant named, the
// default one's without),
// newest first, a page at a time, with contacts masked; a search that is
// no identifier lists the transactions it starts, within the viewer's
// merchant (another merchant's answer exactly as none).
func TestConsoleFind(t *testing.T) {
	at := func(ts string, merchant string) func(map[string]any) {
		return func(m map[string]any) {
			m["timestamp_utc"] = ts
			if merchant != "" {
				m["merchant_id"] = merchant
			}
		}
	}
	f := newConsoleFixture(t,
		event("cs_001", "ord-1", "paid", at("2026-11-02T09:01:00Z", "")),
		event("cs_002", "ord-2", "paid", at("2026-11-02T09:02:00Z", "acme")),
		event("cs_003", "ord-1", "failed", at("2026-11-02T09:03:00Z", "globex")),
		event("cs_004", "ord-10", "created", at("2026-11-02T09:04:00Z", "acme")),
	)
	for i := range recentRows { // older than the rest: the second page
		f.events(event("old-"+string(rune('a'+i)), "", "created", at("2026-11-01T08:00:00Z", "")))
	}
	f.events(event("cs_001", "ord-1", "refunded", at("2026-11-02T09:05:00Z", ""))) // moves first
	bc, _ := bcrypt.GenerateFromPassword([]byte("acme pass"), bcrypt.MinCost)
	h := f.instance(func(c *Config) {
		c.Users = append(c.Users, User{Username: "acme-look", Bcrypt: string(bc), Role: RoleViewer, Merchant: "acme"})
	}).Handler()
	platform, merchant := signIn(t, h, "look", "look pass"), signIn(t, h, "acme-look", "acme pass")
	get := func(cookie, path string) (int, string) {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Cookie", cookie)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}

	// The platform's user: the default merchant's, or the one named.
	code, body := get(platform, "/console/")
	rows := tableRows(body, "recent")
	if code != 200 || len(rows) != recentRows || rows[0] != "2026-11-02 09:05:00 UTC cs_001 ord-1 refunded Layla l***@example.com · +965****1234" ||
		!strings.HasPrefix(rows[1], "2026-11-01 08:00:00 UTC old-") || !strings.Contains(body, `<b id="listed">default</b>`) {
		t.Fatalf("platform's recent transactions: %d\n%s", code, strings.Join(rows, "\n"))
	}
	if !strings.Contains(body, `href="/console/txn?session_id=cs_001"`) || !strings.Contains(body, `<time datetime="2026-11-02T09:05:00Z">`) {
		t.Errorf("a row links to its transaction and carries its time: %s", body)
	}
	next := regexp.MustCompile(`<a href="([^"]+)" id="next">`).FindStringSubmatch(body)
	if next == nil {
		t.Fatal("no link to older transactions")
	}
	_, body = get(platform, strings.ReplaceAll(next[1], "&amp;", "&"))
	if rows := tableRows(body, "recent"); len(rows) != 1 || !strings.Contains(rows[0], "old-") || strings.Contains(body, `id="next"`) {
		t.Errorf("second page: %q", rows)
	}
	_, body = get(platform, "/console/?merchant=acme")
	if rows := tableRows(body, "recent"); !slices.Equal(rows, []string{
		"2026-11-02 09:04:00 UTC cs_004 ord-10 created Layla l***@example.com · +965****1234",
		"2026-11-02 09:02:00 UTC cs_002 ord-2 paid Layla l***@example.com · +965****1234",
	}) || !strings.Contains(body, `<b id="listed">acme</b>`) {
		t.Errorf("platform, merchant acme: %q", rows)
	}
	if code, body := get(platform, "/console/?merchant=a/b"); code != 400 || !strings.Contains(body, "A merchant_id is") {
		t.Errorf("a merchant that is none: %d", code)
	}
	if code, _ := get(platform, "/console/?after=zz"); code != 400 {
		t.Errorf("a cursor that is none: %d", code)
	}
	// A merchant's user sees its own, whatever it asks for, and no
	// merchant column.
	for _, path := range []string{"/console/", "/console/?merchant=globex"} {
		_, body = get(merchant, path)
		if rows := tableRows(body, "recent"); !slices.Equal(rows, []string{
			"2026-11-02 09:04:00 UTC cs_004 ord-10 created Layla l***@example.com · +965****1234",
			"2026-11-02 09:02:00 UTC cs_002 ord-2 paid Layla l***@example.com · +965****1234",
		}) {
			t.Errorf("acme's user, %s: %q", path, rows)
		}
	}
	if _, body := get(merchant, "/console/?after=zz"); strings.Contains(body, "cs_00") {
		t.Error("a bad cursor listed transactions")
	}

	// Prefixes.
	cases := []struct {
		cookie, path string
		code         int
		want         []string
	}{
		{platform, "/console/txn?q=cs_00&by=session_id", 200, []string{"cs_001", "cs_002", "cs_003", "cs_004"}},
		{platform, "/console/txn?q=ord-1&by=order_no", 200, []string{"cs_001"}}, // default's exact: the transaction page
		{platform, "/console/txn?q=ord-&by=order_no", 200, []string{"cs_001"}},
		{platform, "/console/txn?q=ord-&by=order_no&merchant=acme", 200, []string{"cs_004", "cs_002"}},
		{merchant, "/console/txn?q=cs_00&by=session_id", 200, []string{"cs_002", "cs_004"}},
		{merchant, "/console/txn?q=ord-1&by=order_no", 200, []string{"cs_004"}},
		{merchant, "/console/txn?q=cs_003&by=session_id", 404, nil}, // globex's, exactly as none
		{merchant, "/console/txn?q=cs_0033&by=session_id", 404, nil},
		{merchant, "/console/txn?q=old-&by=session_id", 404, nil},
		{platform, "/console/txn?q=zz&by=session_id", 404, nil},
	}
	for _, c := range cases {
		code, body := get(c.cookie, c.path)
		var got []string
		if strings.Contains(body, `<h1>Transaction <code`) {
			got = []string{regexp.MustCompile(`id="session">([^<]*)<`).FindStringSubmatch(body)[1]}
		}
		for _, r := range tableRows(body, "recent") {
			got = append(got, strings.Fields(r)[4-boolInt(c.cookie == merchant)])
		}
		if code != c.code || !slices.Equal(got, c.want) {
			t.Errorf("%s: %d %q, want %d %q", c.path, code, got, c.code, c.want)
		}
		if c.code == 404 && (!strings.Contains(body, "No transaction with") || strings.Contains(body, "globex")) {
			t.Errorf("%s: not the not-found page: %s", c.path, body)
		}
	}
	_, body = get(platform, "/console/txn?q=cs_00&by=session_id")
	if !strings.Contains(body, "whose session_id starts with <code dir=\"auto\">cs_00</code>") || !strings.Contains(body, `value="cs_00"`) || strings.Contains(body, "Recent transactions") {
		t.Errorf("the prefix list's title and form: %s", body)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
