package wmkafka

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/notifyd/notifyd/internal/testkit"
)

// TestConsumingAfterOutage: Consuming is false before the member joined,
// true once its generation is confirmed and each assigned partition's
// reader fetched, false once the lease ran out during a broker outage, and
// true again only after the member rejoined the restarted broker and
// fetched from it.
func TestConsumingAfterOutage(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	start := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(2),
			kfake.GroupMinSessionTimeout(0))
		require.NoError(t, err)
		return c
	}
	c := start()
	brokers := c.ListenAddrs()
	topic, group := uniqueName(t, "consuming"), uniqueName(t, "g")
	createTopic(t, brokers, topic, 2)
	cfg := testSubscriberConfig(brokers, group)
	cfg.SessionTimeout, cfg.RebalanceTimeout, cfg.LeaseMargin = 3*time.Second, 3*time.Second, 500*time.Millisecond
	sub := newTestSubscriber(t, cfg)
	require.False(t, sub.Consuming(), "consuming before subscribing")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	testkit.Eventually(t, "consuming", time.Minute, sub.Consuming)

	c.Close()
	testkit.Eventually(t, "not consuming once the lease ran out", time.Minute, func() bool { return !sub.Consuming() })
	require.False(t, sub.Consuming())

	c = start()
	defer c.Close()
	createTopic(t, brokers, topic, 2)
	testkit.Eventually(t, "consuming again after the broker returned", 2*time.Minute, sub.Consuming)
	st := sub.Stats()
	require.Len(t, st, 1)
	require.GreaterOrEqual(t, st[0].Generations, 2, "consuming again without a new generation")
}

// recordingLogger keeps the levels logged.
type recordingLogger struct {
	errorLogger
	levels *[]string
}

func (l recordingLogger) Error(string, error, watermill.LogFields) {
	*l.levels = append(*l.levels, "error")
}
func (l recordingLogger) Info(string, watermill.LogFields) { *l.levels = append(*l.levels, "info") }

// TestReaderDeadlineIsNotAnError: kafka-go's reader error for a read past
// its deadline (records not taken for a while: slots busy, or paused) is
// logged at Info, it reconnects by itself; other reader errors stay errors.
func TestReaderDeadlineIsNotAnError(t *testing.T) {
	var levels []string
	l := kafkaLogger{logger: recordingLogger{levels: &levels}, error: true}
	const format = "the kafka reader got an unknown error reading partition %d of %s at offset %d: %v"
	l.Printf(format, 5, "t", int64(78), &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded})
	l.Printf(format, 5, "t", int64(78), errors.New("unexpected EOF"))
	require.Equal(t, []string{"info", "error"}, levels)
}
