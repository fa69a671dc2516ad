package wmkafka

import (
	"context"
	"testing"
	"time"
)

// TestFetchErrorsRateLimitsTheLog: failures are logged at most every 5 s
// with the count of those left out, the first after a success at once, and
// the pause ends early when the context does.
func TestFetchErrorsRateLimitsTheLog(t *testing.T) {
	var f FetchErrors
	var logged []int
	log := func(n int) { logged = append(logged, n) }
	t0 := time.Unix(1000, 0)
	for _, at := range []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 6 * time.Second} {
		if !f.Failed(context.Background(), t0.Add(at), log) {
			t.Fatal("Failed returned false with a live context")
		}
	}
	if want := []int{0, 3}; len(logged) != 2 || logged[0] != want[0] || logged[1] != want[1] {
		t.Errorf("logged %v, want %v (the first failure, then the one at 5 s with 3 left out)", logged, want)
	}
	f.Succeeded()
	f.Failed(context.Background(), t0.Add(7*time.Second), log)
	if len(logged) != 3 || logged[2] != 0 {
		t.Errorf("first failure after a success not logged at once: %v", logged)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if f.Failed(ctx, t0.Add(8*time.Second), log) {
		t.Error("Failed returned true with an ended context")
	}
}
