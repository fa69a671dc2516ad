package dispatch

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sony/gobreaker"
)

// Route is one provider of a channel: the provider with its own retry
// policy, rate limit and circuit breaker. A channel's routes are tried in
// order (failover): the next one is used when a route ends
// provider_unavailable (its retries used up), its circuit is open, or it
// rejected the message for a fault of the account or sender (AccountFault),
// never when it rejected the recipient or the content: a second provider
// would reject an invalid number too, and an answer that may mean the
// message went out must not make it go out twice.
type Route struct {
	Provider Provider
	// Retry is the route's retry policy; zero fields take the defaults.
	Retry RetryPolicy
	// RateLimit bounds the route's provider calls; zero: none.
	RateLimit RateLimit
	// Breaker is the route's circuit breaker; zero fields take the
	// defaults.
	Breaker BreakerPolicy
}

// BreakerPolicy configures the circuit breaker of a route
// (providers.<channel>.circuit_breaker). Every provider call counts: a
// success, a rejection of the recipient or content (the provider works),
// or a failure (a transient error, or an AccountFault). The circuit opens
// when, within Window, at least MinCalls calls were made and at least
// FailureRatio of them failed; while open no call is made (the channel
// fails over at once); after CoolOff one call is let through (half-open):
// its success closes the circuit, its failure opens it again.
type BreakerPolicy struct {
	// FailureRatio is the share of failed calls that opens the circuit,
	// in (0, 1] (failure_ratio, default 0.5).
	FailureRatio float64 `yaml:"failure_ratio"`
	// MinCalls is how many calls in the window it takes before the ratio
	// counts (min_calls, default 10).
	MinCalls int `yaml:"min_calls"`
	// Window is the period after which a closed circuit's counts restart
	// (window, default 60s).
	Window time.Duration `yaml:"window"`
	// CoolOff is how long the circuit stays open before a trial call
	// (cool_off, default 30s).
	CoolOff time.Duration `yaml:"cool_off"`
	// Disabled turns the breaker off: every call is made (disabled,
	// default false).
	Disabled bool `yaml:"disabled"`
}

// SetDefaults fills the zero fields of p with the defaults.
func (p *BreakerPolicy) SetDefaults() {
	if p.FailureRatio == 0 {
		p.FailureRatio = 0.5
	}
	if p.MinCalls == 0 {
		p.MinCalls = 10
	}
	if p.Window == 0 {
		p.Window = time.Minute
	}
	if p.CoolOff == 0 {
		p.CoolOff = 30 * time.Second
	}
}

// Validate checks a defaulted policy; errors name the key.
func (p BreakerPolicy) Validate() error {
	switch {
	case !(p.FailureRatio > 0 && p.FailureRatio <= 1):
		return fmt.Errorf("failure_ratio: must be in (0, 1], got %v", p.FailureRatio)
	case p.MinCalls < 1:
		return fmt.Errorf("min_calls: must be >= 1, got %d", p.MinCalls)
	case p.Window <= 0:
		return fmt.Errorf("window: must be positive, got %s", p.Window)
	case p.CoolOff <= 0:
		return fmt.Errorf("cool_off: must be positive, got %s", p.CoolOff)
	}
	return nil
}

// breaker is a route's circuit breaker; nil lets every call through.
type breaker struct {
	cb *gobreaker.TwoStepCircuitBreaker
}

// newBreaker builds the breaker of a defaulted policy; onChange is told
// every state change.
func newBreaker(name string, p BreakerPolicy, onChange func(gobreaker.State)) *breaker {
	if p.Disabled {
		return nil
	}
	return &breaker{cb: gobreaker.NewTwoStepCircuitBreaker(gobreaker.Settings{
		Name:        name,
		MaxRequests: 1,
		Interval:    p.Window,
		Timeout:     p.CoolOff,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return int(c.Requests) >= p.MinCalls && float64(c.TotalFailures) >= p.FailureRatio*float64(c.Requests)
		},
		OnStateChange: func(_ string, _, to gobreaker.State) { onChange(to) },
	})}
}

// errCircuitOpen is a call the breaker did not let through.
var errCircuitOpen = errors.New("circuit open")

// allow asks for one call; done reports its outcome (a failure: a
// transient error or an account fault).
func (b *breaker) allow() (done func(failed bool), err error) {
	if b == nil {
		return func(bool) {}, nil
	}
	report, err := b.cb.Allow()
	if err != nil {
		return nil, errCircuitOpen
	}
	return func(failed bool) { report(!failed) }, nil
}

// state is the breaker's state (closed when there is none).
func (b *breaker) state() gobreaker.State {
	if b == nil {
		return gobreaker.StateClosed
	}
	return b.cb.State()
}

// AccountFault returns a permanent *ProviderError that blames the
// provider account, its credentials or its sender rather than the
// recipient or the content: the channel fails over to its next provider.
func AccountFault(detail string, err error) error {
	return &ProviderError{Permanent: true, Account: true, Detail: detail, Err: err}
}

// IsAccountFault reports whether err is, or wraps, a *ProviderError with
// Account set.
func IsAccountFault(err error) bool {
	var pe *ProviderError
	return errors.As(err, &pe) && pe.Account
}

// Account faults by provider: the permanent answers that fail over. They
// are written once here and used by the providers' classifiers.
var (
	// twilioAccountCodes are Twilio error codes that blame the account or
	// the sender: 20003 authentication failed, 20005 account not active,
	// 20404 resource (account) not found, 21212 invalid From, 21606 From
	// cannot send this message, 21608 unverified number (trial account),
	// 21659 From is not a Twilio number, 21660 From does not belong to
	// the account, 30002 account suspended. Besides, HTTP 401 and 403.
	twilioAccountCodes = map[int]bool{20003: true, 20005: true, 20404: true, 21212: true, 21606: true, 21608: true,
		21659: true, 21660: true, 30002: true}
	// metaAccountCodes are Cloud API error codes that blame the business
	// account or the app: 0 and 190 access token, 3 capability, 10 and
	// 200 permission, 368 blocked for policy violations, 131005 access
	// denied, 131031 account locked, 131042 payment eligibility, 132001
	// template does not exist (for this account), 133010 phone number not
	// registered. Besides, HTTP 401 and 403.
	metaAccountCodes = map[int]bool{0: true, 190: true, 3: true, 10: true, 200: true, 368: true, 131005: true,
		131031: true, 131042: true, 132001: true, 133010: true}
	// smtpAccountCodes are SMTP replies that blame the account: 530
	// authentication required, 534 mechanism too weak, 535 credentials
	// invalid, 538 encryption required; besides, a server that offers no
	// usable AUTH mechanism.
	smtpAccountCodes = map[int]bool{530: true, 534: true, 535: true, 538: true}
)

// httpAccountStatus reports whether an HTTP status blames the account or
// its configuration (401, 403, 407, and the redirects 301, 302, 303, 307
// and 308: providers never follow one, see providerClient, so a moved
// endpoint is a configuration to mend, and another provider may succeed):
// for the webhook kind, and for Twilio and Meta beside their codes. Any
// other 3xx is a plain permanent error.
func httpAccountStatus(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusProxyAuthRequired,
		http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// RouteNames are the names of a channel's routes as results give them
// (the provider field): see routeName.
func RouteNames(routes []Route) []string {
	out := make([]string, len(routes))
	for i := range routes {
		out[i] = routeName(routes, i)
	}
	return out
}

// routeName names route i of a channel's routes: the provider's name, with
// "#<n>" appended when an earlier route has the same name.
func routeName(routes []Route, i int) string {
	name := routes[i].Provider.Name()
	n := 1
	for _, r := range routes[:i] {
		if r.Provider.Name() == name {
			n++
		}
	}
	if n > 1 {
		return fmt.Sprintf("%s#%d", name, n)
	}
	return name
}
