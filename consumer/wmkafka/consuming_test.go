package wmkafka

import (
	"context"
	"net"
	"testing"
	"time"

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
