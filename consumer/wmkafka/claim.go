package wmkafka

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrNotOwner is returned (wrapped) by Claim when this member may no longer act on a message: its partition
// is being handed over to another member and the message was not claimed before, the hand-over gave up
// waiting for it, or the member cannot be sure it is still in the group. The handler must then do nothing
// irreversible and return an error; the message is not committed and its partition's next owner gets it.
var ErrNotOwner = errors.New("wmkafka: this member no longer owns the message")

// claimKey is the context key under which a handed-out message carries its claim reference.
type claimKey struct{}

// claimRef ties a message's context to its hand-out.
type claimRef struct {
	sub *subscription
	h   *handout
}

// Claim asks for the right to take an irreversible step for msg (calling an external system, recording or
// publishing an outcome), and must be called before each such step. It returns nil when the step may be
// taken: the member owns msg's partition and will keep owning it long enough (its group membership was
// confirmed by a heartbeat less than min(SessionTimeout, RebalanceTimeout) − LeaseMargin ago). Once
// claimed, a message is waited for when its partition is handed over, until the drain deadline (see
// Subscribe), and Claim keeps succeeding for it until then.
//
// Claim fails with ErrNotOwner, for good, when the partition's hand-over began before the first Claim, when
// the drain deadline passed, or after the message was acked or nacked; and, possibly only for a while, when
// the membership is not confirmed recently enough. Messages that did not come from a Subscriber of this
// package are not tracked: Claim returns nil for them.
//
// Claim is what makes "decided once" hold across members: the group's next owner of a partition starts
// reading it only after this member handed it over (kafka-go's ConsumerGroup rejoins only once the
// generation's functions returned, and the subscription's function returns only after the drain), or after
// the coordinator expired this member, which cannot happen before the lease Claim checks has run out.
func Claim(msg *message.Message) error {
	ref, ok := msg.Context().Value(claimKey{}).(claimRef)
	if !ok {
		return nil
	}
	if reason := ref.sub.claim(ref.h); reason != "" {
		return fmt.Errorf("%w: %s", ErrNotOwner, reason)
	}
	return nil
}
