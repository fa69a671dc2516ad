package wmkafka

import (
	"context"
	"time"
)

// FetchErrors paces a loop around a kafka-go Reader's FetchMessage when it
// returns errors. The Reader retries by itself, backing off between its own
// attempts (ReadBackoffMin to ReadBackoffMax, 100 ms to 1 s by default), and
// queues every failure for FetchMessage in the channel that carries the
// messages (up to QueueCapacity). A caller that also sleeps for long between
// calls falls behind that queue: after an outage it reads stale errors long
// after the cause has gone (a 30 s broker outage, with a pause growing to
// 5 s, left two minutes of queued "connection refused" behind it, and the
// partition followed nothing meanwhile). So the pause is short, and the
// logging is rate-limited instead. The zero value is ready; one per loop.
type FetchErrors struct {
	last       time.Time
	suppressed int
}

// Pause between two failed fetches, and the least time between two logged
// failures.
const (
	fetchErrorPause    = 50 * time.Millisecond
	fetchErrorLogEvery = 5 * time.Second
)

// Failed records a failed fetch: it calls log with the number of failures
// not logged since the last call to log (at most one call per 5 s), then
// waits 50 ms. It returns false when ctx ended meanwhile.
func (f *FetchErrors) Failed(ctx context.Context, now time.Time, log func(suppressed int)) bool {
	if f.last.IsZero() || now.Sub(f.last) >= fetchErrorLogEvery {
		log(f.suppressed)
		f.last, f.suppressed = now, 0
	} else {
		f.suppressed++
	}
	t := time.NewTimer(fetchErrorPause)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Succeeded resets the log's rate limit, so that the next failure after a
// success is logged at once.
func (f *FetchErrors) Succeeded() { f.last, f.suppressed = time.Time{}, 0 }
