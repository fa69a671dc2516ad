package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestCeiling: the ceiling doubles from first and stops at max.
func TestCeiling(t *testing.T) {
	for _, tc := range []struct {
		first, max time.Duration
		n          int
		want       time.Duration
	}{
		{time.Second, 30 * time.Second, 1, time.Second},
		{time.Second, 30 * time.Second, 2, 2 * time.Second},
		{time.Second, 30 * time.Second, 5, 16 * time.Second},
		{time.Second, 30 * time.Second, 6, 30 * time.Second},
		{time.Second, 30 * time.Second, 1000, 30 * time.Second},
		{3 * time.Second, 2 * time.Second, 1, 2 * time.Second},
	} {
		if got := Ceiling(tc.first, tc.max, tc.n); got != tc.want {
			t.Errorf("Ceiling(%s, %s, %d) = %s, want %s", tc.first, tc.max, tc.n, got, tc.want)
		}
	}
}

// TestNext: every wait is within its ceiling, ceilings double from First
// to Max, the waits are jittered (not all at the ceiling), and Reset
// starts over; the zero value starts at 200 ms and stops at 10 s.
func TestNext(t *testing.T) {
	b := Backoff{First: 100 * time.Millisecond, Max: 500 * time.Millisecond}
	wantCeilings := []time.Duration{100, 200, 400, 500, 500}
	for i, want := range wantCeilings {
		wait, ceiling := b.Next()
		if ceiling != want*time.Millisecond || wait < 0 || wait > ceiling {
			t.Errorf("retry %d: wait %s ceiling %s, want ceiling %s", i+1, wait, ceiling, want*time.Millisecond)
		}
	}
	b.Reset()
	if _, ceiling := b.Next(); ceiling != 100*time.Millisecond {
		t.Errorf("after Reset: ceiling %s", ceiling)
	}
	var zero Backoff
	if _, ceiling := zero.Next(); ceiling != 200*time.Millisecond {
		t.Errorf("zero value: first ceiling %s", ceiling)
	}
	for range 10 {
		zero.Next()
	}
	if _, ceiling := zero.Next(); ceiling != 10*time.Second {
		t.Errorf("zero value: ceiling %s, want 10s", ceiling)
	}
	atCeiling := 0
	for range 100 {
		b := Backoff{First: time.Hour, Max: time.Hour}
		if wait, ceiling := b.Next(); wait == ceiling {
			atCeiling++
		}
	}
	if atCeiling == 100 {
		t.Error("no jitter: every wait is its ceiling")
	}
	if Jitter(0) != 0 || Jitter(-time.Second) != 0 {
		t.Error("Jitter of a ceiling <= 0 is not 0")
	}
}

// TestSleep: Sleep returns after d, or with the context's cause when it
// ends first (at once for d <= 0).
func TestSleep(t *testing.T) {
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Errorf("Sleep: %v", err)
	}
	if err := Sleep(context.Background(), 0); err != nil {
		t.Errorf("Sleep(0): %v", err)
	}
	cause := errors.New("stopping")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	if err := Sleep(ctx, time.Hour); !errors.Is(err, cause) {
		t.Errorf("Sleep on an ended context: %v", err)
	}
	for range 100 { // a zero timer raced with ctx would return nil sometimes
		if err := Sleep(ctx, 0); !errors.Is(err, cause) {
			t.Fatalf("Sleep(0) on an ended context: %v", err)
		}
	}
	plain, stop := context.WithCancel(context.Background())
	stop()
	if err := Sleep(plain, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep on a canceled context: %v", err)
	}
	b := Backoff{First: time.Hour}
	if err := b.Wait(ctx); !errors.Is(err, cause) {
		t.Errorf("Wait on an ended context: %v", err)
	}
}
