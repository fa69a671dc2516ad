package consumer

import (
	"context"
	"time"
)

// backoff paces a loop that retries in place: each wait doubles from
// first up to max. The zero value waits 200 ms, doubling up to 10 s.
type backoff struct {
	first, max time.Duration
	next       time.Duration
}

// wait sleeps for the next interval, or until ctx ends (its cause).
func (b *backoff) wait(ctx context.Context) error {
	if b.first <= 0 {
		b.first = 200 * time.Millisecond
	}
	if b.max <= 0 {
		b.max = 10 * time.Second
	}
	if b.next == 0 {
		b.next = b.first
	}
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.max)
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
