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

// Closing a kafka.Reader: kafka-go's Close waits for in-progress fetches (MaxWait) and for an in-progress
// group join or sync, which the coordinator may hold for up to RebalanceTimeout. The subscription waits
// MaxWait+readerCloseFirstWait, then sends its own LeaveGroup (which makes the coordinator answer the pending
// join), then waits readerCloseSecondWait more before letting the reader finish closing in the background.
const (
	readerCloseFirstWait  = time.Second
	readerCloseSecondWait = 3 * time.Second
	leaveGroupTimeout     = time.Second
)

// fetchErrorBackoff is the pause after a failed FetchMessage (kafka-go retries internally as well).
const fetchErrorBackoff = 500 * time.Millisecond

// SubscriberConfig configures a Subscriber. Zero values select the documented defaults.
type SubscriberConfig struct {
	// Brokers are the bootstrap broker addresses (host:port). Required.
	Brokers []string

	// GroupID is the consumer group. Required: commands are shared by the members of a group, and offsets
	// are committed for the group.
	GroupID string

	// ClientID is sent to the brokers. Ignored when Dialer is set (set Dialer.ClientID instead).
	ClientID string

	// Dialer is an optional kafka-go dialer (TLS, SASL, timeouts).
	Dialer *kafka.Dialer

	// Concurrency bounds the messages handed out and not yet acked, across all partitions of a
	// subscription (default 64). A nacked message keeps its slot until it is redelivered and acked.
	Concurrency int

	// MaxBuffered bounds the records fetched and not yet committable per subscription, handed-out ones
	// included (default 1024, at least Concurrency). When reached, fetching pauses until the lowest
	// unfinished offset of some partition advances: a message that is never acked eventually stops
	// consumption of the whole subscription rather than growing memory without bound.
	MaxBuffered int

	// StartOffset is where a group without a committed offset starts: kafka.FirstOffset (default, so
	// messages published before the group's first start are delivered) or kafka.LastOffset.
	StartOffset int64

	// MaxWait bounds one fetch request waiting for data (default 250ms). kafka.Reader.Close waits for
	// in-progress fetches, so this also bounds that part of Close (kafka-go's default is 10s).
	MaxWait time.Duration

	// NackResendSleep is the delay before a nacked message is redelivered (default 100ms; negative: no
	// delay). The message keeps its key's turn meanwhile.
	NackResendSleep time.Duration

	// CommitInterval is how often committable offsets are committed (default 100ms). A crash or rebalance
	// redelivers at least the messages acked since the last commit; commits are also flushed on close.
	CommitInterval time.Duration

	// CommitTimeout bounds one offset commit, the final one on close included (default 2s).
	CommitTimeout time.Duration

	// CloseTimeout is how long closing waits for handed-out messages to be acked (default 20s). After it,
	// the remaining ones are given up: their contexts are cancelled, later acks are ignored, and they are
	// not committed (they will be redelivered).
	CloseTimeout time.Duration

	// SessionTimeout, HeartbeatInterval and RebalanceTimeout are passed to kafka-go (defaults 30s, 3s,
	// 30s). HeartbeatInterval is also how quickly a member notices a rebalance started by another one.
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	RebalanceTimeout  time.Duration

	// PartitionWatchInterval is how often the reader checks the topic for added partitions and triggers a
	// rebalance when it finds some (default 5s; negative disables it, and then new partitions are consumed
	// only after the next rebalance, which is kafka-go's default behaviour).
	PartitionWatchInterval time.Duration
}

func (c SubscriberConfig) withDefaults() SubscriberConfig {
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.MaxBuffered <= 0 {
		c.MaxBuffered = 1024
	}
	if c.MaxBuffered < c.Concurrency {
		c.MaxBuffered = c.Concurrency
	}
	if c.StartOffset == 0 {
		c.StartOffset = kafka.FirstOffset
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 250 * time.Millisecond
	}
	if c.NackResendSleep == 0 {
		c.NackResendSleep = 100 * time.Millisecond
	} else if c.NackResendSleep < 0 {
		c.NackResendSleep = 0
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = 100 * time.Millisecond
	}
	if c.CommitTimeout <= 0 {
		c.CommitTimeout = 2 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 20 * time.Second
	}
	if c.PartitionWatchInterval == 0 {
		c.PartitionWatchInterval = 5 * time.Second
	}
	if c.Dialer == nil {
		c.Dialer = &kafka.Dialer{ClientID: c.ClientID, Timeout: 10 * time.Second, DualStack: true}
	}
	return c
}

func (c SubscriberConfig) validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("wmkafka: SubscriberConfig.Brokers is empty")
	}
	if c.GroupID == "" {
		return errors.New("wmkafka: SubscriberConfig.GroupID is required")
	}
	if c.StartOffset != 0 && c.StartOffset != kafka.FirstOffset && c.StartOffset != kafka.LastOffset {
		return fmt.Errorf("wmkafka: SubscriberConfig.StartOffset must be kafka.FirstOffset or kafka.LastOffset, got %d",
			c.StartOffset)
	}
	return nil
}

// Subscriber is a watermill message.Subscriber consuming Kafka topics as a member of a consumer group, on
// kafka-go. Each Subscribe call starts one group member (one kafka.Reader) for one topic. See Subscribe and
// the package documentation for the delivery contract.
type Subscriber struct {
	cfg    SubscriberConfig
	logger watermill.LoggerAdapter

	mu      sync.Mutex
	closed  bool
	closing chan struct{} // closed by Close
	subs    map[*subscription]struct{}
}

var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber returns a Subscriber. It does not contact the brokers; Subscribe does. A nil logger discards
// logs.
func NewSubscriber(cfg SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Subscriber{
		cfg:     cfg.withDefaults(),
		logger:  logger.With(watermill.LogFields{"component": "wmkafka.Subscriber", "group": cfg.GroupID}),
		closing: make(chan struct{}),
		subs:    map[*subscription]struct{}{},
	}, nil
}

// Subscribe starts one consumer-group member (a kafka.Reader) for topic and returns its message channel.
//
// Delivery contract:
//
//   - Ordering and concurrency. Records with different keys are handed out concurrently, up to Concurrency
//     unacked messages across the subscription's partitions. Records with the same key (hence the same
//     partition) are handed out one at a time in offset order: the next one is emitted only after the
//     previous one is acked. A record with a null or empty key counts as key "" of its partition: keyless
//     records of a partition are processed one at a time, in offset order (Kafka's plain partition order).
//   - Ack marks the record done. Offsets are committed per partition every CommitInterval, only up to the
//     lowest unfinished offset (every lower offset acked), so a crash redelivers every message not yet acked
//     and possibly some acked after the last commit: at-least-once.
//   - Nack redelivers the same record (a new *message.Message with the same UUID, payload and metadata)
//     after NackResendSleep. It keeps its key's turn: later records with that key wait for it.
//   - Rebalances. kafka-go's Reader has no rebalance hooks. When a partition's records start again from an
//     offset not above the last one fetched (the group moved the partition away and back, or a new
//     generation re-read the committed offset), the partition's tracking is reset: records not handed out
//     yet are dropped (they are being fetched again), and acks of messages handed out before the reset no
//     longer move the committed offset (they still hold their key's turn until acked, so one key is never
//     processed twice at once in this process). Consequently, after a rebalance, messages in flight and
//     messages acked since the last commit are delivered again, to this member or another: duplicates,
//     which the application's idempotency must absorb. A partition moved away for good cannot be detected;
//     records already fetched for it are still delivered here while the new owner delivers them too.
//   - Shutdown. When ctx is cancelled or Close is called the subscription stops fetching and emitting, keeps
//     accepting acks of handed-out messages for up to CloseTimeout (nacks are no longer redelivered), then
//     gives up on the rest (their contexts are cancelled; they are not committed), commits what is
//     committable, closes the reader, makes sure the member left the group and closes the channel. This takes
//     at most CloseTimeout + CommitTimeout + MaxWait + 5s; a kafka-go reader still busy in a group join
//     after that finishes closing in the background (bounded by RebalanceTimeout).
//   - Metadata. Every message carries the kafka.* Metadata* keys plus one entry per record header (headers
//     with the "kafka." prefix are dropped). Message.UUID is the UUIDHeader header, which is not copied into
//     the metadata; a record without it gets a UUIDv5 of topic/partition/offset, stable across redeliveries.
//   - Context. msg.Context() carries ctx's values but not its cancellation (handlers in flight may finish
//     during shutdown); it is cancelled when the message is acked or nacked, or when shutdown gives up on it.
//
// The channel is unbuffered: a message counts as handed out once received from it.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic == "" {
		return nil, errors.New("wmkafka: subscribe: empty topic")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("wmkafka: subscribe to topic %q: subscriber is closed", topic)
	}

	logger := s.logger.With(watermill.LogFields{"topic": topic})
	sub := &subscription{
		cfg:      s.cfg,
		logger:   logger,
		topic:    topic,
		out:      make(chan *message.Message),
		msgCtx:   context.WithoutCancel(ctx),
		tr:       newTracker[kafka.Message](s.cfg.Concurrency),
		slots:    make(chan struct{}, s.cfg.MaxBuffered),
		wake:     make(chan struct{}, 1),
		stopping: make(chan struct{}),
		giveUp:   make(chan struct{}),
		done:     make(chan struct{}),
	}
	rc := kafka.ReaderConfig{
		Brokers:                s.cfg.Brokers,
		GroupID:                s.cfg.GroupID,
		Topic:                  topic,
		Dialer:                 s.cfg.Dialer,
		MaxWait:                s.cfg.MaxWait,
		ReadLagInterval:        -1,
		HeartbeatInterval:      s.cfg.HeartbeatInterval,
		CommitInterval:         0, // synchronous: the subscription commits and needs to know the outcome
		WatchPartitionChanges:  s.cfg.PartitionWatchInterval > 0,
		PartitionWatchInterval: max(s.cfg.PartitionWatchInterval, 0),
		SessionTimeout:         s.cfg.SessionTimeout,
		RebalanceTimeout:       s.cfg.RebalanceTimeout,
		StartOffset:            s.cfg.StartOffset,
		Logger:                 kafkaLogger{logger: logger, onJoin: sub.joined},
		ErrorLogger:            kafkaLogger{logger: logger, error: true},
	}
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("wmkafka: subscribe to topic %q: reader config: %w", topic, err)
	}
	sub.reader = kafka.NewReader(rc)
	sub.fetchCtx, sub.fetchCancel = context.WithCancel(context.Background())
	s.subs[sub] = struct{}{}
	go func() {
		sub.run(ctx, s.closing)
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
	}()
	logger.Info("Subscribed", nil)
	return sub.out, nil
}

// Close stops every subscription as described in Subscribe (waiting up to CloseTimeout for in-flight
// messages), closes their channels and returns once they are done. A failed final commit is logged, not
// returned: it only means more redeliveries. Close is idempotent; Subscribe after Close fails.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	subs := make([]*subscription, 0, len(s.subs))
	for sub := range s.subs {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	for _, sub := range subs {
		<-sub.done
	}
	return nil
}

// SubscriptionStats is a snapshot of one subscription's tracking.
type SubscriptionStats struct {
	Topic string
	// InFlight counts messages handed out and not yet acked (nacked ones awaiting redelivery included,
	// messages handed out before a partition reset included).
	InFlight int
	// Buffered counts fetched records not yet committable (handed out or waiting for their key's turn or a
	// concurrency slot).
	Buffered int
	// MemberID and Generation are the group membership kafka-go last reported joining ("" and 0 before the
	// first join). Generations counts the joins.
	MemberID    string
	Generation  int32
	Generations int
	// Partitions is sorted by partition.
	Partitions []PartitionStats
}

// PartitionStats is a snapshot of one partition's tracking. Offsets are "next offset to consume"
// positions, as Kafka commits them; -1 means unknown.
type PartitionStats struct {
	Partition int
	// Committed is the last offset this subscription committed (or the position it started from) since
	// the partition's last reset.
	Committed int64
	// Committable is the lowest unfinished offset: what the next commit will write.
	Committable int64
	// LastFetched is the offset of the last record fetched since the last reset.
	LastFetched int64
	// Resets counts detected restarts from a lower offset (rebalances).
	Resets int
}

// Stats returns a snapshot of the live subscriptions (no broker round trip; no lag).
func (s *Subscriber) Stats() []SubscriptionStats {
	s.mu.Lock()
	subs := make([]*subscription, 0, len(s.subs))
	for sub := range s.subs {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	out := make([]SubscriptionStats, 0, len(subs))
	for _, sub := range subs {
		out = append(out, sub.stats())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out
}

// subscription is one Subscribe call: a kafka.Reader, a fetch loop feeding the tracker, a dispatch loop
// emitting ready messages, a commit loop, and one watcher goroutine per handed-out message.
type subscription struct {
	cfg    SubscriberConfig
	logger watermill.LoggerAdapter
	topic  string
	reader *kafka.Reader
	out    chan *message.Message
	msgCtx context.Context // Subscribe's ctx without its cancellation: parent of message contexts

	mu          sync.Mutex
	tr          *tracker[kafka.Message]
	stopped     bool // set under mu when shutdown starts; no redelivery is queued after it
	memberID    string
	generation  int32
	generations int

	slots       chan struct{} // one token per buffered record (MaxBuffered)
	wake        chan struct{} // "tracker changed" notification, capacity 1
	stopping    chan struct{} // closed when shutdown starts
	giveUp      chan struct{} // closed when shutdown stops waiting for acks
	done        chan struct{} // closed when the channel is closed and the goroutines are gone
	fetchCtx    context.Context
	fetchCancel context.CancelFunc
	watchers    sync.WaitGroup
}

func (sub *subscription) notify() {
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

func (sub *subscription) release(n int) {
	for range n {
		<-sub.slots
	}
}

func (sub *subscription) run(ctx context.Context, closing <-chan struct{}) {
	defer close(sub.done)
	defer sub.fetchCancel()

	var loops sync.WaitGroup
	loops.Add(3)
	go func() { defer loops.Done(); sub.fetchLoop() }()
	go func() { defer loops.Done(); sub.dispatchLoop() }()
	go func() { defer loops.Done(); sub.commitLoop() }()

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
	sub.fetchCancel()
	loops.Wait()

	// Redeliveries queued but not emitted will not be: give them up so the drain does not wait for them.
	sub.mu.Lock()
	sub.tr.abandonRedeliveries()
	sub.mu.Unlock()

	sub.drain()
	close(sub.giveUp)

	ctxCommit, cancel := context.WithTimeout(context.Background(), sub.cfg.CommitTimeout)
	if err := sub.commit(ctxCommit); err != nil {
		sub.logger.Error("Final offset commit failed; uncommitted messages will be redelivered", err, nil)
	}
	cancel()

	sub.closeReader()
	sub.watchers.Wait()
	close(sub.out)
	sub.logger.Info("Subscription closed", nil)
}

// drain waits until no message is handed out, or CloseTimeout.
func (sub *subscription) drain() {
	timeout := time.NewTimer(sub.cfg.CloseTimeout)
	defer timeout.Stop()
	for {
		sub.mu.Lock()
		n := sub.tr.handedOut
		sub.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-sub.wake:
		case <-timeout.C:
			sub.logger.Error("Close timeout: giving up on unacked messages; they will be redelivered",
				fmt.Errorf("%d message(s) still in flight after %s", n, sub.cfg.CloseTimeout), nil)
			return
		}
	}
}

// joined is called (from kafka-go's logger) when the reader joins the group.
func (sub *subscription) joined(memberID string, generation int32) {
	sub.mu.Lock()
	sub.memberID, sub.generation = memberID, generation
	sub.generations++
	sub.mu.Unlock()
	sub.logger.Debug("Joined consumer group", watermill.LogFields{"member_id": memberID, "generation": generation})
}

// closeReader closes the kafka.Reader, bounded in time, and makes sure the member leaves the group.
//
// kafka-go's ConsumerGroup exits without LeaveGroup when it is closed right after a join or sync failed with
// RebalanceInProgress (a member closing while the group rebalances, e.g. during a rolling deploy). The
// coordinator then keeps the member until SessionTimeout and holds the next rebalance for it (up to
// RebalanceTimeout): every other member stalls. So the subscription sends LeaveGroup itself after the reader
// closed (answered with UNKNOWN_MEMBER_ID when kafka-go did leave, which is fine), and earlier if the reader
// is stuck in a join.
func (sub *subscription) closeReader() {
	closed := make(chan error, 1)
	go func() {
		err := sub.reader.Close()
		sub.leaveGroup()
		closed <- err
	}()
	report := func(err error) {
		if err != nil {
			sub.logger.Error("Closing kafka reader failed", err, nil)
		}
	}
	first := time.NewTimer(sub.cfg.MaxWait + readerCloseFirstWait)
	defer first.Stop()
	select {
	case err := <-closed:
		report(err)
		return
	case <-first.C:
	}
	sub.logger.Debug("kafka reader slow to close (group join in progress?): leaving the group", nil)
	sub.leaveGroup()
	second := time.NewTimer(readerCloseSecondWait)
	defer second.Stop()
	select {
	case err := <-closed:
		report(err)
	case <-second.C:
		sub.logger.Info("kafka reader still closing (group join in progress); continuing in background", nil)
	}
}

// leaveGroup sends LeaveGroup for the last member ID kafka-go reported, on a short-lived transport.
func (sub *subscription) leaveGroup() {
	sub.mu.Lock()
	member := sub.memberID
	sub.mu.Unlock()
	if member == "" {
		return
	}
	d := sub.cfg.Dialer
	transport := &kafka.Transport{ClientID: d.ClientID, TLS: d.TLS, SASL: d.SASLMechanism, DialTimeout: d.Timeout}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(sub.cfg.Brokers...), Timeout: leaveGroupTimeout, Transport: transport}
	ctx, cancel := context.WithTimeout(context.Background(), leaveGroupTimeout)
	defer cancel()
	res, err := client.LeaveGroup(ctx, &kafka.LeaveGroupRequest{
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

func (sub *subscription) fetchLoop() {
	for {
		select {
		case sub.slots <- struct{}{}:
		case <-sub.stopping:
			return
		}
		km, err := sub.reader.FetchMessage(sub.fetchCtx)
		if err != nil {
			<-sub.slots
			if sub.fetchCtx.Err() != nil {
				return
			}
			if errors.Is(err, kafka.RebalanceInProgress) {
				sub.logger.Info("Group rebalancing, fetch will resume: "+err.Error(), nil)
			} else {
				sub.logger.Error("Fetching message failed, retrying", err, nil)
			}
			t := time.NewTimer(fetchErrorBackoff)
			select {
			case <-t.C:
			case <-sub.stopping:
				t.Stop()
				return
			}
			continue
		}

		sub.mu.Lock()
		if sub.stopped {
			// Not tracked, hence never committed past: it will be fetched again by whoever owns the partition.
			sub.mu.Unlock()
			<-sub.slots
			return
		}
		_, reset, released := sub.tr.add(km.Partition, km.Offset, string(km.Key), km)
		sub.mu.Unlock()
		sub.release(released)
		if reset {
			sub.logger.Info("Partition restarted from a lower offset (rebalance): tracking reset, in-flight messages will be redelivered",
				watermill.LogFields{"partition": km.Partition, "offset": km.Offset})
		}
		sub.notify()
	}
}

func (sub *subscription) dispatchLoop() {
	for {
		sub.mu.Lock()
		if sub.stopped {
			sub.mu.Unlock()
			return
		}
		e := sub.tr.next()
		sub.mu.Unlock()
		if e == nil {
			select {
			case <-sub.wake:
				continue
			case <-sub.stopping:
				return
			}
		}

		msg := toWatermill(&e.value)
		ctx, cancel := context.WithCancel(sub.msgCtx)
		msg.SetContext(ctx)
		select {
		case sub.out <- msg:
			sub.watchers.Add(1)
			go sub.watch(e, msg, cancel)
		case <-sub.stopping:
			cancel()
			sub.mu.Lock()
			sub.tr.abandon(e)
			sub.mu.Unlock()
			return
		}
	}
}

// watch waits for the ack or nack of one handed-out message.
func (sub *subscription) watch(e *entry[kafka.Message], msg *message.Message, cancel context.CancelFunc) {
	defer sub.watchers.Done()
	defer cancel()
	select {
	case <-msg.Acked():
		cancel()
		sub.mu.Lock()
		released := sub.tr.ack(e)
		sub.mu.Unlock()
		sub.release(released)
		sub.notify()

	case <-msg.Nacked():
		cancel()
		sub.mu.Lock()
		sub.tr.nack(e)
		sub.mu.Unlock()
		t := time.NewTimer(sub.cfg.NackResendSleep)
		defer t.Stop()
		select {
		case <-t.C:
			sub.mu.Lock()
			if sub.stopped {
				sub.tr.abandon(e)
			} else if !sub.tr.requeue(e) {
				sub.logger.Debug("Nacked message not redelivered: its partition was reset",
					watermill.LogFields{"message_uuid": msg.UUID, "partition": e.partition, "offset": e.offset})
			}
			sub.mu.Unlock()
		case <-sub.stopping:
			sub.mu.Lock()
			sub.tr.abandon(e)
			sub.mu.Unlock()
		}
		sub.notify()

	case <-sub.giveUp:
	}
}

func (sub *subscription) commitLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-sub.stopping
		cancel()
	}()
	ticker := time.NewTicker(sub.cfg.CommitInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			cctx, ccancel := context.WithTimeout(ctx, sub.cfg.CommitTimeout)
			err := sub.commit(cctx)
			ccancel()
			if err != nil && ctx.Err() == nil {
				sub.logger.Error("Offset commit failed, will retry", err, nil)
			}
		case <-sub.stopping:
			return
		}
	}
}

// commit commits every partition whose lowest unfinished offset advanced.
func (sub *subscription) commit(ctx context.Context) error {
	sub.mu.Lock()
	cps := sub.tr.commits()
	sub.mu.Unlock()
	if len(cps) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(cps))
	for i, cp := range cps {
		// kafka-go commits Offset+1 (the next offset to consume).
		msgs[i] = kafka.Message{Topic: sub.topic, Partition: cp.partition, Offset: cp.offset - 1}
	}
	if err := sub.reader.CommitMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("wmkafka: commit offsets of topic %q (%d partition(s)): %w", sub.topic, len(cps), err)
	}
	sub.mu.Lock()
	for _, cp := range cps {
		sub.tr.committed(cp)
	}
	sub.mu.Unlock()
	return nil
}

func (sub *subscription) stats() SubscriptionStats {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	st := SubscriptionStats{
		Topic: sub.topic, InFlight: sub.tr.handedOut, Buffered: sub.tr.buffered,
		MemberID: sub.memberID, Generation: sub.generation, Generations: sub.generations,
	}
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
