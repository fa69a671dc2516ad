//go:build browser

package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/segmentio/kafka-go"
	"golang.org/x/crypto/bcrypt"

	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/internal/testkit"
)

// The console in a real browser: Debian's Chromium (scripts/chromium-local
// installs it; NOTIFYD_TEST_CHROMIUM names it), driven with chromedp,
// against the notifyd binary on its embedded broker, its providers
// webhooks served here so that every message is counted outside the
// process. Screenshots of each page go to the test's artifact directory
// (go test -artifacts -outputdir DIR keeps them).

// buildNotifyd builds the binary once per test binary.
var buildNotifyd = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "notifyd-browser-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "notifyd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func TestConsoleInBrowser(t *testing.T) {
	chromium := os.Getenv("NOTIFYD_TEST_CHROMIUM")
	if chromium == "" {
		var err error
		if chromium, err = exec.LookPath("chromium"); err != nil {
			t.Fatal("no browser: set NOTIFYD_TEST_CHROMIUM or install Debian's chromium (scripts/chromium-local)")
		}
	}
	bin, err := buildNotifyd()
	if err != nil {
		t.Fatal(err)
	}
	peer := &providerPeer{took: map[string]int{}}
	provider := httptest.NewServer(peer)
	defer provider.Close()

	dir := t.TempDir()
	broker, httpAddr, apiAddr := freePort(t), freePort(t), freePort(t)
	hash := func(p string) string {
		h, _ := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		return string(h)
	}
	cfgPath := filepath.Join(dir, "notifyd.yaml")
	cfg := fmt.Sprintf(`embedded_broker: {listen: %q}
store: {dir: %q}
http: {listen: %q}
log: {level: info}
api:
  listen: %q
  users:
    - {username: ops, bcrypt: %q, role: operator}
    - {username: look, bcrypt: %q, role: viewer}
    - {username: acme-ops, bcrypt: %q, role: operator, merchant: acme}
providers:
  email: {kind: webhook, webhook: {url: %q}, retry: {max_attempts: 1}}
  sms: {kind: webhook, webhook: {url: %q}, retry: {max_attempts: 1}}
templates:
  email:
    paid:
      en: {subject: "Payment received for {{.OrderNo}}", text: "Dear {{.CustomerFirstName}}, we received {{.Amount}} {{.CurrencyCode}}."}
      ar: {subject: "تم استلام الدفعة {{.OrderNo}}", text: "عزيزي {{.CustomerFirstName}}، تم استلام {{.Amount}} {{.CurrencyCode}}."}
  sms:
    paid:
      en: {text: "Paid {{.Amount}} {{.CurrencyCode}} for {{.OrderNo}}."}
      ar: {text: "تم دفع {{.Amount}} {{.CurrencyCode}} للطلب {{.OrderNo}}"}
`, broker, filepath.Join(dir, "data"), httpAddr, apiAddr, hash("ops pass"), hash("look pass"), hash("acme pass"), provider.URL, provider.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, _ := os.Create(filepath.Join(dir, "notifyd.log"))
	proc := exec.Command(bin, "serve", "-config", cfgPath)
	proc.Stdout, proc.Stderr = logf, logf
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = proc.Process.Signal(os.Interrupt)
		_ = proc.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("notifyd log (last 3 KiB):\n%s", lastTail(b, 3072))
		}
	}()
	waitReady(t, httpAddr, make(chan int), &testkit.SyncBuffer{})

	// Customers: one to resend to by hand, five caught by an SMS outage.
	var events strings.Builder
	fmt.Fprintln(&events, `{"event_id":"e-main","session_id":"sess-main","order_no":"ORD-7001","state":"paid","timestamp_utc":"2026-11-02T09:00:00Z","amount":"12.500","currency_code":"KWD","customer_email":"layla@example.com","customer_phone":"+96550001234","customer_first_name":"ليلى","language":"ar","notifications":{"email":[],"sms":[]}}`)
	// Merchant acme's customer, with the same order_no as the default
	// merchant's.
	fmt.Fprintln(&events, `{"event_id":"e-acme","session_id":"sess-acme-1","order_no":"ORD-7001","merchant_id":"acme","state":"paid","timestamp_utc":"2026-11-02T09:00:00Z","amount":"7.250","currency_code":"KWD","customer_email":"omar@acme.example","customer_phone":"+96550009999","customer_first_name":"Omar","language":"en","notifications":{"email":[],"sms":[]}}`)
	for i := range 5 {
		fmt.Fprintf(&events, `{"event_id":"e-%d","session_id":"sess-out-%d","order_no":"ORD-80%02d","state":"paid","timestamp_utc":"2026-11-02T09:00:00Z","amount":"3.000","currency_code":"KWD","customer_email":"c%d@example.com","customer_phone":"+9655000%04d","language":"en","notifications":{"email":[],"sms":[]}}`+"\n", i, i, i, i, 1000+i)
	}
	cli := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(t.Context(), append(args[:1:1], append([]string{"-config", cfgPath}, args[1:]...)...), strings.NewReader(events.String()), &out, &errOut)
		return code, out.String() + errOut.String()
	}
	if code, out := cli("publish", "-topic", "payment-events"); code != 0 {
		t.Fatal(out)
	}
	outageStart := time.Now().UTC().Truncate(time.Minute)
	peer.down.Store("sms", true)
	for i := range 5 {
		if code, out := cli("resend", "-session-id", fmt.Sprintf("sess-out-%d", i), "-channels", "sms"); code != 1 || !strings.Contains(out, "provider_unavailable") {
			t.Fatalf("resend during the outage: %d %s", code, out)
		}
	}
	peer.down.Store("sms", false)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelT()

	base := "http://" + apiAddr + "/console/"
	shots := t.ArtifactDir()
	// shot saves the page at 1280 px and at 390 px (a phone), and fails
	// when the narrow page is wider than the phone (a table not in its
	// scroll box, a form that does not wrap).
	shot := func(name string) {
		t.Helper()
		for _, w := range []struct {
			suffix        string
			width, height int64
		}{{"", 1280, 900}, {"-390", 390, 844}} {
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(w.width, w.height)); err != nil {
				t.Fatalf("viewport %d: %v", w.width, err)
			}
			buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatalf("screenshot %s: %v", name, err)
			}
			checkNotBlank(t, name+w.suffix, buf)
			if err := os.WriteFile(filepath.Join(shots, name+w.suffix+".png"), buf, 0o644); err != nil {
				t.Fatal(err)
			}
			if w.width == 390 {
				if wide, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); err != nil || wide > 390 {
					t.Errorf("%s at 390 px is %d px wide (%v)", name, wide, err)
				}
			}
		}
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
			t.Fatal(err)
		}
	}
	// tryText reads the text of sel; while the page is being replaced (a
	// navigation) the read fails and is worth repeating.
	tryText := func(sel string) (string, error) {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			return "", fmt.Errorf("text of %s: %w", sel, err)
		}
		return strings.Join(strings.Fields(s), " "), nil
	}
	// text is tryText repeated for up to 10 s while it fails: right after
	// a navigation chromedp may hold node ids of the document being
	// replaced ("No node with given id found"; 1 run in 20 failed so).
	text := func(sel string) string {
		t.Helper()
		var s string
		testkit.Until(t, 10*time.Second, func() (err error) {
			s, err = tryText(sel)
			return err
		})
		return s
	}
	must := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	signIn := func(user, pass string) {
		t.Helper()
		must("sign in as "+user, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#username")),
			chromedp.SendKeys(chromedp.CSS("#username"), user), chromedp.SendKeys(chromedp.CSS("#password"), pass),
			chromedp.Click(chromedp.CSS("#signin")), chromedp.WaitVisible(chromedp.CSS("#q")))
	}

	// Sign in; find the transaction by its order_no.
	must("open", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#username")))
	shot("1-sign-in")
	signIn("ops", "ops pass")
	if who := text("#who"); who != "ops (operator)" {
		t.Errorf("signed in as %q", who)
	}
	// The find page lists the recent transactions, the default merchant's
	// for the platform's user, or another's it names; a prefix lists those
	// it starts.
	if listed, rows := text("#listed"), text("#recent tbody"); listed != "default" ||
		!strings.Contains(rows, "sess-main") || strings.Contains(rows, "sess-acme-1") || !strings.Contains(rows, "l***@example.com") {
		t.Errorf("recent transactions: %q / %q", listed, rows)
	}
	shot("2-find")
	must("acme's recent transactions", chromedp.SendKeys(chromedp.CSS("#recent-merchant"), "acme"), chromedp.Click(chromedp.CSS("#show")),
		chromedp.WaitVisible(chromedp.CSS(`#recent-merchant[value="acme"]`)))
	if listed, rows := text("#listed"), text("#recent tbody"); listed != "acme" || !strings.Contains(rows, "sess-acme-1") || strings.Contains(rows, "sess-main") {
		t.Errorf("acme's recent transactions: %q / %q", listed, rows)
	}
	must("back to the find page", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#q")))
	must("find by a prefix", chromedp.SendKeys(chromedp.CSS("#q"), "sess-out"), chromedp.Click(chromedp.CSS("#find")),
		chromedp.WaitVisible(chromedp.CSS("#prefix-title")))
	if title, rows := text("#prefix-title"), text("#recent tbody"); !strings.Contains(title, "starts with sess-out") ||
		strings.Count(rows, "sess-out-") != 5 || strings.Contains(rows, "sess-main") {
		t.Errorf("prefix sess-out: %q / %q", title, rows)
	}
	shot("2b-find-prefix")
	must("back to the find page", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#q")))
	must("find by order_no", chromedp.Click(chromedp.CSS("#by-order")), chromedp.SendKeys(chromedp.CSS("#q"), "ORD-7001"),
		chromedp.Click(chromedp.CSS("#find")), chromedp.WaitVisible(chromedp.CSS("#grid")))
	if s := text("#session"); s != "sess-main" {
		t.Errorf("found %q", s)
	}
	for sel, want := range map[string]string{"#customer": "ليلى", "#email": "l***@example.com", "#phone": "+965****1234", "#amount": "12.500 KWD"} {
		if got := text(sel); got != want {
			t.Errorf("%s = %q, want %q", sel, got, want)
		}
	}
	if g := text("#grid-email"); !strings.Contains(g, "yes") {
		t.Errorf("email row %q", g)
	}
	if g := text("#grid-whatsapp"); !strings.Contains(g, "no") || !strings.Contains(g, "channel_not_enabled") {
		t.Errorf("whatsapp row %q", g)
	}
	if h := text("#nohistory"); !strings.Contains(h, "No notification") {
		t.Errorf("history %q", h)
	}
	shot("3-transaction")

	// Resend the email: the result appears on the page.
	must("resend email", chromedp.Click(chromedp.CSS("#tick-email")), chromedp.Click(chromedp.CSS("#resend")),
		chromedp.WaitVisible(chromedp.CSS("#result")))
	// The page reloads itself every 2 s until the result is in.
	testkit.Eventually(t, "the result on the page", 30*time.Second, func() bool { return strings.Contains(text("#result"), ": notified") })
	if r := text("#result"); !strings.Contains(r, "email sent via webhook") {
		t.Errorf("result %q", r)
	}
	if h := text("#history"); !strings.Contains(h, "console:ops") || !strings.Contains(h, "email sent") {
		t.Errorf("history after the resend: %q", h)
	}
	if keys, calls := peer.count("email/"); keys != 1 || calls != 1 {
		t.Errorf("email messages %d (calls %d), want 1", keys, calls)
	}
	// The status is coloured on the cell that says it, whatever its
	// column; the cells around it are not.
	colours, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[
		getComputedStyle(document.querySelector("#history td.status.status-sent")).color,
		getComputedStyle(document.querySelector("#history td.status.status-sent").nextElementSibling.nextElementSibling.nextElementSibling).color]`))
	if err != nil || len(colours) != 2 || colours[0] != "rgb(23, 128, 61)" || colours[1] == colours[0] {
		t.Errorf("status and provider cell colours %v (%v)", colours, err)
	}
	shot("4-resent")
	// The README's picture of the console is this page:
	// NOTIFYD_TEST_DOCS=1 retakes docs/console.png.
	if os.Getenv("NOTIFYD_TEST_DOCS") == "1" {
		png, err := os.ReadFile(filepath.Join(shots, "4-resent.png"))
		if err == nil {
			err = os.WriteFile(filepath.Join("..", "..", "docs", "console.png"), png, 0o644)
		}
		if err != nil {
			t.Errorf("docs/console.png: %v", err)
		}
	}
	must("sign out", chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#username")))

	// A viewer looks and cannot resend.
	signIn("look", "look pass")
	must("viewer opens the transaction", chromedp.Navigate(base+"txn?order_no=ORD-7001"), chromedp.WaitVisible(chromedp.CSS("#grid")))
	resendButtons, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#resend").length`))
	if err != nil {
		t.Fatal(err)
	}
	disabled, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector("#tick-email").disabled`))
	if err != nil {
		t.Fatal(err)
	}
	if resendButtons != 0 || !disabled {
		t.Errorf("viewer: %d resend buttons, email box disabled %v", resendButtons, disabled)
	}
	shot("5-viewer")
	must("sign out", chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#username")))

	// A page of another origin posts a form to the console while the
	// operator is signed in: refused, nothing published.
	signIn("ops", "ops pass")
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<form id="f" method="post" action="%sresend"><input name="session_id" value="sess-main"><input name="channel" value="email"></form><script>document.getElementById("f").submit()</script>`, base)
	}))
	defer evil.Close()
	// The refusal is answered before anything is published: once the
	// browser shows it, nothing more can come of the post.
	must("cross-origin post", chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)),
		chromedp.Poll[chromedp.Void](`document.body && document.body.innerText.toLowerCase().includes("cross-origin")`))
	body := text("body")
	if !strings.Contains(strings.ToLower(body), "cross-origin") {
		t.Errorf("the cross-origin post answered %q", body)
	}
	shot("6-cross-origin-refused")
	if keys, _ := peer.count("email/"); keys != 1 {
		t.Errorf("a cross-origin post sent email: %d messages", keys)
	}

	// Bulk recovery of the outage: list, preview, confirm twice.
	q := fmt.Sprintf("attention?channel=sms&reason=provider_unavailable&since=%s&until=%s",
		outageStart.Format("2006-01-02T15:04"), outageStart.Add(time.Hour).Format("2006-01-02T15:04"))
	must("needs attention", chromedp.Navigate(base+q), chromedp.WaitVisible(chromedp.CSS("#attention")))
	if rows := text("#attention tbody"); strings.Count(rows, "sess-out-") != 5 {
		t.Errorf("needs attention: %q", rows)
	}
	shot("7-needs-attention")
	// Two operators (two tabs) preview the same recovery, then both confirm.
	tab2, cancelTab2 := chromedp.NewContext(ctx)
	defer cancelTab2()
	for _, tab := range []context.Context{ctx, tab2} {
		if err := chromedp.Do(tab, chromedp.Navigate(base+q), chromedp.WaitVisible(chromedp.CSS("#recover")),
			chromedp.Click(chromedp.CSS("#recover")), chromedp.WaitVisible(chromedp.CSS("#summary"))); err != nil {
			t.Fatalf("preview: %v", err)
		}
	}
	if s := text("#summary"); !strings.Contains(s, "5 transactions will get one resend each") {
		t.Errorf("preview %q", s)
	}
	shot("8-recovery-preview")
	for _, tab := range []context.Context{ctx, tab2} {
		if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#progress"))); err != nil {
			t.Fatalf("confirm: %v", err)
		}
	}
	testkit.Until(t, 30*time.Second, func() error {
		state, err := tryText("#state")
		if err != nil {
			return err
		}
		sent, err := tryText("#sent")
		if err != nil {
			return err
		}
		if strings.Contains(state, "Done: 5 of 5 customers notified.") && sent == "5" {
			return nil
		}
		progress, _ := tryText("#progress")
		return fmt.Errorf("recovery not done: %s", progress)
	})
	shot("9-recovery-done")
	// Every recovery command published (once per batch, or twice if the
	// second confirmation published again) has a result, replays included:
	// no send of theirs is still to come.
	recoveries := func(topic string) int {
		n := 0
		err := consumer.ReadAll(t.Context(), consumer.Conn{Brokers: []string{broker}}, topic, func(_ int, batch []kafka.Message) error {
			for _, m := range batch {
				if strings.Contains(string(m.Value), `"command_id":"recover-`) {
					n++
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("read %s: %v", topic, err)
		}
		return n
	}
	testkit.Eventually(t, "a result for every recovery command", 30*time.Second, func() bool {
		cmds := recoveries("notification-commands")
		return cmds >= 5 && recoveries("notification-results") >= cmds
	})
	keys, calls := peer.count("sms/recover-")
	if keys != 5 || calls != 5 {
		t.Errorf("recovery sms: %d commands, %d messages; want 5 and 5 (one per customer, confirmed twice)", keys, calls)
	}

	// Merchants. An email outage catches acme's customer and the default
	// merchant's main one.
	peer.down.Store("email", true)
	for _, sid := range []string{"sess-acme-1", "sess-main"} {
		if code, out := cli("resend", "-session-id", sid, "-channels", "email"); code != 1 || !strings.Contains(out, "provider_unavailable") {
			t.Fatalf("resend %s during the email outage: %d %s", sid, code, out)
		}
	}
	peer.down.Store("email", false)
	// The platform operator sees every merchant, with a merchant column
	// and filter.
	must("needs attention, every merchant", chromedp.Navigate(base+"attention?channel=email"), chromedp.WaitVisible(chromedp.CSS("#attention")))
	if head, rows := text("#attention thead"), text("#attention tbody"); !strings.Contains(head, "Merchant") ||
		!strings.Contains(rows, "acme sess-acme-1") || !strings.Contains(rows, "default sess-main") {
		t.Errorf("platform needs attention: %q / %q", head, rows)
	}
	must("filter by merchant", chromedp.SendKeys(chromedp.CSS("#f-merchant"), "acme"), chromedp.Click(chromedp.CSS("#apply")),
		chromedp.WaitVisible(chromedp.CSS("#attention")))
	testkit.Eventually(t, "the merchant filter applied", 10*time.Second, func() bool {
		rows, err := tryText("#attention tbody")
		return err == nil && strings.Contains(rows, "sess-acme-1") && !strings.Contains(rows, "sess-main")
	})
	shot("10-platform-merchant-filter")
	// An empty list offers no recovery.
	must("an empty list", chromedp.Navigate(base+"attention?channel=whatsapp"), chromedp.WaitVisible(chromedp.CSS("#none")))
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#recover, #recover-ticked").length`)); err != nil || n != 0 {
		t.Errorf("an empty list offers %d recovery buttons (%v)", n, err)
	}
	// Ticking one row recovers that one only: the default merchant's
	// customer, not acme's.
	must("tick sess-main", chromedp.Navigate(base+"attention?channel=email"), chromedp.WaitVisible(chromedp.CSS("#attention")),
		chromedp.Click(chromedp.CSS(`input.pick[aria-label="recover sess-main email"]`)), chromedp.Click(chromedp.CSS("#recover-ticked")),
		chromedp.WaitVisible(chromedp.CSS("#summary")))
	if s, sample := text("#summary"), text("#sample tbody"); !strings.Contains(s, "1 transaction will get one resend each, covering 1 channel that needs attention (the 1 ticked row)") ||
		!strings.Contains(sample, "sess-main") || strings.Contains(sample, "sess-acme-1") {
		t.Errorf("the ticked row's preview: %q / %q", s, sample)
	}
	shot("10b-recover-ticked-preview")
	must("confirm the ticked", chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#progress")))
	testkit.Until(t, 30*time.Second, func() error {
		if state, err := tryText("#state"); err != nil || !strings.Contains(state, "Done: 1 of 1 customer notified.") {
			return fmt.Errorf("the ticked recovery: %q %v", state, err)
		}
		return nil
	})
	main, _ := peer.count("email/recover-sess-main")
	acme, _ := peer.count("email/recover-sess-acme")
	if main != 1 || acme != 0 {
		t.Errorf("the ticked recovery sent %d email(s) to sess-main and %d to sess-acme-1, want 1 and 0", main, acme)
	}
	must("sign out", chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#username")))

	// acme's operator sees acme only: its order ORD-7001, not the default
	// merchant's; another merchant's transaction as one that does not
	// exist; its own needs-attention entries, without a merchant column;
	// a recovery of its own failures only.
	signIn("acme-ops", "acme pass")
	if head, rows := text("#recent thead"), text("#recent tbody"); strings.Contains(head, "Merchant") ||
		!strings.Contains(rows, "sess-acme-1") || strings.Contains(rows, "sess-main") || strings.Contains(rows, "sess-out-") {
		t.Errorf("acme's recent transactions: %q / %q", head, rows)
	}
	shot("11a-merchant-user-find")
	must("acme finds ORD-7001", chromedp.Click(chromedp.CSS("#by-order")), chromedp.SendKeys(chromedp.CSS("#q"), "ORD-7001"),
		chromedp.Click(chromedp.CSS("#find")), chromedp.WaitVisible(chromedp.CSS("#grid")))
	if s, c := text("#session"), text("#customer"); s != "sess-acme-1" || c != "Omar" {
		t.Errorf("acme's ORD-7001: %q %q", s, c)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#merchant, #f-merchant").length`)); err != nil || n != 0 {
		t.Errorf("a merchant's user sees merchant fields: %d %v", n, err)
	}
	shot("11-merchant-user-transaction")
	must("acme opens another merchant's transaction", chromedp.Navigate(base+"txn?session_id=sess-main"), chromedp.WaitVisible(chromedp.CSS("main")))
	theirs := text("main")
	must("acme opens a transaction that does not exist", chromedp.Navigate(base+"txn?session_id=sess-nowhere"), chromedp.WaitVisible(chromedp.CSS("main")))
	if missing := strings.ReplaceAll(text("main"), "sess-nowhere", "sess-main"); theirs != missing || strings.Contains(theirs, "+965") {
		t.Errorf("another merchant's transaction %q, one that does not exist %q", theirs, missing)
	}
	must("acme's needs attention", chromedp.Navigate(base+"attention"), chromedp.WaitVisible(chromedp.CSS("#attention")))
	if head, rows := text("#attention thead"), text("#attention tbody"); strings.Contains(head, "Merchant") ||
		!strings.Contains(rows, "sess-acme-1") || strings.Contains(rows, "sess-main") || strings.Contains(rows, "sess-out-") {
		t.Errorf("acme's needs attention: %q / %q", head, rows)
	}
	shot("12-merchant-user-attention")
	must("acme previews a recovery", chromedp.Click(chromedp.CSS("#recover")), chromedp.WaitVisible(chromedp.CSS("#summary")))
	if s, sample := text("#summary"), text("#sample"); !strings.Contains(s, "1 transaction will get one resend each") || !strings.Contains(sample, "sess-acme-1") {
		t.Errorf("acme's recovery: %q / %q", s, sample)
	}
	shot("13-merchant-user-recovery")
	// acme's counts: its own, by channel and day, no merchant column; the
	// email that failed in the outage among them.
	must("acme's counts", chromedp.Navigate(base+"counts"), chromedp.WaitVisible(chromedp.CSS("#totals")))
	if head, rows := text("#totals thead"), text("#totals tbody"); strings.Contains(head, "Merchant") ||
		!regexp.MustCompile(`email \d+ [1-9]\d* \d+`).MatchString(rows) || strings.Contains(rows, "default") {
		t.Errorf("acme's counts: %q / %q", head, rows)
	}
	if days := text("#days tbody"); !strings.Contains(days, time.Now().UTC().Format("2006-01-02")+" email") {
		t.Errorf("acme's counts by day: %q", days)
	}
	shot("14-merchant-user-counts")
	must("sign out", chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#username")))

	// The platform's counts: every merchant's totals, a link to each.
	signIn("ops", "ops pass")
	must("platform counts", chromedp.Navigate(base+"counts"), chromedp.WaitVisible(chromedp.CSS("#totals")))
	if head, rows := text("#totals thead"), text("#totals tbody"); !strings.Contains(head, "Merchant") ||
		!strings.Contains(rows, "acme email") || !strings.Contains(rows, "default email") {
		t.Errorf("platform counts: %q / %q", head, rows)
	}
	shot("15-platform-counts")
	must("sign out", chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#username")))
}

// checkNotBlank fails when a screenshot is (nearly) one colour.
func checkNotBlank(t *testing.T, name string, buf []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil {
		t.Fatalf("%s: not a PNG: %v", name, err)
	}
	colours := map[uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 4 {
		for x := b.Min.X; x < b.Max.X; x += 4 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|bl>>8] = true
		}
	}
	if len(colours) < 8 {
		t.Errorf("%s: the screenshot is blank (%d colours)", name, len(colours))
	}
}

func lastTail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
