package schemas

import (
	"encoding/json"
	"strings"
	"testing"
)

// benchEvent is a payment event of about 1 KB, like the rebuild
// benchmark's.
var benchEvent = []byte(`{"event_id":"e-42","session_id":"sess-000000042","order_no":"o-000000042","state":"paid","version":1,"timestamp_utc":"2026-11-02T09:00:07Z","amount":"12.500","currency_code":"KWD","customer_email":"c42@example.com","customer_phone":"+96550001234","customer_first_name":"Layla","customer_last_name":"Al-Sabah","language":"ar","notifications":{"email":[],"sms":["paid"],"whatsapp":["paid"]},"merchant_reference":"` +
	strings.Repeat("x", 560) + `"}`)

// BenchmarkDecodePaymentEvent decodes and validates a 1 KB payment event,
// beside, in the same run, the scan that checks its syntax (validJSON)
// and json.Valid over the same bytes, which the decoder used before.
// Compare the ns/op.
func BenchmarkDecodePaymentEvent(b *testing.B) {
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(benchEvent)))
		for b.Loop() {
			if _, err := DecodePaymentEvent(benchEvent); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("validJSON", func(b *testing.B) {
		b.SetBytes(int64(len(benchEvent)))
		for b.Loop() {
			if !validJSON(benchEvent) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(benchEvent)))
		for b.Loop() {
			if !json.Valid(benchEvent) {
				b.Fatal("invalid")
			}
		}
	})
}
