package wmkafka

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
)

// Metadata keys the Subscriber sets on every received message and the Publisher reads. Keys with the
// "kafka." prefix are transport metadata: the Publisher never writes them as Kafka headers. Every other
// metadata entry maps 1:1 to a Kafka header (received headers become metadata; published metadata become
// headers), so a message re-published unchanged keeps exactly its original headers (as a set: see the
// package documentation for the corner cases).
const (
	// MetadataKey is the record key, in and out. The Publisher sends a missing or empty value as a null key.
	MetadataKey = "kafka.key"
	// MetadataTopic is the topic the record was read from. Ignored by the Publisher.
	MetadataTopic = "kafka.topic"
	// MetadataPartition is the record's partition, decimal. Ignored by the Publisher.
	MetadataPartition = "kafka.partition"
	// MetadataOffset is the record's offset, decimal. Ignored by the Publisher.
	MetadataOffset = "kafka.offset"
	// MetadataTimestamp is the record's timestamp in RFC 3339 with nanoseconds, UTC. Ignored by the Publisher.
	MetadataTimestamp = "kafka.timestamp"
	// MetadataHighWaterMark is the partition's high-water mark when the record was fetched, decimal.
	// Ignored by the Publisher.
	MetadataHighWaterMark = "kafka.high_water_mark"
)

// TransportMetadataPrefix is the prefix reserved for transport metadata (the Metadata* keys). Metadata with
// this prefix is never written as a header, and received headers with this prefix are dropped.
const TransportMetadataPrefix = "kafka."

// UUIDHeader is the Kafka header carrying the watermill message UUID. The Publisher always writes it from
// Message.UUID; the Subscriber reads Message.UUID from it and does not copy it into the metadata.
const UUIDHeader = "_watermill_message_uuid"

// derivedUUIDNamespace is the UUIDv5 namespace for UUIDs of records without a UUIDHeader. It is never
// modified.
var derivedUUIDNamespace = uuid.MustParse("6f3a1c1e-5b0e-4d55-9a44-1c9a3b8f2e71")

// recordUUID returns the UUID of a received record: its UUIDHeader, or, for records produced without
// one, a UUIDv5 of topic/partition/offset, so every delivery of the same record carries the same UUID.
func recordUUID(km *kafka.Message) string {
	for _, h := range km.Headers {
		if h.Key == UUIDHeader && len(h.Value) > 0 {
			return string(h.Value)
		}
	}
	name := km.Topic + "/" + strconv.Itoa(km.Partition) + "/" + strconv.FormatInt(km.Offset, 10)
	return uuid.NewSHA1(derivedUUIDNamespace, []byte(name)).String()
}

// toWatermill converts a fetched record to a watermill message (without context; the subscription sets it).
// The payload is a copy: a handler modifying it must not change what a redelivery carries.
func toWatermill(km *kafka.Message) *message.Message {
	msg := message.NewMessage(recordUUID(km), bytes.Clone(km.Value))
	for _, h := range km.Headers {
		if h.Key == UUIDHeader || strings.HasPrefix(h.Key, TransportMetadataPrefix) {
			continue
		}
		msg.Metadata.Set(h.Key, string(h.Value))
	}
	msg.Metadata.Set(MetadataKey, string(km.Key))
	msg.Metadata.Set(MetadataTopic, km.Topic)
	msg.Metadata.Set(MetadataPartition, strconv.Itoa(km.Partition))
	msg.Metadata.Set(MetadataOffset, strconv.FormatInt(km.Offset, 10))
	msg.Metadata.Set(MetadataTimestamp, km.Time.UTC().Format(time.RFC3339Nano))
	msg.Metadata.Set(MetadataHighWaterMark, strconv.FormatInt(km.HighWaterMark, 10))
	return msg
}

// toKafka converts a watermill message to a record for topic, with the UUIDHeader header when withUUID.
// Headers are written in key order so the record bytes do not depend on map iteration.
func toKafka(topic string, msg *message.Message, withUUID bool) kafka.Message {
	km := kafka.Message{Topic: topic, Value: msg.Payload}
	if k := msg.Metadata.Get(MetadataKey); k != "" {
		km.Key = []byte(k)
	}
	keys := make([]string, 0, len(msg.Metadata))
	for k := range msg.Metadata {
		if k == UUIDHeader || strings.HasPrefix(k, TransportMetadataPrefix) {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	km.Headers = make([]kafka.Header, 0, len(keys)+1)
	if withUUID {
		km.Headers = append(km.Headers, kafka.Header{Key: UUIDHeader, Value: []byte(msg.UUID)})
	}
	for _, k := range keys {
		km.Headers = append(km.Headers, kafka.Header{Key: k, Value: []byte(msg.Metadata[k])})
	}
	return km
}

// kafka-go's log formats announcing a group member ID (kafka-go v0.4.51 consumergroup.go). kafka-go does not
// expose the member ID otherwise; TestMemberIDCapture fails if an upgrade changes these.
const (
	kafkaGoJoinedFormat     = "Joined group %s as member %s in generation %d"
	kafkaGoJoinedFormatJoin = "joined group %s as member %s in generation %d"
)

// kafkaLogger adapts a watermill logger to kafka-go's Logger. kafka-go's informational output goes to
// Trace (it is chatty), its error output to Error. onJoin, when set, receives the member ID and generation
// each time kafka-go reports joining the group.
type kafkaLogger struct {
	logger watermill.LoggerAdapter
	error  bool
	onJoin func(memberID string, generation int32)
}

// Printf implements kafka.Logger.
func (l kafkaLogger) Printf(format string, args ...any) {
	if l.onJoin != nil && (format == kafkaGoJoinedFormat || format == kafkaGoJoinedFormatJoin) && len(args) == 3 {
		member, ok1 := args[1].(string)
		gen, ok2 := args[2].(int32)
		if ok1 && ok2 {
			l.onJoin(member, gen)
		}
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	if l.error {
		if rebalancing(args) {
			// Routine during every rebalance (members joining or leaving); kafka-go retries by itself.
			l.logger.Info("kafka-go: "+msg, nil)
			return
		}
		if readDeadline(args) {
			// A partition reader whose records are not taken (every slot
			// busy, or the instance paused for disk space) outlives its
			// connection's read deadline in the middle of a batch; kafka-go
			// reconnects and reads on from the same offset. An unreachable
			// broker shows in the fetch loop's own errors and in readiness.
			l.logger.Info("kafka-go: "+msg+" (the reader reconnects)", nil)
			return
		}
		l.logger.Error("kafka-go", errors.New(msg), nil)
		return
	}
	l.logger.Trace("kafka-go: "+msg, nil)
}

// rebalancing reports whether one of args is a kafka.RebalanceInProgress error.
func rebalancing(args []any) bool {
	for _, a := range args {
		if err, ok := a.(error); ok && errors.Is(err, kafka.RebalanceInProgress) {
			return true
		}
	}
	return false
}

// readDeadline reports whether one of args is a read that ran past its
// connection's deadline.
func readDeadline(args []any) bool {
	for _, a := range args {
		if err, ok := a.(error); ok && errors.Is(err, os.ErrDeadlineExceeded) {
			return true
		}
	}
	return false
}
