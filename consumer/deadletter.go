package consumer

import (
	"strings"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/notifyd/notifyd/consumer/wmkafka"
)

// Headers notifyd adds to a dead-lettered record.
const (
	HeaderError             = "error"
	HeaderOriginalTopic     = "original_topic"
	HeaderOriginalPartition = "original_partition"
	HeaderOriginalOffset    = "original_offset"
)

// maxErrorHeader bounds the error header (a recovered panic carries a stack).
const maxErrorHeader = 2048

// deadLetterPublisher adapts watermill's PoisonQueue middleware to notifyd's
// dead-letter contract. PoisonQueue publishes the consumed message with its
// own metadata keys added (reason_poisoned, topic_poisoned, ...); this
// publisher writes instead the original key, the original bytes unchanged,
// the original headers, and the headers error, original_topic,
// original_partition and original_offset.
type deadLetterPublisher struct {
	message.Publisher
	metrics *metrics
}

// metadataDeadLetterReason is where the handler notes why it poisoned a
// message (not_json, invalid_command), for the metrics; a message without
// it was poisoned by a panic. It is never written as a header.
const metadataDeadLetterReason = "notifyd.dead_letter_reason"

// Publish rewrites each poisoned message and publishes it.
func (p deadLetterPublisher) Publish(topic string, msgs ...*message.Message) error {
	out := make([]*message.Message, len(msgs))
	for i, m := range msgs {
		out[i] = deadLetter(m)
	}
	if err := p.Publisher.Publish(topic, out...); err != nil {
		return err
	}
	for _, m := range msgs {
		reason := m.Metadata.Get(metadataDeadLetterReason)
		if reason == "" {
			reason = deadLetterPanic
		}
		p.metrics.deadLetters.WithLabelValues(reason).Inc()
	}
	return nil
}

func deadLetter(m *message.Message) *message.Message {
	d := message.NewMessage(m.UUID, m.Payload)
	for k, v := range m.Metadata {
		switch {
		case k == middleware.ReasonForPoisonedKey, k == middleware.PoisonedTopicKey,
			k == middleware.PoisonedHandlerKey, k == middleware.PoisonedSubscriberKey,
			k == metadataDeadLetterReason:
		case strings.HasPrefix(k, "kafka."):
		default:
			d.Metadata.Set(k, v)
		}
	}
	if k := m.Metadata.Get(wmkafka.MetadataKey); k != "" {
		d.Metadata.Set(wmkafka.MetadataKey, k)
	}
	d.Metadata.Set(HeaderError, truncateUTF8(m.Metadata.Get(middleware.ReasonForPoisonedKey), maxErrorHeader))
	d.Metadata.Set(HeaderOriginalTopic, m.Metadata.Get(wmkafka.MetadataTopic))
	d.Metadata.Set(HeaderOriginalPartition, m.Metadata.Get(wmkafka.MetadataPartition))
	d.Metadata.Set(HeaderOriginalOffset, m.Metadata.Get(wmkafka.MetadataOffset))
	return d
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
