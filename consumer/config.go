package consumer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/notifyd/notifyd/consumer/wmkafka"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go/sasl"
)

// The defaults of Config, in one place (SetDefaults applies them; the
// group's time-outs are wmkafka's: DefaultSessionTimeout,
// DefaultRebalanceTimeout, DefaultHeartbeatInterval).
const (
	DefaultGroupID           = "notifyd"
	DefaultStoreDir          = "./data"
	DefaultTopicPartitions   = 6
	DefaultReplicationFactor = 1
	DefaultConcurrency       = 64
	DefaultCatchUpWait       = 10 * time.Second
	DefaultMaxCommandAge     = 24 * time.Hour
	DefaultShutdownTimeout   = 20 * time.Second
	DefaultReadyMaxLag       = 100
)

// Config configures a Service. Zero fields take the defaults documented on
// each; Validate names the first bad field by its configuration key.
type Config struct {
	// Brokers are the Kafka bootstrap addresses (kafka.brokers).
	Brokers []string
	// GroupID is the consumer group that shares the commands (kafka.group_id,
	// default notifyd).
	GroupID string
	// ClientID is sent to the brokers and is the CloudEvents source of
	// results (kafka.client_id, default notifyd-<hostname>).
	ClientID string
	// Topics are the topic names (kafka.topics.*).
	Topics Topics
	// CreateTopics creates missing topics at start-up; when false, missing
	// topics stop start-up (kafka.create_topics, default true).
	CreateTopics *bool
	// TopicPartitions and ReplicationFactor apply to created topics
	// (kafka.topic_partitions default 6, kafka.replication_factor default 1).
	TopicPartitions   int
	ReplicationFactor int
	// TopicConfigs are topic configs set on created topics, by role
	// (payment_events, commands, results, dead_letter, deliveries,
	// console_sessions, merchant_settings), laid over
	// DefaultTopicConfigs (kafka.topic_configs).
	TopicConfigs map[string]map[string]string
	// StoreDir holds the local store (store.dir, default ./data); the
	// projection lives in its "projection" subfolder.
	StoreDir string
	// MinFreeBytes is the free-space watermark of StoreDir's filesystem
	// (store.min_free_bytes): below it the instance pauses (diskguard.go).
	// nil: 5 % of the filesystem, at most 1 GiB; 0: the guard is off.
	MinFreeBytes *int64
	// BallastBytes is the size of the emergency ballast file in StoreDir,
	// released when the watermark is crossed (store.ballast_bytes). nil:
	// 1 % of the filesystem, at most 64 MiB; 0: none.
	BallastBytes *int64
	// Concurrency bounds the commands deciding and sending at once
	// (processing.concurrency, default 64): the provider calls in flight.
	// Twice as many commands are handed out, so that those waiting for the
	// projection or publishing their result do not hold a sending slot.
	Concurrency int
	// CatchUpWait is how long a command naming an unknown transaction waits
	// for it to appear (processing.catch_up_wait, default 10s).
	CatchUpWait time.Duration
	// MaxCommandAge: older commands, by their Kafka timestamp, are answered
	// command_expired (processing.max_command_age, default 24h).
	MaxCommandAge time.Duration
	// ShutdownTimeout bounds how long claimed commands (being sent) may take
	// to finish once their partition is handed over, on a stop and at a
	// rebalance (processing.shutdown_timeout, default 20s). At a rebalance
	// the lease bounds it too: at most min(SessionTimeout, RebalanceTimeout)
	// minus the lease margin (5s) after the last heartbeat.
	ShutdownTimeout time.Duration
	// SessionTimeout, RebalanceTimeout and HeartbeatInterval are the
	// consumer group's (kafka.session_timeout and kafka.rebalance_timeout,
	// default 30s; kafka.heartbeat_interval, default 1s: how fast a member
	// notices a rebalance). HeartbeatInterval must be under a third of the
	// smaller timeout.
	SessionTimeout    time.Duration
	RebalanceTimeout  time.Duration
	HeartbeatInterval time.Duration
	// TLS and SASL secure every connection to the brokers (kafka.tls,
	// kafka.sasl); nil: plaintext, no authentication.
	TLS  *tls.Config
	SASL sasl.Mechanism
	// Registerer receives the service's Prometheus collectors; nil
	// registers none.
	Registerer prometheus.Registerer
	// ReadyMaxLag is how many records of payment-events (and, separately,
	// of the results topic) the store may be behind the brokers while the
	// instance reports ready (processing.ready_max_lag; nil:
	// DefaultReadyMaxLag; zero: fully caught up).
	ReadyMaxLag *int64
	// CompileMerchant turns merchants' providers and templates into what
	// their decisions use (cmd/notifyd: the configuration's rules and the
	// sealing keys). nil: settings naming providers or templates are
	// refused; the others (keys, users, rate limit, cooldown) apply.
	CompileMerchant MerchantCompiler
}

// Conn is how the service reaches the brokers.
func (c Config) Conn() Conn {
	return Conn{Brokers: c.Brokers, ClientID: c.ClientID, TLS: c.TLS, SASL: c.SASL}
}

// SetDefaults fills the zero fields with the defaults above: the one home
// of each (cmd/notifyd maps the configuration file onto Config and leaves
// the rest to it).
func (c *Config) SetDefaults() {
	if c.GroupID == "" {
		c.GroupID = DefaultGroupID
	}
	if c.ClientID == "" {
		host, _ := os.Hostname()
		c.ClientID = "notifyd-" + host
	}
	c.Topics = c.Topics.WithDefaults()
	if c.CreateTopics == nil {
		t := true
		c.CreateTopics = &t
	}
	if c.TopicPartitions == 0 {
		c.TopicPartitions = DefaultTopicPartitions
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.StoreDir == "" {
		c.StoreDir = DefaultStoreDir
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = wmkafka.DefaultSessionTimeout
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = wmkafka.DefaultRebalanceTimeout
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = wmkafka.DefaultHeartbeatInterval
	}
	if c.CatchUpWait == 0 {
		c.CatchUpWait = DefaultCatchUpWait
	}
	if c.MaxCommandAge == 0 {
		c.MaxCommandAge = DefaultMaxCommandAge
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.ReadyMaxLag == nil {
		lag := int64(DefaultReadyMaxLag)
		c.ReadyMaxLag = &lag
	}
}

// Validate checks a configuration; zero fields (the defaults) are valid.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafka.brokers: at least one broker is required")
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("kafka.brokers: %q is not host:port", b)
		}
	}
	seen := map[string]string{}
	for key, name := range map[string]string{
		"kafka.topics.payment_events": c.Topics.PaymentEvents, "kafka.topics.commands": c.Topics.Commands,
		"kafka.topics.results": c.Topics.Results, "kafka.topics.dead_letter": c.Topics.DeadLetter,
		"kafka.topics.deliveries": c.Topics.Deliveries, "kafka.topics.console_sessions": c.Topics.ConsoleSessions,
		"kafka.topics.merchant_settings": c.Topics.MerchantSettings,
	} {
		if name == "" {
			continue
		}
		if other, dup := seen[name]; dup {
			return fmt.Errorf("%s: topic %q is also %s", key, name, other)
		}
		seen[name] = key
	}
	switch {
	case c.TopicPartitions < 0:
		return errors.New("kafka.topic_partitions: must be >= 1")
	case c.ReplicationFactor < 0:
		return errors.New("kafka.replication_factor: must be >= 1")
	case c.Concurrency < 0:
		return errors.New("processing.concurrency: must be >= 1")
	case c.CatchUpWait < 0:
		return errors.New("processing.catch_up_wait: must not be negative")
	case c.MaxCommandAge < 0:
		return errors.New("processing.max_command_age: must not be negative")
	case c.ShutdownTimeout < 0:
		return errors.New("processing.shutdown_timeout: must not be negative")
	case c.ReadyMaxLag != nil && *c.ReadyMaxLag < 0:
		return errors.New("processing.ready_max_lag: must not be negative")
	case c.MinFreeBytes != nil && *c.MinFreeBytes < 0:
		return errors.New("store.min_free_bytes: must not be negative (0 turns the free-space guard off)")
	case c.BallastBytes != nil && *c.BallastBytes < 0:
		return errors.New("store.ballast_bytes: must not be negative (0: no ballast)")
	case c.SessionTimeout < 0:
		return errors.New("kafka.session_timeout: must not be negative")
	case c.RebalanceTimeout < 0:
		return errors.New("kafka.rebalance_timeout: must not be negative")
	case c.HeartbeatInterval < 0:
		return errors.New("kafka.heartbeat_interval: must not be negative")
	}
	d := c
	d.SetDefaults()
	if lease := min(d.SessionTimeout, d.RebalanceTimeout); d.HeartbeatInterval*3 >= lease {
		return fmt.Errorf("kafka.heartbeat_interval: %s must be under a third of min(kafka.session_timeout, kafka.rebalance_timeout) (%s)",
			d.HeartbeatInterval, lease)
	}
	for role := range c.TopicConfigs {
		if _, ok := DefaultTopicConfigs()[role]; !ok {
			return fmt.Errorf("kafka.topic_configs.%s: unknown topic (want payment_events, commands, results, dead_letter, deliveries, console_sessions or merchant_settings)", role)
		}
	}
	return nil
}
