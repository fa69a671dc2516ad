package projection

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/notifyd/notifyd/schemas"
)

// snapshotCases are payment events as the projection receives them: every
// payment-event example, and the shapes the examples lack.
func snapshotCases(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "schemas", "examples", "payment-event.*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("examples: %v (%d files)", err, len(files))
	}
	cases := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cases[filepath.Base(f)] = b
	}
	for name, raw := range map[string]string{
		"amount number, every channel": `{"event_id":"e1","session_id":"s1","order_no":"o1","state":"paid","version":7,"timestamp_utc":"2026-11-02T09:00:07.123456789+03:00","amount":12.5,"currency_code":"KWD","customer_email":"a@x.com","customer_phone":"+96550001234","customer_first_name":"ليلى","customer_last_name":"Al-Sabah","language":"ar","notifications":{"email":[],"sms":["paid","failed"],"whatsapp":["paid"],"pigeon":["paid"]}}`,
		"empty notifications":          `{"event_id":"e2","session_id":"s2","state":"created","timestamp_utc":"0001-01-01T00:00:00Z","notifications":{}}`,
		"no notifications":             `{"event_id":"e3","session_id":"s3","state":"expired","timestamp_utc":"9998-12-31 23:59:59"}`,
	} {
		cases[name] = []byte(raw)
	}
	return cases
}

func TestSnapshotRoundTrip(t *testing.T) {
	for name, raw := range snapshotCases(t) {
		t.Run(name, func(t *testing.T) {
			ev, err := schemas.DecodePaymentEvent(raw)
			if err != nil {
				t.Fatalf("not a valid payment event: %v", err)
			}
			snap, err := encodeSnapshot(&ev)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeSnapshot(snap)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, ev) {
				t.Errorf("round trip:\n got  %#v\n want %#v", got, ev)
			}
			again, _ := encodeSnapshot(&got)
			if string(again) != string(snap) {
				t.Error("the same event encodes differently twice")
			}
			if len(snap) >= len(raw) {
				t.Errorf("snapshot %d bytes, the event %d", len(snap), len(raw))
			}
			// Every truncation and a trailing byte are errors, not panics.
			for n := range len(snap) {
				if _, err := decodeSnapshot(snap[:n]); err == nil {
					t.Fatalf("truncated to %d of %d bytes: no error", n, len(snap))
				}
			}
			if _, err := decodeSnapshot(append(snap, 0)); err == nil {
				t.Error("trailing byte: no error")
			}
		})
	}
}
