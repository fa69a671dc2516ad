package wmkafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/notifyd/notifyd/internal/testkit"
)

// The hand-over tests check the guarantee Claim exists for: a message claimed by one member is never
// handled by another member while the first may still act on it, through joins, leaves and closes.

func publishN(t *testing.T, pub *Publisher, topic string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
		m.Metadata.Set(MetadataKey, fmt.Sprintf("k%d", i))
		require.NoError(t, pub.Publish(topic, m))
	}
}

// TestHandOverWaitsForClaimed: a second member joins while the first holds a claimed message; the
// partition moves only after the first acked it, and the second never sees it.
func TestHandOverWaitsForClaimed(t *testing.T) {
	brokers := newCluster(t, 1)
	topic, group := uniqueName(t, "handover-claimed"), uniqueName(t, "handover-claimed")
	createTopic(t, brokers, topic, 1)
	pub := newTestPublisher(t, brokers)
	publishN(t, pub, topic, 0, 1)

	a := newTestSubscriber(t, testSubscriberConfig(brokers, group))
	chA, err := a.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	held := receiveN(t, chA, 1)[0]
	require.NoError(t, Claim(held))

	b := newTestSubscriber(t, testSubscriberConfig(brokers, group))
	chB, err := b.Subscribe(context.Background(), topic)
	require.NoError(t, err)

	// The rebalance has begun: A has revoked its partitions and is draining, waiting for its claimed
	// message.
	testkit.Eventually(t, "A's hand-over to begin", 30*time.Second, func() bool { return a.Stats()[0].HandOversStarted > 0 })
	select {
	case <-held.Context().Done():
		t.Fatal("a claimed message's context was cancelled by the hand-over")
	default:
	}
	require.NoError(t, Claim(held), "a claimed message stays claimable during the drain")
	ackedAt := time.Now()
	held.Ack()

	publishN(t, pub, topic, 1, 1)
	var got *message.Message
	select {
	case got = <-chB:
	case got = <-chA:
	case <-time.After(20 * time.Second):
		t.Fatal("the next message was not delivered to either member")
	}
	got.Ack()
	assert.Equal(t, "1", string(got.Payload), "the acked message was delivered again")
	assert.Eventually(t, func() bool { return committedOffset(t, brokers, group, topic) == 2 }, 5*time.Second, 20*time.Millisecond,
		"committed offset %d, want 2", committedOffset(t, brokers, group, topic))
	st := a.Stats()
	require.Len(t, st, 1)
	assert.GreaterOrEqual(t, st[0].HandOvers, 1)
	assert.Zero(t, st[0].GivenUpAtDeadline)
	t.Logf("delivered %s after the ack; A's last hand-over took %s", time.Since(ackedAt).Round(time.Millisecond), st[0].LastHandOver.Round(time.Millisecond))
}

// TestHandOverCancelsUnclaimed: at a hand-over, a handed-out message that was not claimed has its context
// cancelled and can no longer be claimed; the partition's next owner gets it.
func TestHandOverCancelsUnclaimed(t *testing.T) {
	brokers := newCluster(t, 1)
	topic, group := uniqueName(t, "handover-unclaimed"), uniqueName(t, "handover-unclaimed")
	createTopic(t, brokers, topic, 1)
	pub := newTestPublisher(t, brokers)
	publishN(t, pub, topic, 0, 1)

	cfg := testSubscriberConfig(brokers, group)
	a := newTestSubscriber(t, cfg)
	chA, err := a.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	held := receiveN(t, chA, 1)[0]

	start := time.Now()
	require.NoError(t, a.Close()) // a hand-over with no other member: the same path as a rebalance
	select {
	case <-held.Context().Done():
	default:
		t.Fatal("the unclaimed message's context is not cancelled after the hand-over")
	}
	err = Claim(held)
	require.ErrorIs(t, err, ErrNotOwner)
	t.Logf("closed in %s; Claim: %v", time.Since(start).Round(time.Millisecond), err)
	held.Nack()

	b := newTestSubscriber(t, cfg)
	chB, err := b.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	again := receiveN(t, chB, 1)[0]
	assert.Equal(t, held.UUID, again.UUID)
	require.NoError(t, Claim(again))
	again.Ack()
}

// TestHandOverDeadlineGivesUp: a claimed message that outlives CloseTimeout at a hand-over is given up:
// its context is cancelled, Claim fails, its ack is ignored, and the next owner gets it.
func TestHandOverDeadlineGivesUp(t *testing.T) {
	brokers := newCluster(t, 1)
	topic, group := uniqueName(t, "handover-deadline"), uniqueName(t, "handover-deadline")
	createTopic(t, brokers, topic, 1)
	pub := newTestPublisher(t, brokers)
	publishN(t, pub, topic, 0, 1)

	cfg := testSubscriberConfig(brokers, group)
	cfg.CloseTimeout = 500 * time.Millisecond
	a := newTestSubscriber(t, cfg)
	chA, err := a.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	held := receiveN(t, chA, 1)[0]
	require.NoError(t, Claim(held))

	b := newTestSubscriber(t, cfg)
	chB, err := b.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	select {
	case <-held.Context().Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the hand-over never gave up on the claimed message")
	}
	require.ErrorIs(t, Claim(held), ErrNotOwner)
	held.Ack() // too late: ignored

	var again *message.Message
	select {
	case again = <-chB:
	case again = <-chA:
	case <-time.After(20 * time.Second):
		t.Fatal("the given-up message was not delivered again")
	}
	assert.Equal(t, held.UUID, again.UUID)
	again.Ack()
	st := a.Stats()
	require.Len(t, st, 1)
	assert.Equal(t, 1, st[0].GivenUpAtDeadline)
}

// TestChurnDecidesOnce: members join and leave every few hundred milliseconds while messages flow. A
// handler "sends" each message it claimed, holds it a while, claims again and acks. Every message must be
// sent exactly once: never by two members, never twice by one, and none lost.
func TestChurnDecidesOnce(t *testing.T) {
	brokers := newCluster(t, 4)
	const n = 600
	topic, group := uniqueName(t, "churn"), uniqueName(t, "churn")
	createTopic(t, brokers, topic, 4)
	pub := newTestPublisher(t, brokers)
	cfg := testSubscriberConfig(brokers, group)
	cfg.CloseTimeout = 10 * time.Second // longer than any handling: nothing is given up

	var (
		mu      sync.Mutex
		sends   = map[string][]string{} // payload -> members that sent it
		acked   = map[string]bool{}
		refused int
	)
	member := func(name string, stop <-chan struct{}) {
		sub, err := NewSubscriber(cfg, testLogger())
		if !assert.NoError(t, err) {
			return
		}
		ch, err := sub.Subscribe(context.Background(), topic)
		if !assert.NoError(t, err) {
			return
		}
		var wg sync.WaitGroup
		go func() { <-stop; _ = sub.Close() }()
		for m := range ch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := Claim(m); err != nil {
					mu.Lock()
					refused++
					mu.Unlock()
					m.Nack()
					return
				}
				mu.Lock()
				sends[string(m.Payload)] = append(sends[string(m.Payload)], name)
				mu.Unlock()
				time.Sleep(time.Duration(20+rand.Intn(150)) * time.Millisecond)
				if err := Claim(m); err != nil {
					t.Errorf("%s: second claim of a claimed message failed: %v", name, err)
				}
				mu.Lock()
				acked[string(m.Payload)] = true
				mu.Unlock()
				m.Ack()
			}()
		}
		wg.Wait()
	}

	stops := map[int]chan struct{}{}
	var members sync.WaitGroup
	startMember := func(i int) {
		stop := make(chan struct{})
		stops[i] = stop
		members.Add(1)
		go func() { defer members.Done(); member(fmt.Sprintf("m%d", i), stop) }()
	}
	startMember(0)
	startMember(1)
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; i < n; i += 10 {
			publishN(t, pub, topic, i, 10)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	next, live := 2, []int{0, 1}
	churnUntil := time.Now().Add(8 * time.Second)
	for time.Now().Before(churnUntil) {
		time.Sleep(time.Duration(200+rand.Intn(600)) * time.Millisecond)
		if len(live) > 1 && rand.Intn(2) == 0 {
			k := rand.Intn(len(live))
			close(stops[live[k]])
			live = append(live[:k], live[k+1:]...)
		} else {
			startMember(next)
			live = append(live, next)
			next++
		}
	}
	<-published
	testkit.Until(t, 60*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < n {
			return fmt.Errorf("%d of %d messages acked", len(acked), n)
		}
		return nil
	})
	for _, i := range live {
		close(stops[i])
	}
	members.Wait()

	mu.Lock()
	defer mu.Unlock()
	twice := 0
	for p, who := range sends {
		if len(who) > 1 {
			twice++
			t.Errorf("message %s sent %d times, by %v", p, len(who), who)
		}
	}
	assert.Len(t, sends, n)
	t.Logf("%d messages, %d members over the run, %d sent twice, %d claims refused (at hand-overs, then delivered again)",
		n, next, twice, refused)
}

func TestLease(t *testing.T) {
	l := newLease(10*time.Second, 2*time.Second)
	now := time.Now()
	assert.False(t, l.usable(now), "usable before the first heartbeat")
	l.renew(now)
	select {
	case <-l.confirmed:
	default:
		t.Fatal("first renewal does not confirm")
	}
	assert.True(t, l.usable(now.Add(7*time.Second)))
	assert.False(t, l.usable(now.Add(8*time.Second)), "claims need LeaseMargin left")
	assert.True(t, l.valid(now.Add(9*time.Second)))
	assert.Equal(t, now.Add(8*time.Second), l.deadline())
	l.renew(now.Add(-time.Second)) // an older heartbeat answered late does not shorten the lease
	assert.Equal(t, now.Add(8*time.Second), l.deadline())

	l.end("heartbeat: rebalance in progress", false)
	l.renew(now.Add(5 * time.Second))
	assert.Equal(t, now.Add(8*time.Second), l.deadline(), "no renewal after the generation ended")
	assert.True(t, l.usable(now.Add(time.Second)), "a rebalance leaves the lease to run out")

	l.end("commit: unknown member", true)
	assert.False(t, l.usable(now), "lost membership: no claims")
	assert.False(t, l.valid(now), "lost membership: no commits")
}

func TestGenerationOver(t *testing.T) {
	for _, tc := range []struct {
		err        error
		over, lost bool
	}{
		{fmt.Errorf("heartbeat: %w", kafka.RebalanceInProgress), true, false},
		{fmt.Errorf("commit: %w", kafka.IllegalGeneration), true, true},
		{kafka.UnknownMemberId, true, true},
		{kafka.NotCoordinatorForGroup, false, false},
		{errors.New("connection reset"), false, false},
	} {
		over, lost := generationOver(tc.err)
		assert.Equal(t, tc.over, over, "%v", tc.err)
		assert.Equal(t, tc.lost, lost, "%v", tc.err)
	}
}

// TestHeartbeatErrors guards heartbeatError against kafka-go's Heartbeat
// response decoding: a heartbeat of the current member and generation is
// accepted, a stale generation or an unknown member is not.
func TestHeartbeatErrors(t *testing.T) {
	brokers := newCluster(t, 1)
	topic, group := uniqueName(t, "heartbeat"), uniqueName(t, "heartbeat")
	createTopic(t, brokers, topic, 1)
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{ID: group, Brokers: brokers, Topics: []string{topic}})
	require.NoError(t, err)
	defer cg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	gen, err := cg.Next(ctx)
	require.NoError(t, err)
	client := adminClient(t, brokers)
	fc, err := client.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: group})
	require.NoError(t, err)
	addr := kafka.TCP(fmt.Sprintf("%s:%d", fc.Coordinator.Host, fc.Coordinator.Port))
	for _, tc := range []struct {
		name       string
		generation int32
		member     string
		want       error
	}{
		{"current", gen.ID, gen.MemberID, nil},
		{"stale generation", gen.ID - 1, gen.MemberID, kafka.IllegalGeneration},
		{"unknown member", gen.ID, "nobody", kafka.UnknownMemberId},
	} {
		res, err := client.Heartbeat(ctx, &kafka.HeartbeatRequest{Addr: addr, GroupID: group, GenerationID: tc.generation, MemberID: tc.member})
		require.NoError(t, err)
		got := heartbeatError(res)
		if tc.want == nil {
			assert.NoError(t, got, tc.name)
		} else {
			assert.ErrorIs(t, got, tc.want, "%s (kafka-go decoded %+v)", tc.name, res)
		}
	}
}
