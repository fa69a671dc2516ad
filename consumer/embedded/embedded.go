package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/notifyd/notifyd/projection"
)

// Config configures the embedded broker.
type Config struct {
	// Listen is the host:port to accept Kafka connections on. Port 0 picks a
	// free port; Broker.Addr reports it.
	Listen string
	// DataDir holds the broker's log. Empty keeps everything in memory.
	DataDir string
	// Logger receives the broker's warnings and errors; nil discards them.
	Logger *slog.Logger
	// space reads the free space of DataDir (projection.DiskSpace); tests
	// replace it.
	space func(string) (free, size uint64, err error)
}

// storageMargin is the room the broker keeps on DataDir's filesystem
// beyond a produce request's records (segment and index headers, its own
// state files): with less, the request is answered KAFKA_STORAGE_ERROR.
const storageMargin = 1 << 20

// Broker is a running embedded broker.
type Broker struct {
	cluster *kfake.Cluster
	addr    string
	dir     string
	space   func(string) (free, size uint64, err error)
}

// Start starts the broker and returns once it accepts connections.
func Start(cfg Config) (*Broker, error) {
	if cfg.Listen == "" {
		return nil, errors.New("embedded broker: listen address is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	listen := func(network, _ string) (net.Listener, error) {
		return net.Listen(network, cfg.Listen)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.ListenFn(listen),
		kfake.ClusterID("notifyd-embedded"),
		kfake.WithLogger(kfakeLogger{log}),
		// Consumer groups rebalance quickly on one machine.
		kfake.GroupMinSessionTimeout(0),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded broker on %s: %w", cfg.Listen, err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) == 0 {
		c.Close()
		return nil, fmt.Errorf("embedded broker on %s: no listener", cfg.Listen)
	}
	b := &Broker{cluster: c, addr: addrs[0], dir: cfg.DataDir, space: cfg.space}
	if b.space == nil {
		b.space = projection.DiskSpace
	}
	if cfg.DataDir != "" {
		c.ControlKey(int16(kmsg.Produce), b.refuseWhenFull)
	}
	return b, nil
}

// refuseWhenFull answers a produce request whose records the log has no
// room for with KAFKA_STORAGE_ERROR (code 56) on every partition, as
// Apache Kafka answers for a log directory it cannot write; kfake itself
// would try, fail, and answer UNKNOWN_SERVER_ERROR. Other requests go on
// to kfake.
func (b *Broker) refuseWhenFull(req kmsg.Request) (kmsg.Response, error, bool) {
	b.cluster.KeepControl()
	preq, ok := req.(*kmsg.ProduceRequest)
	if !ok || preq.Acks == 0 {
		return nil, nil, false
	}
	need := uint64(storageMargin)
	for _, t := range preq.Topics {
		for _, p := range t.Partitions {
			need += uint64(len(p.Records))
		}
	}
	free, _, err := b.space(b.dir)
	if err != nil || free >= need {
		return nil, nil, false
	}
	resp := preq.ResponseKind().(*kmsg.ProduceResponse)
	for _, t := range preq.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition = p.Partition
			rp.ErrorCode = kerr.KafkaStorageError.Code
			rp.BaseOffset = -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp, nil, true
}

// Err says whether the broker can write its log: nil, or an error naming
// KAFKA_STORAGE_ERROR and the free space when DataDir's filesystem has
// less than the room it keeps (produce requests are refused meanwhile).
func (b *Broker) Err() error {
	if b.dir == "" {
		return nil
	}
	free, _, err := b.space(b.dir)
	if err != nil || free >= storageMargin {
		return nil
	}
	return fmt.Errorf("embedded broker: its log cannot be written (KAFKA_STORAGE_ERROR): %d bytes free in %s", free, b.dir)
}

// Addr returns the broker's bootstrap address (host:port).
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker and flushes its log.
func (b *Broker) Close() { b.cluster.Close() }

type kfakeLogger struct{ log *slog.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	switch level {
	case kfake.LogLevelError:
		l.log.Error(msg, "component", "embedded-broker")
	case kfake.LogLevelWarn:
		l.log.Warn(msg, "component", "embedded-broker")
	default:
		l.log.Debug(msg, "component", "embedded-broker")
	}
}
