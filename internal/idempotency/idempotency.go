// Package idempotency is notifyd's one home of the two rules a key that
// names a request (a command_id, an Idempotency-Key) follows within one
// process; the rule across instances — a command_id is decided once — is
// the results topic's (see consumer's idempotency.go):
//
//   - The in-flight rule (InFlight): at most one holder of a key at a time.
//     The consumer's handlers of one command_id run one after another (a
//     duplicate waits and replays the first one's result); the API's
//     requests with one Idempotency-Key publish once (a second one with the
//     same request waits for the first one's result, one asking for
//     something else is refused before anything is published).
//   - The same-request rule (Request): whether a key used again names the
//     same request — as another request in flight (Same), or as the result
//     the key already has (AnsweredBy).
package idempotency

import (
	"context"
	"slices"
	"sync"

	"github.com/notifyd/notifyd/schemas"
)

// InFlight holds the keys being handled in this process, each with what
// its holder asked for (T). It is safe for concurrent use.
type InFlight[T any] struct {
	mu   sync.Mutex
	held map[string]*holder[T]
}

type holder[T any] struct {
	value    T
	released chan struct{}
}

// NewInFlight returns an empty InFlight.
func NewInFlight[T any]() *InFlight[T] {
	return &InFlight[T]{held: map[string]*holder[T]{}}
}

// Hold holds key for value when nobody does: ok is true and release must be
// called once, when the holder is done. Otherwise it returns the holder's
// value and a channel closed when that holder releases the key.
func (f *InFlight[T]) Hold(key string, value T) (release func(), holderValue T, released <-chan struct{}, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h, busy := f.held[key]; busy {
		return nil, h.value, h.released, false
	}
	h := &holder[T]{value: value, released: make(chan struct{})}
	f.held[key] = h
	return func() {
		f.mu.Lock()
		delete(f.held, key)
		f.mu.Unlock()
		close(h.released)
	}, value, nil, true
}

// Lock holds key for value once no one else does, waiting for each holder
// to release it (telling waiting, when set, before each wait), or until
// ctx ends (its cause).
func (f *InFlight[T]) Lock(ctx context.Context, key string, value T, waiting func()) (release func(), err error) {
	for {
		release, _, released, ok := f.Hold(key, value)
		if ok {
			return release, nil
		}
		if waiting != nil {
			waiting()
		}
		select {
		case <-released:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// Request is what a request with a key asks for: who asks, the
// identifiers it names the transaction by, and its channels in order.
type Request struct {
	By        string
	SessionID string
	OrderNo   string
	Channels  []schemas.Channel
}

// Same reports whether two requests in flight with one key ask for the
// same thing: the same client, the same channels in the same order, and
// identifiers that agree where both give one and share at least one.
// Before a result names the transaction, a request naming it by session_id
// and one naming it by order_no cannot be told to be the same: they are
// taken as different, so that neither can be sent twice.
func (a Request) Same(b Request) bool {
	if a.By != b.By || !slices.Equal(a.Channels, b.Channels) {
		return false
	}
	shared := false
	for _, ids := range [][2]string{{a.SessionID, b.SessionID}, {a.OrderNo, b.OrderNo}} {
		if ids[0] != "" && ids[1] != "" {
			if ids[0] != ids[1] {
				return false
			}
			shared = true
		}
	}
	return shared
}

// AnsweredBy reports whether the result r (the first result of the key)
// answers the request a: the same client, the same channels in the same
// order, and identifiers that name the same transaction (each identifier
// given must be the result's; the result carries the transaction's
// identifiers, so a retry that adds the other one of the same transaction
// is the same request). A whole-command answer (a reason, no channels)
// carries the command's own identifiers: they must match exactly.
func (a Request) AnsweredBy(r schemas.DeliveryResult) bool {
	if r.RequestedBy != a.By {
		return false
	}
	if a.SessionID != "" && a.SessionID != r.SessionID {
		return false
	}
	if a.OrderNo != "" && a.OrderNo != r.OrderNo {
		return false
	}
	if r.Reason != "" {
		return a.SessionID == r.SessionID && a.OrderNo == r.OrderNo
	}
	if len(r.Channels) != len(a.Channels) {
		return false
	}
	for i, c := range r.Channels {
		if c.Channel != a.Channels[i] {
			return false
		}
	}
	return true
}
