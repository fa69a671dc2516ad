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

// Closing a subscription: kafka-go's ConsumerGroup.Close waits for the current generation (the hand-over,
// bounded by CloseTimeout) and for an in-progress group join, which the coordinator may hold for up to
// RebalanceTimeout. When no generation is running for groupJoinWait, the subscription sends its own
// LeaveGroup (which makes the coordinator answer the pending join), then waits groupCloseSecondWait more
// before letting kafka-go finish closing in the background.
const (
	groupJoinWait        = time.Second
	groupCloseSecondWait = 3 * time.Second
	leaveGroupTimeout    = time.Second
)

// The consumer group's time-outs when SubscriberConfig leaves them zero
// (kafka-go's own defaults but HeartbeatInterval, 3 s there: a member
// notices a rebalance within a second).
const (
	DefaultSessionTimeout    = 30 * time.Second
	DefaultRebalanceTimeout  = 30 * time.Second
	DefaultHeartbeatInterval = time.Second
)

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

	// CloseTimeout bounds the drain of a hand-over, at a rebalance and on close (default 20s): how long
	// handed-out messages are waited for once their partition is handed over. After it, or earlier when
	// the lease runs low (see LeaseMargin), the remaining ones are given up: their contexts are cancelled,
	// Claim fails for them, later acks are ignored, and they are not committed (the next owner gets them).
	CloseTimeout time.Duration

	// SessionTimeout, HeartbeatInterval and RebalanceTimeout are passed to kafka-go (defaults 30s, 1s,
	// 30s). HeartbeatInterval is also how quickly a member notices a rebalance started by another one
	// (kafka-go's default is 3s), and how often the lease is renewed.
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	RebalanceTimeout  time.Duration

	// LeaseMargin is how much of the lease (min(SessionTimeout, RebalanceTimeout) from the last heartbeat
	// answered while the group was stable) must be left for Claim to succeed, and how long before the
	// lease ends a hand-over gives up on claimed messages (default min(5s, lease/4)). It must cover what a
	// claimed step still does after its last Claim: recording and publishing an outcome.
	LeaseMargin time.Duration

	// JoinGroupBackoff is the pause after a failed group join (default 1s; kafka-go's default is 5s).
	JoinGroupBackoff time.Duration

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
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.RebalanceTimeout <= 0 {
		c.RebalanceTimeout = DefaultRebalanceTimeout
	}
	if c.LeaseMargin <= 0 {
		c.LeaseMargin = min(5*time.Second, min(c.SessionTimeout, c.RebalanceTimeout)/4)
	}
	if c.JoinGroupBackoff <= 0 {
		c.JoinGroupBackoff = time.Second
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
	d := c.withDefaults()
	if lease := min(d.SessionTimeout, d.RebalanceTimeout); d.LeaseMargin >= lease/2 || d.HeartbeatInterval >= lease/3 {
		return fmt.Errorf("wmkafka: SubscriberConfig: LeaseMargin (%s) must be under half and HeartbeatInterval (%s) under a third of min(SessionTimeout, RebalanceTimeout) (%s)",
			d.LeaseMargin, d.HeartbeatInterval, lease)
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
		logger:  logger.With(watermill.LogFields{"wmkafka": "subscriber", "group": cfg.GroupID}),
		closing: make(chan struct{}),
		subs:    map[*subscription]struct{}{},
	}, nil
}

// Subscribe starts one consumer-group member for topic (a kafka.ConsumerGroup, one kafka.Reader per
// assigned partition) and returns its message channel.
//
// Delivery contract:
//
//   - Ordering and concurrency. Records with different keys are handed out concurrently, up to Concurrency
//     unacked messages across the subscription's partitions. Records with the same key (hence the same
//     partition) are handed out one at a time in offset order: the next one is emitted only after the
//     previous one is acked. A record with a null or empty key counts as key "" of its partition: keyless
//     records of a partition are processed one at a time, in offset order (Kafka's plain partition order).
//   - Ack marks the record done. Offsets are committed per partition every CommitInterval and at every
//     hand-over, only up to the lowest unfinished offset (every lower offset acked), so a crash redelivers
//     every message not yet acked and possibly some acked after the last commit: at-least-once.
//   - Nack redelivers the same record (a new *message.Message with the same UUID, payload and metadata)
//     after NackResendSleep. It keeps its key's turn: later records with that key wait for it.
//   - Claims. A handler that must act at most once per record across the group calls Claim before each
//     irreversible step; see Claim.
//   - Hand-over (a rebalance, or closing). A generation's partitions are handed over in this order: stop
//     fetching; drop records not handed out yet; cancel the context of every handed-out message that was
//     not claimed (Claim fails for it from now on; its ack still counts if it comes); wait until every
//     handed-out message of these partitions is acked or nacked, up to the drain deadline, which is
//     CloseTimeout after the hand-over began or LeaseMargin before the lease ends, whichever is first; give
//     up on the rest (contexts cancelled, Claim fails, not committed); commit; only then let kafka-go rejoin
//     the group (or leave it, on close). So the next owner of a partition starts after the last commit of
//     this one, and never while a claimed message of it is still being handled here. A rebalance therefore
//     takes about HeartbeatInterval (to notice it) + the longest claimed message still running (at most
//     the drain deadline) + a join and a sync round trip.
//   - Lost membership. A member that cannot heartbeat (paused by the OS, stalled, partitioned) loses its
//     lease: after min(SessionTimeout, RebalanceTimeout) − LeaseMargin without a heartbeat answered while
//     the group was stable, Claim fails, and a heartbeat or commit refused for an unknown member or
//     generation ends the generation at once. Only messages claimed before can still complete a step here.
//   - Shutdown. When ctx is cancelled or Close is called the subscription stops emitting, hands over its
//     partitions as above (heartbeats continue meanwhile, so claimed messages get the whole CloseTimeout
//     unless a rebalance started), leaves the group and closes the channel. This takes at most
//     CloseTimeout + CommitTimeout + 5s; a kafka-go group still busy in a join after that finishes closing
//     in the background (bounded by RebalanceTimeout).
//   - Metadata. Every message carries the kafka.* Metadata* keys plus one entry per record header (headers
//     with the "kafka." prefix are dropped). Message.UUID is the UUIDHeader header, which is not copied into
//     the metadata; a record without it gets a UUIDv5 of topic/partition/offset, stable across redeliveries.
//   - Context. msg.Context() carries ctx's values but not its cancellation; it is cancelled when the
//     message is acked or nacked, when its partition is handed over before it was claimed, and when the
//     drain gives up on it.
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
	d := s.cfg.Dialer
	// Metadata of this topic only (kafka-go's default is every topic of the cluster, every few seconds).
	transport := &kafka.Transport{ClientID: d.ClientID, TLS: d.TLS, SASL: d.SASLMechanism, DialTimeout: d.Timeout, MetadataTopics: []string{topic}}
	sub := &subscription{
		cfg:       s.cfg,
		logger:    logger,
		topic:     topic,
		out:       make(chan *message.Message),
		msgCtx:    context.WithoutCancel(ctx),
		tr:        newTracker[kafka.Message](s.cfg.Concurrency),
		handouts:  map[*entry[kafka.Message]]*handout{},
		changed:   make(chan struct{}),
		transport: transport,
		client:    &kafka.Client{Addr: kafka.TCP(s.cfg.Brokers...), Timeout: s.cfg.CommitTimeout + s.cfg.HeartbeatInterval, Transport: transport},
		slots:     make(chan struct{}, s.cfg.MaxBuffered),
		wake:      make(chan struct{}, 1),
		stopping:  make(chan struct{}),
		giveUp:    make(chan struct{}),
		done:      make(chan struct{}),
	}
	gc := kafka.ConsumerGroupConfig{
		ID:                     s.cfg.GroupID,
		Brokers:                s.cfg.Brokers,
		Dialer:                 s.cfg.Dialer,
		Topics:                 []string{topic},
		HeartbeatInterval:      s.cfg.HeartbeatInterval,
		WatchPartitionChanges:  s.cfg.PartitionWatchInterval > 0,
		PartitionWatchInterval: max(s.cfg.PartitionWatchInterval, 0),
		SessionTimeout:         s.cfg.SessionTimeout,
		RebalanceTimeout:       s.cfg.RebalanceTimeout,
		JoinGroupBackoff:       s.cfg.JoinGroupBackoff,
		StartOffset:            s.cfg.StartOffset,
		Timeout:                s.cfg.CommitTimeout,
		Logger:                 kafkaLogger{logger: logger, onJoin: sub.joined},
		ErrorLogger:            kafkaLogger{logger: logger, error: true},
	}
	group, err := kafka.NewConsumerGroup(gc)
	if err != nil {
		return nil, fmt.Errorf("wmkafka: subscribe to topic %q: consumer group: %w", topic, err)
	}
	sub.group = group
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
	// MemberID and Generation are the group membership of the last generation ("" and 0 before the
	// first). Generations counts the generations this member took part in.
	MemberID    string
	Generation  int32
	Generations int
	// HandOversStarted counts hand-overs begun (the partitions revoked, the drain started), HandOvers
	// those completed. GivenUpUnclaimed counts messages whose partition was handed
	// over before they were claimed (their contexts were cancelled); GivenUpAtDeadline those the drain
	// gave up on at its deadline. ClaimsRefused counts Claim calls that failed.
	HandOversStarted  int
	HandOvers         int
	GivenUpUnclaimed  int
	GivenUpAtDeadline int
	ClaimsRefused     int
	// LastHandOver is how long the last hand-over took, from the end of the generation to the commit.
	LastHandOver time.Duration
	// CommitRounds counts the commit rounds run (every CommitInterval, and at each hand-over), whether
	// or not they had an offset to commit.
	CommitRounds int
	// Partitions is sorted by partition.
	Partitions []PartitionStats
}

// PartitionStats is a snapshot of one partition's tracking. Offsets are "next offset to consume"
// positions, as Kafka commits them; -1 means unknown.
type PartitionStats struct {
	Partition int
	// Committed is the last offset this subscription committed (or the position it started from) in the
	// current generation.
	Committed int64
	// Committable is the lowest unfinished offset: what the next commit will write.
	Committable int64
	// LastFetched is the offset of the last record fetched since the last reset.
	LastFetched int64
	// Resets counts records fetched again from a lower offset within one generation (not expected: each
	// generation starts a new reader at the committed offset).
	Resets int
}

// Consuming reports whether every live subscription takes part in its
// group now: it is a member of a generation whose membership a heartbeat
// confirmed within its lease (the lease has not run out), and the reader
// of each of its assigned partitions has fetched from the partition's
// leader in that generation. False before the first generation, during a
// rebalance, after a broker outage until the member has rejoined and
// fetched again, and with no live subscription.
func (s *Subscriber) Consuming() bool {
	s.mu.Lock()
	subs := make([]*subscription, 0, len(s.subs))
	for sub := range s.subs {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	if len(subs) == 0 {
		return false
	}
	now := time.Now()
	for _, sub := range subs {
		sub.mu.Lock()
		g := sub.gen
		sub.mu.Unlock()
		if g == nil || !g.lease.valid(now) || !g.fetchedAll() {
			return false
		}
	}
	return true
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
