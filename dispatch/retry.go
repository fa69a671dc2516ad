package dispatch

import (
	"errors"
	"time"

	"github.com/notifyd/notifyd/internal/backoff"
)

// Default retry policy values.
const (
	DefaultMaxAttempts    = 5
	DefaultInitialBackoff = 500 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultMaxElapsed     = 2 * time.Minute
	DefaultAttemptTimeout = 10 * time.Second
)

// RetryPolicy says how often and how long a channel's provider is retried
// after transient errors. The wait before attempt n+1 is drawn uniformly
// from [0, min(MaxBackoff, InitialBackoff*2^(n-1))] (exponential backoff with
// full jitter), raised to the provider's ProviderError.RetryAfter when that
// is longer. Sending gives up when MaxAttempts calls have been made, or when
// the next wait would end beyond MaxElapsed since the first attempt began;
// each attempt is bounded by AttemptTimeout and by what is left of
// MaxElapsed.
type RetryPolicy struct {
	MaxAttempts    int           `yaml:"max_attempts"`    // default 5
	InitialBackoff time.Duration `yaml:"initial_backoff"` // default 500ms
	MaxBackoff     time.Duration `yaml:"max_backoff"`     // default 30s
	MaxElapsed     time.Duration `yaml:"max_elapsed"`     // default 2m
	AttemptTimeout time.Duration `yaml:"attempt_timeout"` // default 10s
}

// SetDefaults fills the zero fields of p with the defaults.
func (p *RetryPolicy) SetDefaults() {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.InitialBackoff == 0 {
		p.InitialBackoff = DefaultInitialBackoff
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	if p.MaxElapsed == 0 {
		p.MaxElapsed = DefaultMaxElapsed
	}
	if p.AttemptTimeout == 0 {
		p.AttemptTimeout = DefaultAttemptTimeout
	}
}

// Validate reports the first bad field of p by its config name, e.g.
// "max_attempts: must be >= 1".
func (p RetryPolicy) Validate() error {
	switch {
	case p.MaxAttempts < 1:
		return errors.New("max_attempts: must be >= 1")
	case p.InitialBackoff <= 0:
		return errors.New("initial_backoff: must be > 0")
	case p.MaxBackoff <= 0:
		return errors.New("max_backoff: must be > 0")
	case p.MaxBackoff < p.InitialBackoff:
		return errors.New("max_backoff: must be >= initial_backoff")
	case p.MaxBackoff > 24*time.Hour:
		return errors.New("max_backoff: must be at most 24h")
	case p.MaxElapsed <= 0:
		return errors.New("max_elapsed: must be > 0")
	case p.MaxElapsed > 24*time.Hour:
		return errors.New("max_elapsed: must be at most 24h")
	case p.AttemptTimeout <= 0:
		return errors.New("attempt_timeout: must be > 0")
	}
	return nil
}

// backoff returns the jittered wait after attempt n (1-based): the one
// backoff of notifyd (internal/backoff).
func (p RetryPolicy) backoff(n int) time.Duration {
	return backoff.Jitter(backoff.Ceiling(p.InitialBackoff, p.MaxBackoff, n))
}
