//go:build observability

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/schemas"

	"github.com/notifyd/notifyd/internal/testkit"
)

// The observability suite: go test -tags observability -run 'Dashboard|ComposeNotifyd' -v ./cmd/notifyd/
// It needs a Prometheus binary: NOTIFYD_TEST_PROMETHEUS, else `prometheus` on
// PATH (scripts/prometheus-local installs one). Without it the test fails.

const (
	dashboardFile = "../../deploy/grafana/dashboards/notifyd.json"
	alertsFile    = "../../deploy/prometheus/alerts.yml"
	composeConfig = "../../deploy/notifyd/notifyd.yaml"
)

// Values given to Grafana's variables when a dashboard query is run here.
// The rate window is wide enough to hold both workload phases.
var grafanaVars = strings.NewReplacer(
	"${__rate_interval}", "2m", "$__rate_interval", "2m",
	"${__interval_ms}", "15000", "$__interval_ms", "15000",
	"${__interval}", "15s", "$__interval", "15s",
	"${__range_ms}", "300000", "$__range_ms", "300000",
	"${__range_s}", "300", "$__range_s", "300",
	"${__range}", "5m", "$__range", "5m",
	"${instance}", ".*", "$instance", ".*", "[[instance]]", ".*",
)

var (
	leftoverVar     = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z_]+\]\]`)
	instanceMatcher = regexp.MustCompile(`instance\s*(=~|!~|!=|=)\s*"(\$\{?instance\}?|\[\[instance\]\])"`)
	labelValues     = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)
)

// dashQuery is one PromQL expression of the dashboard.
type dashQuery struct {
	where string // panel title and refId, or the variable / annotation
	expr  string // with Grafana's variables substituted
}

// TestDashboardQueriesReturnData runs `notifyd serve` on the embedded broker
// with webhook providers that send (email: 200 with an id), reject
// permanently (sms: 400) and fail transiently (whatsapp: 503, two
// attempts), drives a workload through Kafka that produces every kind of
// result (sent, rejected, failed channels; notified, partially_notified and
// not_notified commands; unknown_transaction, identifier_mismatch,
// invalid_command and command_expired failures; a replayed duplicate;
// not_json and invalid_command dead letters; applied, stale, invalid and
// tombstone payment events), scrapes it every second with a real Prometheus
// that also evaluates deploy/prometheus/alerts.yml, and then:
//
//   - runs every PromQL expression of every panel of the Grafana dashboard
//     (and of its instance variable) through Prometheus's HTTP API and fails
//     for each one that returns nothing, naming the panel;
//   - checks that every alert rule evaluates without error, and that
//     NotifydProviderFailing and NotifydDeadLetters become pending or firing.
//
// The workload runs in two phases a few scrapes apart: counters with labels
// are born at their first increment, and rate() needs a second, larger
// sample of the series.
func TestDashboardQueriesReturnData(t *testing.T) {
	promBin := prometheusBinary(t)
	queries, panels, annotations := dashboardQueries(t)
	if t.Failed() {
		return
	}

	var emailIDs atomic.Int64
	email := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"em-%d"}`, emailIDs.Add(1))
	}))
	defer email.Close()
	sms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"recipient refused"}`)
	}))
	defer sms.Close()
	whatsapp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":"try later"}`)
	}))
	defer whatsapp.Close()

	dir := t.TempDir()
	broker, httpAddr, apiAddr := freePort(t), freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "notifyd.yaml")
	cfg := fmt.Sprintf(`
embedded_broker: {listen: %q}
store: {dir: %q}
http: {listen: %q}
api: {listen: %q}
log: {format: text, level: error}
processing: {catch_up_wait: 1s}
providers:
  email: {kind: webhook, webhook: {url: %q, receipt_secret: dashboard-receipts}}
  sms: {kind: webhook, webhook: {url: %q}}
  whatsapp:
    kind: webhook
    webhook: {url: %q}
    retry: {max_attempts: 2, initial_backoff: 10ms}
templates:
  email:
    paid:
      en: {subject: "Payment received for {{.OrderNo}}", text: "Thank you {{.CustomerFirstName}}: {{.Amount}} {{.CurrencyCode}}."}
  sms:
    paid:
      en: {text: "Paid {{.Amount}} {{.CurrencyCode}} for {{.OrderNo}}."}
  whatsapp:
    paid:
      en: {name: payment_paid, language: en_US, params: ["{{.CustomerFirstName}}", "{{.Amount}} {{.CurrencyCode}}"]}
`, broker, filepath.Join(dir, "data"), httpAddr, apiAddr, email.URL, sms.URL, whatsapp.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, serveErr := serveForTest(t, httpAddr, "serve", "-config", cfgPath)
	ctx := t.Context()

	prom := startPrometheus(t, promBin, dir, httpAddr)
	prom.waitScraping(t, httpAddr)

	// Every result published, by command_id.
	var mu sync.Mutex
	results := map[string][]schemas.DeliveryResult{}
	go func() {
		_ = consumer.Follow(ctx, consumer.Conn{Brokers: []string{broker}}, "notification-results", false, func(m kafka.Message) bool {
			var r schemas.DeliveryResult
			if json.Unmarshal(m.Value, &r) == nil {
				mu.Lock()
				results[r.CommandID] = append(results[r.CommandID], r)
				mu.Unlock()
			}
			return true
		})
	}()
	waitResults := func(want map[string]int) {
		t.Helper()
		testkit.Until(t, 60*time.Second, func() error {
			var missing []string
			mu.Lock()
			for id, n := range want {
				if len(results[id]) < n {
					missing = append(missing, fmt.Sprintf("%s (%d of %d)", id, len(results[id]), n))
				}
			}
			mu.Unlock()
			if len(missing) > 0 {
				slices.Sort(missing)
				return fmt.Errorf("no result for %s\nnotifyd stderr:\n%s", strings.Join(missing, ", "), serveErr.String())
			}
			return nil
		})
	}

	w := consumer.Conn{Brokers: []string{broker}, ClientID: "notifyd-dashboard-test"}.Writer()
	defer w.Close()
	publishLines := func(topic string, lines ...string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(ctx, []string{"publish", "-raw", "-config", cfgPath, "-topic", topic}, strings.NewReader(strings.Join(lines, "\n")+"\n"), &out, &errOut); code != 0 {
			t.Fatalf("publish to %s exited %d: %s", topic, code, errOut.String())
		}
	}
	produce := func(msgs ...kafka.Message) {
		t.Helper()
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	event := func(session, order, notifications string, version int) string {
		return fmt.Sprintf(`{"event_id":"ev-%s-%d","session_id":%q,"order_no":%q,"state":"paid","version":%d,"timestamp_utc":"2026-11-02T09:00:07Z","amount":"12.500","currency_code":"KWD","customer_email":"layla@example.com","customer_phone":"+96550001234","customer_first_name":"Layla","language":"en","notifications":%s}`,
			session, version, session, order, version, notifications)
	}
	command := func(id, session, order string, channels ...string) string {
		if channels == nil {
			channels = []string{}
		}
		c := map[string]any{"command_id": id, "channels": channels, "requested_by": "dashboard-test"}
		if session != "" {
			c["session_id"] = session
		}
		if order != "" {
			c["order_no"] = order
		}
		b, _ := json.Marshal(c)
		return string(b)
	}

	apiKey, err := os.ReadFile(filepath.Join(dir, "data", "api-key"))
	if err != nil {
		t.Fatal(err)
	}
	// apiPost calls the HTTP API (an empty key sends no credentials) and
	// checks the status.
	apiPost := func(key, body string, want int) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+apiAddr+"/b/pbl/v2/message-notification/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Api-Key "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("API %s: %d %s, want %d", body, resp.StatusCode, b, want)
		}
	}

	phase := func(p int) {
		t.Helper()
		a, b := fmt.Sprintf("sess-a-%d", p), fmt.Sprintf("sess-b-%d", p)
		orderA, orderB := fmt.Sprintf("order-a-%d", p), fmt.Sprintf("order-b-%d", p)
		id := func(s string) string { return fmt.Sprintf("p%d-%s", p, s) }
		publishLines("payment-events",
			event(a, orderA, `{"email":[],"sms":[],"whatsapp":[]}`, 2),
			event(b, orderB, `{"email":["paid"],"sms":[],"whatsapp":["created"]}`, 1),
			event(a, orderA, `{"email":[],"sms":[],"whatsapp":[]}`, 1),             // stale: version 1 after 2
			fmt.Sprintf(`{"event_id":"ev-bad-%d","session_id":"sess-x-%d"}`, p, p), // invalid: no state
		)
		produce(kafka.Message{Topic: "payment-events", Key: []byte(fmt.Sprintf("sess-gone-%d", p))}) // tombstone
		var lines []string
		want := map[string]int{}
		for i := range 6 { // email sent, sms rejected by the provider, whatsapp unavailable
			lines = append(lines, command(id(fmt.Sprintf("all-%d", i)), a, "", "email", "sms", "whatsapp"))
			want[id(fmt.Sprintf("all-%d", i))] = 1
		}
		lines = append(lines,
			command(id("email"), "", orderA, "email"),                               // notified
			command(id("wa-off"), b, "", "whatsapp"),                                // rejected: state_not_enabled
			command(id("unknown"), "", fmt.Sprintf("order-missing-%d", p), "email"), // unknown_transaction after 1s
			command(id("mismatch"), a, orderB, "email"),                             // identifier_mismatch
			command(id("invalid"), a, ""),                                           // no channels: invalid_command, dead letter and result
			`this is not json`,                                                      // dead letter only
			command(id("email"), "", orderA, "email"),                               // duplicate: replayed
		)
		for _, s := range []string{"email", "wa-off", "unknown", "mismatch", "invalid"} {
			want[id(s)] = 1
		}
		want[id("email")] = 2
		if p > 1 {
			lines = append(lines, command("p1-email", "", "order-a-1", "email")) // an earlier command again
			want["p1-email"] = 3
		}
		publishLines("notification-commands", lines...)
		produce(kafka.Message{Topic: "notification-commands", Key: []byte(a), Time: time.Now().Add(-48 * time.Hour),
			Value: []byte(command(id("old"), a, "", "email"))}) // command_expired
		want[id("old")] = 1
		waitResults(want)
		// The HTTP API: notified, not notified, invalid input, no credentials.
		key := strings.TrimSpace(string(apiKey))
		apiPost(key, fmt.Sprintf(`{"order_no":%q,"channels":["email"]}`, orderA), http.StatusOK)
		apiPost(key, fmt.Sprintf(`{"session_id":%q,"channels":["whatsapp"]}`, b), http.StatusBadRequest)
		apiPost(key, `{"session_id":"x","channels":["fax"]}`, http.StatusBadRequest)
		apiPost("", `{}`, http.StatusUnauthorized)
		// A receipt for the first email sent, signed as the provider
		// would, and one with a bad signature.
		receipt := func(secret string, want int) {
			t.Helper()
			body := []byte(`{"id":"em-1","status":"delivered","channel":"email"}`)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+apiAddr+api.PathCallbackWebhook, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(dispatch.WebhookSignatureHeader, dispatch.WebhookSignature(secret, time.Now(), body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("receipt signed with %q: %d, want %d", secret, resp.StatusCode, want)
			}
		}
		receipt("dashboard-receipts", http.StatusOK)
		receipt("not-the-secret", http.StatusUnauthorized)

		mu.Lock()
		defer mu.Unlock()
		check := func(cmd string, outcome schemas.Outcome, reason schemas.Reason) {
			t.Helper()
			r := results[id(cmd)][0]
			if r.Outcome != outcome || r.Reason != reason {
				t.Errorf("%s: outcome %s reason %q, want %s %q", id(cmd), r.Outcome, r.Reason, outcome, reason)
			}
		}
		check("all-0", schemas.OutcomePartiallyNotified, "")
		check("email", schemas.OutcomeNotified, "")
		check("wa-off", schemas.OutcomeNotNotified, "")
		check("unknown", schemas.OutcomeNotNotified, schemas.ReasonUnknownTransaction)
		check("mismatch", schemas.OutcomeNotNotified, schemas.ReasonIdentifierMismatch)
		check("invalid", schemas.OutcomeNotNotified, schemas.ReasonInvalidCommand)
		check("old", schemas.OutcomeNotNotified, schemas.ReasonCommandExpired)
		if r := results[id("all-0")][0]; len(r.Channels) == 3 {
			for i, want := range []struct {
				status schemas.ChannelStatus
				reason schemas.Reason
			}{{schemas.StatusSent, ""}, {schemas.StatusFailed, schemas.ReasonProviderRejected}, {schemas.StatusFailed, schemas.ReasonProviderUnavailable}} {
				if c := r.Channels[i]; c.Status != want.status || c.Reason != want.reason {
					t.Errorf("%s %s: %s %q, want %s %q", id("all-0"), c.Channel, c.Status, c.Reason, want.status, want.reason)
				}
			}
		} else {
			t.Errorf("%s: %d channels", id("all-0"), len(r.Channels))
		}
		if r := results[id("wa-off")][0]; len(r.Channels) != 1 || r.Channels[0].Reason != schemas.ReasonStateNotEnabled {
			t.Errorf("%s: %+v", id("wa-off"), r.Channels)
		}
	}

	phase(1)
	prom.waitScrapes(t, 3) // rates over the series born in phase 1
	phase(2)
	prom.waitScrapes(t, 3)

	// (a) Every query of the dashboard returns data.
	var empty []string
	testkit.Until(t, 30*time.Second, func() error {
		empty = empty[:0]
		for _, q := range queries {
			n, err := prom.query(q.expr)
			switch {
			case err != nil:
				empty = append(empty, fmt.Sprintf("%s: %v\n    %s", q.where, err, q.expr))
			case n == 0:
				empty = append(empty, fmt.Sprintf("%s: no data\n    %s", q.where, q.expr))
			}
		}
		if len(empty) > 0 {
			return fmt.Errorf("dashboard queries return nothing:\n%s", strings.Join(empty, "\n"))
		}
		return nil
	})
	// Annotations need not return data (no alert may be firing), but must
	// be valid PromQL.
	for _, q := range annotations {
		if _, err := prom.query(q.expr); err != nil {
			t.Errorf("%s: %v\n    %s", q.where, err, q.expr)
		}
	}
	t.Logf("dashboard: %d panels, %d queries checked (%d returned data), %d annotation queries valid",
		panels, len(queries), len(queries)-len(empty), len(annotations))

	// (b) Every alert rule evaluates; the two the workload provokes are
	// pending or firing.
	want := map[string]bool{"NotifydProviderFailing": false, "NotifydDeadLetters": false}
	var rules []promRule
	testkit.Until(t, 30*time.Second, func() error {
		rules = prom.rules(t)
		unknown := false
		for _, r := range rules {
			unknown = unknown || r.Health == "unknown"
			if _, ok := want[r.Name]; ok {
				want[r.Name] = r.State == "pending" || r.State == "firing"
			}
		}
		if unknown || slices.Contains(mapValues(want), false) {
			return fmt.Errorf("alert rules not all evaluated, or not all provoked: %v", want)
		}
		return nil
	})
	names := make([]string, 0, len(rules))
	for _, r := range rules {
		names = append(names, r.Name)
		if r.Health != "ok" {
			t.Errorf("alert rule %s: health %q: %s", r.Name, r.Health, r.LastError)
		}
		t.Logf("alert rule %s: health %s, state %s", r.Name, r.Health, r.State)
	}
	for _, name := range []string{"NotifydProviderFailing", "NotifydResultsStalled", "NotifydProjectionLagGrowing", "NotifydDeadLetters", "NotifydInstanceDown"} {
		if !slices.Contains(names, name) {
			t.Errorf("alert rule %s not loaded from %s", name, alertsFile)
		}
	}
	for name, active := range want {
		if !active {
			t.Errorf("alert %s is neither pending nor firing after the workload", name)
		}
	}
	if t.Failed() {
		t.Logf("prometheus log:\n%s", prom.log.String())
	}
}

// TestComposeNotifydConfig: the compose stack's configuration loads (the
// image runs it as /etc/notifyd/notifyd.yaml) and says what the stack needs.
func TestComposeNotifydConfig(t *testing.T) {
	c, err := LoadConfig(composeConfig)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Kafka.Brokers, []string{"kafka:9092"}) || c.HTTP.Listen != "0.0.0.0:8080" || c.Store.Dir != "/var/lib/notifyd" {
		t.Errorf("brokers %v, http.listen %q, store.dir %q", c.Kafka.Brokers, c.HTTP.Listen, c.Store.Dir)
	}
	if c.API.Listen != "0.0.0.0:8000" || !c.API.AllowInsecure {
		t.Errorf("api: %+v (the stack publishes 8000 on the host's loopback)", c.API)
	}
	if e := c.Providers["email"][0]; e.Kind != "smtp" || e.SMTP.Host != "mailpit" || e.SMTP.Port != 1025 || e.SMTP.TLS != "none" {
		t.Errorf("email provider %+v", e)
	}
	for _, ch := range []string{"sms", "whatsapp"} {
		if c.Providers[ch][0].Kind != "console" {
			t.Errorf("%s provider %q", ch, c.Providers[ch][0].Kind)
		}
	}
	for _, ch := range []string{"email", "sms", "whatsapp"} {
		for _, st := range []string{"created", "paid", "failed", "canceled", "expired"} {
			for _, lang := range []string{"en", "ar"} {
				if _, ok := c.Templates[ch][st][lang]; !ok {
					t.Errorf("no template %s.%s.%s", ch, st, lang)
				}
			}
		}
	}
}

func prometheusBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("NOTIFYD_TEST_PROMETHEUS"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("NOTIFYD_TEST_PROMETHEUS: %v", err)
		}
		return p
	}
	p, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("no Prometheus: set NOTIFYD_TEST_PROMETHEUS or put prometheus on PATH (scripts/prometheus-local installs it)")
	}
	return p
}

// dashboardQueries reads the dashboard, checks how it names its datasource
// and uses its variables, and returns its panel queries (plus the instance
// variable's), its annotation queries, and the number of panels.
func dashboardQueries(t *testing.T) (queries []dashQuery, panels int, annotations []dashQuery) {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID           string            `json:"uid"`
		SchemaVersion int               `json:"schemaVersion"`
		Panels        []json.RawMessage `json:"panels"`
		Templating    struct {
			List []struct {
				Name, Type string
				Query      json.RawMessage
				Multi      bool
				IncludeAll bool   `json:"includeAll"`
				AllValue   string `json:"allValue"`
			}
		}
		Annotations struct {
			List []struct {
				Name, Expr string
			}
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID != "notifyd" || dash.SchemaVersion < 36 {
		t.Errorf("uid %q, schemaVersion %d", dash.UID, dash.SchemaVersion)
	}
	var raw any
	_ = json.Unmarshal(data, &raw)
	checkDatasourceRefs(t, "dashboard", raw)

	add := func(list *[]dashQuery, where, expr string) {
		for _, m := range instanceMatcher.FindAllStringSubmatch(expr, -1) {
			if m[1] != "=~" {
				t.Errorf("%s: instance%s%q: a multi-value variable needs =~", where, m[1], m[2])
			}
		}
		e := grafanaVars.Replace(expr)
		if v := leftoverVar.FindString(e); v != "" {
			t.Errorf("%s: unknown variable %s in %s", where, v, expr)
		}
		*list = append(*list, dashQuery{where, e})
	}
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p struct {
				Type, Title string
				Panels      []json.RawMessage
				Targets     []struct {
					RefID string `json:"refId"`
					Expr  string
					Hide  bool
				}
			}
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			panels++
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Hide {
					continue
				}
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q, query %s: no PromQL expression", p.Title, tg.RefID)
					continue
				}
				add(&queries, fmt.Sprintf("panel %q (query %s)", p.Title, tg.RefID), tg.Expr)
			}
		}
	}
	walk(dash.Panels)

	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct{ Query string }
			_ = json.Unmarshal(v.Query, &obj)
			q = obj.Query
		}
		if m := labelValues.FindStringSubmatch(q); m != nil {
			add(&queries, fmt.Sprintf("variable %q (label_values)", v.Name), m[1])
		} else {
			t.Errorf("variable %q: query %q is not label_values(metric, label)", v.Name, q)
		}
		if v.Name == "instance" && (!v.Multi || !v.IncludeAll || v.AllValue != ".*") {
			t.Errorf("variable instance: multi %v, includeAll %v, allValue %q; want true, true, .*", v.Multi, v.IncludeAll, v.AllValue)
		}
	}
	if !vars["datasource"] || !vars["instance"] {
		t.Errorf("dashboard variables %v: want datasource and instance", vars)
	}
	for _, a := range dash.Annotations.List {
		if a.Expr != "" {
			add(&annotations, fmt.Sprintf("annotation %q", a.Name), a.Expr)
		}
	}
	return queries, panels, annotations
}

// checkDatasourceRefs: every datasource reference goes through the
// ${datasource} variable; no uid is written into the dashboard.
func checkDatasourceRefs(t *testing.T, path string, v any) {
	t.Helper()
	ok := func(s string) bool { return s == "${datasource}" || s == "$datasource" }
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if k == "datasource" {
				switch ds := e.(type) {
				case string:
					if !ok(ds) {
						t.Errorf("%s.datasource = %q, want ${datasource}", path, ds)
					}
				case map[string]any:
					uid, _ := ds["uid"].(string)
					if typ, _ := ds["type"].(string); !ok(uid) || (typ != "" && typ != "prometheus") {
						t.Errorf("%s.datasource = %v, want {type: prometheus, uid: ${datasource}}", path, ds)
					}
				case nil:
				default:
					t.Errorf("%s.datasource = %v", path, ds)
				}
				continue
			}
			checkDatasourceRefs(t, path+"."+k, e)
		}
	case []any:
		for i, e := range v {
			checkDatasourceRefs(t, fmt.Sprintf("%s[%d]", path, i), e)
		}
	}
}

func mapValues(m map[string]bool) []bool {
	out := make([]bool, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// promServer is a Prometheus run by the test.
type promServer struct {
	addr string
	log  *testkit.SyncBuffer
}

func startPrometheus(t *testing.T, bin, dir, target string) *promServer {
	t.Helper()
	alerts, err := filepath.Abs(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: notifyd
    static_configs:
      - targets: [%q]
`, alerts, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &promServer{addr: freePort(t), log: &testkit.SyncBuffer{}}
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+p.addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	testkit.Until(t, 30*time.Second, func() error {
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited: %v\n%s", err, p.log.String())
		default:
		}
		resp, err := http.Get("http://" + p.addr + "/-/ready")
		if err != nil {
			return fmt.Errorf("prometheus not ready: %v\n%s", err, p.log.String())
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("prometheus not ready: %s\n%s", resp.Status, p.log.String())
		}
		return nil
	})
	return p
}

// waitScraping waits until Prometheus has scraped notifyd successfully.
func (p *promServer) waitScraping(t *testing.T, target string) {
	t.Helper()
	testkit.Until(t, 30*time.Second, func() error {
		if v, err := p.queryValue(`up{job="notifyd"}`); err == nil && v == "1" {
			return nil
		}
		status := "unreachable"
		if resp, err := http.Get("http://" + target + "/metrics"); err == nil {
			status = resp.Status
			resp.Body.Close()
		}
		return fmt.Errorf("Prometheus could not scrape notifyd at %s/metrics (GET /metrics: %s)", target, status)
	})
}

// waitScrapes waits until Prometheus has scraped notifyd n more times.
func (p *promServer) waitScrapes(t *testing.T, n int) {
	t.Helper()
	count := func() float64 {
		v, err := p.queryValue(`count_over_time(up{job="notifyd"}[1h])`)
		if err != nil {
			return 0
		}
		f, _ := strconv.ParseFloat(v, 64)
		return f
	}
	from := count()
	testkit.Eventually(t, fmt.Sprintf("%d more scrapes of notifyd", n), time.Minute, func() bool { return count() >= from+float64(n) })
}

type promResponse struct {
	Status    string `json:"status"`
	Error     string `json:"error"`
	ErrorType string `json:"errorType"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
		Groups     []struct {
			Rules []promRule `json:"rules"`
		} `json:"groups"`
	} `json:"data"`
}

type promRule struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
	State     string `json:"state"`
}

func (p *promServer) get(path string, params url.Values) (promResponse, error) {
	var r promResponse
	resp, err := http.Get("http://" + p.addr + path + "?" + params.Encode())
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if r.Status != "success" {
		return r, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	return r, nil
}

// query runs an instant query and returns how many series (or scalars) it
// returned.
func (p *promServer) query(expr string) (int, error) {
	r, err := p.get("/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return 0, err
	}
	switch r.Data.ResultType {
	case "vector", "matrix":
		var series []json.RawMessage
		if err := json.Unmarshal(r.Data.Result, &series); err != nil {
			return 0, err
		}
		return len(series), nil
	case "scalar", "string":
		return 1, nil
	}
	return 0, fmt.Errorf("result type %q", r.Data.ResultType)
}

// queryValue returns the value of a one-series instant query.
func (p *promServer) queryValue(expr string) (string, error) {
	r, err := p.get("/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return "", err
	}
	var series []struct {
		Value [2]any `json:"value"`
	}
	if err := json.Unmarshal(r.Data.Result, &series); err != nil || len(series) != 1 {
		return "", fmt.Errorf("%d series", len(series))
	}
	s, _ := series[0].Value[1].(string)
	return s, nil
}

func (p *promServer) rules(t *testing.T) []promRule {
	t.Helper()
	r, err := p.get("/api/v1/rules", url.Values{"type": {"alert"}})
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	var out []promRule
	for _, g := range r.Data.Groups {
		out = append(out, g.Rules...)
	}
	return out
}
