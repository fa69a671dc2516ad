package dispatch

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// profile is what a decision takes from the configuration: the platform's
// routes, templates and cooldown, or a merchant's over them. A decision
// takes one profile when it starts and keeps it to the end, so a change of
// settings applies to the decisions that start after it.
type profile struct {
	routes    map[schemas.Channel][]*route
	templates *Templates
	cooldown  time.Duration
}

// MerchantProfile is what a merchant's settings change in its decisions.
type MerchantProfile struct {
	// Providers are the merchant's own, by channel, in failover order; a
	// channel absent uses the platform's providers.
	Providers map[schemas.Channel][]ProviderConfig
	// Templates are the merchant's, over the platform's cell by cell
	// (<channel>.<state>.<language>): a cell absent is the platform's.
	Templates TemplateConfig
	// Cooldown replaces processing.cooldown when set.
	Cooldown *time.Duration
}

// MerchantConfig is what the Dispatcher needs to build merchants'
// providers and templates.
type MerchantConfig struct {
	// Kinds builds providers; nil: merchants may not name providers.
	Kinds *Registry
	// Env is the providers' environment (as the platform's).
	Env Env
}

// merchantEntry is one merchant's settings and, once a decision needed
// them, the profile built from them.
type merchantEntry struct {
	settings MerchantProfile
	once     sync.Once
	built    *profile
	err      error
}

// CheckMerchant builds what p names, as SetMerchant would at the
// merchant's first decision, and reports the first problem, naming its
// key (providers.sms[0].twilio.auth_token, templates.sms.paid.en): a
// provider that cannot be built, a template that does not parse. Nothing
// is kept or connected.
func (d *Dispatcher) CheckMerchant(merchantID string, p MerchantProfile) error {
	if p.Cooldown != nil && *p.Cooldown < 0 {
		return fmt.Errorf("cooldown: must not be negative, got %s", *p.Cooldown)
	}
	if _, err := d.buildProviders(p); err != nil {
		return err
	}
	// The merchant's own cells parse (parsed again at its first decision,
	// and laid over the platform's).
	if p.Templates != nil {
		if _, err := ParseTemplates(p.Templates); err != nil {
			return err
		}
	}
	return nil
}

// SetMerchant makes p merchantID's settings for the decisions that start
// from now on (one already deciding keeps what it started with). Its
// providers, their limiters and breakers are built at its first decision
// (CheckMerchant says beforehand whether they can be).
func (d *Dispatcher) SetMerchant(merchantID string, p MerchantProfile) {
	d.SetMerchants(map[string]*MerchantProfile{merchantID: &p})
}

// RemoveMerchant makes merchantID's decisions the platform's again.
func (d *Dispatcher) RemoveMerchant(merchantID string) {
	d.SetMerchants(map[string]*MerchantProfile{merchantID: nil})
}

// SetMerchants is SetMerchant (a nil profile: RemoveMerchant) for many
// merchants at once, in one change.
func (d *Dispatcher) SetMerchants(changes map[string]*MerchantProfile) {
	d.changeMerchants(func(m map[string]*merchantEntry) {
		for id, p := range changes {
			if p == nil {
				delete(m, id)
			} else {
				m[id] = &merchantEntry{settings: *p}
			}
		}
	})
}

// Merchants returns the ids of the merchants with settings, sorted.
func (d *Dispatcher) Merchants() []string {
	return slices.Sorted(maps.Keys(*d.merchants.Load()))
}

func (d *Dispatcher) changeMerchants(change func(map[string]*merchantEntry)) {
	d.merchantsMu.Lock()
	defer d.merchantsMu.Unlock()
	next := maps.Clone(*d.merchants.Load())
	change(next)
	d.merchants.Store(&next)
}

// profileFor returns the profile of a transaction's merchant: its own,
// built at its first use, or the platform's.
func (d *Dispatcher) profileFor(merchantID string) *profile {
	e, ok := (*d.merchants.Load())[merchantID]
	if !ok {
		return d.platform
	}
	e.once.Do(func() {
		e.built, e.err = d.build(merchantID, e.settings)
		if e.err != nil {
			// CheckMerchant passed when the settings were taken: only
			// a provider that cannot be built twice comes here.
			d.log.Error("merchant's providers could not be built: its channels use the platform's", "merchant_id", merchantID, "error", e.err)
		}
	})
	if e.built == nil {
		return d.platform
	}
	return e.built
}

// buildProviders builds a merchant's own providers, naming the key at
// fault.
func (d *Dispatcher) buildProviders(p MerchantProfile) (map[schemas.Channel][]Route, error) {
	if len(p.Providers) == 0 {
		return nil, nil
	}
	if d.merchantCfg.Kinds == nil {
		return nil, fmt.Errorf("providers: this deployment builds no merchant providers")
	}
	own := map[schemas.Channel][]Route{}
	for _, ch := range slices.Sorted(maps.Keys(p.Providers)) {
		chain := p.Providers[ch]
		if len(chain) == 0 {
			return nil, fmt.Errorf("providers.%s: want a provider block or a list of them", ch)
		}
		for i, pc := range chain {
			key := fmt.Sprintf("providers.%s[%d]", ch, i)
			if len(chain) == 1 {
				key = "providers." + string(ch)
			}
			if err := d.merchantCfg.Kinds.Validate(ch, pc); err != nil {
				return nil, fmt.Errorf("%s.%w", key, err)
			}
			r, err := d.merchantCfg.Kinds.Build(pc, d.merchantCfg.Env)
			if err != nil {
				return nil, fmt.Errorf("%s.%w", key, err)
			}
			own[ch] = append(own[ch], r)
		}
	}
	return own, nil
}

// build makes a merchant's profile: its providers (each with its own
// limiter and breaker) over the platform's, its templates over the
// platform's, its cooldown or the platform's.
func (d *Dispatcher) build(merchantID string, p MerchantProfile) (*profile, error) {
	out := &profile{routes: maps.Clone(d.platform.routes), templates: d.platform.templates, cooldown: d.platform.cooldown}
	if p.Cooldown != nil {
		out.cooldown = *p.Cooldown // CheckMerchant refuses a negative one
	}
	own, err := d.buildProviders(p)
	if err != nil {
		return nil, err
	}
	routes, err := d.buildRoutes(own, merchantID+"/", d.log.With("merchant_id", merchantID))
	if err != nil {
		return nil, err
	}
	maps.Copy(out.routes, routes)
	d.metrics.init(routes)
	if p.Templates != nil {
		own, err := ParseTemplates(p.Templates)
		if err != nil {
			return nil, err
		}
		out.templates = out.templates.Over(own)
	}
	return out, nil
}
