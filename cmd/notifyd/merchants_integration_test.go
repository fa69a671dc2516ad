//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/internal/seal"
	"github.com/notifyd/notifyd/internal/testkit"
)

// messagePeer is a webhook provider that keeps every message it took, by
// path.
type messagePeer struct {
	mu   sync.Mutex
	got  map[string][]map[string]any
	next int
}

func (p *messagePeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m map[string]any
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &m)
	p.mu.Lock()
	p.got[r.URL.Path] = append(p.got[r.URL.Path], m)
	p.next++
	n := p.next
	p.mu.Unlock()
	fmt.Fprintf(w, `{"id":"peer-%d"}`, n)
}

// took returns the messages path took for commandID.
func (p *messagePeer) took(path, commandID string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, m := range p.got[path] {
		if m["command_id"] == commandID {
			out = append(out, m)
		}
	}
	return out
}

// TestMerchantsEndToEnd runs notifyd as a process with the HTTP API, on
// the test's broker, and onboards two merchants with `notifyd merchant
// put` (each its own key, its own SMS provider account, acme its own
// template): two transactions with the same order_no, one per merchant,
// each notify only their own customer through their own provider; every
// cross-merchant attempt is answered exactly as a transaction that does
// not exist; the same Idempotency-Key is two commands; a template change
// published with merchant put reaches the next decision without a restart
// (the delay is logged); no secret is on the topic in clear; a record
// that cannot apply is dead-lettered and the settings before it stay;
// merchant delete ends the merchant's key.
func TestMerchantsEndToEnd(t *testing.T) {
	c := newCluster(t, 0)
	peer := &messagePeer{got: map[string][]map[string]any{}}
	srv := httptest.NewServer(peer)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	sealingKey, _ := seal.NewKey()
	keyFile := filepath.Join(dir, "sealing-key")
	receiptSecret := "acme-receipt-secret-" + strings.Repeat("r", 24)
	receiptFile := filepath.Join(dir, "acme-receipt-secret")
	for path, content := range map[string]string{keyFile: sealingKey + "\n", receiptFile: receiptSecret + "\n"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	apiAddr := freePort(t)
	_, opsSum, _ := api.NewKey()
	p := c.start(procOpts{
		api:          fmt.Sprintf(`{listen: %q, keys: [{name: ops, sha256: %q}]}`, apiAddr, opsSum),
		extra:        fmt.Sprintf("merchants: {sealing_key_file: %q}\n", keyFile),
		providers:    fmt.Sprintf("  sms: {kind: webhook, webhook: {url: %q}}", srv.URL+"/platform/sms"),
		waitForReady: true,
	})
	cfgPath := filepath.Join(p.dir, "notifyd.yaml")
	ctx := t.Context()
	cli := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(ctx, args, nil, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	acmeKey, acmeSum, _ := api.NewKey()
	globexKey, globexSum, _ := api.NewKey()
	merchantFile := func(name, content string) string {
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	acme := func(version string) string {
		return merchantFile("acme", fmt.Sprintf(`merchant_id: acme
display_name: ACME Stores
api:
  keys: [{name: acme-backend, sha256: %q}]
providers:
  sms: {kind: webhook, webhook: {url: %q, receipt_secret_file: %q}}
templates:
  sms:
    paid: {en: {text: "ACME %s: {{.Amount}} {{.CurrencyCode}} received for {{.OrderNo}}"}}
`, acmeSum, srv.URL+"/acme/sms", receiptFile, version))
	}
	globex := merchantFile("globex", fmt.Sprintf(`merchant_id: globex
api:
  keys: [{name: globex-backend, sha256: %q}]
providers:
  sms: {kind: webhook, webhook: {url: %q}}
`, globexSum, srv.URL+"/globex/sms"))
	for _, f := range []string{acme("v1"), globex} {
		if code, out := cli("merchant", "put", "-config", cfgPath, "-file", f); code != 0 {
			t.Fatalf("merchant put %s: exit %d: %s", f, code, out)
		}
	}
	event := func(merchant, session, phone string) kafka.Message {
		v := fmt.Sprintf(`{"event_id":"e-%s","session_id":%q,"order_no":"1001","merchant_id":%q,"state":"paid","timestamp_utc":"2026-11-02 09:00:07","amount":"12.500","currency_code":"KWD","customer_phone":%q,"language":"en","notifications":{"sms":[]}}`,
			session, session, merchant, phone)
		return kafka.Message{Key: []byte(session), Value: []byte(v)}
	}
	c.produce(c.topics.PaymentEvents, event("acme", "s-acme", "+96550000001"), event("globex", "s-globex", "+96550000002"))

	post := func(key, idem, body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+apiAddr+api.PathNotifications, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Api-Key "+key)
		if idem != "" {
			req.Header.Set("Idempotency-Key", idem)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	// The merchants' keys work once the instance read their settings.
	testkit.Until(t, 30*time.Second, func() error {
		for _, k := range []string{acmeKey, globexKey} {
			if code, body := post(k, "", `{"order_no":"1001","channels":["sms"]}`); code != http.StatusOK {
				return fmt.Errorf("%d %s", code, body)
			}
		}
		return nil
	})
	// Each merchant's order 1001 is its own customer's, through its own
	// provider, with its own template.
	if code, body := post(acmeKey, "same-key", `{"order_no":"1001","channels":["sms"]}`); code != http.StatusOK {
		t.Fatalf("acme: %d %s", code, body)
	}
	if code, body := post(globexKey, "same-key", `{"order_no":"1001","channels":["sms"]}`); code != http.StatusOK {
		t.Fatalf("globex with the same Idempotency-Key: %d %s", code, body)
	}
	for _, c := range []struct{ path, id, to, text string }{
		{"/acme/sms", "acme:same-key", "+96550000001", "ACME v1: 12.500 KWD received for 1001"},
		{"/globex/sms", "globex:same-key", "+96550000002", "Paid 12.500"},
	} {
		got := peer.took(c.path, c.id)
		if len(got) != 1 || got[0]["to"] != c.to || got[0]["text"] != c.text {
			t.Errorf("%s took %v for %s, want one to %s: %q", c.path, got, c.id, c.to, c.text)
		}
	}
	if got := peer.took("/platform/sms", "acme:same-key"); len(got) != 0 {
		t.Errorf("the platform's provider sent acme's message: %v", got)
	}
	// Another merchant's transaction: the answer of one that does not exist.
	for _, pair := range [][2]string{
		{`{"session_id":"s-globex","channels":["sms"]}`, `{"session_id":"s-nowhere","channels":["sms"]}`},
		{`{"order_no":"2002","channels":["sms"]}`, `{"order_no":"3003","channels":["sms"]}`},
	} {
		codeA, bodyA := post(acmeKey, "", pair[0])
		codeB, bodyB := post(acmeKey, "", pair[1])
		bodyB = strings.NewReplacer("s-nowhere", "s-globex", "3003", "2002").Replace(bodyB)
		if codeA != http.StatusBadRequest || codeA != codeB || redactIDs(bodyA) != redactIDs(bodyB) {
			t.Errorf("another merchant's %s: %d %s; a missing one: %d %s", pair[0], codeA, bodyA, codeB, bodyB)
		}
	}
	if code, _ := post(acmeKey, "", `{"order_no":"1001","merchant_id":"globex","channels":["sms"]}`); code != http.StatusForbidden {
		t.Errorf("naming another merchant: %d, want 403", code)
	}

	// A template change reaches the next decision without a restart.
	start := time.Now()
	if code, out := cli("merchant", "put", "-config", cfgPath, "-file", acme("v2")); code != 0 {
		t.Fatalf("merchant put v2: %d %s", code, out)
	}
	published := time.Since(start)
	n := 0
	testkit.Until(t, 30*time.Second, func() error {
		n++
		id := fmt.Sprintf("after-change-%d", n)
		if code, body := post(acmeKey, id, `{"order_no":"1001","channels":["sms"]}`); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		if got := peer.took("/acme/sms", "acme:"+id); len(got) != 1 || !strings.HasPrefix(fmt.Sprint(got[0]["text"]), "ACME v2") {
			return fmt.Errorf("sent %v", got)
		}
		return nil
	})
	t.Logf("merchant put took %s; the change reached a decision %s after it started (%d request(s))", published.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond), n)

	// No secret on the topic in clear.
	raw := readTopicBytes(t, c.brokers, c.topics.MerchantSettings)
	for name, secret := range map[string]string{"receipt secret": receiptSecret, "sealing key": sealingKey} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the %s is on %s in clear", name, c.topics.MerchantSettings)
		}
	}
	if !bytes.Contains(raw, []byte(`"sealed":"v1:`)) {
		t.Errorf("no sealed secret on the topic: %s", raw)
	}
	if code, out := cli("merchant", "get", "-config", cfgPath, "acme"); code != 0 || !strings.Contains(out, "sealed (key ") || strings.Contains(out, receiptSecret) {
		t.Errorf("merchant get: %d %s", code, out)
	}
	if code, out := cli("merchant", "list", "-config", cfgPath); code != 0 || !strings.Contains(out, "acme") || !strings.Contains(out, "globex") {
		t.Errorf("merchant list: %d %s", code, out)
	}

	// A record that cannot apply is refused; acme's v2 stays.
	w := consumer.Conn{Brokers: c.brokers}.Writer()
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Topic: c.topics.MerchantSettings, Key: []byte("acme"), Value: []byte(`{"merchant_id":"acme","cooldwon":"1m"}`)}); err != nil {
		t.Fatal(err)
	}
	testkit.Until(t, 30*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, d := range c.dlq {
			if string(d.Key) == "acme" {
				return nil
			}
		}
		return fmt.Errorf("no dead letter of acme's refused settings")
	})
	if code, body := post(acmeKey, "after-refusal", `{"order_no":"1001","channels":["sms"]}`); code != http.StatusOK {
		t.Errorf("after a refused record: %d %s", code, body)
	} else if got := peer.took("/acme/sms", "acme:after-refusal"); len(got) != 1 || !strings.HasPrefix(fmt.Sprint(got[0]["text"]), "ACME v2") {
		t.Errorf("after a refused record sent %v, want acme's v2", got)
	}
	if body := httpGet(t, p.httpAddr, "/metrics"); !strings.Contains(body, `notifyd_merchant_settings_total{result="refused"} 1`) {
		t.Errorf("/metrics lacks the refusal")
	}

	// acme's receipts are verified with acme's own secret (the platform's
	// webhook provider takes none), and apply to acme's message.
	var msgID string
	c.mu.Lock()
	if len(c.results["acme:after-refusal"]) > 0 {
		var r struct {
			Channels []struct {
				ProviderMessageID string `json:"provider_message_id"`
			} `json:"channels"`
		}
		_ = json.Unmarshal(c.results["acme:after-refusal"][0].Value, &r)
		if len(r.Channels) == 1 {
			msgID = r.Channels[0].ProviderMessageID
		}
	}
	c.mu.Unlock()
	if msgID == "" {
		t.Fatal("no provider_message_id in acme's result")
	}
	apiBase := "http://" + apiAddr
	if code, err := webhookStatus(apiBase, receiptSecret, msgID, "delivered"); err != nil || code != http.StatusOK {
		t.Errorf("acme's receipt signed with acme's secret: %d %v", code, err)
	}
	if code, err := webhookStatus(apiBase, "not-acme-secret-"+strings.Repeat("x", 20), msgID, "delivered"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("a receipt with another secret: %d %v, want 401", code, err)
	}

	// Rotation: a new sealing key with the old one among the previous
	// keys; reseal; then the old key can go.
	newKey, _ := seal.NewKey()
	newKeyFile := filepath.Join(dir, "sealing-key-2")
	if err := os.WriteFile(newKeyFile, []byte(newKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	restart := func(merchants string) {
		t.Helper()
		p.stop()
		p = c.start(procOpts{name: p.name, dir: p.dir,
			api:          fmt.Sprintf(`{listen: %q, keys: [{name: ops, sha256: %q}]}`, apiAddr, opsSum),
			extra:        merchants,
			providers:    fmt.Sprintf("  sms: {kind: webhook, webhook: {url: %q}}", srv.URL+"/platform/sms"),
			waitForReady: true,
		})
	}
	restart(fmt.Sprintf("merchants: {sealing_key_file: %q, previous_sealing_keys: [{key_file: %q}]}\n", newKeyFile, keyFile))
	if code, out := cli("merchant", "reseal", "-config", cfgPath); code != 0 || !strings.Contains(out, "1 of 2 merchants sealed again") {
		t.Fatalf("merchant reseal: %d %s", code, out)
	}
	restart(fmt.Sprintf("merchants: {sealing_key_file: %q}\n", newKeyFile))
	if code, body := post(acmeKey, "after-rotation", `{"order_no":"1001","channels":["sms"]}`); code != http.StatusOK {
		t.Errorf("after the rotation: %d %s", code, body)
	} else if got := peer.took("/acme/sms", "acme:after-rotation"); len(got) != 1 || !strings.HasPrefix(fmt.Sprint(got[0]["text"]), "ACME v2") {
		t.Errorf("after the rotation sent %v, want through acme's provider", got)
	}
	if code, err := webhookStatus(apiBase, receiptSecret, msgID, "read"); err != nil || code != http.StatusOK {
		t.Errorf("acme's receipt after the rotation: %d %v", code, err)
	}

	// Removed: the merchant's key ends, and so does its callback.
	if code, out := cli("merchant", "delete", "-config", cfgPath, "acme"); code != 0 {
		t.Fatalf("merchant delete: %d %s", code, out)
	}
	testkit.Until(t, 30*time.Second, func() error {
		if code, _ := post(acmeKey, "", `{"order_no":"1001","channels":["sms"]}`); code != http.StatusUnauthorized {
			return fmt.Errorf("acme's key answered %d after its merchant was removed", code)
		}
		return nil
	})
	if code, err := webhookStatus(apiBase, receiptSecret, msgID, "read"); err != nil || code != http.StatusNotFound {
		t.Errorf("a webhook receipt with no provider taking them: %d %v, want 404", code, err)
	}
}

// redactIDs drops what differs between two answers of the same kind: the
// result's ids and times.
func redactIDs(body string) string {
	var v map[string]any
	if json.Unmarshal([]byte(body), &v) != nil {
		return body
	}
	if r, ok := v["result"].(map[string]any); ok {
		for _, k := range []string{"result_id", "command_id", "processed_at", "requested_at", "detail"} {
			delete(r, k)
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// readTopicBytes returns every key and value of topic, concatenated.
func readTopicBytes(t *testing.T, brokers []string, topic string) []byte {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := consumer.ReadAll(ctx, consumer.Conn{Brokers: brokers}, topic, func(_ int, batch []kafka.Message) error {
		for _, m := range batch {
			out.Write(m.Key)
			out.Write(m.Value)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
