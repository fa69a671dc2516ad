package consumer

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/notifyd/notifyd/projection"
)

// BenchmarkRecordResult: decisions recorded (synced) by 64 handlers at
// once, as processing.concurrency's sending slots do: the cost the
// command's round trip pays for the crash bound. BENCHMARKS.md compares it
// with the commit before the disk-full work (issue 22).
func BenchmarkRecordResult(b *testing.B) {
	s, err := projection.Open(b.TempDir(), projection.Options{EventsTopic: "e", ResultsTopic: "r"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	value := []byte(`{"result_id":"r","command_id":"c","session_id":"s","outcome":"notified","channels":[]}`)
	var n atomic.Int64
	b.SetParallelism(32) // 64 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.RecordResult(fmt.Sprintf("cmd-%d", n.Add(1)), value); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
