package dispatch

import (
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// ErrNoReceipts is Verify's answer from a live verifier of a kind none of
// whose providers has a receipt secret now: the callback is not served
// (the API answers 404).
var ErrNoReceipts = errors.New("no provider of this kind takes receipts")

// LiveReceipts returns, for every kind with receipts, a verifier that
// verifies with what Receipts builds from blocks() (the platform's blocks
// and every merchant's): built again whenever token() changes, so that a
// merchant onboarded, changed or removed is verified for from its next
// callback. token must be cheap; blocks is called only when it changed.
// A kind whose verifiers answer a subscription handshake gives a
// Handshaker.
func (r *Registry) LiveReceipts(token func() any, blocks func() []ProviderConfig) map[string]ReceiptVerifier {
	out := map[string]ReceiptVerifier{}
	for _, k := range r.kinds {
		if k.Receipts == nil {
			continue
		}
		l := &liveReceipts{build: k.Receipts, kind: k.Name, token: token, blocks: blocks}
		if k.Handshakes {
			out[k.Name] = liveHandshaker{l}
		} else {
			out[k.Name] = l
		}
	}
	return out
}

type liveReceipts struct {
	kind   string
	build  func([]ProviderConfig) ReceiptVerifier
	token  func() any
	blocks func() []ProviderConfig

	mu      sync.Mutex
	built   bool
	at      any
	current ReceiptVerifier
}

// now returns the verifier for the blocks as they are (nil: none takes
// receipts).
func (l *liveReceipts) now() ReceiptVerifier {
	t := l.token()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.built || t != l.at {
		var mine []ProviderConfig
		for _, p := range l.blocks() {
			if p.Kind == l.kind {
				mine = append(mine, p)
			}
		}
		l.current, l.at, l.built = l.build(mine), t, true
	}
	return l.current
}

func (l *liveReceipts) Verify(r *http.Request, calledURL string, body []byte, received time.Time) ([]VerifiedReceipt, error) {
	v := l.now()
	if v == nil {
		return nil, ErrNoReceipts
	}
	return v.Verify(r, calledURL, body, received)
}

// liveHandshaker is a liveReceipts whose verifiers answer handshakes.
type liveHandshaker struct{ *liveReceipts }

func (l liveHandshaker) Handshake(q url.Values) (string, bool) {
	if h, ok := l.now().(Handshaker); ok {
		return h.Handshake(q)
	}
	return "", false
}

// MerchantProviders returns every merchant's own provider blocks, and a
// token that changes whenever they may have (each change of merchants'
// settings): what LiveReceipts verifies merchants' receipts with.
func (d *Dispatcher) MerchantProviders() (token any, blocks []ProviderConfig) {
	m := d.merchants.Load()
	for _, e := range *m {
		for _, chain := range e.settings.Providers {
			blocks = append(blocks, chain...)
		}
	}
	return m, blocks
}

// MerchantsToken is MerchantProviders' token alone.
func (d *Dispatcher) MerchantsToken() any { return d.merchants.Load() }
