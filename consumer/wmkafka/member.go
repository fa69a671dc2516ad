package wmkafka

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/segmentio/kafka-go"
)

// subscription is one Subscribe call: one consumer-group member. Its goroutines: the membership loop
// (kafka-go generations, each run by a generation), the dispatch loop emitting ready messages, and one
// watcher per handed-out message. All tracking is under mu.
type subscription struct {
	cfg       SubscriberConfig
	logger    watermill.LoggerAdapter
	topic     string
	group     *kafka.ConsumerGroup
	transport *kafka.Transport
	client    *kafka.Client // heartbeats, LeaveGroup, ListOffsets: on the subscription's own transport
	out       chan *message.Message
	msgCtx    context.Context // Subscribe's ctx without its cancellation: parent of message contexts

	mu       sync.Mutex
	tr       *tracker[kafka.Message]
	handouts map[*entry[kafka.Message]]*handout
	gen      *generation   // the generation whose partitions are tracked; nil between generations
	running  int           // generations between Start and the end of their run
	changed  chan struct{} // closed and replaced whenever an entry finishes (hand-over waits on it)
	stopped  bool          // shutdown began: nothing more is handed out
	memberID string
	genID    int32
	counts   SubscriptionStats // the counters of Stats

	slots    chan struct{} // one token per buffered record (MaxBuffered)
	wake     chan struct{} // "tracker or lease changed" for the dispatch loop, capacity 1
	stopping chan struct{} // closed when shutdown starts
	giveUp   chan struct{} // closed once the group is closed: watchers stop waiting
	done     chan struct{} // closed when the channel is closed and the goroutines are gone
	watchers sync.WaitGroup
}

// handout is one delivery of an entry to the handler.
type handout struct {
	e      *entry[kafka.Message]
	gen    *generation
	cancel context.CancelFunc
	gone   chan struct{} // closed when the message may no longer be claimed (revoked or abandoned)

	claimed   bool
	revoked   bool // its partition was handed over before it was claimed
	abandoned bool // the drain gave up on it
}

// closeGoneLocked cancels the message's context and closes gone, once.
func (h *handout) closeGoneLocked() {
	if !h.revoked && !h.abandoned {
		panic("wmkafka: closeGoneLocked without a reason")
	}
	select {
	case <-h.gone:
	default:
		close(h.gone)
		h.cancel()
	}
}

func (sub *subscription) notify() {
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

func (sub *subscription) broadcastLocked() {
	close(sub.changed)
	sub.changed = make(chan struct{})
}

func (sub *subscription) release(n int) {
	for range n {
		<-sub.slots
	}
}

// run is the subscription's life: membership and dispatch until ctx ends or the Subscriber closes, then
// the shutdown order: stop emitting, close the group (which hands over the current generation's
// partitions: drain, commit, leave), make sure the member left, stop the watchers, close the channel.
func (sub *subscription) run(ctx context.Context, closing <-chan struct{}) {
	defer close(sub.done)
	defer sub.transport.CloseIdleConnections()

	var loops sync.WaitGroup
	loops.Add(2)
	go func() { defer loops.Done(); sub.membership() }()
	go func() { defer loops.Done(); sub.dispatchLoop() }()

	select {
	case <-ctx.Done():
		sub.logger.Debug("Subscription context done, closing", nil)
	case <-closing:
		sub.logger.Debug("Subscriber closed, closing subscription", nil)
	}

	sub.mu.Lock()
	sub.stopped = true
	sub.mu.Unlock()
	close(sub.stopping)
	sub.closeGroup()
	loops.Wait()
	close(sub.giveUp)
	sub.watchers.Wait()
	close(sub.out)
	sub.logger.Info("Subscription closed", nil)
}

// membership takes part in the group's generations until the group is closed.
func (sub *subscription) membership() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-sub.stopping
		cancel()
	}()
	for {
		gen, err := sub.group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return
			}
			if errors.Is(err, kafka.RebalanceInProgress) {
				sub.logger.Info("Group rebalancing, joining again: "+err.Error(), nil)
			} else {
				sub.logger.Error("Joining the consumer group failed, retrying", err, nil)
			}
			continue
		}
		g := newGeneration(sub, gen)
		sub.mu.Lock()
		sub.running++
		sub.memberID, sub.genID = gen.MemberID, gen.ID
		sub.counts.Generations++
		sub.mu.Unlock()
		gen.Start(func(ctx context.Context) {
			defer func() {
				sub.mu.Lock()
				sub.running--
				sub.mu.Unlock()
			}()
			g.run(ctx)
		})
	}
}

// startGeneration makes g's partitions the tracked ones, from their committed positions.
func (sub *subscription) startGeneration(g *generation) {
	sub.mu.Lock()
	released := 0
	for _, pa := range g.partitions {
		committed := pa.Offset
		if committed < 0 {
			committed = -1 // the first or last offset: known once the first record is fetched
		}
		released += sub.tr.assign(pa.ID, committed)
	}
	sub.gen = g
	sub.mu.Unlock()
	sub.release(released)
	sub.notify()
}

// add tracks a record fetched for g; false when g is no longer the tracked generation or its partition is
// being handed over (the record is not tracked: the next owner fetches it again).
func (sub *subscription) add(g *generation, km kafka.Message) bool {
	sub.mu.Lock()
	if sub.stopped || sub.gen != g {
		sub.mu.Unlock()
		return false
	}
	e, reset, released := sub.tr.add(km.Partition, km.Offset, string(km.Key), km)
	sub.mu.Unlock()
	sub.release(released)
	if e == nil {
		return false
	}
	if reset {
		sub.logger.Error("Partition restarted from a lower offset within a generation: tracking reset", nil,
			watermill.LogFields{"partition": km.Partition, "offset": km.Offset})
	}
	sub.notify()
	return true
}

// handOverStats describes one hand-over.
type handOverStats struct{ finished, unclaimed, abandoned int }

// handOver drains g's partitions (see Subscribe): revoke them, cancel unclaimed messages, wait for the
// handed-out ones until the drain deadline, give up on the rest. Fetching has stopped.
func (sub *subscription) handOver(g *generation, start time.Time) handOverStats {
	var st handOverStats
	sub.mu.Lock()
	sub.counts.HandOversStarted++
	for _, pa := range g.partitions {
		sub.tr.revoke(pa.ID)
	}
	for e, h := range sub.handouts {
		if h.gen != g || h.claimed && e.state == stateInFlight {
			continue
		}
		// Not claimed, or nacked and waiting for its redelivery: it may not be claimed any more.
		h.revoked = true
		h.closeGoneLocked()
		if e.state == stateInFlight {
			st.unclaimed++
		}
	}
	sub.mu.Unlock()
	sub.notify()

	for {
		sub.mu.Lock()
		n := 0
		for _, pa := range g.partitions {
			n += sub.tr.handedOutOf(pa.ID)
		}
		changed := sub.changed
		sub.mu.Unlock()
		if n == 0 {
			break
		}
		deadline := start.Add(sub.cfg.CloseTimeout)
		if ld := g.lease.deadline(); ld.Before(deadline) {
			deadline = ld
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			st.abandoned = sub.abandon(g)
			sub.logger.Error("Hand-over deadline: giving up on claimed messages still in flight; they are not committed and go to the partition's next owner",
				fmt.Errorf("%d message(s) still in flight after %s", st.abandoned, time.Since(start).Round(time.Millisecond)), nil)
			break
		}
		t := time.NewTimer(min(wait, 100*time.Millisecond))
		select {
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
	sub.mu.Lock()
	sub.counts.HandOvers++
	sub.counts.GivenUpUnclaimed += st.unclaimed
	sub.counts.GivenUpAtDeadline += st.abandoned
	sub.counts.LastHandOver = time.Since(start)
	sub.mu.Unlock()
	return st
}

// abandon gives up on every message of g still handed out.
func (sub *subscription) abandon(g *generation) int {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	n := 0
	for e, h := range sub.handouts {
		if h.gen != g {
			continue
		}
		h.abandoned = true
		h.closeGoneLocked()
		if e.state == stateInFlight || e.state == stateNacked || e.state == stateRedeliver {
			n++
		}
		sub.tr.abandon(e)
		delete(sub.handouts, e)
	}
	sub.broadcastLocked()
	return n
}

// endGeneration forgets g's partitions (after their final commit).
func (sub *subscription) endGeneration(g *generation) {
	sub.mu.Lock()
	released := 0
	for _, pa := range g.partitions {
		released += sub.tr.forget(pa.ID)
	}
	if sub.gen == g {
		sub.gen = nil
	}
	sub.mu.Unlock()
	sub.release(released)
	sub.notify()
}

// joined is called (from kafka-go's logger) when kafka-go's JoinGroup succeeded, before the sync: the only
// place kafka-go exposes the member ID of a member that has not reached a generation yet, which closeGroup
// needs to leave the group.
func (sub *subscription) joined(memberID string, _ int32) {
	sub.mu.Lock()
	sub.memberID = memberID
	sub.mu.Unlock()
}

// noteLease wakes the dispatch loop after a lease change.
func (sub *subscription) noteLease(*generation) { sub.notify() }

// claim implements Claim; it returns why the claim is refused, "" when granted.
func (sub *subscription) claim(h *handout) string {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	reason := ""
	switch {
	case h.abandoned:
		reason = "the hand-over of its partition gave up waiting for it"
	case h.revoked:
		reason = "its partition is being handed over and it had not been claimed"
	case h.e.state != stateInFlight:
		reason = "it was acked or nacked already"
	case !h.gen.lease.usable(time.Now()):
		reason = "group membership not confirmed recently enough (lease ending)"
	}
	if reason != "" {
		sub.counts.ClaimsRefused++
		return reason
	}
	h.claimed = true
	return ""
}

func (sub *subscription) dispatchLoop() {
	for {
		sub.mu.Lock()
		if sub.stopped {
			sub.mu.Unlock()
			return
		}
		g := sub.gen
		var e *entry[kafka.Message]
		usable := g != nil && g.lease.usable(time.Now())
		if usable {
			e = sub.tr.next()
		}
		sub.mu.Unlock()
		if e == nil {
			var recheck <-chan time.Time
			var t *time.Timer
			if g != nil && !usable {
				// The lease may recover (a heartbeat after a transient failure).
				t = time.NewTimer(100 * time.Millisecond)
				recheck = t.C
			}
			select {
			case <-sub.wake:
			case <-recheck:
			case <-sub.stopping:
			}
			if t != nil {
				t.Stop()
			}
			continue
		}
		sub.handOut(g, e)
	}
}

// handOut emits one entry.
func (sub *subscription) handOut(g *generation, e *entry[kafka.Message]) {
	msg := toWatermill(&e.value)
	ctx, cancel := context.WithCancel(sub.msgCtx)
	h := &handout{e: e, gen: g, cancel: cancel, gone: make(chan struct{})}
	msg.SetContext(context.WithValue(ctx, claimKey{}, claimRef{sub: sub, h: h}))
	sub.mu.Lock()
	if ps := sub.tr.partitions[e.partition]; sub.gen != g || ps == nil || ps.revoking || sub.tr.stale(e) {
		// Its partition's hand-over began between next() and here.
		sub.tr.abandon(e)
		sub.broadcastLocked()
		sub.mu.Unlock()
		cancel()
		sub.notify()
		return
	}
	sub.handouts[e] = h
	sub.mu.Unlock()
	select {
	case sub.out <- msg:
		sub.watchers.Add(1)
		go sub.watch(h, msg)
	case <-h.gone:
		sub.unsent(h)
	case <-sub.stopping:
		sub.unsent(h)
	}
}

// unsent ends a hand-out whose message the handler never received.
func (sub *subscription) unsent(h *handout) {
	sub.mu.Lock()
	sub.tr.abandon(h.e)
	delete(sub.handouts, h.e)
	sub.broadcastLocked()
	sub.mu.Unlock()
	h.cancel()
	sub.notify()
}

// watch waits for the ack or nack of one handed-out message.
func (sub *subscription) watch(h *handout, msg *message.Message) {
	defer sub.watchers.Done()
	defer h.cancel()
	e := h.e
	select {
	case <-msg.Acked():
		h.cancel()
		sub.mu.Lock()
		released := 0
		if sub.handouts[e] == h {
			released = sub.tr.ack(e)
			delete(sub.handouts, e)
		}
		sub.broadcastLocked()
		sub.mu.Unlock()
		sub.release(released)
		sub.notify()

	case <-msg.Nacked():
		h.cancel()
		sub.mu.Lock()
		if sub.handouts[e] != h {
			sub.mu.Unlock()
			return // given up already
		}
		sub.tr.nack(e)
		sub.mu.Unlock()
		t := time.NewTimer(sub.cfg.NackResendSleep)
		defer t.Stop()
		select {
		case <-t.C:
		case <-h.gone:
		case <-sub.stopping:
		}
		sub.mu.Lock()
		if sub.handouts[e] == h {
			if sub.stopped {
				sub.tr.abandon(e)
			} else if !sub.tr.requeue(e) {
				sub.logger.Debug("Nacked message not redelivered: its partition was handed over",
					watermill.LogFields{"message_uuid": msg.UUID, "partition": e.partition, "offset": e.offset})
			}
			delete(sub.handouts, e)
		}
		sub.broadcastLocked()
		sub.mu.Unlock()
		sub.notify()

	case <-sub.giveUp:
	}
}

// closeGroup closes kafka-go's ConsumerGroup, bounded in time, and makes sure the member leaves the group.
// Closing the group ends the current generation, whose run hands its partitions over (bounded by
// CloseTimeout and the lease) before kafka-go sends LeaveGroup.
//
// kafka-go's ConsumerGroup exits without LeaveGroup when it is closed right after a join or sync failed with
// RebalanceInProgress (a member closing while the group rebalances, e.g. during a rolling deploy), and its
// Close waits for a join in progress, which the coordinator may hold until RebalanceTimeout. The coordinator
// would keep such a member until SessionTimeout and hold the next rebalance for it: every other member
// stalls. So the subscription sends LeaveGroup itself once the group closed (answered with
// UNKNOWN_MEMBER_ID when kafka-go did leave, which is fine), and earlier when no generation is running
// (kafka-go is joining) for groupJoinWait.
func (sub *subscription) closeGroup() {
	closed := make(chan error, 1)
	go func() { closed <- sub.group.Close() }()
	report := func(err error) {
		if err != nil {
			sub.logger.Error("Closing the consumer group failed", err, nil)
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var idleSince time.Time
	for {
		select {
		case err := <-closed:
			report(err)
			sub.leaveGroup()
			return
		case <-tick.C:
		}
		sub.mu.Lock()
		running := sub.running
		sub.mu.Unlock()
		if running > 0 {
			idleSince = time.Time{}
			continue
		}
		if idleSince.IsZero() {
			idleSince = time.Now()
		}
		if time.Since(idleSince) >= groupJoinWait {
			break
		}
	}
	sub.logger.Debug("Consumer group slow to close (group join in progress?): leaving the group", nil)
	sub.leaveGroup()
	second := time.NewTimer(groupCloseSecondWait)
	defer second.Stop()
	select {
	case err := <-closed:
		report(err)
	case <-second.C:
		sub.logger.Info("Consumer group still closing (group join in progress); continuing in background", nil)
	}
}

// leaveGroup sends LeaveGroup for the last member ID of this subscription.
func (sub *subscription) leaveGroup() {
	sub.mu.Lock()
	member := sub.memberID
	sub.mu.Unlock()
	if member == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaveGroupTimeout)
	defer cancel()
	res, err := sub.client.LeaveGroup(ctx, &kafka.LeaveGroupRequest{
		GroupID: sub.cfg.GroupID,
		Members: []kafka.LeaveGroupRequestMember{{ID: member}},
	})
	if err == nil {
		err = res.Error
		if err == nil && len(res.Members) > 0 {
			err = res.Members[0].Error
		}
	}
	fields := watermill.LogFields{"member_id": member}
	switch {
	case err == nil:
		sub.logger.Debug("Left consumer group", fields)
	case errors.Is(err, kafka.UnknownMemberId):
		sub.logger.Trace("Consumer group already left", fields)
	default:
		sub.logger.Info("LeaveGroup failed (the coordinator will expire the member after SessionTimeout): "+err.Error(), fields)
	}
}

func (sub *subscription) stats() SubscriptionStats {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	st := sub.counts
	st.Topic, st.InFlight, st.Buffered = sub.topic, sub.tr.handedOut, sub.tr.buffered
	st.MemberID, st.Generation = sub.memberID, sub.genID
	st.Partitions = nil
	for p, ps := range sub.tr.partitions {
		last := int64(-1)
		if ps.started {
			last = ps.lastFetched
		}
		st.Partitions = append(st.Partitions, PartitionStats{
			Partition: p, Committed: ps.committed, Committable: ps.committable(), LastFetched: last, Resets: ps.resets,
		})
	}
	sort.Slice(st.Partitions, func(i, j int) bool { return st.Partitions[i].Partition < st.Partitions[j].Partition })
	return st
}
