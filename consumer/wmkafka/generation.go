package wmkafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/segmentio/kafka-go"
)

// lease is what this member knows of its own membership in one generation: until expiry, the group
// coordinator cannot have given this generation's partitions to anyone else. A heartbeat answered without
// error (the group is stable, this member is in the generation) sent at time t proves that the coordinator
// keeps the member until at least t + SessionTimeout and, should a rebalance start right after, waits for it
// until at least t + RebalanceTimeout; a member that has not rejoined keeps its partitions until one of
// them runs out, since the next generation cannot form before it rejoins or is removed.
type lease struct {
	length time.Duration // min(SessionTimeout, RebalanceTimeout)
	margin time.Duration // LeaseMargin: a claim needs this much lease left

	mu        sync.Mutex
	expiry    time.Time // zero until the first heartbeat succeeded
	ended     bool      // a heartbeat or a commit said the generation is over (rebalance, or membership lost)
	reason    string
	over      chan struct{} // closed when ended is set
	confirmed chan struct{} // closed at the first renewal
}

func newLease(length, margin time.Duration) *lease {
	return &lease{length: length, margin: margin, over: make(chan struct{}), confirmed: make(chan struct{})}
}

// renew records a heartbeat sent at sent that succeeded.
func (l *lease) renew(sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return
	}
	if l.expiry.IsZero() {
		close(l.confirmed)
	}
	if exp := sent.Add(l.length); exp.After(l.expiry) {
		l.expiry = exp
	}
}

// end records that the generation is over. With lost, the membership itself is gone (the coordinator
// answered that this member or generation is unknown): nothing may be claimed or committed any more.
func (l *lease) end(reason string, lost bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lost {
		l.expiry = time.Time{}
	}
	if !l.ended {
		l.ended, l.reason = true, reason
		close(l.over)
	}
}

// usable reports whether a claim made at now leaves at least margin of lease.
func (l *lease) usable(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.expiry.IsZero() && now.Add(l.margin).Before(l.expiry)
}

// deadline is the last moment claimed work may run: margin before expiry.
func (l *lease) deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.expiry.IsZero() {
		return time.Time{}
	}
	return l.expiry.Add(-l.margin)
}

// valid reports whether the lease has not run out (commits are still this member's to make).
func (l *lease) valid(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return now.Before(l.expiry)
}

// heartbeatError returns the error a heartbeat response carries.
//
// kafka-go v0.4.51 decodes Heartbeat responses of version 1 and later with
// its fields swapped (segmentio/kafka-go pull request #1371, open): the
// protocol has throttle_time_ms (int32) then error_code (int16), kafka-go
// reads error_code (int16) then throttle_time_ms (int32). Every broker since
// Kafka 0.11 answers version 1 or later, so kafka-go reports the error code
// as the low 16 bits of the throttle time, in milliseconds, and as "no
// error" the high 16 bits of the real throttle time (zero: heartbeats are
// not throttled for 65 s). Decoded as is, a heartbeat of a member the
// coordinator removed long ago looks successful. TestHeartbeatErrors fails
// if an upgrade of kafka-go fixes the decoding, so that this can go.
func heartbeatError(res *kafka.HeartbeatResponse) error {
	if code := int16(uint32(res.Throttle/time.Millisecond) & 0xffff); code != 0 {
		return kafka.Error(code)
	}
	return res.Error // a version 0 answer (Kafka before 0.11), decoded right
}

// generationOver reports whether err from the coordinator means this member's generation is over, and
// lost whether its membership is gone altogether.
func generationOver(err error) (over, lost bool) {
	switch {
	case errors.Is(err, kafka.RebalanceInProgress):
		return true, false
	case errors.Is(err, kafka.IllegalGeneration), errors.Is(err, kafka.UnknownMemberId), errors.Is(err, kafka.FencedInstanceID):
		return true, true
	}
	return false, false
}

// generation is this member's part of one consumer-group generation: the partitions kafka-go assigned,
// one fetcher per partition, the lease kept by heartbeats, and the commits. Its run method is started with
// kafka.Generation.Start, so kafka-go does not rejoin the group (and no other member can get these
// partitions, see lease) before run returned, and run returns only after the hand-over: fetching stopped,
// every message claimed from these partitions finished or given up, offsets committed.
type generation struct {
	sub        *subscription
	gen        *kafka.Generation
	partitions []kafka.PartitionAssignment
	lease      *lease
	client     *kafka.Client
	logger     watermill.LoggerAdapter

	// readers are the partitions' readers while they run; fetched the
	// partitions whose reader has fetched from its leader (see fetchedAll).
	mu      sync.Mutex
	readers map[int]*kafka.Reader
	fetched map[int]bool
}

// fetchedAll reports whether the reader of every assigned partition has
// sent a fetch to its leader in this generation (kafka-go counts a fetch
// as it sends it on a connection it opened and positioned): the member
// consumes, not only holds, its assignment. True for an empty assignment.
func (g *generation) fetchedAll() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, pa := range g.partitions {
		if g.fetched[pa.ID] {
			continue
		}
		r := g.readers[pa.ID]
		// Stats resets the reader's counters: only this reads them.
		if r == nil || r.Stats().Fetches == 0 {
			return false
		}
		if g.fetched == nil {
			g.fetched = make(map[int]bool)
		}
		g.fetched[pa.ID] = true
	}
	return true
}

func newGeneration(sub *subscription, gen *kafka.Generation) *generation {
	cfg := sub.cfg
	return &generation{
		sub:        sub,
		gen:        gen,
		partitions: gen.Assignments[sub.topic],
		lease:      newLease(min(cfg.SessionTimeout, cfg.RebalanceTimeout), cfg.LeaseMargin),
		client:     sub.client,
		logger: sub.logger.With(watermill.LogFields{
			"generation": gen.ID, "member_id": gen.MemberID,
		}),
	}
}

func (g *generation) partitionIDs() []int {
	out := make([]int, len(g.partitions))
	for i, p := range g.partitions {
		out[i] = p.ID
	}
	return out
}

// run is the generation, from the first heartbeat to the completed hand-over. Its order is the
// contract of the package: (1) confirm the membership with a heartbeat, (2) track and fetch the assigned
// partitions while heartbeats renew the lease and commits go out every CommitInterval, (3) when kafka-go
// ends the generation (ctx: a rebalance, a closed group) or the lease ends (a heartbeat or commit said so),
// hand over: stop fetching, drain, commit, forget.
func (g *generation) run(ctx context.Context) {
	g.logger.Info("Joined consumer group generation", watermill.LogFields{"partitions": fmt.Sprint(g.partitionIDs())})
	keeperDone := make(chan struct{})
	stopKeeper := make(chan struct{})
	go func() {
		defer close(keeperDone)
		g.keepLease(stopKeeper)
	}()
	defer func() { close(stopKeeper); <-keeperDone }()

	// (1) Nothing is handed out before the membership is confirmed.
	select {
	case <-g.lease.confirmed:
	case <-ctx.Done():
	case <-g.lease.over:
	}

	// (2) Consume.
	fetchCtx, stopFetching := context.WithCancel(context.Background())
	var fetchers sync.WaitGroup
	if g.lease.usable(time.Now()) && ctx.Err() == nil {
		g.sub.startGeneration(g)
		for _, pa := range g.partitions {
			fetchers.Add(1)
			go func() {
				defer fetchers.Done()
				g.fetch(fetchCtx, pa)
			}()
		}
	}
	commitsDone := make(chan struct{})
	go func() {
		defer close(commitsDone)
		g.commitLoop(fetchCtx)
	}()

	reason := "generation ended (rebalance or close)"
	select {
	case <-ctx.Done():
	case <-g.lease.over:
		g.lease.mu.Lock()
		reason = g.lease.reason
		g.lease.mu.Unlock()
	}

	// (3) Hand over.
	start := time.Now()
	stopFetching()
	fetchers.Wait()
	<-commitsDone
	st := g.sub.handOver(g, start)
	g.commitFinal()
	g.sub.endGeneration(g)
	g.logger.Info("Handed over partitions", watermill.LogFields{
		"reason": reason, "partitions": fmt.Sprint(g.partitionIDs()), "took": time.Since(start).String(),
		"finished": st.finished, "given_up_unclaimed": st.unclaimed, "given_up_at_deadline": st.abandoned,
	})
}

// keepLease sends heartbeats every HeartbeatInterval, the first one at once, until stop is closed or the
// coordinator says the generation is over. It keeps going during the hand-over: while the group is stable
// (a graceful close with no rebalance), heartbeats keep the lease, and the drain its full CloseTimeout.
func (g *generation) keepLease(stop <-chan struct{}) {
	cfg := g.sub.cfg
	var coordinator net.Addr
	backoff := time.NewTimer(0)
	defer backoff.Stop()
	for {
		select {
		case <-stop:
			return
		case <-backoff.C:
		}
		backoff.Reset(cfg.HeartbeatInterval)
		ctx, cancel := context.WithTimeout(context.Background(), cfg.HeartbeatInterval+cfg.CommitTimeout)
		err := func() error {
			if coordinator == nil {
				res, err := g.client.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: g.gen.GroupID, KeyType: kafka.CoordinatorKeyTypeConsumer})
				if err == nil {
					err = res.Error
				}
				if err != nil {
					return fmt.Errorf("find coordinator: %w", err)
				}
				coordinator = kafka.TCP(net.JoinHostPort(res.Coordinator.Host, strconv.Itoa(res.Coordinator.Port)))
			}
			sent := time.Now()
			res, err := g.client.Heartbeat(ctx, &kafka.HeartbeatRequest{
				Addr: coordinator, GroupID: g.gen.GroupID, GenerationID: g.gen.ID, MemberID: g.gen.MemberID,
			})
			if err == nil {
				err = heartbeatError(res)
			}
			if err == nil {
				g.lease.renew(sent)
				g.sub.noteLease(g)
			}
			return err
		}()
		cancel()
		if err == nil {
			continue
		}
		if over, lost := generationOver(err); over {
			g.lease.end("heartbeat: "+err.Error(), lost)
			g.sub.noteLease(g)
			if lost {
				g.logger.Error("Group membership lost: claims refused from now on", err, nil)
			}
			// After the end, further heartbeats cannot renew anything; keep waiting for stop.
			<-stop
			return
		}
		// Transient (connection, coordinator moved): look the coordinator up again. The lease is not
		// renewed meanwhile, so claims stop once it runs low.
		coordinator = nil
		g.logger.Info("Heartbeat failed, retrying: "+err.Error(), nil)
	}
}

// fetch reads one assigned partition from its committed position into the tracker until ctx ends.
func (g *generation) fetch(ctx context.Context, pa kafka.PartitionAssignment) {
	sub := g.sub
	cfg := sub.cfg
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:               cfg.Brokers,
		Topic:                 sub.topic,
		Partition:             pa.ID,
		Dialer:                cfg.Dialer,
		MaxWait:               cfg.MaxWait,
		MinBytes:              1,
		MaxBytes:              16 << 20,
		ReadLagInterval:       -1,
		OffsetOutOfRangeError: true,
		Logger:                kafkaLogger{logger: g.logger},
		ErrorLogger:           kafkaLogger{logger: g.logger, error: true},
	})
	defer func() {
		if err := r.Close(); err != nil {
			g.logger.Debug("Closing partition reader: "+err.Error(), nil)
		}
	}()
	if err := r.SetOffset(pa.Offset); err != nil {
		g.logger.Error("Cannot start partition reader", err, watermill.LogFields{"partition": pa.ID, "offset": pa.Offset})
		g.lease.end(fmt.Sprintf("partition %d: %v", pa.ID, err), false)
		return
	}
	g.mu.Lock()
	if g.readers == nil {
		g.readers = make(map[int]*kafka.Reader)
	}
	g.readers[pa.ID] = r
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.readers, pa.ID)
		g.mu.Unlock()
	}()
	var fetchErrors FetchErrors
	for {
		select {
		case sub.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		km, err := r.FetchMessage(ctx)
		if err != nil {
			<-sub.slots
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, kafka.OffsetOutOfRange) {
				g.recoverOutOfRange(ctx, r, pa.ID)
				continue
			}
			if !fetchErrors.Failed(ctx, time.Now(), func(suppressed int) {
				g.logger.Error("Fetching message failed, retrying", err, watermill.LogFields{"partition": pa.ID, "failures_not_logged": suppressed})
			}) {
				return
			}
			continue
		}
		fetchErrors.Succeeded()
		if !sub.add(g, km) {
			<-sub.slots
			return
		}
	}
}

// recoverOutOfRange handles a committed offset the log no longer has (records deleted by retention before
// the group consumed them): consumption resumes at the earliest offset, and the skip is logged as an error,
// since those commands are lost to the group.
func (g *generation) recoverOutOfRange(ctx context.Context, r *kafka.Reader, partition int) {
	res, err := g.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		g.sub.topic: {kafka.FirstOffsetOf(partition)},
	}})
	if err != nil {
		return // the next fetch fails again and retries
	}
	for _, po := range res.Topics[g.sub.topic] {
		if po.Partition == partition && po.Error == nil && po.FirstOffset >= 0 {
			g.logger.Error("Committed offset out of range (records deleted by retention before they were consumed): resuming at the earliest offset",
				nil, watermill.LogFields{"partition": partition, "from": r.Offset(), "earliest": po.FirstOffset})
			if err := r.SetOffset(po.FirstOffset); err != nil {
				g.logger.Error("Cannot move partition reader", err, nil)
			}
			return
		}
	}
}

// commitLoop commits every CommitInterval until ctx ends.
func (g *generation) commitLoop(ctx context.Context) {
	ticker := time.NewTicker(g.sub.cfg.CommitInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if err := g.commit(); err != nil {
				g.logger.Error("Offset commit failed, will retry", err, nil)
			}
		}
	}
}

// commitFinal commits what the hand-over left committable.
func (g *generation) commitFinal() {
	if err := g.commit(); err != nil {
		g.logger.Error("Final offset commit failed; messages finished since the last commit will be delivered again", err, nil)
	}
}

// commit commits every partition of this generation whose lowest unfinished offset advanced, with the
// generation's ID and member ID, so the coordinator refuses it once the generation is gone. A refusal that
// says so ends the lease.
func (g *generation) commit() error {
	if !g.lease.valid(time.Now()) {
		return nil // nothing of ours to commit any more; the next owner starts from the last commit
	}
	sub := g.sub
	sub.mu.Lock()
	sub.counts.CommitRounds++
	var cps []commitPoint
	for _, pa := range g.partitions {
		if cp, ok := sub.tr.commitPoint(pa.ID); ok {
			cps = append(cps, cp)
		}
	}
	sub.mu.Unlock()
	if len(cps) == 0 {
		return nil
	}
	offsets := map[int]int64{}
	for _, cp := range cps {
		offsets[cp.partition] = cp.offset
	}
	if err := g.gen.CommitOffsets(map[string]map[int]int64{sub.topic: offsets}); err != nil {
		if over, lost := generationOver(err); over {
			g.lease.end("commit: "+err.Error(), lost)
			sub.noteLease(g)
		}
		return fmt.Errorf("wmkafka: commit offsets of topic %q (%d partition(s)): %w", sub.topic, len(cps), err)
	}
	sub.mu.Lock()
	for _, cp := range cps {
		sub.tr.committed(cp)
	}
	sub.mu.Unlock()
	return nil
}
