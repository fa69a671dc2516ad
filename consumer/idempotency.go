package consumer

import (
	"context"
	"fmt"

	keys "github.com/notifyd/notifyd/internal/idempotency"
	"github.com/notifyd/notifyd/projection"
)

// idempotency is the rule "a command_id is decided once", in one place.
//
//   - Across instances, the results topic is the record of decisions: every
//     instance follows it into the store, and the command lifecycle catches
//     the store up with it before looking a command_id up, so a decision
//     published before the command arrived is seen.
//   - The first result of a command_id on the results topic is its answer.
//     A result decided here is recorded as pending before it is published,
//     so a duplicate arriving before it comes back from the topic gets the
//     same answer; if another instance's result for the command_id reaches
//     the topic first, that one replaces it (projection.Store.ApplyResults),
//     and it is what this instance republishes from then on.
//   - Within an instance, handlers of one command_id run one at a time
//     (internal/idempotency's in-flight rule, which the API's
//     Idempotency-Keys follow too), so a duplicate waits for the first and
//     replays its result.
//   - Within the group, a command is decided only by the owner of its
//     partition, and a partition changes owner only after its in-flight
//     decisions finished or were given up undecided (wmkafka.Claim).
type idempotency struct {
	store *projection.Store
	// waiting, when set, is told of every handler that waits for another
	// of its command_id (hooks.lockWait).
	waiting func(commandID string)

	inflight *keys.InFlight[struct{}]
}

func newIdempotency(store *projection.Store, waiting func(commandID string)) *idempotency {
	return &idempotency{store: store, waiting: waiting, inflight: keys.NewInFlight[struct{}]()}
}

// lock waits until no other handler of this instance holds commandID, then
// holds it until release is called.
func (d *idempotency) lock(ctx context.Context, commandID string) (release func(), err error) {
	var waiting func()
	if d.waiting != nil {
		waiting = func() { d.waiting(commandID) }
	}
	return d.inflight.Lock(ctx, commandID, struct{}{}, waiting)
}

// answer returns the command_id's answer, if it has one. The store must
// have caught up with the results topic (see the command lifecycle).
func (d *idempotency) answer(commandID string) ([]byte, bool, error) {
	v, found, err := d.store.Result(commandID)
	if err != nil {
		return nil, false, fmt.Errorf("idempotency: %w", err)
	}
	return v, found, nil
}

// record records value as this instance's decision and returns the answer
// to publish: value itself (mine), or the result another instance published
// first, read from the topic meanwhile.
func (d *idempotency) record(commandID string, value []byte) (answer []byte, mine bool, err error) {
	stored, err := d.store.RecordResult(commandID, value)
	if err != nil {
		return nil, false, fmt.Errorf("idempotency: %w", err)
	}
	return stored, string(stored) == string(value), nil
}
