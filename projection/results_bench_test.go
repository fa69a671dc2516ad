package projection

import (
	"fmt"
	"testing"
)

// BenchmarkApplyResults applies delivery results of 10 merchants, two
// channels each, in batches of 500, as the results follower does: the
// idempotency table, the history index and the counts.
func BenchmarkApplyResults(b *testing.B) {
	s, err := Open(b.TempDir(), Options{EventsTopic: "payment-events", ResultsTopic: "notification-results"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const batch = 500
	values := make([][]byte, batch)
	var off int64
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		for j := range values {
			n := i*batch + j
			values[j] = merchantResult(fmt.Sprintf("m%d", n%10), fmt.Sprintf("c%d", n), n/1000,
				"sms:sent::twilio", "email:failed:provider_unavailable:smtp")
		}
		rs := make([]Record, batch)
		for j, v := range values {
			rs[j] = Record{Offset: off, Value: v}
			off++
		}
		b.StartTimer()
		if _, err := s.ApplyResults(0, rs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "results/s")
}
