package projection

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// TestPlanRecovery: one command per transaction for its selected channels;
// the same failures give the same command_ids (confirming twice, or with
// another filter selecting them, sends each customer one message), a new
// failure another; command_ids stay valid.
func TestPlanRecovery(t *testing.T) {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	items := []AttentionItem{
		{SessionID: "s2", Channel: "sms", Reason: "provider_unavailable", CommandID: "c3", ProcessedAt: at(3)},
		{SessionID: "s1", Channel: "whatsapp", Reason: "provider_unavailable", CommandID: "c2", ProcessedAt: at(2)},
		{SessionID: "s1", Channel: "sms", Reason: "provider_unavailable", CommandID: "c1", ProcessedAt: at(1)},
		{SessionID: "s3", Channel: "email", Reason: "provider_rejected", CommandID: "c0", ProcessedAt: at(0)},
	}
	f := AttentionFilter{Reason: "provider_unavailable", Since: at(0), Until: at(10)}
	p := PlanRecovery(f, items, "console:ops", at(20))
	if p.Entries != 3 || len(p.Commands) != 2 {
		t.Fatalf("plan %v: %+v", p, p.Commands)
	}
	c := p.Commands
	if c[0].SessionID != "s2" || !slices.Equal(c[0].Channels, []schemas.Channel{"sms"}) ||
		c[1].SessionID != "s1" || !slices.Equal(c[1].Channels, []schemas.Channel{"sms", "whatsapp"}) {
		t.Errorf("commands %+v", c)
	}
	if !strings.HasPrefix(c[0].CommandID, "recover-s2-") || c[0].RequestedBy != "console:ops" {
		t.Errorf("command %+v", c[0])
	}
	if again := PlanRecovery(f, items, "cli", at(30)); again.BatchID != p.BatchID || again.Commands[1].CommandID != c[1].CommandID {
		t.Errorf("the same filter planned other command_ids: %v", again.Commands)
	}
	// Another filter selecting the same failures of s2: the same command.
	wider := AttentionFilter{Channel: "sms"}
	if w := PlanRecovery(wider, items, "other", at(40)); w.BatchID == p.BatchID || w.Commands[0].CommandID != c[0].CommandID {
		t.Errorf("another filter, same failures: %v vs %v", w.Commands[0].CommandID, c[0].CommandID)
	}
	// A new failure of s2's sms (the recovery failed too): a new command.
	later := append([]AttentionItem{{SessionID: "s2", Channel: "sms", Reason: "provider_unavailable", CommandID: c[0].CommandID, ProcessedAt: at(5)}}, items[1:]...)
	if l := PlanRecovery(f, later, "ops", at(50)); l.Commands[0].CommandID == c[0].CommandID {
		t.Error("a new failure got the old command_id")
	}
	other := f
	other.Until = at(11)
	if BatchID(other) == p.BatchID {
		t.Error("another window, the same batch")
	}
	// Every command decodes as a valid command.
	long := strings.Repeat("x", 128)
	for _, sid := range []string{"s1", long, "tab\tin it"} {
		id := RecoveryCommandID(sid, items[:1])
		cmd := schemas.ResendCommand{CommandID: id, SessionID: "s", Channels: []schemas.Channel{"sms"}}
		raw, _ := json.Marshal(cmd)
		if _, err := schemas.DecodeCommand(raw); err != nil {
			t.Errorf("command_id for %q: %q: %v", sid, id, err)
		}
	}
}

// TestParseTime: a recovery's window is RFC 3339 (any zone, read as UTC),
// or a minute or second without a zone (UTC), as the console's
// datetime-local inputs and `notifyd recover` give it; anything else is
// refused.
func TestParseTime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // RFC 3339 in UTC; "" refused
	}{
		{"2026-11-02T09:00:00+03:00", "2026-11-02T06:00:00Z"},
		{"2026-11-02T09:00:00.5Z", "2026-11-02T09:00:00.5Z"},
		{"2026-11-02T09:00", "2026-11-02T09:00:00Z"},
		{"2026-11-02T09:00:07", "2026-11-02T09:00:07Z"},
		{"2026-11-02 09:00", "2026-11-02T09:00:00Z"},
		{"2026-11-02", ""},
		{"yesterday", ""},
		{"", ""},
	} {
		got, err := ParseTime(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParseTime(%q) = %v, want refused", tc.in, got)
		case tc.want != "" && (err != nil || got.Format(time.RFC3339Nano) != tc.want || got.Location() != time.UTC):
			t.Errorf("ParseTime(%q) = %v, %v, want %s", tc.in, got, err, tc.want)
		}
	}
}
