package dispatch

import (
	"errors"
	"math"

	"golang.org/x/time/rate"
)

// RateLimit is a token bucket: for one channel's provider
// (providers.<channel>.rate_limit), so notifyd never sends faster than the
// provider account allows, and for each HTTP API client
// (api.rate_limit). The zero value means no limit.
type RateLimit struct {
	// PerSecond is the sustained rate (calls, requests). 0: no limit.
	PerSecond float64 `yaml:"per_second"`
	// Burst is how many calls may go at once after a quiet period
	// (default: PerSecond rounded up, at least 1).
	Burst int `yaml:"burst"`
}

// Validate names the bad field.
func (r RateLimit) Validate() error {
	switch {
	case r.PerSecond < 0 || math.IsNaN(r.PerSecond) || math.IsInf(r.PerSecond, 0):
		return errors.New("per_second: must be a positive number (or 0 for no limit)")
	case r.Burst < 0:
		return errors.New("burst: must not be negative")
	case r.Burst > 0 && r.PerSecond == 0:
		return errors.New("burst: needs per_second")
	}
	return nil
}

// Limiter returns a new token bucket of this limit, nil when there is no
// limit.
func (r RateLimit) Limiter() *rate.Limiter {
	if r.PerSecond == 0 {
		return nil
	}
	burst := r.Burst
	if burst == 0 {
		burst = max(1, int(math.Ceil(r.PerSecond)))
	}
	return rate.NewLimiter(rate.Limit(r.PerSecond), burst)
}
