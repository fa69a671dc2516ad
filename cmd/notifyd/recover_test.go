package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"

	"github.com/notifyd/notifyd/internal/testkit"
)

// TestRecoverCommand: after an SMS outage, `notifyd recover` plans one
// command per transaction whose SMS failed (the console's command_ids),
// -dry-run publishes nothing, a run sends each customer one SMS, and a
// second run (the same filter) sends none again.
func TestRecoverCommand(t *testing.T) {
	peer := &providerPeer{took: map[string]int{}}
	srv := httptest.NewServer(peer)
	defer srv.Close()
	dir := t.TempDir()
	broker, httpAddr := freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "notifyd.yaml")
	cfg := fmt.Sprintf(`embedded_broker: {listen: %q}
store: {dir: %q}
http: {listen: %q}
log: {level: warn}
providers:
  sms: {kind: webhook, webhook: {url: %q}, retry: {max_attempts: 1}}
templates:
  sms:
    paid: {en: {text: "Paid {{.Amount}}"}}
`, broker, filepath.Join(dir, "data"), httpAddr, srv.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	serveForTest(t, httpAddr, "-config", cfgPath)
	ctx := t.Context()
	var events strings.Builder
	for i := range 3 {
		fmt.Fprintf(&events, `{"event_id":"e%d","session_id":"s%d","order_no":"o%d","state":"paid","timestamp_utc":"2026-11-02T09:00:00Z","amount":"1.000","currency_code":"KWD","customer_phone":"+96550001234","notifications":{"sms":[]}}`+"\n", i, i, i)
	}
	run1 := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(ctx, args, strings.NewReader(events.String()), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	if code, _, e := run1("publish", "-config", cfgPath, "-topic", "payment-events"); code != 0 {
		t.Fatal(e)
	}
	since := time.Now().UTC().Truncate(time.Minute)
	peer.down.Store("sms", true)
	for i := range 3 {
		if code, out, _ := run1("resend", "-config", cfgPath, "-session-id", fmt.Sprintf("s%d", i), "-channels", "sms"); code != 1 || !strings.Contains(out, "provider_unavailable") {
			t.Fatalf("resend during the outage: %d %s", code, out)
		}
	}
	peer.down.Store("sms", false)
	until := since.Add(time.Hour)
	args := []string{"recover", "-config", cfgPath, "-channel", "sms", "-reason", "provider_unavailable",
		"-since", since.Format("2006-01-02T15:04"), "-until", until.Format("2006-01-02T15:04")}

	code, out, e := run1(append(args, "-dry-run")...)
	if code != 0 || !strings.Contains(e, "3 command(s) for 3 channel(s)") {
		t.Fatalf("dry run: %d %s %s", code, out, e)
	}
	var planned []schemas.ResendCommand
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var c schemas.ResendCommand
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("plan line %q: %v", line, err)
		}
		planned = append(planned, c)
		if !strings.HasPrefix(c.CommandID, "recover-"+c.SessionID+"-") || c.RequestedBy != "notifyd-cli" {
			t.Errorf("command %+v", c)
		}
	}
	if keys, _ := peer.count("sms/"); len(planned) != 3 || keys != 0 {
		t.Fatalf("dry run planned %d, sent %d", len(planned), keys)
	}
	for range 2 { // run twice: the second sends nothing new
		if code, _, e := run1(args...); code != 0 {
			t.Fatalf("recover: %d %s", code, e)
		}
	}
	testkit.Eventually(t, "three SMS at the peer", 30*time.Second, func() bool { keys, _ := peer.count("sms/"); return keys >= 3 })
	// Each planned command decided once: one SMS per customer.
	for _, c := range planned {
		if code, out, _ := run1("resend", "-config", cfgPath, "-session-id", c.SessionID, "-channels", "sms", "-command-id", c.CommandID); code != 0 || !strings.Contains(out, `"outcome":"notified"`) {
			t.Errorf("%s: %d %s", c.CommandID, code, out)
		}
	}
	if keys, calls := peer.count("sms/"); keys != 3 || calls != 3 {
		t.Errorf("%d commands sent %d SMS, want one per customer", keys, calls)
	}
}
