package api

import (
	"fmt"

	"github.com/notifyd/notifyd/dispatch"
)

// Merchants are the keys, users and rate limits of merchants' settings
// (the merchant-settings topic) as this instance applies them; cmd wires
// the consumer's. Lookups are by exact value: a key by its SHA-256, which
// only its holder can give, a user by username.
type Merchants interface {
	// Key returns the name and merchant of the merchant key whose
	// SHA-256 is sha256Hex (lowercase hex).
	Key(sha256Hex string) (name, merchantID string, ok bool)
	// User returns the merchant user named username, its Merchant set.
	User(username string) (User, bool)
	// RateLimit returns a merchant's api.rate_limit, shared by its keys
	// and users; nil: the platform's api.rate_limit, per principal.
	RateLimit(merchantID string) *dispatch.RateLimit
}

// bucket is the rate-limit bucket of a principal and its limit: a
// merchant's shared one when its settings set one (named with the rate,
// so that a change of rate starts a new bucket), else the principal's own
// at api.rate_limit.
func (s *Server) bucket(p Principal) (string, *dispatch.RateLimit) {
	if p.Merchant != "" && s.deps.Merchants != nil {
		if rl := s.deps.Merchants.RateLimit(p.Merchant); rl != nil {
			return fmt.Sprintf("merchant %s %g/%d", p.Merchant, rl.PerSecond, rl.Burst), rl
		}
	}
	return p.ID(), s.cfg.RateLimit
}
