package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
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
}

// Broker is a running embedded broker.
type Broker struct {
	cluster *kfake.Cluster
	addr    string
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
	return &Broker{cluster: c, addr: addrs[0]}, nil
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
