package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/schemas"

	"github.com/notifyd/notifyd/internal/testkit"
)

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestCLIRoundTrip runs `notifyd serve` on the embedded broker and drives
// it with `publish` and `resend` as a user would.
func TestCLIRoundTrip(t *testing.T) {
	dir := t.TempDir()
	broker, httpAddr := freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "notifyd.yaml")
	cfg := fmt.Sprintf(`
embedded_broker: {listen: %q}
store: {dir: %q}
http: {listen: %q}
log: {format: text, level: warn}
providers:
  email: {kind: console}
  sms: {kind: console}
templates:
  email:
    paid:
      en: {subject: "Payment {{.OrderNo}} received", text: "Thank you {{.CustomerFirstName}}: {{.Amount}} {{.CurrencyCode}}."}
  sms:
    paid:
      ar: {text: "شكرا {{.CustomerFirstName}}، تم الدفع {{.Amount}} {{.CurrencyCode}}"}
`, broker, filepath.Join(dir, "data"), httpAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	serveOut, serveErr := serveForTest(t, httpAddr, "-config", cfgPath)
	ctx := t.Context()

	event := `{"event_id":"e-1","session_id":"sess-1","order_no":"order-1","state":"paid","timestamp_utc":"2026-11-02 09:00:07","amount":"12.500","currency_code":"KWD","customer_email":"layla@example.com","customer_phone":"+96550001234","customer_first_name":"Layla","language":"ar","notifications":{"email":["paid"],"sms":[],"whatsapp":["created"]}}`
	var out, errOut bytes.Buffer
	if code := run(ctx, []string{"publish", "-config", cfgPath, "-topic", "payment-events"}, strings.NewReader(event+"\n"), &out, &errOut); code != 0 {
		t.Fatalf("publish exited %d: %s", code, errOut.String())
	}

	resendCmd := func(args ...string) (int, schemas.DeliveryResult, string) {
		var out, errOut bytes.Buffer
		code := run(ctx, append([]string{"resend", "-config", cfgPath, "-wait", "30s"}, args...), nil, &out, &errOut)
		var r schemas.DeliveryResult
		if out.Len() > 0 {
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("resend printed %q: %v", out.String(), err)
			}
		}
		return code, r, errOut.String()
	}
	code, r, stderr := resendCmd("-order-no", "order-1", "-channels", "email,sms")
	if code != 0 || r.Outcome != schemas.OutcomeNotified || r.Message != schemas.MessageNotified {
		t.Fatalf("resend: exit %d, %+v, %s", code, r, stderr)
	}
	// The console provider printed both messages in Arabic, recipients
	// masked: the SMS with the file's template, the email with the
	// built-in one (the file gave only an en email: its cells are laid
	// over the built-in ones).
	printed := serveOut.String()
	for _, want := range []string{"تم استلام الدفعة - الطلب رقم order-1", "شكرا Layla", "l***@example.com", "+965****1234"} {
		if !strings.Contains(printed, want) {
			t.Errorf("console output lacks %q:\n%s", want, printed)
		}
	}
	for _, leak := range []string{"layla@example.com", "+96550001234"} {
		if strings.Contains(printed+serveErr.String(), leak) {
			t.Errorf("unmasked contact %q in output or logs", leak)
		}
	}
	code, r, _ = resendCmd("-session-id", "sess-1", "-channels", "whatsapp")
	if code != 1 || r.Outcome != schemas.OutcomeNotNotified || r.Channels[0].Reason != schemas.ReasonStateNotEnabled {
		t.Errorf("whatsapp resend: exit %d, %+v", code, r)
	}
	if code, _, _ := resendCmd("-channels", "sms"); code != 2 {
		t.Errorf("resend without an identifier exited %d, want 2", code)
	}

	// A line that is not JSON is dead-lettered; /metrics shows all of it.
	if code := run(ctx, []string{"publish", "-raw", "-config", cfgPath, "-topic", "notification-commands"}, strings.NewReader("not json\n"), &out, &errOut); code != 0 {
		t.Fatalf("publish: %s", errOut.String())
	}
	want := []string{
		`notifyd_commands_total{outcome="notified"} 1`,
		`notifyd_commands_total{outcome="not_notified"} 1`,
		`notifyd_channel_results_total{channel="email",reason="",status="sent"} 1`,
		`notifyd_channel_results_total{channel="whatsapp",reason="state_not_enabled",status="rejected"} 1`,
		`notifyd_provider_requests_total{channel="sms",provider="console",result="success"} 1`,
		`notifyd_projection_events_total{result="applied"} 1`,
		`notifyd_projection_transactions 1`,
		`notifyd_projection_lag_messages{partition="`,
		`notifyd_dead_letters_total{reason="not_json"} 1`,
		`notifyd_command_duration_seconds_count 2`,
		`notifyd_commands_in_flight 0`,
		`notifyd_build_info{go_version="go`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	}
	testkit.Until(t, 20*time.Second, func() error {
		body := httpGet(t, httpAddr, "/metrics")
		var missing []string
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("/metrics lacks %q", missing)
		}
		return nil
	})

	// The CLI checks what it publishes. A pretty-printed example (as the
	// README's compose section invites) is one record, and its
	// transaction exists.
	publishCmd := func(topic, input string, extra ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(ctx, append([]string{"publish", "-config", cfgPath, "-topic", topic}, extra...), strings.NewReader(input), &out, &errOut)
		return code, errOut.String()
	}
	example, err := os.ReadFile(filepath.Join("..", "..", "schemas", "examples", "payment-event.paid.json"))
	if err != nil {
		t.Fatal(err)
	}
	if code, stderr := publishCmd("payment-events", string(example)); code != 0 || !strings.Contains(stderr, "published 1 record to payment-events") {
		t.Fatalf("a pretty-printed event: exit %d, %s", code, stderr)
	}
	// Channels in any case and with spaces, normalised.
	if code, r, stderr := resendCmd("-session-id", "ps_7c1e0f52", "-channels", " EMAIL , email"); code != 0 || len(r.Channels) != 1 || r.Channels[0].Channel != schemas.ChannelEmail {
		t.Errorf("the example's transaction, -channels ' EMAIL , email': exit %d, %+v, %s", code, r, stderr)
	}
	// A bad document anywhere publishes nothing: the array's first event
	// (valid) does not exist after it.
	for _, c := range []struct{ name, topic, input, want string }{
		{"not JSON", "payment-events", "not json\n", "line 1: not JSON"},
		{"an array with a bad second event", "payment-events", "[\n" + strings.Replace(event, "sess-1", "sess-array", 1) + ",\n" +
			`{"event_id":"e-2","session_id":"sess-2","state":"paying","timestamp_utc":"2026-11-02 09:00:07"}` + "\n]\n",
			"line 3: payment event: state"},
		{"a command without channels", "notification-commands", `{"command_id":"c-x","session_id":"sess-1","requested_by":"me"}`, "line 1: resend command: channels"},
	} {
		if code, stderr := publishCmd(c.topic, c.input); code != 1 || !strings.Contains(stderr, c.want) || !strings.Contains(stderr, "nothing published") {
			t.Errorf("%s: exit %d, %q, want %q", c.name, code, stderr, c.want)
		}
	}
	if code, r, _ := resendCmd("-session-id", "sess-array", "-channels", "email"); code != 1 || r.Reason != schemas.ReasonUnknownTransaction {
		t.Errorf("an event of a refused batch was published: exit %d, %+v", code, r)
	}
	for _, c := range []struct{ name, topic, input, want string }{
		{"a topic that is not notifyd's", "payment_events", event, "-topic payment_events is not one of notifyd's topics"},
		{"merchant settings", "merchant-settings", "{}", "notifyd merchant put"},
	} {
		if code, stderr := publishCmd(c.topic, c.input); code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, %q", c.name, code, stderr)
		}
	}
	// Unknown channels are refused before anything is published.
	for _, chs := range []string{"fax", "sms,fax", " , "} {
		if code, _, stderr := resendCmd("-session-id", "sess-1", "-channels", chs); code != 2 || !strings.Contains(stderr, "-channels:") {
			t.Errorf("-channels %q: exit %d, %s", chs, code, stderr)
		}
	}
}

func httpGet(t *testing.T, addr, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// serveForTest runs notifyd with args (a serve command line) in-process
// until the test ends, waits until its /readyz on httpAddr answers 200, and
// returns its standard output and error. The test fails if serve does not
// stop cleanly (exit 0 within 40 s) when the test ends.
func serveForTest(t *testing.T, httpAddr string, args ...string) (stdout, stderr *testkit.SyncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr = &testkit.SyncBuffer{}, &testkit.SyncBuffer{}
	served := make(chan int, 1)
	go func() { served <- run(ctx, args, nil, stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-served:
			if code != 0 {
				t.Errorf("serve exited %d: %s", code, stderr.String())
			}
		case <-time.After(40 * time.Second):
			t.Error("serve did not stop within 40 s")
		}
	})
	waitReady(t, httpAddr, served, stderr)
	return stdout, stderr
}

func waitReady(t *testing.T, httpAddr string, served chan int, serveErr *testkit.SyncBuffer) {
	t.Helper()
	testkit.Until(t, 30*time.Second, func() error {
		select {
		case code := <-served:
			t.Fatalf("serve exited %d: %s", code, serveErr.String())
		default:
		}
		conn, err := net.Dial("tcp", httpAddr)
		if err == nil {
			fmt.Fprintf(conn, "GET /readyz HTTP/1.0\r\n\r\n")
			buf := make([]byte, 64)
			n, _ := conn.Read(buf)
			conn.Close()
			if strings.Contains(string(buf[:n]), "200 OK") {
				return nil
			}
		}
		return fmt.Errorf("serve not ready: %s", serveErr.String())
	})
}

func TestSchemaCommand(t *testing.T) {
	for _, name := range schemas.SchemaNames() {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{"schema", name}, nil, &out, &errOut); code != 0 {
			t.Fatalf("schema %s exited %d: %s", name, code, errOut.String())
		}
		var v map[string]any
		if err := json.Unmarshal(out.Bytes(), &v); err != nil || v["$schema"] == nil {
			t.Errorf("schema %s printed no JSON Schema: %v", name, err)
		}
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"schema", "nope"}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "resend-command") {
		t.Errorf("unknown schema: exit %d, %q", code, errOut.String())
	}
	if code := run(context.Background(), []string{"frobnicate"}, nil, &out, &errOut); code != 2 {
		t.Errorf("unknown command exited %d", code)
	}
}

func TestBadConfigStopsStartup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("processing:\n  catch_up_wait: forever\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"serve", "-config", path}, nil, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "processing.catch_up_wait") {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
}

// TestAPIKeyMadeOnFirstStart: with the API on and no keys or users
// configured, notifyd makes a key in store.dir (mode 0600), prints it once,
// and accepts it, also after a restart, when it is not printed again.
func TestAPIKeyMadeOnFirstStart(t *testing.T) {
	dir := t.TempDir()
	broker, httpAddr, apiAddr := freePort(t), freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "notifyd.yaml")
	cfg := fmt.Sprintf("embedded_broker: {listen: %q}\nstore: {dir: %q}\nhttp: {listen: %q}\napi: {listen: %q}\nlog: {format: text, level: warn}\nproviders:\n  sms: {kind: console}\ntemplates:\n  sms:\n    paid:\n      en: {text: \"Paid {{.Amount}}\"}\n",
		broker, filepath.Join(dir, "data"), httpAddr, apiAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	post := func(key, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+apiAddr+"/b/pbl/v2/message-notification/", strings.NewReader(body))
		req.Header.Set("Authorization", "Api-Key "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	start := func() (stdout *testkit.SyncBuffer, stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		stdout, stderr := &testkit.SyncBuffer{}, &testkit.SyncBuffer{}
		served := make(chan int, 1)
		go func() { served <- run(ctx, []string{"serve", "-config", cfgPath}, nil, stdout, stderr) }()
		waitReady(t, httpAddr, served, stderr)
		return stdout, func() {
			cancel()
			if code := <-served; code != 0 {
				t.Errorf("serve exited %d: %s", code, stderr.String())
			}
		}
	}

	out, stop := start()
	keyFile := filepath.Join(dir, "data", "api-key")
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(b))
	if !strings.Contains(out.String(), "HTTP API key (made now, shown once, kept in "+keyFile+"): "+key) {
		t.Errorf("the key was not printed: %q", out.String())
	}
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %o", st.Mode().Perm())
	}
	event := `{"event_id":"e-1","session_id":"sess-1","order_no":"order-1","state":"paid","timestamp_utc":"2026-11-02 09:00:07","amount":"12.500","customer_phone":"+96550001234","notifications":{"sms":[]}}`
	var pout, perr bytes.Buffer
	if code := run(t.Context(), []string{"publish", "-config", cfgPath, "-topic", "payment-events"}, strings.NewReader(event+"\n"), &pout, &perr); code != 0 {
		t.Fatalf("publish: %s", perr.String())
	}
	if code, body := post(key, `{"order_no":"order-1","channels":["sms"]}`); code != 200 || body != `{"message":"Customer notified."}` {
		t.Errorf("POST: %d %s", code, body)
	}
	if code, _ := post("nfy_"+strings.Repeat("x", 43), `{"order_no":"order-1","channels":["sms"]}`); code != 401 {
		t.Errorf("POST with another key: %d", code)
	}
	stop()

	out, stop = start()
	defer stop()
	if strings.Contains(out.String(), key) {
		t.Errorf("the key was printed again on restart")
	}
	if code, body := post(key, `{"session_id":"sess-1","channels":["sms"]}`); code != 200 {
		t.Errorf("POST after restart: %d %s", code, body)
	}
	if m := httpGet(t, httpAddr, "/metrics"); !strings.Contains(m, `notifyd_api_requests_total{code="200"} 1`) {
		t.Errorf("/metrics lacks the API request")
	}
}

// TestAPIRefusesCredentialsInClear: an API on a non-loopback address needs
// api.tls (or api.allow_insecure) and start-up says so.
func TestAPIRefusesCredentialsInClear(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.yaml")
	if err := os.WriteFile(path, []byte("api:\n  listen: 0.0.0.0:8000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"serve", "-config", path}, nil, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "api.listen") || !strings.Contains(errOut.String(), "api.tls.cert_file") {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
}

// TestAPIKeyCommand: `notifyd api-key NAME` prints a key and the api.keys
// line holding its hash; a configuration with that line accepts the key
// under NAME, and nothing else the command printed is the key's hash
// pre-image but the first line. A name the configuration would refuse is a
// usage error.
func TestAPIKeyCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"api-key", "shop-backend"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "nfy_") {
		t.Fatalf("stdout %q: want the key, then the config line", out.String())
	}
	key := lines[0]
	if strings.Contains(errOut.String(), key) || strings.Contains(lines[1], key) {
		t.Errorf("the key is printed more than once")
	}
	cfg, err := ParseConfig([]byte("api:\n  listen: 127.0.0.1:0\n  keys:\n" + lines[1] + "\n"))
	if err != nil {
		t.Fatalf("the printed line does not configure: %v\n%s", err, lines[1])
	}
	srv, err := api.New(cfg.API, api.Deps{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key    string
		status int
	}{{key, http.StatusBadRequest}, {key + "x", http.StatusUnauthorized}} {
		r := httptest.NewRequest(http.MethodPost, api.PathNotifications, strings.NewReader(`{}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Api-Key "+tc.key)
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, r)
		if w.Code != tc.status {
			t.Errorf("POST with key %q...: %d %s, want %d", tc.key[:8], w.Code, w.Body, tc.status)
		}
	}
	if cfg.API.Keys[0].Name != "shop-backend" {
		t.Errorf("key name %q", cfg.API.Keys[0].Name)
	}
	for _, bad := range [][]string{{}, {"-x"}, {"a", "b"}, {""}} {
		out.Reset()
		errOut.Reset()
		if code := run(context.Background(), append([]string{"api-key"}, bad...), nil, &out, &errOut); code != 2 || out.Len() != 0 {
			t.Errorf("api-key %q: exit %d, stdout %q", bad, code, out.String())
		}
	}
}

// TestMetricsPresentFromStart: a fresh instance, before any event or
// command, already exports every series the dashboard and the alerts read,
// at zero: the first failure of a kind is then a change rate() sees.
func TestMetricsPresentFromStart(t *testing.T) {
	dir := t.TempDir()
	broker, httpAddr, apiAddr := freePort(t), freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "notifyd.yaml")
	cfg := fmt.Sprintf("embedded_broker: {listen: %q}\nstore: {dir: %q}\nhttp: {listen: %q}\napi: {listen: %q}\nlog: {level: warn}\nproviders:\n  email: {kind: console}\n  sms: {kind: console}\n  whatsapp: {kind: console}\n",
		broker, filepath.Join(dir, "data"), httpAddr, apiAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	serveForTest(t, httpAddr, "-config", cfgPath)
	want := []string{
		`notifyd_commands_total{outcome="partially_notified"} 0`,
		`notifyd_command_failures_total{reason="unknown_transaction"} 0`,
		`notifyd_command_failures_total{reason="command_expired"} 0`,
		`notifyd_dead_letters_total{reason="not_json"} 0`,
		`notifyd_dead_letters_total{reason="panic"} 0`,
		`notifyd_channel_results_total{channel="sms",reason="message_too_long",status="rejected"} 0`,
		`notifyd_channel_results_total{channel="whatsapp",reason="provider_unavailable",status="failed"} 0`,
		`notifyd_channel_results_total{channel="email",reason="",status="sent"} 0`,
		`notifyd_provider_requests_total{channel="email",provider="console",result="transient_error"} 0`,
		`notifyd_provider_requests_total{channel="sms",provider="console",result="permanent_error"} 0`,
		`notifyd_provider_request_duration_seconds_count{channel="whatsapp",provider="console"} 0`,
		`notifyd_provider_retries_total{channel="sms",provider="console"} 0`,
		`notifyd_projection_events_total{result="invalid"} 0`,
		`notifyd_consumer_lag_messages{partition="0",topic="notification-commands"} 0`,
		`notifyd_api_requests_total{code="200"} 0`,
		`notifyd_api_requests_total{code="401"} 0`,
		`notifyd_api_requests_total{code="429"} 0`,
		`notifyd_api_requests_total{code="503"} 0`,
		`notifyd_api_waiting 0`,
	}
	testkit.Until(t, 15*time.Second, func() error {
		metrics := httpGet(t, httpAddr, "/metrics")
		var missing []string
		for _, w := range want {
			if !strings.Contains(metrics, w+"\n") {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("a fresh instance's /metrics lacks:\n%s", strings.Join(missing, "\n"))
		}
		return nil
	})
}

// TestCheckConfig: `notifyd check-config` exits 0 with a summary for a
// configuration serve would start with, else 1 naming the key, without
// connecting to anything and without printing a secret.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("NOTIFYD_TEST_SMTP_PW", "hunter2-smtp")
	pwFile := filepath.Join(dir, "twilio-token")
	if err := os.WriteFile(pwFile, []byte("tw-token-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := `kafka:
  brokers: [kafka.example:9092]
providers:
  email:
    kind: smtp
    smtp: {host: smtp.example.com, from: shop@example.com, username: shop, password: "${NOTIFYD_TEST_SMTP_PW}"}
  sms:
    kind: twilio
    twilio: {account_sid: AC0123456789abcdef0123456789abcdef, auth_token_file: ` + pwFile + `, from: "+15550001111"}
templates:
  sms:
    paid: {en: {text: "Paid {{.Amount}}"}, ar: {text: "تم الدفع {{.Amount}}"}}
`
	for _, tc := range []struct {
		name, yaml string
		code       int
		want       string
	}{
		{"valid", good, 0, "notifyd check-config: the configuration is valid\n  kafka: kafka.example:9092\n"},
		{"valid, templates counted", good, 0, "templates: 48 rendered (2 of them from the file, over the built-in ones)"},
		{"each channel's providers and states", good, 0, "  channels:\n    email: smtp; sends created, paid, canceled, failed, expired, authorized, voided, refunded, captured\n" +
			"    sms: twilio; sends created, paid, canceled, failed, expired, authorized, voided, refunded, captured\n" +
			"    whatsapp: NO PROVIDER (providers.whatsapp): every whatsapp resend is rejected provider_not_configured\n"},
		{"a failover chain", strings.Replace(good, "  sms:\n    kind: twilio", "  sms:\n  - kind: console\n  - kind: twilio", 1), 0, "    sms: console then twilio; sends"},
		{"the API off, said loudly", good, 0, "api: OFF: api.listen is not set in the file, so the HTTP API and the console are not served"},
		{"the API turned off", good + "api: {listen: \"off\"}\n", 0, "api: off (api.listen: off)\n"},
		{"the free-space guard by default", good, 0, "pauses below 5 % of the filesystem, at most 1 GiB free; ballast 1 % of the filesystem, at most 64 MiB"},
		{"the free-space guard set", good + "store: {min_free_bytes: 100000000, ballast_bytes: 0}\n", 0, "pauses below 100000000 bytes free; ballast none (store.ballast_bytes: 0)"},
		{"the free-space guard off, said so", good + "store: {min_free_bytes: 0}\n", 0, "free-space guard OFF (store.min_free_bytes: 0)"},
		{"a negative watermark", good + "store: {min_free_bytes: -1}\n", 1, "store.min_free_bytes: must not be negative"},
		{"a negative ballast", good + "store: {ballast_bytes: -1}\n", 1, "store.ballast_bytes: must not be negative"},
		{"unknown key", good + "procesing: {}\n", 1, "procesing: unknown key"},
		{"template failing on a sample", good[:strings.Index(good, "templates:")] + "templates:\n  sms:\n    paid: {en: {text: \"{{.Amount.Nope}}\"}}\n", 1, "templates.sms.paid.en.text"},
		{"unset variable", strings.ReplaceAll(good, "NOTIFYD_TEST_SMTP_PW", "NOTIFYD_TEST_NOT_SET"), 1, "NOTIFYD_TEST_NOT_SET"},
		{"missing secret file", strings.ReplaceAll(good, pwFile, pwFile+".nope"), 1, "providers.sms.twilio.auth_token_file:"},
		{"kafka CA file missing", strings.Replace(good, "  brokers: [kafka.example:9092]\n", "  brokers: [kafka.example:9092]\n  tls: {ca_file: /nonexistent/ca.pem}\n", 1), 1, "kafka.tls.ca_file: open /nonexistent/ca.pem"},
		{"sasl plain without TLS", strings.Replace(good, "  brokers: [kafka.example:9092]\n", "  brokers: [kafka.example:9092]\n  sasl: {mechanism: plain, username: u, password: \"${NOTIFYD_TEST_SMTP_PW}\"}\n", 1), 1,
			"kafka.sasl.mechanism: plain sends the password in clear: turn kafka.tls on"},
		{"api certificate missing", good + "api: {listen: 127.0.0.1:0, tls: {cert_file: /nonexistent.pem, key_file: /nonexistent.key}}\n", 1, "api.tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "notifyd.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			code := run(context.Background(), []string{"check-config", "-config", path}, nil, &out, &errOut)
			if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.want) {
				t.Errorf("exit %d, want %d; output %q %q, want %q", code, tc.code, out.String(), errOut.String(), tc.want)
			}
			for _, secret := range []string{"hunter2-smtp", "tw-token-from-file"} {
				if strings.Contains(out.String()+errOut.String(), secret) {
					t.Errorf("check-config printed a secret: %q %q", out.String(), errOut.String())
				}
			}
		})
	}
}

// TestOpsListenerTimesOut: http.listen bounds every connection like the
// API's listener (api.Timeouts, whose behaviour TestListenersTimeOut
// shows): headers, the whole request, the answer, and an idle keep-alive
// connection.
func TestOpsListenerTimesOut(t *testing.T) {
	srv := opsServer(nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Errorf("http.listen leaves a connection unbounded: header %s, read %s, write %s, idle %s, headers %d bytes",
			srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
}
