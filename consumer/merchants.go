package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// Merchants' settings: every instance follows the merchant-settings topic
// (compacted, keyed by merchant_id) into its store and applies each
// record it accepts to the decisions that start after it is read (the
// dispatcher's SetMerchant) and to the API's principals (Merchants). A
// record is refused, dead-lettered with its reason and counted, the
// merchant's previous settings staying in force, when its value breaks
// schemas.DecodeMerchantSettings, its merchant_id is not its key, a key or
// username is another merchant's, or its providers and templates cannot
// be built (Config.CompileMerchant, then dispatch.CheckMerchant). A null
// value removes the merchant. At start the stored settings are applied
// before the topic is followed, and commands are consumed only once the
// topic was read as far as it reached at start.

// Results of a merchant-settings record
// (notifyd_merchant_settings_total{result}).
const (
	merchantApplied = "applied"
	merchantRemoved = "removed"
	merchantRefused = "refused"
)

// deadLetterMerchantSettings is the dead-letter reason of a refused
// merchant-settings record.
const deadLetterMerchantSettings = "invalid_merchant_settings"

// MerchantCompiler turns a merchant's settings as published into what its
// decisions use: its providers and templates (in the configuration file's
// shapes) decoded, their secrets unsealed. The error names the key at
// fault and never holds a secret.
type MerchantCompiler func(s schemas.MerchantSettings) (dispatch.MerchantProfile, error)

// MerchantPrincipal is an API key or user of a merchant.
type MerchantPrincipal struct {
	Merchant string
	// Name is the key's name or the user's username.
	Name string
	// Bcrypt and Role are a user's.
	Bcrypt, Role string
}

// Merchants are the merchants' settings this instance applies. It is safe
// for concurrent use: readers see an immutable table, replaced whole at
// each change.
type Merchants struct {
	now atomic.Pointer[merchantTable]
	// broken counts stored settings that did not apply at start.
	broken atomic.Int64
}

type merchantTable struct {
	byID  map[string]schemas.MerchantSettings
	keys  map[string]MerchantPrincipal // by the key's SHA-256, lowercase hex
	users map[string]MerchantPrincipal // by username
}

func newMerchants() *Merchants {
	m := &Merchants{}
	m.now.Store(&merchantTable{byID: map[string]schemas.MerchantSettings{}, keys: map[string]MerchantPrincipal{}, users: map[string]MerchantPrincipal{}})
	return m
}

// Get returns a merchant's settings as published (secrets sealed).
func (m *Merchants) Get(merchantID string) (schemas.MerchantSettings, bool) {
	s, ok := m.now.Load().byID[merchantID]
	return s, ok
}

// List returns every merchant's settings, by merchant_id.
func (m *Merchants) List() []schemas.MerchantSettings {
	t := m.now.Load()
	out := make([]schemas.MerchantSettings, 0, len(t.byID))
	for _, id := range slices.Sorted(maps.Keys(t.byID)) {
		out = append(out, t.byID[id])
	}
	return out
}

// Key returns the merchant key whose SHA-256 is sha256Hex (lowercase).
func (m *Merchants) Key(sha256Hex string) (MerchantPrincipal, bool) {
	p, ok := m.now.Load().keys[sha256Hex]
	return p, ok
}

// User returns the merchant user named username.
func (m *Merchants) User(username string) (MerchantPrincipal, bool) {
	p, ok := m.now.Load().users[username]
	return p, ok
}

// clone returns a copy of t to change (set) before it is published.
func (t *merchantTable) clone() *merchantTable {
	return &merchantTable{byID: maps.Clone(t.byID), keys: maps.Clone(t.keys), users: maps.Clone(t.users)}
}

// set replaces merchantID's settings by s (nil: removed), in place.
func (t *merchantTable) set(merchantID string, s *schemas.MerchantSettings) {
	if old, ok := t.byID[merchantID]; ok && old.API != nil {
		for _, k := range old.API.Keys {
			delete(t.keys, k.SHA256)
		}
		for _, u := range old.API.Users {
			delete(t.users, u.Username)
		}
	}
	delete(t.byID, merchantID)
	if s == nil {
		return
	}
	t.byID[merchantID] = *s
	if s.API != nil {
		for _, k := range s.API.Keys {
			t.keys[k.SHA256] = MerchantPrincipal{Merchant: merchantID, Name: k.Name}
		}
		for _, u := range s.API.Users {
			t.users[u.Username] = MerchantPrincipal{Merchant: merchantID, Name: u.Username, Bcrypt: u.Bcrypt, Role: u.Role}
		}
	}
}

// conflict reports a key or user of s that t gives another merchant, or
// that s names twice.
func (t *merchantTable) conflict(s *schemas.MerchantSettings) error {
	if s.API == nil {
		return nil
	}
	names, sums := map[string]bool{}, map[string]bool{}
	for i, k := range s.API.Keys {
		if p, ok := t.keys[k.SHA256]; (ok && p.Merchant != s.MerchantID) || sums[k.SHA256] {
			return fmt.Errorf("api.keys[%d].sha256: the key is another merchant's or listed twice", i)
		}
		if names[k.Name] {
			return fmt.Errorf("api.keys[%d].name: %q is used twice", i, k.Name)
		}
		names[k.Name], sums[k.SHA256] = true, true
	}
	users := map[string]bool{}
	for i, u := range s.API.Users {
		if p, ok := t.users[u.Username]; (ok && p.Merchant != s.MerchantID) || users[u.Username] {
			return fmt.Errorf("api.users[%d].username: %q is another merchant's user or listed twice", i, u.Username)
		}
		users[u.Username] = true
	}
	return nil
}

// merchantChanger applies merchant-settings records: it judges each one,
// dead-letters the refused, stores the accepted and makes them current.
type merchantChanger struct {
	// mu serialises the batches of the topic's partitions (each
	// partition has its own follower): each changes the one table.
	mu         sync.Mutex
	merchants  *Merchants
	compile    MerchantCompiler
	dispatcher *dispatch.Dispatcher
	store      *projection.Store
	refused    func(partition int, r projection.Record, reason, detail string) error
	metrics    *metrics
	log        *slog.Logger
}

// check judges one record of merchantID against table t.
func (c *merchantChanger) check(t *merchantTable, merchantID string, value []byte) (*schemas.MerchantSettings, dispatch.MerchantProfile, error) {
	var p dispatch.MerchantProfile
	s, err := schemas.DecodeMerchantSettings(value)
	if err != nil {
		return nil, p, err
	}
	if s.MerchantID != merchantID {
		return nil, p, fmt.Errorf("merchant_id: %q is not the record's key %q", s.MerchantID, merchantID)
	}
	if err := t.conflict(&s); err != nil {
		return nil, p, err
	}
	if c.compile != nil {
		if p, err = c.compile(s); err != nil {
			return nil, p, err
		}
	} else if len(s.Providers) > 0 || len(s.Templates) > 0 {
		return nil, p, errors.New("providers and templates: this instance has no compiler for them (consumer.Config.CompileMerchant)")
	}
	p.Cooldown = s.Cooldown
	if err := c.dispatcher.CheckMerchant(merchantID, p); err != nil {
		return nil, p, err
	}
	return &s, p, nil
}

// MerchantsToken changes whenever merchants' settings may have (see
// dispatch.Dispatcher.MerchantProviders); nil while not running.
func (s *Service) MerchantsToken() any {
	if d := s.parts().dispatcher; d != nil {
		return d.MerchantsToken()
	}
	return nil
}

// MerchantProviders returns every merchant's own provider blocks, secrets
// open: what their receipts are verified with.
func (s *Service) MerchantProviders() []dispatch.ProviderConfig {
	if d := s.parts().dispatcher; d != nil {
		_, blocks := d.MerchantProviders()
		return blocks
	}
	return nil
}

// CheckMerchantSettings checks a merchant-settings record as every
// instance checks it, other merchants aside (their keys and users): the
// value's schema, its merchant_id against the key, its providers and
// templates through compile and d. `notifyd merchant put` runs it before
// publishing.
func CheckMerchantSettings(merchantID string, value []byte, compile MerchantCompiler, d *dispatch.Dispatcher) error {
	c := &merchantChanger{compile: compile, dispatcher: d}
	_, _, err := c.check(newMerchants().now.Load(), merchantID, value)
	return err
}

// apply applies a batch of one partition, in offset order.
func (c *merchantChanger) apply(partition int, records []projection.Record) error {
	if len(records) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	type change struct {
		id       string
		settings *schemas.MerchantSettings
		profile  dispatch.MerchantProfile
	}
	t := c.merchants.now.Load().clone()
	var accepted []projection.Record
	var changes []change
	for _, r := range records {
		id := string(r.Key)
		if !schemas.ValidMerchantID(id) {
			if err := c.refuse(partition, r, errors.New("the record's key is not a merchant_id")); err != nil {
				return err
			}
			continue
		}
		if r.Value == nil {
			accepted = append(accepted, r)
			changes = append(changes, change{id: id})
			t.set(id, nil)
			continue
		}
		s, p, err := c.check(t, id, r.Value)
		if err != nil {
			if err := c.refuse(partition, r, err); err != nil {
				return err
			}
			continue
		}
		accepted = append(accepted, r)
		changes = append(changes, change{id: id, settings: s, profile: p})
		t.set(id, s)
	}
	if err := c.store.ApplyMerchantSettings(partition, accepted, records[len(records)-1].Offset+1); err != nil {
		return err
	}
	profiles := map[string]*dispatch.MerchantProfile{}
	for _, ch := range changes {
		if ch.settings == nil {
			profiles[ch.id] = nil
			c.metrics.merchantSettings.WithLabelValues(merchantRemoved).Inc()
			c.log.Info("merchant removed", "merchant_id", ch.id)
			continue
		}
		profiles[ch.id] = &ch.profile
		c.metrics.merchantSettings.WithLabelValues(merchantApplied).Inc()
		c.log.Info("merchant settings applied", "merchant_id", ch.id)
	}
	c.dispatcher.SetMerchants(profiles)
	c.merchants.now.Store(t)
	return nil
}

func (c *merchantChanger) refuse(partition int, r projection.Record, err error) error {
	c.metrics.merchantSettings.WithLabelValues(merchantRefused).Inc()
	c.log.Error("merchant settings refused: the previous settings stay in force", "merchant_id", string(r.Key), "offset", r.Offset, "error", err)
	return c.refused(partition, r, deadLetterMerchantSettings, err.Error())
}

// load applies the settings stored at start, before the topic is followed
// on from the stored offsets. Settings that no longer apply (a sealing key
// removed) are logged and counted; readiness reports them.
func (c *merchantChanger) load() error {
	t := c.merchants.now.Load().clone()
	var broken int64
	profiles := map[string]*dispatch.MerchantProfile{}
	err := c.store.MerchantSettings(func(id string, value []byte) {
		s, p, err := c.check(t, id, value)
		if err != nil {
			broken++
			c.metrics.merchantSettings.WithLabelValues(merchantRefused).Inc()
			c.log.Error("stored merchant settings do not apply: the merchant has none until they are published again", "merchant_id", id, "error", err)
			return
		}
		profiles[id] = &p
		t.set(id, s)
	})
	c.dispatcher.SetMerchants(profiles)
	c.merchants.now.Store(t)
	c.merchants.broken.Store(broken)
	return err
}

// waitMerchants waits until the merchant-settings topic is read as far as
// it reached at start (its follower has no lag).
func waitMerchants(ctx context.Context, f *follower) error {
	for f.lag() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("start: reading merchant settings: %w", context.Cause(ctx))
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
