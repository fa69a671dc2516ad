package consumer

import (
	"crypto/tls"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
)

// Conn is how notifyd reaches the brokers: their addresses, the client id,
// and the TLS and SASL settings (kafka.tls, kafka.sasl). Every kafka-go
// Transport, Dialer, Client and Writer the service and the CLI make comes
// from a Conn, so none can miss the security settings; wmkafka's Publisher
// and Subscriber are given theirs (they fall back to plaintext only when a
// caller passes none, which notifyd never does). TLS is set on the Transport and the
// Dialer themselves: kafka-go drops it when a custom Dial function is set,
// and none is.
type Conn struct {
	Brokers  []string
	ClientID string
	// TLS, when not nil, wraps every connection (kafka.tls).
	TLS *tls.Config
	// SASL, when not nil, authenticates every connection (kafka.sasl).
	SASL sasl.Mechanism
}

// Timeouts of the connections a Conn makes.
const (
	dialTimeout   = 5 * time.Second
	clientTimeout = 10 * time.Second
)

// Transport returns a new Transport that asks for the metadata of topics
// only (kafka-go's default is every topic of the cluster, every few
// seconds). Its owner calls CloseIdleConnections when done with it.
func (c Conn) Transport(topics ...string) *kafka.Transport {
	return &kafka.Transport{ClientID: c.ClientID, DialTimeout: dialTimeout, TLS: c.TLS, SASL: c.SASL, MetadataTopics: topics}
}

// Client returns a Client on t (a new Transport for topics when t is nil).
func (c Conn) Client(t *kafka.Transport, topics ...string) *kafka.Client {
	if t == nil {
		t = c.Transport(topics...)
	}
	return &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: clientTimeout, Transport: t}
}

// Dialer returns a Dialer for Readers and consumer groups.
func (c Conn) Dialer() *kafka.Dialer {
	return &kafka.Dialer{ClientID: c.ClientID, Timeout: 2 * dialTimeout, DualStack: true, TLS: c.TLS, SASLMechanism: c.SASL}
}

// Writer returns a kafka-go Writer configured the way notifyd writes, on
// a new Transport for topics: acknowledged by all in-sync replicas
// (kafka-go defaults to none), batches flushed after 1 ms instead of
// kafka-go's 1 s (a synchronous write would otherwise wait a second), keys
// hashed with murmur2 like the Java client so that a key lands on the
// partition other producers put it on.
func (c Conn) Writer(topics ...string) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(c.Brokers...),
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
		WriteTimeout: clientTimeout,
		Transport:    c.Transport(topics...),
	}
}
