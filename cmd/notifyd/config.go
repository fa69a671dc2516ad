package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/schemas"
)

// Config is the notifyd configuration file. Every key is documented in the
// README's configuration reference.
type Config struct {
	Kafka          KafkaConfig              `yaml:"kafka"`
	EmbeddedBroker EmbeddedBrokerConfig     `yaml:"embedded_broker"`
	Store          StoreConfig              `yaml:"store"`
	HTTP           HTTPConfig               `yaml:"http"`
	API            api.Config               `yaml:"api"`
	Processing     ProcessingConfig         `yaml:"processing"`
	Providers      map[string]ProviderChain `yaml:"providers"`
	Templates      dispatch.TemplateConfig  `yaml:"templates"`
	Log            LogConfig                `yaml:"log"`
	// Merchants seals merchants' secrets (merchants.go).
	Merchants MerchantsConfig `yaml:"merchants"`
	// fileTemplates is how many templates the file gave (over the
	// built-in ones).
	fileTemplates int
	// apiUnset says the file left api.listen out (the API is off).
	apiUnset bool
}

// apiOff says why the API and the console are off, for check-config and
// the start-up log.
func (c *Config) apiOff() string {
	if c.apiUnset {
		return "OFF: api.listen is not set in the file, so the HTTP API and the console are not served (set api.listen, such as " + api.DefaultListen + ", to serve them)"
	}
	return "off (api.listen: off)"
}

// channelSummary says, per channel, which providers send it and which
// states of the channel matrix it notifies, or that it has no provider
// (naming the key): what check-config prints and serve logs.
func (c *Config) channelSummary() []string {
	var out []string
	for _, ch := range schemas.Channels {
		name := string(ch)
		chain := c.Providers[name]
		if len(chain) == 0 {
			out = append(out, fmt.Sprintf("%s: NO PROVIDER (providers.%s): every %s resend is rejected %s", name, name, name, schemas.ReasonProviderNotConfigured))
			continue
		}
		kinds := make([]string, len(chain))
		for i, p := range chain {
			kinds[i] = p.Kind
		}
		// Every state of the matrix has a template: the file's laid over
		// the built-in ones.
		states := make([]string, 0, 9)
		for _, st := range dispatch.SupportedStates(ch) {
			states = append(states, string(st))
		}
		line := fmt.Sprintf("%s: %s; sends %s", name, strings.Join(kinds, " then "), strings.Join(states, ", "))
		out = append(out, line)
	}
	return out
}

// countTemplates counts the <channel>.<state>.<language> cells of t.
func countTemplates(t dispatch.TemplateConfig) int {
	n := 0
	for _, states := range t {
		for _, langs := range states {
			n += len(langs)
		}
	}
	return n
}

// KafkaConfig is the kafka block.
type KafkaConfig struct {
	Brokers           []string        `yaml:"brokers"`
	GroupID           string          `yaml:"group_id"`
	ClientID          string          `yaml:"client_id"`
	Topics            consumer.Topics `yaml:"topics"`
	CreateTopics      *bool           `yaml:"create_topics"`
	TopicPartitions   int             `yaml:"topic_partitions"`
	ReplicationFactor int             `yaml:"replication_factor"`
	// TopicConfigs are configs of created topics by role, over the
	// defaults (payment_events compacted, the others time retention).
	TopicConfigs map[string]map[string]string `yaml:"topic_configs"`
	// SessionTimeout, RebalanceTimeout and HeartbeatInterval are the
	// consumer group's; unset, the consumer's defaults (30s, 30s, 1s).
	SessionTimeout    time.Duration `yaml:"session_timeout"`
	RebalanceTimeout  time.Duration `yaml:"rebalance_timeout"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// TLS and SASL secure every connection to the brokers: the service's,
	// and those of the CLI's publish, resend and tail.
	TLS  consumer.TLSConfig  `yaml:"tls"`
	SASL consumer.SASLConfig `yaml:"sasl"`
}

// EmbeddedBrokerConfig is the embedded_broker block, used when kafka.brokers
// is empty.
type EmbeddedBrokerConfig struct {
	Listen string `yaml:"listen"`
}

// StoreConfig is the store block.
type StoreConfig struct {
	Dir string `yaml:"dir"`
	// MinFreeBytes and BallastBytes are the free-space guard's watermark
	// and emergency ballast (consumer.Config); unset: shares of the
	// filesystem; 0: off.
	MinFreeBytes *int64 `yaml:"min_free_bytes"`
	BallastBytes *int64 `yaml:"ballast_bytes"`
}

// HTTPConfig is the http block.
type HTTPConfig struct {
	Listen string `yaml:"listen"`
}

// ProcessingConfig is the processing block.
type ProcessingConfig struct {
	Concurrency     int           `yaml:"concurrency"`
	CatchUpWait     time.Duration `yaml:"catch_up_wait"`
	MaxCommandAge   time.Duration `yaml:"max_command_age"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Cooldown rejects a resend of a channel sent for the transaction's
	// current state less than this long ago (cooldown_active) unless the
	// command has force; zero (the default) turns it off.
	Cooldown time.Duration `yaml:"cooldown"`
	// ReadyMaxLag is a pointer so that 0 (ready only when fully caught up)
	// can be told from unset (100).
	ReadyMaxLag *int64 `yaml:"ready_max_lag"`
}

// ProviderChain is providers.<channel>: one provider block, or a list of
// them tried in order (failover, see dispatch.Route).
type ProviderChain []dispatch.ProviderConfig

// key names provider i of the chain of channel name in errors:
// providers.<channel> for a chain of one, else providers.<channel>[i].
func (c ProviderChain) key(name string, i int) string {
	if len(c) == 1 {
		return "providers." + name
	}
	return fmt.Sprintf("providers.%s[%d]", name, i)
}

// callbackVerifiers verify the receipts of the configured providers and
// of merchants' own (merchants: their blocks, and a token that changes
// with them), by kind (dispatch.Registry.LiveReceipts): each secret with
// the accounts it speaks for (see dispatch.Accounter).
func (c *Config) callbackVerifiers(kinds *dispatch.Registry, token func() any, merchants func() []dispatch.ProviderConfig) map[string]dispatch.ReceiptVerifier {
	platform := c.providerBlocks()
	return kinds.LiveReceipts(token, func() []dispatch.ProviderConfig {
		return append(slices.Clip(platform), merchants()...)
	})
}

// providerBlocks are the configured provider blocks, channel by channel.
func (c *Config) providerBlocks() []dispatch.ProviderConfig {
	var out []dispatch.ProviderConfig
	for _, name := range slices.Sorted(maps.Keys(c.Providers)) {
		out = append(out, c.Providers[name]...)
	}
	return out
}

// routes builds every channel's providers, in order, from kinds; console
// providers print to console. A provider whose receipts come back asks
// for them at api.public_url when that is set (dispatch.Env).
func (c *Config) routes(kinds *dispatch.Registry, console io.Writer) (map[schemas.Channel][]dispatch.Route, error) {
	env := dispatch.Env{Console: console, PublicURL: c.API.PublicURL, UserAgent: userAgent()}
	out := map[schemas.Channel][]dispatch.Route{}
	for name, chain := range c.Providers {
		ch := schemas.Channel(name)
		for i, p := range chain {
			route, err := kinds.Build(p, env)
			if err != nil {
				return nil, fmt.Errorf("%s.%w", chain.key(name, i), err)
			}
			out[ch] = append(out[ch], route)
		}
	}
	return out, nil
}

// LogConfig is the log block.
type LogConfig struct {
	// Level is debug, info, warn or error (default info).
	Level string `yaml:"level"`
	// Format is json or text (default: text on a terminal, else json).
	Format string `yaml:"format"`
}

// embedded reports whether the configuration runs the embedded broker.
func (c *Config) embedded() bool { return len(c.Kafka.Brokers) == 0 }

// DefaultConfig is the configuration with no file: the embedded broker,
// console providers on every channel, the built-in templates, and the HTTP
// API on 127.0.0.1:8000 (with a file, the API is served only where
// api.listen says).
func DefaultConfig() Config {
	c := Config{Templates: dispatch.DefaultTemplates(), Providers: map[string]ProviderChain{}, API: api.Config{Listen: api.DefaultListen}}
	for _, ch := range schemas.Channels {
		c.Providers[string(ch)] = ProviderChain{{Kind: "console"}}
	}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.EmbeddedBroker.Listen == "" {
		c.EmbeddedBroker.Listen = "127.0.0.1:9092"
	}
	if c.Store.Dir == "" {
		c.Store.Dir = consumer.DefaultStoreDir // read here too: the API's key and the embedded broker live there
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:8080"
	}
	c.Kafka.Topics = c.Kafka.Topics.WithDefaults()
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	c.API.SetDefaults()
	for _, chain := range c.Providers {
		for i := range chain {
			chain[i].Retry.SetDefaults()
			chain[i].CircuitBreaker.SetDefaults()
		}
	}
}

// Validate checks everything that can be checked without connecting, and
// names the key of the first problem.
func (c *Config) Validate() error {
	if c.embedded() {
		if _, _, err := net.SplitHostPort(c.EmbeddedBroker.Listen); err != nil {
			return fmt.Errorf("embedded_broker.listen: %q is not host:port", c.EmbeddedBroker.Listen)
		}
	}
	if c.HTTP.Listen != "off" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			return fmt.Errorf("http.listen: %q is not host:port (or off)", c.HTTP.Listen)
		}
	}
	sc, err := c.serviceConfig()
	if err != nil {
		return err
	}
	if err := sc.Validate(); err != nil {
		return err
	}
	if err := c.API.Validate(); err != nil {
		return err
	}
	if err := c.Merchants.validate(); err != nil {
		return err
	}
	if c.API.Enabled() && c.API.Listen == c.HTTP.Listen {
		return fmt.Errorf("api.listen: %q is also http.listen (the API has its own listener)", c.API.Listen)
	}
	names := make([]string, 0, len(c.Providers))
	for name := range c.Providers {
		names = append(names, name)
	}
	slices.Sort(names)
	kinds := dispatch.NewRegistry()
	for _, name := range names {
		chain := c.Providers[name]
		if !schemas.Channel(name).Valid() {
			return fmt.Errorf("providers.%s: unknown channel (want email, sms or whatsapp)", name)
		}
		if len(chain) == 0 {
			return fmt.Errorf("providers.%s: want a provider block or a list of them", name)
		}
		for i, p := range chain {
			key := chain.key(name, i)
			if err := kinds.Validate(schemas.Channel(name), p); err != nil {
				return fmt.Errorf("%s.%w", key, err)
			}
			if err := p.Retry.Validate(); err != nil {
				return fmt.Errorf("%s.retry.%w", key, err)
			}
			if err := p.RateLimit.Validate(); err != nil {
				return fmt.Errorf("%s.rate_limit.%w", key, err)
			}
			if err := p.CircuitBreaker.Validate(); err != nil {
				return fmt.Errorf("%s.circuit_breaker.%w", key, err)
			}
		}
	}
	if c.Processing.Cooldown < 0 {
		return fmt.Errorf("processing.cooldown: must not be negative, got %s", c.Processing.Cooldown)
	}
	if _, err := dispatch.ParseTemplates(c.Templates); err != nil {
		return err
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q (want debug, info, warn or error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "json", "text":
	default:
		return fmt.Errorf("log.format: %q (want json or text)", c.Log.Format)
	}
	return nil
}

// serviceConfig is the consumer's part of the configuration, with
// kafka.tls and kafka.sasl built (their files read). Brokers are filled in
// by serve once the embedded broker (if any) is listening.
func (c *Config) serviceConfig() (consumer.Config, error) {
	brokers := c.Kafka.Brokers
	if c.embedded() {
		brokers = []string{c.EmbeddedBroker.Listen}
		if c.Kafka.TLS.On() || c.Kafka.SASL.Mechanism != "" {
			return consumer.Config{}, errors.New("kafka.tls, kafka.sasl: need kafka.brokers (the embedded broker speaks plaintext on loopback only)")
		}
	}
	tlsConfig, err := c.Kafka.TLS.Build()
	if err != nil {
		return consumer.Config{}, fmt.Errorf("kafka.tls.%w", err)
	}
	mechanism, err := c.Kafka.SASL.Build(tlsConfig != nil)
	if err != nil {
		return consumer.Config{}, fmt.Errorf("kafka.sasl.%w", err)
	}
	return consumer.Config{
		TLS: tlsConfig, SASL: mechanism,
		Brokers: brokers, GroupID: c.Kafka.GroupID, ClientID: c.Kafka.ClientID, Topics: c.Kafka.Topics,
		CreateTopics: c.Kafka.CreateTopics, TopicPartitions: c.Kafka.TopicPartitions, ReplicationFactor: c.Kafka.ReplicationFactor,
		TopicConfigs:   c.Kafka.TopicConfigs,
		SessionTimeout: c.Kafka.SessionTimeout, RebalanceTimeout: c.Kafka.RebalanceTimeout, HeartbeatInterval: c.Kafka.HeartbeatInterval,
		StoreDir: c.Store.Dir, MinFreeBytes: c.Store.MinFreeBytes, BallastBytes: c.Store.BallastBytes, Concurrency: c.Processing.Concurrency, CatchUpWait: c.Processing.CatchUpWait,
		MaxCommandAge: c.Processing.MaxCommandAge, ShutdownTimeout: c.Processing.ShutdownTimeout,
		ReadyMaxLag: c.Processing.ReadyMaxLag,
	}, nil
}

// conn is how the CLI's subcommands reach the brokers: the configured ones
// with kafka.tls and kafka.sasl, or the embedded broker of a running
// `notifyd serve`.
func (c *Config) conn(clientID string) (consumer.Conn, error) {
	sc, err := c.serviceConfig()
	if err != nil {
		return consumer.Conn{}, err
	}
	conn := sc.Conn()
	conn.ClientID = clientID
	return conn, nil
}
