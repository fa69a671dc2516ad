package wmkafka

// This file holds the offset/key bookkeeping of one subscription. It is a plain data structure: no goroutines,
// no locks, no Kafka. The subscription serialises all calls with its mutex.
//
// Vocabulary:
//   - an entry is one fetched record, tracked from fetch until it is acked (or dropped);
//   - an entry is "handed out" between next() returning it and ack/abandon (a nacked entry waiting for
//     redelivery is still handed out: it keeps its concurrency slot and its key slot);
//   - the "key slot" of (partition, key) is held by at most one handed-out entry, which is what keeps
//     same-key records strictly sequential;
//   - an epoch is one incarnation of a partition's tracking: assigning a partition starts one, and so does
//     reset() (a partition re-read from a lower offset). Entries of an older epoch ("stale") still release
//     their key and concurrency slots when they finish, but never move the committable offset. Epoch numbers
//     are unique across partitions and forget(), so an entry of a forgotten partition is stale for good;
//   - a partition is revoked when its generation ends: nothing more is added or handed out for it, records
//     not handed out are dropped (they stay unfinished, so nothing at or above them is committed), and
//     forget() removes it once its handed-out entries are finished or abandoned.

type entryState uint8

const (
	statePending   entryState = iota // fetched, waits for its key slot
	stateReady                       // head of its key queue, key free: in tracker.ready
	stateInFlight                    // handed out, awaiting ack/nack
	stateNacked                      // nacked, waiting for the resend delay (still handed out)
	stateRedeliver                   // resend delay elapsed: in tracker.redeliver (still handed out)
	stateDone                        // acked
	stateDropped                     // discarded by a partition reset or given up on
)

// entry is one fetched record.
type entry[T any] struct {
	partition  int
	offset     int64
	key        string
	epoch      uint64
	state      entryState
	deliveries int // how many times next() has handed it out
	value      T
}

// keyQueue serialises the records of one (partition, key).
type keyQueue[T any] struct {
	holder  *entry[T]   // handed-out entry owning the key slot (may be stale), or nil
	waiting []*entry[T] // current-epoch entries not yet handed out, in offset order
}

// partitionState is the tracking of one partition. It survives resets (the epoch changes).
type partitionState[T any] struct {
	epoch       uint64
	revoking    bool        // revoke() was called: no adds, no hand-outs
	handedOut   int         // current-epoch entries handed out and not finished
	started     bool        // lastFetched is valid for this epoch
	lastFetched int64       // highest offset added in this epoch
	queue       []*entry[T] // current-epoch entries not yet committable, offset order
	committed   int64       // committed offset (next offset to consume) known for this epoch, -1 none
	resets      int
	keys        map[string]*keyQueue[T]
}

// commitPoint is an offset (next offset to consume) that may be committed for a partition.
type commitPoint struct {
	partition int
	offset    int64
	epoch     uint64
}

// tracker implements the per-key ordering, the concurrency bound and the lowest-unfinished commit rule.
type tracker[T any] struct {
	concurrency int
	epochs      uint64 // last epoch number given out
	partitions  map[int]*partitionState[T]
	ready       []*entry[T] // FIFO; may contain dropped entries (skipped)
	redeliver   []*entry[T] // FIFO of nacked entries due for redelivery (preferred over ready)
	handedOut   int         // entries handed out and not finished, stale ones included
	buffered    int         // entries in the partitions' queues
}

func newTracker[T any](concurrency int) *tracker[T] {
	if concurrency < 1 {
		concurrency = 1
	}
	return &tracker[T]{concurrency: concurrency, partitions: map[int]*partitionState[T]{}}
}

func (t *tracker[T]) partition(p int) *partitionState[T] {
	ps := t.partitions[p]
	if ps == nil {
		t.epochs++
		ps = &partitionState[T]{epoch: t.epochs, committed: -1, keys: map[string]*keyQueue[T]{}}
		t.partitions[p] = ps
	}
	return ps
}

// assign starts tracking partition p from committed, the group's position (-1 when unknown, e.g. a group
// without a committed offset starting at the first or last offset). An existing state of p is reset first.
func (t *tracker[T]) assign(p int, committed int64) (released int) {
	if ps := t.partitions[p]; ps != nil {
		released = t.forget(p)
	}
	ps := t.partition(p)
	if committed >= 0 {
		ps.committed = committed
	}
	return released
}

// revoke stops handing out and accepting records of p: entries waiting for their turn are dropped (they
// stay in the queue as unfinished, so the committable offset stays below them). Handed-out entries keep
// running; the caller waits for them (handedOutOf) and then calls forget.
func (t *tracker[T]) revoke(p int) {
	ps := t.partitions[p]
	if ps == nil || ps.revoking {
		return
	}
	ps.revoking = true
	for _, e := range ps.queue {
		if e.state == statePending || e.state == stateReady {
			e.state = stateDropped
		}
	}
	for _, e := range t.redeliver {
		if e != nil && e.partition == p && e.state == stateRedeliver {
			t.finish(e, stateDropped) // skipped by next()
		}
	}
	for k, kq := range ps.keys {
		clear(kq.waiting)
		kq.waiting = kq.waiting[:0]
		if kq.holder == nil {
			delete(ps.keys, k)
		}
	}
}

// handedOutOf returns the current-epoch entries of p handed out and not finished.
func (t *tracker[T]) handedOutOf(p int) int {
	if ps := t.partitions[p]; ps != nil {
		return ps.handedOut
	}
	return 0
}

// commitPoint returns what may be committed for p now (ok=false when nothing beyond the known position).
func (t *tracker[T]) commitPoint(p int) (commitPoint, bool) {
	ps := t.partitions[p]
	if ps == nil {
		return commitPoint{}, false
	}
	c := ps.committable()
	if c <= ps.committed {
		return commitPoint{}, false
	}
	return commitPoint{partition: p, offset: c, epoch: ps.epoch}, true
}

// forget drops every trace of p; its entries still handed out become stale for good. released is the
// number of buffered entries that left the tracker.
func (t *tracker[T]) forget(p int) (released int) {
	ps := t.partitions[p]
	if ps == nil {
		return 0
	}
	released = len(ps.queue)
	t.buffered -= released
	for i := range ps.queue {
		if e := ps.queue[i]; e.state == statePending || e.state == stateReady {
			e.state = stateDropped
		}
		ps.queue[i] = nil
	}
	delete(t.partitions, p)
	return released
}

// add tracks a fetched record. A record whose offset is not above the last one fetched for its partition
// means the partition restarted from an older position (kafka-go re-read the committed offset after a
// rebalance): the partition is reset first. released is how many buffered entries left the tracker (their
// buffer slots can be reused).
//
// A revoked partition accepts nothing: add returns a nil entry.
func (t *tracker[T]) add(partition int, offset int64, key string, value T) (e *entry[T], reset bool, released int) {
	ps := t.partition(partition)
	if ps.revoking {
		return nil, false, 0
	}
	if ps.started && offset <= ps.lastFetched {
		released = t.reset(ps)
		reset = true
	}
	if !ps.started {
		ps.started = true
		// Nothing below the first fetched offset is ours to commit: the group's position is at least here.
		ps.committed = offset
	}
	ps.lastFetched = offset
	e = &entry[T]{partition: partition, offset: offset, key: key, epoch: ps.epoch, state: statePending, value: value}
	ps.queue = append(ps.queue, e)
	t.buffered++
	kq := ps.keys[key]
	if kq == nil {
		kq = &keyQueue[T]{}
		ps.keys[key] = kq
	}
	kq.waiting = append(kq.waiting, e)
	t.promote(ps, key, kq)
	return e, reset, released
}

// reset starts a new epoch for ps: entries not handed out are dropped, handed-out ones become stale
// (their acks are ignored for commits, but they keep their key slot until they finish, so two deliveries
// of one key never run at the same time in this process).
func (t *tracker[T]) reset(ps *partitionState[T]) (released int) {
	for i, e := range ps.queue {
		if e.state == statePending || e.state == stateReady {
			e.state = stateDropped
		}
		ps.queue[i] = nil
	}
	released = len(ps.queue)
	t.buffered -= released
	ps.queue = nil
	for k, kq := range ps.keys {
		clear(kq.waiting)
		kq.waiting = kq.waiting[:0]
		if kq.holder == nil {
			delete(ps.keys, k)
		}
	}
	t.epochs++
	ps.epoch = t.epochs
	ps.handedOut = 0
	ps.resets++
	ps.started = false
	ps.committed = -1
	return released
}

// promote makes the head of kq ready when the key slot is free, and forgets empty key queues.
func (t *tracker[T]) promote(ps *partitionState[T], key string, kq *keyQueue[T]) {
	if kq.holder != nil {
		return
	}
	if len(kq.waiting) == 0 {
		delete(ps.keys, key)
		return
	}
	if head := kq.waiting[0]; head.state == statePending {
		head.state = stateReady
		t.ready = append(t.ready, head)
	}
}

// next returns the entry to hand out now, or nil. Redeliveries of nacked entries go first (they already own
// a concurrency slot); otherwise the oldest ready entry, if fewer than concurrency entries are handed out.
func (t *tracker[T]) next() *entry[T] {
	for len(t.redeliver) > 0 {
		e := t.redeliver[0]
		t.redeliver[0] = nil
		t.redeliver = t.redeliver[1:]
		if e.state != stateRedeliver {
			continue
		}
		if t.stale(e) || t.partitions[e.partition].revoking {
			// The partition was reset while this entry waited (the new epoch re-fetched it), or is being
			// handed over.
			t.finish(e, stateDropped)
			continue
		}
		e.state = stateInFlight
		e.deliveries++
		return e
	}
	if t.handedOut >= t.concurrency {
		return nil
	}
	for len(t.ready) > 0 {
		e := t.ready[0]
		t.ready[0] = nil
		t.ready = t.ready[1:]
		if e.state != stateReady {
			continue
		}
		ps := t.partitions[e.partition]
		kq := ps.keys[e.key]
		kq.waiting[0] = nil
		kq.waiting = kq.waiting[1:]
		kq.holder = e
		e.state = stateInFlight
		e.deliveries++
		t.handedOut++
		ps.handedOut++
		return e
	}
	return nil
}

func (t *tracker[T]) stale(e *entry[T]) bool {
	ps := t.partitions[e.partition]
	return ps == nil || e.epoch != ps.epoch
}

// finish releases e's key slot and concurrency slot and sets its final state.
func (t *tracker[T]) finish(e *entry[T], final entryState) {
	e.state = final
	t.handedOut--
	ps := t.partitions[e.partition]
	if ps == nil {
		return
	}
	if ps.epoch == e.epoch {
		ps.handedOut--
	}
	if kq := ps.keys[e.key]; kq != nil && kq.holder == e {
		kq.holder = nil
		t.promote(ps, e.key, kq)
	}
}

// ack marks a handed-out entry done. For a current-epoch entry the partition's committable offset advances
// over every done entry at the front of its queue; released counts the entries that left the tracker.
// Acks of entries that are not in flight (duplicates, stale after abandon) are ignored.
func (t *tracker[T]) ack(e *entry[T]) (released int) {
	if e.state != stateInFlight {
		return 0
	}
	stale := t.stale(e)
	t.finish(e, stateDone)
	if stale {
		return 0
	}
	ps := t.partitions[e.partition]
	for len(ps.queue) > 0 && ps.queue[0].state == stateDone {
		ps.queue[0] = nil
		ps.queue = ps.queue[1:]
		released++
	}
	t.buffered -= released
	return released
}

// nack marks an in-flight entry as waiting for redelivery. It keeps its key and concurrency slots.
func (t *tracker[T]) nack(e *entry[T]) bool {
	if e.state != stateInFlight {
		return false
	}
	e.state = stateNacked
	return true
}

// requeue queues a nacked entry for redelivery once its resend delay elapsed. A stale entry is dropped instead
// (its partition was reset: the new epoch re-fetches the record); requeue reports whether it was queued.
func (t *tracker[T]) requeue(e *entry[T]) bool {
	if e.state != stateNacked {
		return false
	}
	if t.stale(e) || t.partitions[e.partition].revoking {
		t.finish(e, stateDropped)
		return false
	}
	e.state = stateRedeliver
	t.redeliver = append(t.redeliver, e)
	return true
}

// abandon gives up on a handed-out entry (subscription closing): its slots are released, but it stays
// unfinished in its partition's queue, so nothing at or above its offset is ever committed.
func (t *tracker[T]) abandon(e *entry[T]) {
	switch e.state {
	case stateInFlight, stateNacked, stateRedeliver:
		t.finish(e, stateDropped)
	}
}

// abandonRedeliveries abandons every entry queued for redelivery (subscription closing: nothing more is
// handed out).
func (t *tracker[T]) abandonRedeliveries() {
	for _, e := range t.redeliver {
		if e != nil {
			t.abandon(e)
		}
	}
	clear(t.redeliver)
	t.redeliver = nil
}

// committable returns the offset that may be committed for ps: the lowest unfinished offset, or the offset
// after the last fetched record when everything is done; -1 when nothing was fetched in this epoch.
func (ps *partitionState[T]) committable() int64 {
	if len(ps.queue) > 0 {
		return ps.queue[0].offset
	}
	if ps.started {
		return ps.lastFetched + 1
	}
	return -1
}

// commits returns the partitions whose committable offset is ahead of what was committed.
func (t *tracker[T]) commits() []commitPoint {
	var out []commitPoint
	for p, ps := range t.partitions {
		if c := ps.committable(); c > ps.committed {
			out = append(out, commitPoint{partition: p, offset: c, epoch: ps.epoch})
		}
	}
	return out
}

// committed records a successful commit. A commit computed in an older epoch is ignored.
func (t *tracker[T]) committed(cp commitPoint) {
	ps := t.partitions[cp.partition]
	if ps != nil && ps.epoch == cp.epoch && cp.offset > ps.committed {
		ps.committed = cp.offset
	}
}
