// Package backoff is notifyd's one backoff: exponential, with full jitter,
// capped, and context-aware. Every loop that retries in place (Kafka not
// reachable yet, a dead letter that cannot be written, the store refusing a
// batch, a provider failing) waits through it.
//
// The n-th wait (1-based) is drawn uniformly from [0, min(Max,
// First*2^(n-1))] ("full jitter", as AWS's architecture blog and Svix's
// retry schedule describe it): instances retrying against the same broker
// or provider spread out instead of retrying in step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff paces one retrying loop. Its zero value waits up to 200 ms, then
// doubling up to 10 s. It is not safe for concurrent use: one per loop.
type Backoff struct {
	// First is the ceiling of the first wait (default 200 ms).
	First time.Duration
	// Max caps every ceiling (default 10 s).
	Max time.Duration
	n   int
}

// Ceiling is the ceiling of the n-th wait (1-based): min(max,
// first*2^(n-1)).
func Ceiling(first, max time.Duration, n int) time.Duration {
	ceiling := first
	for i := 1; i < n && ceiling < max; i++ {
		ceiling *= 2
	}
	return min(ceiling, max)
}

// Jitter draws a wait uniformly from [0, ceiling].
func Jitter(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}

// Next returns the next wait and its ceiling, and counts the retry.
func (b *Backoff) Next() (wait, ceiling time.Duration) {
	first, max := b.First, b.Max
	if first <= 0 {
		first = 200 * time.Millisecond
	}
	if max <= 0 {
		max = 10 * time.Second
	}
	b.n++
	ceiling = Ceiling(first, max, b.n)
	return Jitter(ceiling), ceiling
}

// Reset starts over from the first wait (after a success).
func (b *Backoff) Reset() { b.n = 0 }

// Wait sleeps for the next wait, or until ctx ends (its cause).
func (b *Backoff) Wait(ctx context.Context) error {
	wait, _ := b.Next()
	return Sleep(ctx, wait)
}

// Sleep waits d, or until ctx ends (its cause); d <= 0 returns at once
// (ctx's cause if it has ended).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
