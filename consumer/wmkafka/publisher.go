package wmkafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/segmentio/kafka-go"
)

// PublisherConfig configures a Publisher. Zero values select the documented defaults.
type PublisherConfig struct {
	// Brokers are the bootstrap broker addresses (host:port). Required.
	Brokers []string

	// ClientID is sent to the brokers. Ignored when Transport is set (set Transport.ClientID instead).
	ClientID string

	// WriteTimeout bounds one Publish call, retries included (default 10s). It is also kafka-go's
	// per-request read/write timeout.
	WriteTimeout time.Duration

	// BatchTimeout is how long the kafka-go Writer waits for more messages before sending an incomplete
	// batch to a partition (default 1ms). kafka-go's own default is 1s, and a synchronous write waits for
	// its batch to be sent, so with kafka-go's default every Publish would take about a second.
	BatchTimeout time.Duration

	// BatchSize is the maximum number of messages in one produce request per partition (default 100, as
	// kafka-go). Messages of concurrent Publish calls to the same partition share batches.
	BatchSize int

	// MaxAttempts is how many times kafka-go tries to deliver a batch before failing it (default 10, as
	// kafka-go). Publish never waits longer than WriteTimeout in total.
	MaxAttempts int

	// AllowAutoTopicCreation lets a metadata request create a missing topic (when the brokers allow it).
	// Default false: publishing to a missing topic fails.
	AllowAutoTopicCreation bool

	// OmitUUIDHeader leaves Message.UUID out of the record (no UUIDHeader header), for topics whose
	// headers are a contract of their own: notifyd's results and dead letters carry exactly the headers
	// the contract names. A subscriber then derives the UUID from the record's position.
	OmitUUIDHeader bool

	// Topics, when set, are the only topics this Publisher writes to: the transport it creates then keeps
	// metadata of these topics only. kafka-go's transport otherwise fetches the metadata of every topic of
	// the cluster every few seconds (MetadataTTL), which on a shared cluster with thousands of topics costs
	// every instance a large request and its decoding, continuously. Publishing to another topic then
	// fails. Ignored when Transport is set (set Transport.MetadataTopics instead).
	Topics []string

	// Transport is an optional kafka-go transport (TLS, SASL, dialer, metadata TTL). When nil the Publisher
	// creates one and closes its idle connections on Close; a provided Transport is left open.
	Transport *kafka.Transport
}

func (c PublisherConfig) withDefaults() PublisherConfig {
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.BatchTimeout <= 0 {
		c.BatchTimeout = time.Millisecond
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 10
	}
	return c
}

func (c PublisherConfig) validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("wmkafka: PublisherConfig.Brokers is empty")
	}
	return nil
}

// Publisher is a watermill message.Publisher writing to Kafka through one kafka-go Writer shared by all
// topics. The Writer always requires acknowledgement from all in-sync replicas (kafka.RequireAll; kafka-go's
// default is no acknowledgement at all) and partitions by key with kafka.Murmur2Balancer, the partitioner of
// the Java client, so a key lands on the same partition whichever client produced it. Messages without a key
// go to a random partition. See the package documentation for delivery guarantees.
type Publisher struct {
	cfg       PublisherConfig
	logger    watermill.LoggerAdapter
	writer    *kafka.Writer
	transport *kafka.Transport // owned by the Publisher, or nil

	closed    atomic.Bool
	closeOnce sync.Once
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher. It does not contact the brokers; the first Publish does. A nil logger
// discards logs.
func NewPublisher(cfg PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	logger = logger.With(watermill.LogFields{"wmkafka": "publisher"})

	p := &Publisher{cfg: cfg, logger: logger}
	transport := cfg.Transport
	if transport == nil {
		transport = &kafka.Transport{ClientID: cfg.ClientID, MetadataTopics: cfg.Topics}
		p.transport = transport
	}
	p.writer = &kafka.Writer{
		Addr:                   kafka.TCP(cfg.Brokers...),
		Balancer:               &kafka.Murmur2Balancer{},
		MaxAttempts:            cfg.MaxAttempts,
		BatchSize:              cfg.BatchSize,
		BatchTimeout:           cfg.BatchTimeout,
		ReadTimeout:            cfg.WriteTimeout,
		WriteTimeout:           cfg.WriteTimeout,
		RequiredAcks:           kafka.RequireAll,
		Async:                  false,
		AllowAutoTopicCreation: cfg.AllowAutoTopicCreation,
		ErrorLogger:            kafkaLogger{logger: logger, error: true},
		Transport:              transport,
	}
	return p, nil
}

// Publish writes msgs to topic synchronously and returns only once every message is acknowledged by all
// in-sync replicas, or returns an error; then none, some or all of them may have been written (the caller
// retries: at-least-once, duplicates possible). Messages to the same partition are written in argument order.
//
// Each message becomes one record: Payload is the value, metadata MetadataKey is the key (empty: null key),
// every metadata entry without the "kafka." prefix is a header, and Message.UUID is the UUIDHeader header.
// The messages' contexts are not used: WriteTimeout bounds the call (kafka-go cannot cancel a write cleanly
// anyway: a cancelled write may still be written later).
//
// Publish is safe for concurrent use. All calls share one kafka-go Writer, which accumulates the messages of
// concurrent calls for the same partition into one batch and sends it after BatchTimeout (1ms) or when
// BatchSize is reached, one produce request in flight per partition; a call therefore waits for at most one
// batch timeout plus the produce requests queued before its own on the same partition, never for other
// calls' batches to fill up. kafka-go has no separate "max in flight" setting; this is its concurrency model.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closed.Load() {
		return errors.New("wmkafka: publish on closed Publisher")
	}
	if topic == "" {
		return errors.New("wmkafka: publish: empty topic")
	}
	if len(msgs) == 0 {
		return nil
	}
	records := make([]kafka.Message, len(msgs))
	for i, msg := range msgs {
		records[i] = toKafka(topic, msg, !p.cfg.OmitUUIDHeader)
	}

	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.WriteTimeout)
	defer cancel()
	start := time.Now()
	err := p.writer.WriteMessages(ctx, records...)
	if err == nil {
		p.logger.Trace("Published", watermill.LogFields{
			"topic": topic, "messages": len(msgs), "duration": time.Since(start).String(),
		})
		return nil
	}

	var writeErrs kafka.WriteErrors
	if errors.As(err, &writeErrs) {
		failed := writeErrs.Count()
		// Report the first failure's cause and its message.
		for i, e := range writeErrs {
			if e != nil {
				return fmt.Errorf("wmkafka: publish to topic %q: %d of %d message(s) failed, first (uuid %s): %w",
					topic, failed, len(msgs), msgs[i].UUID, e)
			}
		}
	}
	return fmt.Errorf("wmkafka: publish %d message(s) to topic %q: %w", len(msgs), topic, err)
}

// Close flushes and closes the Writer: it waits for pending writes of in-progress Publish calls. Publish
// after Close returns an error. Close is idempotent.
func (p *Publisher) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		if cerr := p.writer.Close(); cerr != nil {
			err = fmt.Errorf("wmkafka: close publisher writer: %w", cerr)
		}
		if p.transport != nil {
			p.transport.CloseIdleConnections()
		}
	})
	return err
}
