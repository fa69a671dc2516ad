package wmkafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/notifyd/notifyd/internal/testkit"
)

// errorLogger prints only errors (to stderr, not t.Log: the conformance suite closes subscribers after
// subtests end). Set WMKAFKA_TEST_LOG=debug to see everything.
type errorLogger struct {
	watermill.NopLogger
	fields watermill.LogFields
}

func (l errorLogger) Error(msg string, err error, fields watermill.LogFields) {
	fmt.Fprintf(os.Stderr, "ERROR %s: %v %v %v\n", msg, err, l.fields, fields)
}

func (l errorLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return errorLogger{fields: l.fields.Add(fields)}
}

func testLogger() watermill.LoggerAdapter {
	if os.Getenv("WMKAFKA_TEST_LOG") == "debug" {
		return watermill.NewStdLogger(true, false)
	}
	return errorLogger{}
}

// newCluster returns the brokers of a test: NOTIFYD_TEST_BROKERS (a real
// Apache Kafka, where topics are not created on first use: tests create
// theirs, the conformance suite through SubscribeInitialize), else a new
// in-process kfake cluster whose topics are created on first use with
// partitions partitions.
func newCluster(t *testing.T, partitions int) []string {
	t.Helper()
	if env := os.Getenv("NOTIFYD_TEST_BROKERS"); env != "" {
		return strings.Split(env, ",")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(partitions))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// uniqueName is base made unique to this run of the test: topics and
// groups of a real broker outlive the test.
func uniqueName(t *testing.T, base string) string {
	return fmt.Sprintf("%s-%s-%d", base, strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), time.Now().UnixNano())
}

// adminClient returns a kafka-go client on its own transport, closed at cleanup (kafka.DefaultTransport
// would keep goroutines for every test cluster and defeat TestNoGoroutineLeak).
func adminClient(t *testing.T, brokers []string) *kafka.Client {
	tr := &kafka.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
}

func createTopic(t *testing.T, brokers []string, topic string, partitions int) {
	t.Helper()
	require.NoError(t, ensureTopic(adminClient(t, brokers), topic, partitions))
}

// ensureTopic creates topic with partitions partitions unless it exists,
// and waits until its partitions have leaders.
func ensureTopic(client *kafka.Client, topic string, partitions int) error {
	res, err := client.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}},
	})
	if err != nil {
		return err
	}
	if err := res.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return err
	}
	return testkit.Poll(30*time.Second, func() error {
		md, err := client.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) == partitions &&
			!slices.ContainsFunc(md.Topics[0].Partitions, func(p kafka.Partition) bool { return p.Leader.Host == "" }) {
			return nil
		}
		return fmt.Errorf("topic %s without a leader for each of %d partitions (%v)", topic, partitions, err)
	})
}

// initializingSubscriber creates each topic before subscribing to it, as a
// real broker that does not create topics on first use needs.
type initializingSubscriber struct {
	*Subscriber
	client     *kafka.Client
	partitions int
}

func (s initializingSubscriber) SubscribeInitialize(topic string) error {
	return ensureTopic(s.client, topic, s.partitions)
}

func newTestPublisher(t *testing.T, brokers []string) *Publisher {
	t.Helper()
	pub, err := NewPublisher(PublisherConfig{Brokers: brokers, ClientID: "wmkafka-test", AllowAutoTopicCreation: true}, testLogger())
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// testSubscriberConfig speeds up rebalances (HeartbeatInterval) and shortens give-up on close.
func testSubscriberConfig(brokers []string, group string) SubscriberConfig {
	return SubscriberConfig{
		Brokers:           brokers,
		GroupID:           group,
		ClientID:          "wmkafka-test",
		HeartbeatInterval: 100 * time.Millisecond,
		CloseTimeout:      3 * time.Second,
	}
}

func newTestSubscriber(t *testing.T, cfg SubscriberConfig) *Subscriber {
	t.Helper()
	sub, err := NewSubscriber(cfg, testLogger())
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// keyFromPayload publishes every message with its payload as the record key (the suite sets no keys).
type keyFromPayload struct{ *Publisher }

func (p keyFromPayload) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		m.Metadata.Set(MetadataKey, string(m.Payload))
	}
	return p.Publisher.Publish(topic, msgs...)
}

// conformanceConstructors returns the suite's constructors. Everything they create is closed when the
// top-level test ends (Close is idempotent): watermill's TestPublishSubscribeInOrder never closes its
// subscribers (its `defer require.NoError(t, sub.Close())` runs Close at defer time, before Subscribe).
func conformanceConstructors(t *testing.T, brokers []string, partitions int, keyed bool) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	client := adminClient(t, brokers)
	var (
		mu      sync.Mutex
		created []interface{ Close() error }
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range created {
			_ = c.Close()
		}
	})
	withGroup := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		pub, err := NewPublisher(PublisherConfig{Brokers: brokers, AllowAutoTopicCreation: true}, testLogger())
		require.NoError(t, err)
		cfg := testSubscriberConfig(brokers, group)
		// TestContinueAfterErrors nacks 300 times on a serialised partition: 10ms instead of 100ms per nack.
		cfg.NackResendSleep = 10 * time.Millisecond
		sub, err := NewSubscriber(cfg, testLogger())
		require.NoError(t, err)
		mu.Lock()
		created = append(created, pub, sub)
		mu.Unlock()
		isub := initializingSubscriber{Subscriber: sub, client: client, partitions: partitions}
		if keyed {
			return keyFromPayload{pub}, isub
		}
		return pub, isub
	}
	// One group per conformance test (t is the test's own subtest in every constructor call), so that
	// parallel tests do not rebalance each other and a re-created subscriber continues the same group.
	// Except in TestNewSubscriberReceivesOldMessages: a new subscriber that is to read a topic's old
	// messages is, in Kafka, a new consumer group (StartOffset FirstOffset); in a group it shares the
	// partitions and continues from the group's commits.
	run := fmt.Sprint(time.Now().UnixNano())
	var fresh atomic.Int64
	plain := func(t *testing.T) (message.Publisher, message.Subscriber) {
		group := "conformance-" + t.Name() + "-" + run
		if strings.Contains(t.Name(), "/TestNewSubscriberReceivesOldMessages/") {
			group += fmt.Sprintf("-%d", fresh.Add(1))
		}
		return withGroup(t, group)
	}
	return plain, withGroup
}

// restartCommand is the command that restarts the broker
// (TestReconnectAcrossBrokerRestarts): scripts/kafka-local restart, with
// NOTIFYD_TEST_KAFKA_LOCAL naming the script of the Apache Kafka in
// NOTIFYD_TEST_BROKERS. The in-process kfake cluster cannot be restarted
// from outside: without it the test is skipped (an expected skip,
// .ci/expected-skips).
func restartCommand() []string {
	if script := os.Getenv("NOTIFYD_TEST_KAFKA_LOCAL"); script != "" && os.Getenv("NOTIFYD_TEST_BROKERS") != "" {
		return []string{script, "restart"}
	}
	return nil
}

// TestConformance runs watermill's Pub/Sub test suite on single-partition topics with keyless messages:
// Kafka partition order, which this package keeps for keyless records (key "" of the partition).
func TestConformance(t *testing.T) {
	brokers := newCluster(t, 1)
	plain, withGroup := conformanceConstructors(t, brokers, 1, false)
	tests.TestPubSub(t, tests.Features{
		ConsumerGroups:      true,
		ExactlyOnceDelivery: false,
		GuaranteedOrder:     true,
		Persistent:          true,
		// A new consumer group reads a topic from its first offset (conformanceConstructors).
		NewSubscriberReceivesOldMessages: true,
		// No RestartServiceCommand: the suite's TestReconnect races in its
		// own code; TestReconnectAcrossBrokerRestarts runs its scenario.
		// Message contexts are derived from Subscribe's context, not from the publisher's.
		ContextPreserved: false,
	}, plain, withGroup)
}

// TestConformanceKeyed runs the suite again on 4-partition topics with the payload as key: per-key order
// across partitions with concurrent hand-out (the suite's ordered messages carry their type in the payload).
// Short mode sizes: the full sizes run in TestConformance.
func TestConformanceKeyed(t *testing.T) {
	brokers := newCluster(t, 4)
	plain, withGroup := conformanceConstructors(t, brokers, 4, true)
	tests.TestPubSub(t, tests.Features{
		ConsumerGroups:                   true,
		ExactlyOnceDelivery:              false,
		GuaranteedOrder:                  true,
		Persistent:                       true,
		NewSubscriberReceivesOldMessages: true,
		ContextPreserved:                 false,
		ForceShort:                       true,
	}, plain, withGroup)
}

func TestPerKeyOrderingWithConcurrency(t *testing.T) {
	brokers := newCluster(t, 4)
	const keys, perKey = 10, 20
	topic := uniqueName(t, "ordering")
	createTopic(t, brokers, topic, 4)
	pub := newTestPublisher(t, brokers)

	var msgs []*message.Message
	for i := range perKey {
		for k := range keys {
			m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
			m.Metadata.Set(MetadataKey, fmt.Sprintf("key-%d", k))
			msgs = append(msgs, m)
		}
	}
	require.NoError(t, pub.Publish(topic, msgs...))

	cfg := testSubscriberConfig(brokers, "ordering")
	cfg.Concurrency = 16
	sub := newTestSubscriber(t, cfg)
	ch, err := sub.Subscribe(context.Background(), topic)
	require.NoError(t, err)

	var (
		mu         sync.Mutex
		handled    = map[string][]int{}
		activeKey  = map[string]int{}
		partitions = map[string]string{}
		inFlight   atomic.Int32
		maxInFlt   atomic.Int32
		wg         sync.WaitGroup
		violations []string
	)
	deadline := time.After(30 * time.Second)
	for range keys * perKey {
		var m *message.Message
		select {
		case m = <-ch:
		case <-deadline:
			t.Fatalf("timed out; handled %v", handled)
		}
		n := inFlight.Add(1)
		for cur := maxInFlt.Load(); n > cur && !maxInFlt.CompareAndSwap(cur, n); cur = maxInFlt.Load() {
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := m.Metadata.Get(MetadataKey)
			seq, _ := strconv.Atoi(string(m.Payload))
			mu.Lock()
			activeKey[key]++
			if activeKey[key] > 1 {
				violations = append(violations, "two messages of "+key+" in flight")
			}
			if p, ok := partitions[key]; ok && p != m.Metadata.Get(MetadataPartition) {
				violations = append(violations, key+" seen on two partitions")
			}
			partitions[key] = m.Metadata.Get(MetadataPartition)
			handled[key] = append(handled[key], seq)
			mu.Unlock()

			time.Sleep(time.Duration(rand.Intn(3000)) * time.Microsecond)

			mu.Lock()
			activeKey[key]--
			mu.Unlock()
			inFlight.Add(-1)
			m.Ack()
		}()
	}
	wg.Wait()

	assert.Empty(t, violations)
	for k := range keys {
		want := make([]int, perKey)
		for i := range want {
			want[i] = i
		}
		assert.Equal(t, want, handled[fmt.Sprintf("key-%d", k)], "key-%d handled out of order", k)
	}
	t.Logf("max in flight %d (Concurrency 16), keys on partitions %v", maxInFlt.Load(), partitions)
	assert.Greater(t, maxInFlt.Load(), int32(1), "different keys were never in flight together")
	assert.LessOrEqual(t, maxInFlt.Load(), int32(16))
	used := map[string]bool{}
	for _, p := range partitions {
		used[p] = true
	}
	assert.Greater(t, len(used), 1, "all keys on one partition: the test would not cover several partitions")

	select {
	case m := <-ch:
		t.Fatalf("unexpected extra message %s %v", m.UUID, m.Metadata)
	case <-time.After(300 * time.Millisecond):
	}
}

// committedOffset reads the group's committed offset of partition 0 (-1: none).
func committedOffset(t *testing.T, brokers []string, group, topic string) int64 {
	t.Helper()
	client := adminClient(t, brokers)
	res, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{
		GroupID: group, Topics: map[string][]int{topic: {0}},
	})
	require.NoError(t, err)
	require.NoError(t, res.Error)
	for _, p := range res.Topics[topic] {
		if p.Partition == 0 {
			require.NoError(t, p.Error)
			return p.CommittedOffset
		}
	}
	return -1
}

func receiveN(t *testing.T, ch <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	var out []*message.Message
	timeout := time.After(20 * time.Second)
	for len(out) < n {
		select {
		case m, ok := <-ch:
			require.True(t, ok, "channel closed after %d of %d", len(out), n)
			out = append(out, m)
		case <-timeout:
			t.Fatalf("received %d of %d", len(out), n)
		}
	}
	return out
}

func offsetOf(m *message.Message) int64 {
	o, _ := strconv.ParseInt(m.Metadata.Get(MetadataOffset), 10, 64)
	return o
}

func TestCommitUpToLowestUnfinished(t *testing.T) {
	brokers := newCluster(t, 1)
	topic, group := uniqueName(t, "commits"), uniqueName(t, "commits-group")
	createTopic(t, brokers, topic, 1)
	pub := newTestPublisher(t, brokers)
	for i := range 10 {
		m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
		m.Metadata.Set(MetadataKey, fmt.Sprintf("k%d", i)) // distinct keys: all ten in flight at once
		require.NoError(t, pub.Publish(topic, m))
	}

	cfg := testSubscriberConfig(brokers, group)
	cfg.CloseTimeout = 500 * time.Millisecond

	// Round 1: ack offsets 1..9, not 0.
	sub1, err := NewSubscriber(cfg, testLogger())
	require.NoError(t, err)
	ch, err := sub1.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	got := receiveN(t, ch, 10)
	var first *message.Message
	for _, m := range got {
		if offsetOf(m) == 0 {
			first = m
			continue
		}
		m.Ack()
	}
	require.NotNil(t, first)
	// The acks processed, then a commit round run after them: nothing may be committed.
	stats := func() SubscriptionStats { st := sub1.Stats(); require.Len(t, st, 1); return st[0] }
	testkit.Eventually(t, "the acks processed", 30*time.Second, func() bool { return stats().InFlight == 1 })
	rounds := stats().CommitRounds
	testkit.Eventually(t, "a commit round after the acks", 30*time.Second, func() bool { return stats().CommitRounds > rounds })
	st := sub1.Stats()
	require.Len(t, st, 1)
	assert.Equal(t, 1, st[0].InFlight)
	assert.Equal(t, []PartitionStats{{Partition: 0, Committed: 0, Committable: 0, LastFetched: 9}}, st[0].Partitions)
	require.NoError(t, sub1.Close())
	select {
	case <-first.Context().Done():
	default:
		t.Error("context of the given-up message not cancelled by Close")
	}
	first.Ack() // acking after Close gave up on the message is harmless (ignored)
	_, open := <-ch
	assert.False(t, open, "channel not closed by Close")
	assert.Equal(t, int64(-1), committedOffset(t, brokers, group, topic), "nothing may be committed while offset 0 is unacked")

	// Round 2: everything from 0 is redelivered; ack all.
	sub2, err := NewSubscriber(cfg, testLogger())
	require.NoError(t, err)
	ch, err = sub2.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	got = receiveN(t, ch, 10)
	var offsets []int64
	for _, m := range got {
		offsets = append(offsets, offsetOf(m))
		m.Ack()
	}
	slices.Sort(offsets)
	assert.Equal(t, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, offsets)
	require.NoError(t, sub2.Close()) // flushes the commit
	assert.Equal(t, int64(10), committedOffset(t, brokers, group, topic))

	// Round 3: nothing is redelivered: the first message received is a new one.
	sub3, err := NewSubscriber(cfg, testLogger())
	require.NoError(t, err)
	ch, err = sub3.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	select {
	case m := <-ch:
		t.Fatalf("redelivered after full commit: offset %d", offsetOf(m))
	case <-time.After(500 * time.Millisecond):
	}
	sentinel := message.NewMessage(watermill.NewUUID(), []byte("sentinel"))
	require.NoError(t, pub.Publish(topic, sentinel))
	m := receiveN(t, ch, 1)[0]
	assert.Equal(t, sentinel.UUID, m.UUID)
	assert.Equal(t, int64(10), offsetOf(m))
	m.Ack()
	require.NoError(t, sub3.Close())
}

func TestNackRedeliversInKeyOrder(t *testing.T) {
	brokers := newCluster(t, 1)
	topic := uniqueName(t, "nacks")
	createTopic(t, brokers, topic, 1)
	pub := newTestPublisher(t, brokers)
	var sent []*message.Message
	for i := range 3 {
		m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
		m.Metadata.Set(MetadataKey, "same")
		sent = append(sent, m)
	}
	other := message.NewMessage(watermill.NewUUID(), []byte("other"))
	other.Metadata.Set(MetadataKey, "other")
	require.NoError(t, pub.Publish(topic, append(sent, other)...))

	cfg := testSubscriberConfig(brokers, "nacks")
	cfg.NackResendSleep = 200 * time.Millisecond
	sub := newTestSubscriber(t, cfg)
	ch, err := sub.Subscribe(context.Background(), topic)
	require.NoError(t, err)

	var order []string
	nacked := false
	for len(order) < 5 {
		m := receiveN(t, ch, 1)[0]
		order = append(order, string(m.Payload))
		if string(m.Payload) == "0" && !nacked {
			nacked = true
			assert.Equal(t, sent[0].UUID, m.UUID)
			m.Nack()
			select {
			case <-m.Context().Done():
			case <-time.After(5 * time.Second):
				t.Error("context not cancelled by Nack")
			}
			continue
		}
		m.Ack()
	}
	// "other" is not held back by the nacked key; the same key waits for the redelivery.
	assert.Equal(t, []string{"0", "other", "0", "1", "2"}, order)
}

func TestHeadersRoundTrip(t *testing.T) {
	brokers := newCluster(t, 1)
	topic, topic2 := uniqueName(t, "headers"), uniqueName(t, "headers-republished")
	createTopic(t, brokers, topic, 1)
	createTopic(t, brokers, topic2, 1)
	pub := newTestPublisher(t, brokers)

	orig := message.NewMessage(watermill.NewUUID(), []byte(`{"payment":"p-1"}`))
	orig.Metadata.Set("trace_id", "abc")
	orig.Metadata.Set("name", "payment.resend")
	orig.Metadata.Set("empty", "")
	orig.Metadata.Set(MetadataKey, "customer-42")
	orig.Metadata.Set(MetadataPartition, "7") // transport metadata: never a header, ignored
	orig.Metadata.Set("kafka.custom", "x")    // reserved prefix: never a header
	require.NoError(t, pub.Publish(topic, orig))

	// Raw record: exactly the expected headers and key.
	raw := readRaw(t, brokers, topic, 1)[0]
	assert.Equal(t, "customer-42", string(raw.Key))
	wantHeaders := map[string]string{UUIDHeader: orig.UUID, "trace_id": "abc", "name": "payment.resend", "empty": ""}
	assert.Equal(t, wantHeaders, headerMap(t, raw.Headers))

	sub := newTestSubscriber(t, testSubscriberConfig(brokers, "headers"))
	ch, err := sub.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	got := receiveN(t, ch, 1)[0]
	got.Ack()
	assert.Equal(t, orig.UUID, got.UUID)
	assert.Equal(t, orig.Payload, got.Payload)
	ts, err := time.Parse(time.RFC3339Nano, got.Metadata.Get(MetadataTimestamp))
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now(), ts, time.Minute)
	assert.Equal(t, message.Metadata{
		"trace_id":            "abc",
		"name":                "payment.resend",
		"empty":               "",
		MetadataKey:           "customer-42",
		MetadataTopic:         topic,
		MetadataPartition:     "0",
		MetadataOffset:        "0",
		MetadataTimestamp:     got.Metadata.Get(MetadataTimestamp),
		MetadataHighWaterMark: "1",
	}, got.Metadata)

	// Re-published unchanged: same key, exactly the original headers.
	require.NoError(t, pub.Publish(topic2, got))
	raw2 := readRaw(t, brokers, topic2, 1)[0]
	assert.Equal(t, raw.Key, raw2.Key)
	assert.Equal(t, headerMap(t, raw.Headers), headerMap(t, raw2.Headers))
}

func TestRecordWithoutUUIDHeader(t *testing.T) {
	brokers := newCluster(t, 1)
	topic := uniqueName(t, "foreign")
	createTopic(t, brokers, topic, 1)
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: tr}
	require.NoError(t, w.WriteMessages(context.Background(), kafka.Message{
		Topic: topic, Value: []byte("v"),
		Headers: []kafka.Header{{Key: "kafka.offset", Value: []byte("spoofed")}, {Key: "h", Value: []byte("1")}},
	}))
	require.NoError(t, w.Close())

	var uuids []string
	for _, group := range []string{"foreign-1", "foreign-2"} {
		sub := newTestSubscriber(t, testSubscriberConfig(brokers, group))
		ch, err := sub.Subscribe(context.Background(), topic)
		require.NoError(t, err)
		m := receiveN(t, ch, 1)[0]
		m.Ack()
		assert.Equal(t, "0", m.Metadata.Get(MetadataOffset), "kafka.* header must not override transport metadata")
		assert.Equal(t, "1", m.Metadata.Get("h"))
		assert.Equal(t, "", m.Metadata.Get(MetadataKey))
		uuids = append(uuids, m.UUID)
		require.NoError(t, sub.Close())
	}
	assert.NotEmpty(t, uuids[0])
	assert.Equal(t, uuids[0], uuids[1], "UUID of a record without UUID header must be stable across deliveries")
}

func readRaw(t *testing.T, brokers []string, topic string, n int) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []kafka.Message
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

func headerMap(t *testing.T, hs []kafka.Header) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, h := range hs {
		_, dup := out[h.Key]
		require.False(t, dup, "duplicate header %q", h.Key)
		out[h.Key] = string(h.Value)
	}
	return out
}

func TestClosePromptly(t *testing.T) {
	brokers := newCluster(t, 2)
	topic := uniqueName(t, "close")
	createTopic(t, brokers, topic, 2)
	pub := newTestPublisher(t, brokers)
	for i := range 20 {
		m := message.NewMessage(watermill.NewUUID(), []byte("x"))
		m.Metadata.Set(MetadataKey, strconv.Itoa(i))
		require.NoError(t, pub.Publish(topic, m))
	}

	t.Run("idle subscription", func(t *testing.T) {
		// Close does not wait for the group: the session and the rebalance
		// time-outs are far beyond the guard.
		cfg := testSubscriberConfig(brokers, uniqueName(t, "close-idle"))
		cfg.SessionTimeout, cfg.RebalanceTimeout = 5*time.Minute, 5*time.Minute
		sub, err := NewSubscriber(cfg, testLogger())
		require.NoError(t, err)
		empty := uniqueName(t, "close-empty-topic")
		createTopic(t, brokers, empty, 1)
		_, err = sub.Subscribe(context.Background(), empty)
		require.NoError(t, err)
		testkit.Eventually(t, "the subscription to join its group", 30*time.Second, func() bool { return sub.Stats()[0].Generations > 0 })
		testkit.Returns(t, "Close", time.Minute, func() { require.NoError(t, sub.Close()) })
		_, err = sub.Subscribe(context.Background(), topic)
		assert.Error(t, err, "Subscribe after Close")
		assert.NoError(t, sub.Close(), "second Close")
	})

	t.Run("Close waits for an in-flight message", func(t *testing.T) {
		// CloseTimeout is never reached: the message is acked first.
		sub, ch, held := claimOne(t, brokers, topic, "close-waits", 5*time.Minute)
		closed := make(chan struct{})
		go func() { defer close(closed); assert.NoError(t, sub.Close()) }()
		testkit.Eventually(t, "the drain to begin", 30*time.Second, func() bool { return sub.Stats()[0].HandOversStarted > 0 })
		select {
		case <-closed:
			t.Fatal("Close returned while a claimed message was in flight")
		default:
		}
		held.Ack()
		testkit.Returns(t, "Close after the ack", time.Minute, func() { <-closed })
		for range ch { // closed, possibly after nothing
		}
	})

	t.Run("an unacked message is given up at CloseTimeout", func(t *testing.T) {
		sub, ch, held := claimOne(t, brokers, topic, "close-unacked", time.Second)
		testkit.Returns(t, "Close", time.Minute, func() { require.NoError(t, sub.Close()) })
		<-held.Context().Done()
		assert.Error(t, Claim(held), "a message given up is no longer claimable")
		for range ch { // closed, possibly after nothing
		}
	})

	t.Run("ack during close is committed", func(t *testing.T) {
		group, onClose := uniqueName(t, "close-ack"), uniqueName(t, "commits-on-close")
		cfg := testSubscriberConfig(brokers, group)
		cfg.Concurrency = 1
		sub, err := NewSubscriber(cfg, testLogger())
		require.NoError(t, err)
		createTopic(t, brokers, onClose, 1)
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := sub.Subscribe(ctx, onClose)
		require.NoError(t, err)
		m := message.NewMessage(watermill.NewUUID(), []byte("x"))
		require.NoError(t, pub.Publish(onClose, m))
		got := receiveN(t, ch, 1)[0]
		require.NoError(t, Claim(got))
		cancel() // stop via context
		testkit.Eventually(t, "the drain to begin", 30*time.Second, func() bool {
			st := sub.Stats()
			return len(st) == 0 || st[0].HandOversStarted > 0
		})
		select {
		case <-got.Context().Done():
			t.Fatal("claimed message's context cancelled by the shutdown: handlers could not finish")
		default:
		}
		require.NoError(t, Claim(got), "a claimed message stays claimable during the drain")
		got.Ack()
		testkit.Returns(t, "the subscription's channel to close", time.Minute, func() {
			for range ch {
			}
		})
		assert.Equal(t, int64(1), committedOffset(t, brokers, group, onClose))
		require.NoError(t, sub.Close())
	})
}

// TestNoGoroutineLeak runs a publish/consume/nack/close cycle and checks that no goroutine of this package
// or of kafka-go is left once everything is closed.
func TestNoGoroutineLeak(t *testing.T) {
	brokers := newCluster(t, 3)
	topicA, topicB := uniqueName(t, "leak-a"), uniqueName(t, "leak-b")
	func() {
		// The topics, with a client whose connections are closed before the count.
		tr := &kafka.Transport{}
		client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
		require.NoError(t, ensureTopic(client, topicA, 3))
		require.NoError(t, ensureTopic(client, topicB, 3))
		tr.CloseIdleConnections()
	}()
	func() {
		pub, err := NewPublisher(PublisherConfig{Brokers: brokers, AllowAutoTopicCreation: true}, testLogger())
		require.NoError(t, err)
		cfg := testSubscriberConfig(brokers, uniqueName(t, "leak"))
		cfg.CloseTimeout = 500 * time.Millisecond
		sub, err := NewSubscriber(cfg, testLogger())
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		chA, err := sub.Subscribe(ctx, topicA)
		require.NoError(t, err)
		chB, err := sub.Subscribe(context.Background(), topicB)
		require.NoError(t, err)
		for i := range 30 {
			m := message.NewMessage(watermill.NewUUID(), []byte("x"))
			m.Metadata.Set(MetadataKey, strconv.Itoa(i))
			require.NoError(t, pub.Publish(topicA, m))
			require.NoError(t, pub.Publish(topicB, m.Copy()))
		}
		for i, m := range receiveN(t, chA, 30) {
			if i%7 == 0 {
				m.Nack()
			} else {
				m.Ack()
			}
		}
		receiveN(t, chB, 5) // left unacked: given up on close
		cancel()
		require.NoError(t, sub.Close())
		require.NoError(t, pub.Close())
	}()

	testkit.Until(t, 10*time.Second, func() error {
		var leaked []string
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "TestNoGoroutineLeak") || strings.Contains(g, "testing.") && !strings.Contains(g, "wmkafka.(*") {
				continue
			}
			if strings.Contains(g, "wmkafka.(*") || strings.Contains(g, "segmentio/kafka-go") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) > 0 {
			return fmt.Errorf("goroutines left after Close:\n%s", strings.Join(leaked, "\n\n"))
		}
		return nil
	})
}

// TestMemberIDCapture guards the kafka-go log format the subscription relies on to learn its member ID
// before a generation starts (closeGroup sends LeaveGroup with it).
func TestMemberIDCapture(t *testing.T) {
	brokers := newCluster(t, 1)
	sub := newTestSubscriber(t, testSubscriberConfig(brokers, "member-id"))
	_, err := sub.Subscribe(context.Background(), "member-id")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st := sub.Stats()
		return len(st) == 1 && st[0].MemberID != "" && st[0].Generation > 0 && st[0].Generations > 0
	}, 10*time.Second, 10*time.Millisecond, "member ID never captured from kafka-go's log (format changed?)")
}

// TestCloseDuringRebalanceDoesNotStallGroup: members closed while the group rebalances must leave it, or the
// next member waits for them until SessionTimeout (kafka-go skips LeaveGroup in that case; see closeReader).
func TestCloseDuringRebalanceDoesNotStallGroup(t *testing.T) {
	brokers := newCluster(t, 1)
	topic, group := uniqueName(t, "stall"), uniqueName(t, "stall-group")
	createTopic(t, brokers, topic, 1)
	pub := newTestPublisher(t, brokers)
	cfg := testSubscriberConfig(brokers, group)
	// kafka-go's defaults, so that a member that did not leave would stall the group for ~30s.
	cfg.SessionTimeout, cfg.RebalanceTimeout = 30*time.Second, 30*time.Second

	for round := range 5 {
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sub, err := NewSubscriber(cfg, testLogger())
				assert.NoError(t, err)
				_, err = sub.Subscribe(context.Background(), topic)
				assert.NoError(t, err)
				time.Sleep(time.Duration(rand.Intn(50)) * time.Millisecond)
				assert.NoError(t, sub.Close())
			}()
		}
		wg.Wait()

		start := time.Now()
		sub := newTestSubscriber(t, cfg)
		ch, err := sub.Subscribe(context.Background(), topic)
		require.NoError(t, err)
		m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(round)))
		require.NoError(t, pub.Publish(topic, m))
		select {
		case got := <-ch:
			got.Ack()
			assert.Equal(t, m.UUID, got.UUID)
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: no delivery within 10s: a closed member is still in the group", round)
		}
		t.Logf("round %d: delivered %s after the concurrent closes", round, time.Since(start))
		require.NoError(t, sub.Close())
	}
}

// TestPublishConcurrentNotSerialised: with kafka-go's default 1s BatchTimeout, 10 sequential synchronous
// publishes per goroutine would take >= 10s. With 1ms they share batches and take milliseconds.
func TestPublishConcurrentNotSerialised(t *testing.T) {
	brokers := newCluster(t, 2)
	topic := uniqueName(t, "latency")
	createTopic(t, brokers, topic, 2)
	pub := newTestPublisher(t, brokers)
	// Synchronous publishes from many goroutines share batches that wait
	// at most a millisecond for company (kafka-go's default is a second):
	// the writer's settings, then 200 publishes that all succeed.
	require.Equal(t, kafka.RequireAll, pub.writer.RequiredAcks)
	require.IsType(t, &kafka.Murmur2Balancer{}, pub.writer.Balancer)
	require.Equal(t, time.Millisecond, pub.writer.BatchTimeout)

	start := time.Now()
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				m := message.NewMessage(watermill.NewUUID(), []byte("x"))
				m.Metadata.Set(MetadataKey, fmt.Sprintf("%d-%d", g, i))
				assert.NoError(t, pub.Publish(topic, m))
			}
		}()
	}
	wg.Wait()
	t.Logf("200 synchronous publishes from 20 goroutines in %s", time.Since(start))

	require.NoError(t, pub.Close())
	assert.Error(t, pub.Publish(topic, message.NewMessage(watermill.NewUUID(), nil)), "Publish after Close")
	assert.NoError(t, pub.Close(), "second Close")
}

// TestRouterEndToEnd runs the package the way notifyd does: a watermill Router handler consuming a command
// topic and publishing results, then a graceful router shutdown.
func TestRouterEndToEnd(t *testing.T) {
	brokers := newCluster(t, 3)
	createTopic(t, brokers, "commands", 3)
	createTopic(t, brokers, "results", 3)
	pub := newTestPublisher(t, brokers)
	sub := newTestSubscriber(t, testSubscriberConfig(brokers, "router"))

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, testLogger())
	require.NoError(t, err)
	var handled atomic.Int32
	router.AddHandler("resend", "commands", sub, "results", pub, func(msg *message.Message) ([]*message.Message, error) {
		if handled.Add(1)%5 == 0 {
			return nil, fmt.Errorf("transient failure") // nacked, redelivered
		}
		out := message.NewMessage(watermill.NewUUID(), append([]byte("done:"), msg.Payload...))
		out.Metadata.Set(MetadataKey, msg.Metadata.Get(MetadataKey))
		out.Metadata.Set("command_uuid", msg.UUID)
		return []*message.Message{out}, nil
	})
	go func() { _ = router.Run(context.Background()) }()
	<-router.Running()

	want := map[string]bool{}
	for i := range 30 {
		m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
		m.Metadata.Set(MetadataKey, fmt.Sprintf("payment-%d", i%7))
		want[m.UUID] = true
		require.NoError(t, pub.Publish("commands", m))
	}

	results := newTestSubscriber(t, testSubscriberConfig(brokers, "results-reader"))
	ch, err := results.Subscribe(context.Background(), "results")
	require.NoError(t, err)
	got := map[string]bool{}
	timeout := time.After(30 * time.Second)
	for len(got) < len(want) {
		select {
		case m := <-ch:
			got[m.Metadata.Get("command_uuid")] = true
			assert.True(t, strings.HasPrefix(string(m.Payload), "done:"))
			m.Ack()
		case <-timeout:
			t.Fatalf("got %d of %d results", len(got), len(want))
		}
	}
	assert.Equal(t, want, got)
	testkit.Returns(t, "the router's Close", time.Minute, func() { assert.NoError(t, router.Close()) })
}

// claimOne subscribes a new group (named after name) to topic with
// closeTimeout and claims the first message it receives.
func claimOne(t *testing.T, brokers []string, topic, name string, closeTimeout time.Duration) (*Subscriber, <-chan *message.Message, *message.Message) {
	t.Helper()
	cfg := testSubscriberConfig(brokers, uniqueName(t, name))
	cfg.CloseTimeout = closeTimeout
	sub, err := NewSubscriber(cfg, testLogger())
	require.NoError(t, err)
	ch, err := sub.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	held := receiveN(t, ch, 1)[0]
	require.NoError(t, Claim(held))
	return sub, ch, held
}
