package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// consoleBackend is what consumer.Service gives the console, over a real
// store and a real dispatcher: the console's pages are tested against the
// code that decides commands.
type consoleBackend struct {
	store *projection.Store
	d     *dispatch.Dispatcher
}

func (b consoleBackend) Lookup(merchantID, sessionID, orderNo string) (schemas.PaymentEvent, bool, error) {
	if sessionID == "" {
		sid, ok, err := b.store.SessionForOrder(merchantID, orderNo)
		if err != nil || !ok {
			return schemas.PaymentEvent{}, false, err
		}
		sessionID = sid
	}
	txn, ok, err := b.store.Transaction(sessionID)
	if err != nil || !ok || (merchantID != "" && txn.MerchantID != merchantID) {
		return schemas.PaymentEvent{}, false, err
	}
	return txn, true, nil
}

func (b consoleBackend) Check(txn schemas.PaymentEvent) ([]dispatch.ChannelCheck, error) {
	return b.d.Check(txn), nil
}

func (b consoleBackend) History(sessionID string, limit int) ([][]byte, error) {
	return b.store.History(sessionID, limit)
}

func (b consoleBackend) Attention(f projection.AttentionFilter) ([]projection.AttentionItem, string, error) {
	return b.store.Attention(f)
}

func (b consoleBackend) Counts(f projection.CountsFilter) ([]projection.ChannelCounts, string, error) {
	return b.store.Counts(f)
}

func (b consoleBackend) Recent(f projection.RecentFilter) ([]schemas.PaymentEvent, string, error) {
	return b.store.Recent(f)
}

func (b consoleBackend) FindPrefix(f projection.PrefixFilter) ([]schemas.PaymentEvent, bool, error) {
	return b.store.FindPrefix(f)
}

func (b consoleBackend) Delivery(id string) (schemas.DeliveryEvent, bool, error) {
	return b.store.Delivery(id)
}

// consoleFixture is a console over a store holding transactions and
// results, with its Kafka side in memory.
type consoleFixture struct {
	t       testing.TB
	srv     *httptest.Server
	handler http.Handler // the server's, for requests made in process
	// signOuts stands for the console-sessions topic.
	signOuts *memorySignOuts
	// cfg and deps made the server.
	cfg     Config
	deps    Deps
	kafka   *memoryKafka
	store   *projection.Store
	offsets map[string]int64
}

// event is a payment event of the fixture.
func event(session, order string, state schemas.State, mutate func(map[string]any)) []byte {
	m := map[string]any{"event_id": session + "-" + string(state), "session_id": session, "order_no": order, "state": state,
		"timestamp_utc": "2026-11-02T09:00:07Z", "amount": "12.500", "currency_code": "KWD",
		"customer_email": "layla@example.com", "customer_phone": "+96550001234", "customer_first_name": "Layla",
		"language": "en", "notifications": map[string][]string{"email": {}, "sms": {}, "whatsapp": {}}}
	if mutate != nil {
		mutate(m)
	}
	b, _ := json.Marshal(m)
	return b
}

func newConsoleFixture(t testing.TB, events ...[]byte) *consoleFixture {
	t.Helper()
	store, err := projection.Open(t.TempDir(), projection.Options{EventsTopic: "payment-events", ResultsTopic: "notification-results", DeliveriesTopic: "notification-deliveries"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f := &consoleFixture{t: t, kafka: newMemoryKafka(), store: store, offsets: map[string]int64{}}
	f.events(events...)
	// The built-in templates but sms for voided (template_not_configured),
	// and an en sms for paid greeting the customer by name (a long name
	// makes it message_too_long).
	templates := dispatch.DefaultTemplates()
	delete(templates["sms"], "voided")
	templates["sms"]["paid"]["en"] = dispatch.Template{Text: "Hi {{.CustomerFirstName}}, we received your payment."}
	tpl, err := dispatch.ParseTemplates(templates)
	if err != nil {
		t.Fatal(err)
	}
	// email and sms have providers, whatsapp none.
	d, err := dispatch.New(dispatch.Config{Templates: tpl, Routes: map[schemas.Channel][]dispatch.Route{
		schemas.ChannelEmail: {{Provider: dispatch.NewConsole(io.Discard)}}, schemas.ChannelSMS: {{Provider: dispatch.NewConsole(io.Discard)}}}}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	hash := func(p string) string {
		h, _ := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		return string(h)
	}
	cfg := Config{Listen: DefaultListen, Wait: time.Second, Keys: []Key{{Name: "shop", SHA256: HashKey(fixtureKey)}},
		Users:   []User{{Username: "ops", Bcrypt: hash("ops pass"), Role: RoleOperator}, {Username: "look", Bcrypt: hash("look pass"), Role: RoleViewer}},
		Console: ConsoleConfig{SessionKey: strings.Repeat("k", 32)}}
	cfg.SetDefaults()
	f.signOuts = &memorySignOuts{ended: map[string]time.Time{}}
	f.cfg, f.deps = cfg, Deps{Commands: f.kafka, Results: f.kafka, Console: consoleBackend{store, d}, SignOuts: f.signOuts}
	s, err := New(cfg, f.deps, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	f.handler = s.Handler()
	f.srv = httptest.NewServer(f.handler)
	t.Cleanup(f.srv.Close)
	t.Cleanup(func() { _ = s.Stop(t.Context()) })
	return f
}

// memorySignOuts stands where cmd wires the consumer's console-sessions
// topic: one shared by several servers is what every instance reads.
type memorySignOuts struct {
	mu    sync.Mutex
	ended map[string]time.Time
	// fail, when set, is the answer of both methods.
	fail error
}

func (m *memorySignOuts) EndSessions(_ context.Context, user string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if at.After(m.ended[user]) {
		m.ended[user] = at
	}
	return nil
}

func (m *memorySignOuts) SessionsEnded(user string) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ended[user], m.fail
}

// fixtureKey is the API key of the fixture's key "shop".
const fixtureKey = "nfy_fixture-key-0123456789abcdefghijklmnopqrstuvwxyz"

func (f *consoleFixture) events(values ...[]byte) {
	f.t.Helper()
	var rs []projection.Record
	for _, v := range values {
		rs = append(rs, projection.Record{Offset: f.offsets["e"], Value: v})
		f.offsets["e"]++
	}
	if _, err := f.store.ApplyEvents(0, rs); err != nil {
		f.t.Fatal(err)
	}
}

// tombstone deletes a transaction, as a null record on payment-events does.
func (f *consoleFixture) tombstone(session string) {
	f.t.Helper()
	if _, err := f.store.ApplyEvents(0, []projection.Record{{Offset: f.offsets["e"], Key: []byte(session)}}); err != nil {
		f.t.Fatal(err)
	}
	f.offsets["e"]++
}

func (f *consoleFixture) results(rs ...schemas.DeliveryResult) {
	f.t.Helper()
	var recs []projection.Record
	for _, r := range rs {
		v, _ := json.Marshal(r)
		recs = append(recs, projection.Record{Offset: f.offsets["r"], Value: v})
		f.offsets["r"]++
		f.kafka.decide(f.t, r)
	}
	if _, err := f.store.ApplyResults(0, recs); err != nil {
		f.t.Fatal(err)
	}
}

// browser is a client with a cookie jar that does not follow redirects.
type browser struct {
	t      testing.TB
	f      *consoleFixture
	client *http.Client
}

func (f *consoleFixture) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: f.t, f: f, client: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	status   int
	body     string
	location string
	header   http.Header
}

func (b *browser) do(method, path string, form url.Values, header map[string]string) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, b.f.srv.URL+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return page{resp.StatusCode, string(raw), resp.Header.Get("Location"), resp.Header}
}

func (b *browser) get(path string) page { return b.do(http.MethodGet, path, nil, nil) }
func (b *browser) post(path string, form url.Values) page {
	return b.do(http.MethodPost, path, form, nil)
}

func (b *browser) signIn(user, pass string) {
	b.t.Helper()
	p := b.post("/console/login", url.Values{"username": {user}, "password": {pass}, "next": {"/console/"}})
	if p.status != http.StatusSeeOther || p.location != "/console/" {
		b.t.Fatalf("sign in as %s: %d %s", user, p.status, p.body)
	}
}

// text is the page's text without tags and with spaces collapsed.
func (p page) text() string {
	s := regexp.MustCompile(`<[^>]*>`).ReplaceAllString(p.body, " ")
	return strings.Join(strings.Fields(html.UnescapeString(s)), " ")
}

func TestConsoleSignIn(t *testing.T) {
	f := newConsoleFixture(t)
	b := f.browser()
	if p := b.get("/console/"); p.status != http.StatusSeeOther || p.location != "/console/login?next=%2Fconsole%2F" {
		t.Errorf("signed out, /console/: %d %q", p.status, p.location)
	}
	if p := b.post("/console/resend", url.Values{"session_id": {"s"}, "channel": {"sms"}}); p.status != http.StatusUnauthorized {
		t.Errorf("signed out, POST resend: %d", p.status)
	}
	if p := b.post("/console/login", url.Values{"username": {"ops"}, "password": {"nope"}}); p.status != http.StatusUnauthorized || !strings.Contains(p.text(), "Invalid username or password.") {
		t.Errorf("wrong password: %d %s", p.status, p.text())
	}
	if p := b.post("/console/login", url.Values{"username": {"nobody"}, "password": {"ops pass"}}); p.status != http.StatusUnauthorized {
		t.Errorf("unknown user: %d", p.status)
	}
	p := b.post("/console/login", url.Values{"username": {"ops"}, "password": {"ops pass"}, "next": {"https://evil.example/"}})
	if p.status != http.StatusSeeOther || p.location != "/console/" {
		t.Errorf("sign-in with a foreign next: %d %q", p.status, p.location)
	}
	cookie := p.header.Get("Set-Cookie")
	for _, want := range []string{"notifyd_console=", "Path=/console/", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("cookie %q lacks %s", cookie, want)
		}
	}
	if strings.Contains(cookie, "Secure") {
		t.Errorf("cookie %q is Secure without TLS", cookie)
	}
	home := b.get("/console/")
	if home.status != 200 || !strings.Contains(home.text(), "ops (operator)") || home.header.Get("Content-Security-Policy") == "" {
		t.Errorf("home: %d %s", home.status, home.text())
	}
	// A forged cookie (another key) is not a session.
	forged := (&sessions{key: []byte(strings.Repeat("x", 32)), ttl: time.Hour, now: time.Now}).issue("ops", "any", time.Now())
	if p := b.do(http.MethodGet, "/console/", nil, map[string]string{"Cookie": forged.Name + "=" + forged.Value}); p.status != http.StatusSeeOther {
		t.Errorf("forged cookie: %d", p.status)
	}
	if p := b.post("/console/logout", url.Values{}); p.status != http.StatusSeeOther || !strings.Contains(p.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("sign out: %d %q", p.status, p.header.Get("Set-Cookie"))
	}
	if p := b.get("/console/"); p.status != http.StatusSeeOther {
		t.Errorf("after sign-out: %d", p.status)
	}
}

// TestConsoleTransactionPage: every state of the transaction page.
func TestConsoleTransactionPage(t *testing.T) {
	f := newConsoleFixture(t,
		event("s-paid", "o-paid", "paid", func(m map[string]any) { m["customer_first_name"] = "ليلى"; m["language"] = "ar" }),
		event("s-gone", "o-gone", "paid", nil),
	)
	paid := schemas.StatePaid
	f.results(schemas.DeliveryResult{ResultID: "r1", CommandID: "c1", SessionID: "s-gone", OrderNo: "o-gone", State: &paid,
		Outcome: schemas.OutcomeNotified, Message: schemas.MessageNotified, RequestedBy: "shop",
		Channels:    []schemas.ChannelResult{{Channel: "sms", Status: "sent", Provider: "twilio", ProviderMessageID: "SM1", Attempts: 1}},
		ProcessedAt: time.Date(2026, 11, 2, 9, 5, 0, 0, time.UTC)})
	b := f.browser()
	b.signIn("look", "look pass")

	p := b.get("/console/txn?q=o-paid&by=order_no")
	if p.status != 200 {
		t.Fatalf("find by order_no: %d %s", p.status, p.text())
	}
	for _, want := range []string{"s-paid", "o-paid", "paid", "12.500 KWD", "ar", "l***@example.com", "+965****1234",
		"No notification has been resent for this transaction yet."} {
		if !strings.Contains(p.text(), want) {
			t.Errorf("page lacks %q: %s", want, p.text())
		}
	}
	if !strings.Contains(p.body, `<dd dir="auto" id="customer">ليلى</dd>`) {
		t.Errorf("Arabic name not shown with dir=auto")
	}
	for _, leak := range []string{"layla@example.com", "+96550001234"} {
		if strings.Contains(p.body, leak) {
			t.Errorf("page shows %s", leak)
		}
	}
	// A viewer sees the grid but cannot tick nor resend.
	if strings.Contains(p.body, `id="resend"`) || !strings.Contains(p.body, `id="tick-email" disabled`) {
		t.Errorf("a viewer is offered a resend")
	}
	if p := b.post("/console/resend", url.Values{"session_id": {"s-paid"}, "channel": {"email"}}); p.status != http.StatusForbidden {
		t.Errorf("viewer resend: %d", p.status)
	}
	if n := f.kafka.publishedCount(); n != 0 {
		t.Errorf("%d commands published by a viewer", n)
	}

	for _, tc := range []struct {
		path, want string
		status     int
	}{
		{"/console/txn?q=nope&by=session_id", "No transaction with session_id nope", 404},
		{"/console/txn?order_no=nope", "No transaction with order_no nope", 404},
		{"/console/txn?q=", "Enter a session_id or an order_no.", 400},
	} {
		if p := b.get(tc.path); p.status != tc.status || !strings.Contains(p.text(), tc.want) {
			t.Errorf("%s: %d %s", tc.path, p.status, p.text())
		}
	}
	// A tombstoned transaction: gone, with its history.
	f.tombstone("s-gone")
	p = b.get("/console/txn?session_id=s-gone")
	if p.status != 404 || !strings.Contains(p.text(), "It was deleted") || !strings.Contains(p.text(), "SM1") {
		t.Errorf("tombstoned: %d %s", p.status, p.text())
	}
}

// TestConsoleGridReasons: the grid shows, per channel, the reason the
// service would answer, computed by the dispatcher's checks: each reason
// of a channel rejected before sending appears for the transaction that
// causes it.
func TestConsoleGridReasons(t *testing.T) {
	only := func(chs map[string][]string) func(map[string]any) {
		return func(m map[string]any) { m["notifications"] = chs }
	}
	f := newConsoleFixture(t,
		event("s-refunded", "o1", "refunded", nil),
		event("s-no-sms", "o2", "paid", only(map[string][]string{"email": {}})),
		event("s-created-only", "o3", "paid", only(map[string][]string{"sms": {"created"}, "email": {}})),
		event("s-no-email", "o4", "paid", func(m map[string]any) { m["customer_email"] = "" }),
		event("s-bad-phone", "o5", "paid", func(m map[string]any) { m["customer_phone"] = "12345" }),
		event("s-voided", "o6", "voided", nil),
		event("s-long", "o7", "paid", func(m map[string]any) { m["customer_first_name"] = strings.Repeat("a", 2000) }),
	)
	b := f.browser()
	b.signIn("ops", "ops pass")
	for _, tc := range []struct {
		session string
		ch      schemas.Channel
		reason  schemas.Reason
	}{
		{"s-refunded", "whatsapp", schemas.ReasonStateNotSupported},
		{"s-no-sms", "sms", schemas.ReasonChannelNotEnabled},
		{"s-created-only", "sms", schemas.ReasonStateNotEnabled},
		{"s-no-email", "email", schemas.ReasonMissingContact},
		{"s-bad-phone", "sms", schemas.ReasonInvalidContact},
		{"s-refunded", "email", ""},
		{"s-no-sms", "whatsapp", schemas.ReasonChannelNotEnabled},
		{"s-created-only", "whatsapp", schemas.ReasonChannelNotEnabled},
		{"s-bad-phone", "whatsapp", schemas.ReasonInvalidContact},
		{"s-voided", "whatsapp", schemas.ReasonStateNotSupported},
		{"s-voided", "sms", schemas.ReasonTemplateNotConfigured},
		{"s-long", "sms", schemas.ReasonMessageTooLong},
		{"s-long", "whatsapp", schemas.ReasonProviderNotConfigured},
	} {
		p := b.get("/console/txn?session_id=" + tc.session)
		row := regexp.MustCompile(`(?s)<tr id="grid-` + string(tc.ch) + `".*?</tr>`).FindString(p.body)
		if row == "" {
			t.Fatalf("%s: no %s row: %s", tc.session, tc.ch, p.text())
		}
		disabled := strings.Contains(row, "disabled")
		switch {
		case tc.reason == "" && (disabled || strings.Contains(row, "reason")):
			t.Errorf("%s %s: want it offered, got %s", tc.session, tc.ch, row)
		case tc.reason != "" && (!disabled || !strings.Contains(row, `<code class="reason">`+string(tc.reason)+`</code>`)):
			t.Errorf("%s %s: want %s, disabled; got %s", tc.session, tc.ch, tc.reason, row)
		}
	}
}

// TestConsoleResend: an operator's resend publishes one command for the
// ticked channels, requested by console:<user>, and the page shows its
// result; a cross-origin form post is refused and publishes nothing.
func TestConsoleResend(t *testing.T) {
	f := newConsoleFixture(t, event("s1", "o1", "paid", nil))
	b := f.browser()
	b.signIn("ops", "ops pass")
	cross := b.do(http.MethodPost, "/console/resend", url.Values{"session_id": {"s1"}, "channel": {"email"}},
		map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
	if cross.status != http.StatusForbidden || f.kafka.publishedCount() != 0 {
		t.Fatalf("cross-origin post: %d, %d published", cross.status, f.kafka.publishedCount())
	}
	if p := b.do(http.MethodPost, "/console/login", url.Values{"username": {"ops"}, "password": {"ops pass"}},
		map[string]string{"Origin": "https://evil.example"}); p.status != http.StatusForbidden {
		t.Errorf("cross-origin sign-in: %d", p.status)
	}
	form := b.get("/console/txn?session_id=s1")
	token := regexp.MustCompile(`name="command_id" value="([^"]+)"`).FindStringSubmatch(form.body)
	if token == nil {
		t.Fatalf("the resend form has no command_id: %s", form.body)
	}
	if p := b.post("/console/resend", url.Values{"session_id": {"s1"}, "channel": {"email"}}); p.status != http.StatusBadRequest {
		t.Errorf("a resend without the form's command_id: %d", p.status)
	}
	done := make(chan page, 2)
	for range 2 { // a double click
		go func() {
			done <- b.do(http.MethodPost, "/console/resend", url.Values{"session_id": {"s1"}, "channel": {"email", "sms", "email"}, "command_id": {token[1]}},
				map[string]string{"Sec-Fetch-Site": "same-origin"})
		}()
	}
	cmd := <-f.kafka.onPublish
	cmd2 := <-f.kafka.onPublish
	if cmd2.CommandID != cmd.CommandID || cmd.CommandID != token[1] {
		t.Errorf("a double click published %s and %s, want the form's %s twice (decided once)", cmd.CommandID, cmd2.CommandID, token[1])
	}
	if cmd.RequestedBy != "console:ops" || cmd.SessionID != "s1" || len(cmd.Channels) != 2 || cmd.Channels[0] != "email" || cmd.Channels[1] != "sms" {
		t.Fatalf("command %+v", cmd)
	}
	paid := schemas.StatePaid
	f.results(schemas.DeliveryResult{ResultID: "r1", CommandID: cmd.CommandID, SessionID: "s1", OrderNo: "o1", State: &paid,
		Outcome: schemas.OutcomePartiallyNotified, Message: "Customer partially notified: email sent; sms failed (provider_unavailable).",
		RequestedBy: cmd.RequestedBy, RequestedAt: cmd.RequestedAt, ProcessedAt: time.Now().UTC(),
		Channels: []schemas.ChannelResult{{Channel: "email", Status: "sent", Provider: "smtp", ProviderMessageID: "m-1", Attempts: 1},
			{Channel: "sms", Status: "failed", Reason: "provider_unavailable", Provider: "twilio", Attempts: 3}}})
	p := <-done
	<-done
	if p.status != http.StatusSeeOther || !strings.Contains(p.location, "result="+url.QueryEscape(cmd.CommandID)) {
		t.Fatalf("resend: %d %q", p.status, p.location)
	}
	shown := b.get(p.location)
	for _, want := range []string{"partially_notified", "email sent via smtp, id m-1", "sms failed (provider_unavailable) via twilio", "console:ops"} {
		if !strings.Contains(shown.text(), want) {
			t.Errorf("result page lacks %q: %s", want, shown.text())
		}
	}
	if shown.header.Get("Refresh") != "" || strings.Contains(shown.body, `http-equiv="refresh"`) {
		t.Error("a decided result is still polled")
	}
	// A result not in yet: the page polls, every few seconds.
	pending := b.get("/console/txn?session_id=s1&result=not-yet")
	if !strings.Contains(pending.body, `<meta http-equiv="refresh" content="2; url=/console/txn?session_id=s1&amp;result=not-yet&amp;polls=1">`) || !strings.Contains(pending.text(), "waiting for the result") {
		t.Errorf("pending result page: %s", pending.body)
	}
	if gave := b.get("/console/txn?session_id=s1&result=not-yet&polls=60"); strings.Contains(gave.body, `http-equiv="refresh"`) || !strings.Contains(gave.text(), "no result yet") {
		t.Errorf("after a minute of polls: %s", gave.text())
	}
	if n := f.kafka.publishedCount(); n != 2 {
		t.Errorf("%d commands published, want the double click's 2 of one command_id", n)
	}
}

// TestConsoleAttentionAndRecovery: the needs-attention list filters and
// pages; a recovery previews the count and a sample, and confirmed twice
// publishes one command per transaction with the same command_ids.
func TestConsoleAttentionAndRecovery(t *testing.T) {
	var events [][]byte
	for i := 0; i < 60; i++ {
		events = append(events, event(fmt.Sprintf("s%02d", i), fmt.Sprintf("o%02d", i), "paid", nil))
	}
	f := newConsoleFixture(t, events...)
	paid := schemas.StatePaid
	base := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	var rs []schemas.DeliveryResult
	for i := 0; i < 60; i++ {
		sms := schemas.ChannelResult{Channel: "sms", Status: "failed", Reason: "provider_unavailable", Provider: "twilio", Attempts: 5}
		if i%10 == 9 {
			sms = schemas.ChannelResult{Channel: "sms", Status: "sent", Provider: "twilio", ProviderMessageID: "SM", Attempts: 1}
		}
		rs = append(rs, schemas.DeliveryResult{ResultID: fmt.Sprintf("r%d", i), CommandID: fmt.Sprintf("c%d", i), SessionID: fmt.Sprintf("s%02d", i),
			OrderNo: fmt.Sprintf("o%02d", i), State: &paid, Outcome: schemas.OutcomeNotNotified, Message: "m", RequestedBy: "shop",
			Channels: []schemas.ChannelResult{sms}, ProcessedAt: base.Add(time.Duration(i) * time.Minute)})
	}
	f.results(rs...)
	b := f.browser()
	b.signIn("ops", "ops pass")
	p := b.get("/console/attention?channel=sms&reason=provider_unavailable")
	if p.status != 200 || strings.Count(p.body, "<tr><td>") != 50 || !strings.Contains(p.body, `id="next"`) {
		t.Fatalf("attention page 1: %d, %d rows", p.status, strings.Count(p.body, "<tr><td>"))
	}
	next := html.UnescapeString(regexp.MustCompile(`href="([^"]+)" id="next"`).FindStringSubmatch(p.body)[1])
	if p2 := b.get(next); strings.Count(p2.body, "<tr><td>") != 4 || strings.Contains(p2.body, `id="next"`) {
		t.Errorf("attention page 2: %d rows", strings.Count(p2.body, "<tr><td>"))
	}
	if p := b.get("/console/attention?since=2026-11-02T10:00&until=2026-11-02T09:00"); p.status != 400 {
		t.Errorf("since after until: %d", p.status)
	}
	// 09:10 to 09:30: 20 minutes, 18 failures (s19 and s29 were sent).
	form := url.Values{"channel": {"sms"}, "reason": {"provider_unavailable"}, "since": {"2026-11-02T09:10"}, "until": {"2026-11-02T09:30"}, "action": {"preview"}}
	preview := b.post("/console/recover", form)
	if preview.status != 200 || !strings.Contains(preview.text(), "18 transactions will get one resend each, covering 18 channels that need attention") {
		t.Fatalf("preview: %d %s", preview.status, preview.text())
	}
	if n := f.kafka.publishedCount(); n != 0 {
		t.Fatalf("the preview published %d commands", n)
	}
	form.Set("action", "confirm")
	for range 2 { // confirmed twice
		if p := b.post("/console/recover", form); p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/console/recover/") {
			t.Fatalf("confirm: %d %q", p.status, p.location)
		}
	}
	ids := map[string]int{}
	deadline := time.Now().Add(10 * time.Second)
	for len(ids) < 18 || f.kafka.publishedCount() < 18 {
		select {
		case cmd := <-f.kafka.onPublish:
			ids[cmd.CommandID]++
			if cmd.RequestedBy != "console:ops" || len(cmd.Channels) != 1 || cmd.Channels[0] != "sms" {
				t.Errorf("recovery command %+v", cmd)
			}
		case <-time.After(time.Until(deadline)):
			t.Fatalf("%d commands after 10 s", len(ids))
		}
	}
	for id := range ids {
		if !strings.HasPrefix(id, "recover-") {
			t.Errorf("command_id %q", id)
		}
	}
	if len(ids) != 18 {
		t.Errorf("%d distinct command_ids, want 18 (one per transaction, the same when confirmed twice)", len(ids))
	}
	batch := b.get("/console/recover/" + strings.TrimPrefix(b.post("/console/recover", form).location, "/console/recover/"))
	if batch.status != 200 || !strings.Contains(batch.text(), "Transactions 18") {
		t.Errorf("batch page: %d %s", batch.status, batch.text())
	}
	// A viewer may look at the list, not recover.
	v := f.browser()
	v.signIn("look", "look pass")
	if p := v.get("/console/attention"); p.status != 200 || strings.Contains(p.body, `id="recover"`) {
		t.Errorf("viewer attention page: %d", p.status)
	}
	if p := v.post("/console/recover", form); p.status != http.StatusForbidden {
		t.Errorf("viewer recover: %d", p.status)
	}
}

// deliveries applies delivery events as the deliveries follower does.
func (f *consoleFixture) deliveries(evs ...schemas.DeliveryEvent) {
	f.t.Helper()
	var recs []projection.Record
	for _, ev := range evs {
		v, _ := json.Marshal(ev)
		recs = append(recs, projection.Record{Offset: f.offsets["d"], Value: v})
		f.offsets["d"]++
	}
	if err := f.store.ApplyDeliveries(0, recs); err != nil {
		f.t.Fatal(err)
	}
}

// TestConsoleDeliveryStatus: the history shows each sent message's
// furthest delivery status from the receipts; a message the carrier did
// not deliver puts its channel on the needs-attention list, which the
// reason filter selects by undelivered.
func TestConsoleDeliveryStatus(t *testing.T) {
	f := newConsoleFixture(t, event("s-d", "o-d", "paid", nil))
	paid := schemas.StatePaid
	at := time.Date(2026, 11, 2, 9, 5, 0, 0, time.UTC)
	f.results(schemas.DeliveryResult{ResultID: "r1", CommandID: "c1", SessionID: "s-d", OrderNo: "o-d", State: &paid,
		Outcome: schemas.OutcomeNotified, Message: schemas.MessageNotified, RequestedBy: "shop", ProcessedAt: at,
		Channels: []schemas.ChannelResult{
			{Channel: "sms", Status: "sent", Provider: "twilio", ProviderMessageID: "SM-d", Attempts: 1},
			{Channel: "email", Status: "sent", Provider: "smtp", ProviderMessageID: "mail-d", Attempts: 1},
		}})
	ev := func(id string, ch schemas.Channel, st schemas.DeliveryStatus, code string) schemas.DeliveryEvent {
		return schemas.DeliveryEvent{DeliveryID: "d-" + id + string(st), CommandID: "c1", ResultID: "r1", SessionID: "s-d", OrderNo: "o-d", Channel: ch,
			Provider: "twilio", ProviderMessageID: id, Status: st, ProviderStatus: string(st), ErrorCode: code, OccurredAt: at.Add(time.Minute), ReceivedAt: at.Add(time.Minute)}
	}
	f.deliveries(ev("SM-d", "sms", schemas.DeliveryUndelivered, "30003"), ev("mail-d", "email", schemas.DeliveryDelivered, ""))
	b := f.browser()
	b.signIn("look", "look pass")
	p := b.get("/console/txn?session_id=s-d")
	if p.status != 200 || !strings.Contains(p.body, `<span class="delivery-undelivered"`) || !strings.Contains(p.text(), "undelivered (error 30003)") ||
		!strings.Contains(p.body, `<span class="delivery-delivered"`) {
		t.Errorf("history without delivery statuses: %d %s", p.status, p.text())
	}
	a := b.get("/console/attention?reason=undelivered")
	if a.status != 200 || strings.Count(a.body, `<td class="when">`) != 1 || !strings.Contains(a.text(), "s-d o-d Layla +965****1234 sms undelivered twilio") {
		t.Errorf("attention by undelivered: %d %s", a.status, a.text())
	}
	if a := b.get("/console/attention?reason=provider_unavailable"); strings.Count(a.body, `<td class="when">`) != 0 {
		t.Errorf("an undelivered message listed as provider_unavailable: %s", a.text())
	}
}

// TestConsoleSignOutEverywhere: signing out ends the session on the
// server and on every other instance that reads the same sign-outs (here,
// one sharing the fixture's): a copy of the cookie is refused by both and
// forgotten by the browser; signing in again opens a new session; a
// session opened on an instance whose clock is ahead still ends; a change
// of role ends the sessions opened with the old one; an instance that
// cannot tell which sessions ended refuses them (503); and a sign-out
// that cannot be published keeps the session open and says so.
func TestConsoleSignOutEverywhere(t *testing.T) {
	f := newConsoleFixture(t)
	other := f.instance(nil).Handler()
	cookie := f.signedIn("ops", "ops pass")
	get := func(h http.Handler, path, cookie string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Cookie", cookie)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for name, h := range map[string]http.Handler{"this instance": f.handler, "another": other} {
		if w := get(h, "/console/", cookie); w.Code != http.StatusOK {
			t.Fatalf("signed in, %s: %d", name, w.Code)
		}
	}
	out := httptest.NewRequest(http.MethodPost, "/console/logout", nil)
	out.Header.Set("Cookie", cookie)
	w := httptest.NewRecorder()
	f.handler.ServeHTTP(w, out)
	if w.Code != http.StatusSeeOther || !strings.Contains(w.Header().Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("sign out: %d %q", w.Code, w.Header().Get("Set-Cookie"))
	}
	for name, h := range map[string]http.Handler{"this instance": f.handler, "another": other} {
		w := get(h, "/console/attention", cookie)
		if w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/console/login") ||
			!strings.Contains(w.Header().Get("Set-Cookie"), "Max-Age=0") {
			t.Errorf("a copy of the signed-out cookie, %s: %d %q %q", name, w.Code, w.Header().Get("Location"), w.Header().Get("Set-Cookie"))
		}
	}
	again := f.signedIn("ops", "ops pass")
	if w := get(other, "/console/", again); w.Code != http.StatusOK {
		t.Errorf("signed in again: %d", w.Code)
	}

	// A session opened by an instance whose clock is a minute ahead ends
	// with the sign-out of one that is on time.
	ahead := f.instance(nil)
	ahead.console.sessions.now = func() time.Time { return time.Now().Add(time.Minute) }
	early := signIn(t, ahead.Handler(), "ops", "ops pass")
	out = httptest.NewRequest(http.MethodPost, "/console/logout", nil)
	out.Header.Set("Cookie", early)
	f.handler.ServeHTTP(httptest.NewRecorder(), out)
	if w := get(other, "/console/", early); w.Code != http.StatusSeeOther {
		t.Errorf("a session opened by a clock ahead, after its sign-out: %d", w.Code)
	}

	// The viewer "look" becomes an operator: its sessions end.
	look := f.signedIn("look", "look pass")
	promoted := f.instance(func(c *Config) {
		for i := range c.Users {
			if c.Users[i].Username == "look" {
				c.Users[i].Role = RoleOperator
			}
		}
	})
	if w := get(promoted.Handler(), "/console/", look); w.Code != http.StatusSeeOther {
		t.Errorf("a session opened before the role changed: %d", w.Code)
	}

	// Starting, or Kafka unreachable: no session is taken, and none can
	// end.
	live := f.signedIn("ops", "ops pass")
	f.signOuts.mu.Lock()
	f.signOuts.fail = errors.New("console sessions not read up to date yet")
	f.signOuts.mu.Unlock()
	if w := get(f.handler, "/console/", live); w.Code != http.StatusServiceUnavailable {
		t.Errorf("sessions not known: %d, want 503", w.Code)
	}
	out = httptest.NewRequest(http.MethodPost, "/console/logout", nil)
	out.Header.Set("Cookie", live)
	w = httptest.NewRecorder()
	f.handler.ServeHTTP(w, out)
	if w.Code != http.StatusServiceUnavailable || strings.Contains(w.Header().Get("Set-Cookie"), "Max-Age=0") ||
		!strings.Contains(w.Body.String(), "your session is still open") {
		t.Errorf("a sign-out not published: %d %q", w.Code, w.Header().Get("Set-Cookie"))
	}
	f.signOuts.mu.Lock()
	f.signOuts.fail = nil
	f.signOuts.mu.Unlock()
	if w := get(f.handler, "/console/", live); w.Code != http.StatusOK {
		t.Errorf("the session whose sign-out failed: %d, want still open", w.Code)
	}
}

// instance is another server over the fixture's store, Kafka and
// sign-outs, with the same session key, its configuration changed by
// change: an instance behind the same address.
func (f *consoleFixture) instance(change func(*Config)) *Server {
	f.t.Helper()
	cfg := f.cfg
	cfg.Users = slices.Clone(f.cfg.Users)
	if change != nil {
		change(&cfg)
	}
	s, err := New(cfg, f.deps, slog.New(slog.DiscardHandler))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

// signIn signs in through h and returns the session's Cookie header.
func signIn(t *testing.T, h http.Handler, user, pass string) string {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader(url.Values{"username": {user}, "password": {pass}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusSeeOther || len(w.Result().Cookies()) == 0 {
		t.Fatalf("sign in as %s: %d %s", user, w.Code, w.Body)
	}
	c := w.Result().Cookies()[0]
	return c.Name + "=" + c.Value
}
