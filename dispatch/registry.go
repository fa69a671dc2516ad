package dispatch

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/notifyd/notifyd/schemas"
)

// ProviderConfig is one provider block (providers.<channel>, or one of a
// chain): its kind, the block named like the kind, and the policies every
// kind has. It is a plain value: a provider can be built from one at run
// time (Registry.Build), from a configuration file or from anywhere else.
type ProviderConfig struct {
	// Kind selects the provider: one of the Registry's kinds (console or
	// webhook on any channel; smtp for email, twilio for sms, meta for
	// whatsapp). The block named like the kind configures it.
	Kind    string        `yaml:"kind"`
	Console ConsoleConfig `yaml:"console"`
	Webhook WebhookConfig `yaml:"webhook"`
	SMTP    SMTPConfig    `yaml:"smtp"`
	Twilio  TwilioConfig  `yaml:"twilio"`
	Meta    MetaConfig    `yaml:"meta"`
	Retry   RetryPolicy   `yaml:"retry"`
	// RateLimit bounds the provider's calls (token bucket); unset: none.
	RateLimit RateLimit `yaml:"rate_limit"`
	// CircuitBreaker stops calling a failing provider for a while, so
	// that the channel fails over at once.
	CircuitBreaker BreakerPolicy `yaml:"circuit_breaker"`
}

// ConsoleConfig is providers.<channel>.console. The console provider prints
// each rendered message (recipient masked) to standard output.
type ConsoleConfig struct{}

// Env is what providers are built with besides their blocks.
type Env struct {
	// Console is where console providers print.
	Console io.Writer
	// PublicURL is api.public_url: providers whose receipts come back ask
	// for them at PublicURL + CallbackPrefix + their kind, unless their
	// block names another address.
	PublicURL string
	// UserAgent is the User-Agent the HTTP providers (twilio, meta,
	// webhook) send, such as notifyd/v1.2.3; empty: Go's default.
	UserAgent string
}

// httpClient is the client the HTTP providers built in e start from (see
// providerClient): one that sends e.UserAgent, or nil (the default
// client) when there is none.
func (e Env) httpClient() *http.Client {
	if e.UserAgent == "" {
		return nil
	}
	return &http.Client{Transport: userAgent{ua: e.UserAgent, next: http.DefaultTransport}}
}

// userAgent sets the User-Agent of every request it carries.
type userAgent struct {
	ua   string
	next http.RoundTripper
}

// RoundTrip sends r, a copy of it, with the User-Agent set.
func (u userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", u.ua)
	return u.next.RoundTrip(r)
}

// CallbackPrefix is where providers post their receipts:
// CallbackPrefix + the kind's name (/callbacks/twilio).
const CallbackPrefix = "/callbacks/"

// Kind is a provider kind: its name, the channels it can send on, the
// check of its block, its constructor, and, where its providers' receipts
// come back, the verifier of its callback.
type Kind struct {
	// Name is the kind's name in configuration (kind: twilio) and in its
	// callback's path.
	Name string
	// Channels are the channels it can send on.
	Channels []schemas.Channel
	// Validate checks the kind's block of p; its error starts with the key
	// below the block (account_sid: required). nil: nothing to check.
	Validate func(p ProviderConfig) error
	// New builds a provider from a block Validate accepted.
	New func(p ProviderConfig, env Env) (Provider, error)
	// Receipts, for a kind whose providers post delivery receipts, builds
	// the verifier of its callback from the blocks of every configured
	// provider of the kind; it returns nil when none of them can be
	// verified (no secret configured: the callback is not served).
	Receipts func(blocks []ProviderConfig) ReceiptVerifier
	// Handshakes says the kind's verifiers answer a subscription
	// handshake (Handshaker).
	Handshakes bool
}

// Registry holds the provider kinds: the one home of what a kind is, so
// that adding one is one file here and one Register call, and neither the
// configuration (cmd) nor the callbacks (api) switch on kinds.
type Registry struct {
	kinds []Kind
}

// NewRegistry returns a registry of the built-in kinds: console, webhook,
// smtp, twilio and meta.
func NewRegistry() *Registry {
	r := &Registry{}
	for _, k := range []Kind{consoleKind(), webhookKind(), smtpKind(), twilioKind(), metaKind()} {
		if err := r.Register(k); err != nil {
			panic(err) // the built-ins are distinct and complete
		}
	}
	return r
}

// Register adds a kind; its name must be new and it must have New and a
// channel.
func (r *Registry) Register(k Kind) error {
	switch {
	case k.Name == "" || k.New == nil || len(k.Channels) == 0:
		return errors.New("dispatch: a provider kind needs a name, a channel and New")
	case slices.ContainsFunc(r.kinds, func(o Kind) bool { return o.Name == k.Name }):
		return fmt.Errorf("dispatch: provider kind %q registered twice", k.Name)
	}
	r.kinds = append(r.kinds, k)
	return nil
}

// Kinds lists the names of the kinds that can send on ch, in the order
// they were registered.
func (r *Registry) Kinds(ch schemas.Channel) []string {
	var out []string
	for _, k := range r.kinds {
		if slices.Contains(k.Channels, ch) {
			out = append(out, k.Name)
		}
	}
	return out
}

func (r *Registry) kind(name string) (Kind, bool) {
	i := slices.IndexFunc(r.kinds, func(k Kind) bool { return k.Name == name })
	if i < 0 {
		return Kind{}, false
	}
	return r.kinds[i], true
}

// Validate checks p for ch: its kind, then its block; the error starts
// with the key below providers.<channel> (kind: ..., twilio.from: ...).
func (r *Registry) Validate(ch schemas.Channel, p ProviderConfig) error {
	kinds := r.Kinds(ch)
	want := strings.Join(kinds, ", ")
	if p.Kind == "" {
		return fmt.Errorf("kind: is required (%s)", want)
	}
	if !slices.Contains(kinds, p.Kind) {
		return fmt.Errorf("kind: %q is not a provider for %s (want %s)", p.Kind, ch, want)
	}
	if k, _ := r.kind(p.Kind); k.Validate != nil {
		if err := k.Validate(p); err != nil {
			return fmt.Errorf("%s.%w", p.Kind, err)
		}
	}
	return nil
}

// Build builds the route of p: its provider and its policies.
func (r *Registry) Build(p ProviderConfig, env Env) (Route, error) {
	k, ok := r.kind(p.Kind)
	if !ok {
		return Route{}, fmt.Errorf("kind: unknown kind %q", p.Kind)
	}
	provider, err := k.New(p, env)
	if err != nil {
		return Route{}, err
	}
	return Route{Provider: provider, Retry: p.Retry, RateLimit: p.RateLimit, Breaker: p.CircuitBreaker}, nil
}

// Receipts returns the verifiers of the callbacks of blocks (every
// configured provider), by kind name: one for each kind with receipts and
// a provider configured to have them verified.
func (r *Registry) Receipts(blocks []ProviderConfig) map[string]ReceiptVerifier {
	out := map[string]ReceiptVerifier{}
	for _, k := range r.kinds {
		if k.Receipts == nil {
			continue
		}
		var mine []ProviderConfig
		for _, p := range blocks {
			if p.Kind == k.Name {
				mine = append(mine, p)
			}
		}
		if v := k.Receipts(mine); v != nil {
			out[k.Name] = v
		}
	}
	return out
}
