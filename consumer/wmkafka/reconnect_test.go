package wmkafka

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

// TestReconnectAcrossBrokerRestarts is watermill's TestReconnect scenario,
// kept here because the suite's own copy races in its test code (v1.5.1,
// pubsub/tests/test_pubsub.go: the published messages are appended by one
// goroutine and read by the test's without synchronisation, which -race
// reports when the last publish is acknowledged late): 100 publishers
// publish 10,000 messages, retrying what a restarting broker refuses, while
// the broker is restarted twice (at 1/3 and 1/2 of the messages); the
// subscriber receives every published message. It needs a broker that can
// be restarted from outside (NOTIFYD_TEST_KAFKA_LOCAL, Apache Kafka): the
// in-process kfake broker loses its records when restarted.
func TestReconnectAcrossBrokerRestarts(t *testing.T) {
	restart := restartCommand()
	if restart == nil {
		t.Skip("needs NOTIFYD_TEST_KAFKA_LOCAL and NOTIFYD_TEST_BROKERS: a broker restarted from outside")
	}
	const (
		messages   = 10_000
		publishers = 100
	)
	brokers := newCluster(t, 1)
	topic, group := uniqueName(t, "reconnect"), uniqueName(t, "g")
	createTopic(t, brokers, topic, 1)
	pub := newTestPublisher(t, brokers)
	sub := newTestSubscriber(t, testSubscriberConfig(brokers, group))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)

	var (
		mu        sync.Mutex
		published = map[string]bool{}
		restarts  sync.WaitGroup
		pubs      sync.WaitGroup
	)
	work := make(chan int)
	for range publishers {
		pubs.Go(func() {
			for range work {
				msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
				for pub.Publish(topic, msg) != nil {
					time.Sleep(500 * time.Millisecond) // the broker is restarting
				}
				mu.Lock()
				published[msg.UUID] = true
				mu.Unlock()
			}
		})
	}
	go func() {
		defer close(work)
		for i := range messages {
			work <- i
			if i == messages/3 || i == messages/2 {
				restarts.Go(func() {
					cmd := exec.Command(restart[0], restart[1:]...)
					cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
					if err := cmd.Run(); err != nil {
						t.Errorf("restart the broker: %v", err)
					}
				})
			}
		}
	}()

	received := map[string]bool{}
	timeout := time.NewTimer(5 * time.Minute)
	defer timeout.Stop()
	for len(received) < messages {
		select {
		case msg := <-in:
			received[msg.UUID] = true // redelivered after a restart: counted once
			msg.Ack()
		case <-timeout.C:
			t.Fatalf("received %d of %d messages", len(received), messages)
		}
	}
	pubs.Wait()
	restarts.Wait()
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, published, messages)
	for id := range published {
		require.True(t, received[id], "message %s published, never received", id)
	}
}
