package consumer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/consumer/wmkafka"
	"github.com/notifyd/notifyd/internal/backoff"
	"github.com/notifyd/notifyd/projection"
)

// Headers notifyd adds to a dead-lettered record.
const (
	HeaderError             = "error"
	HeaderOriginalTopic     = "original_topic"
	HeaderOriginalPartition = "original_partition"
	HeaderOriginalOffset    = "original_offset"
	// HeaderTruncated is "true" on a dead letter whose value is a prefix of
	// the original bytes because the whole record was larger than the
	// dead-letter topic accepts; HeaderOriginalSize and HeaderOriginalSHA256
	// then describe the original value. HeaderHeadersDropped is "true" when
	// even the original headers did not fit and were left out.
	HeaderTruncated      = "truncated"
	HeaderOriginalSize   = "original_size"
	HeaderOriginalSHA256 = "original_sha256"
	HeaderHeadersDropped = "original_headers_dropped"
)

// maxErrorHeader bounds the error header (a recovered panic carries a stack).
const maxErrorHeader = 2048

// truncationSteps are the value sizes tried, in order, for a dead letter
// the dead-letter topic refuses as too large; -1 also drops the original
// headers.
var truncationSteps = [...]int{512 << 10, 64 << 10, 4 << 10, 0, -1}

// Backoff of dead-letter writes that fail for another reason than size.
const (
	deadLetterFirstBackoff = 200 * time.Millisecond
	deadLetterMaxBackoff   = 10 * time.Second
)

// deadLetterPublisher adapts watermill's PoisonQueue middleware to notifyd's
// dead-letter contract. PoisonQueue publishes the consumed message with its
// own metadata keys added (reason_poisoned, topic_poisoned, ...); this
// publisher writes instead the original key, the original bytes unchanged,
// the original headers, and the headers error, original_topic,
// original_partition and original_offset.
//
// It does not give up on a dead letter, and never turns a failure into a
// redelivery loop: a record larger than the topic accepts is written
// truncated (HeaderTruncated), and any other failure (topic missing,
// brokers down, not authorised) is retried in place with backoff, logged,
// counted (notifyd_dead_letter_errors_total) and reported by readiness until
// a dead letter is written again. The command's key waits meanwhile; a
// hand-over of its partition (the message's context) stops the retries and
// the next owner tries again.
type deadLetterPublisher struct {
	message.Publisher
	metrics *metrics
	log     *slog.Logger
	health  *deadLetterHealth
	// retrying, when set, is told of every backoff before a retry
	// (hooks.deadLetterRetry).
	retrying func(wait, ceiling time.Duration)
}

// deadLetterHealth is the state readiness reports: the error of the last
// failed dead-letter write, cleared by the next successful one.
type deadLetterHealth struct {
	mu    sync.Mutex
	err   error
	since time.Time
}

func (h *deadLetterHealth) set(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.err, h.since = nil, time.Time{}
		return
	}
	if h.err == nil {
		h.since = time.Now()
	}
	h.err = err
}

// failing returns the current failure, nil when dead letters are written.
func (h *deadLetterHealth) failing() (error, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err, h.since
}

// metadataDeadLetterReason is where the handler notes why it poisoned a
// message (not_json, invalid_command), for the metrics; a message without
// it was poisoned by a panic. It is never written as a header.
const metadataDeadLetterReason = "notifyd.dead_letter_reason"

// Publish writes each poisoned message as a dead letter.
func (p deadLetterPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if err := p.publishOne(topic, m); err != nil {
			return err
		}
		reason := m.Metadata.Get(metadataDeadLetterReason)
		if reason == "" {
			reason = deadLetterPanic
		}
		p.metrics.deadLetters.WithLabelValues(reason).Inc()
	}
	return nil
}

func (p deadLetterPublisher) publishOne(topic string, m *message.Message) error {
	// A dead letter is an irreversible step like a result: written once,
	// by the owner of the command's partition.
	if err := wmkafka.Claim(m); err != nil {
		return fmt.Errorf("dead letter not written (%w): %w", errHandedOver, err)
	}
	d := deadLetter(m)
	step := 0
	wait := backoff.Backoff{First: deadLetterFirstBackoff, Max: deadLetterMaxBackoff}
	log := p.log.With("topic", topic, "original_partition", m.Metadata.Get(wmkafka.MetadataPartition),
		"original_offset", m.Metadata.Get(wmkafka.MetadataOffset))
	for {
		err := p.Publisher.Publish(topic, d)
		if err == nil {
			p.health.set(nil)
			return nil
		}
		if tooLarge(err) && step < len(truncationSteps) {
			d = truncated(m, truncationSteps[step])
			log.Warn("dead letter too large for the topic: writing it truncated", "original_size", len(m.Payload),
				"value_bytes", len(d.Payload), "headers_dropped", d.Metadata.Get(HeaderHeadersDropped) == "true")
			step++
			continue
		}
		p.metrics.deadLetterErrors.Inc()
		p.health.set(err)
		next, ceiling := wait.Next()
		log.Error("writing a dead letter failed, retrying; its key waits", "error", err, "retry_in", next.String())
		if p.retrying != nil {
			p.retrying(next, ceiling)
		}
		if backoff.Sleep(m.Context(), next) != nil {
			return fmt.Errorf("dead letter not written (%w): %w", errHandedOver, err)
		}
		if cerr := wmkafka.Claim(m); cerr != nil {
			return fmt.Errorf("dead letter not written (%w): %w", errHandedOver, cerr)
		}
	}
}

// tooLarge reports whether a write failed because the record is too large:
// for the writer (kafka-go's BatchBytes) or for the topic (the broker).
func tooLarge(err error) bool {
	var tl kafka.MessageTooLargeError
	return errors.As(err, &tl) || errors.Is(err, kafka.MessageSizeTooLarge)
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
	setDeadLetterHeaders(d, m)
	return d
}

// setDeadLetterHeaders sets the key and notifyd's headers of d from m.
func setDeadLetterHeaders(d, m *message.Message) {
	if k := m.Metadata.Get(wmkafka.MetadataKey); k != "" {
		d.Metadata.Set(wmkafka.MetadataKey, k)
	}
	d.Metadata.Set(HeaderError, truncateUTF8(m.Metadata.Get(middleware.ReasonForPoisonedKey), maxErrorHeader))
	d.Metadata.Set(HeaderOriginalTopic, m.Metadata.Get(wmkafka.MetadataTopic))
	d.Metadata.Set(HeaderOriginalPartition, m.Metadata.Get(wmkafka.MetadataPartition))
	d.Metadata.Set(HeaderOriginalOffset, m.Metadata.Get(wmkafka.MetadataOffset))
}

// truncated is the dead letter of m with at most size bytes of its value
// (size -1: none, and without the original headers).
func truncated(m *message.Message, size int) *message.Message {
	var d *message.Message
	if size < 0 {
		d = message.NewMessage(m.UUID, nil)
		setDeadLetterHeaders(d, m)
		d.Metadata.Set(HeaderHeadersDropped, "true")
	} else {
		d = deadLetter(m)
		d.Payload = m.Payload[:min(size, len(m.Payload))]
	}
	sum := sha256.Sum256(m.Payload)
	d.Metadata.Set(HeaderTruncated, "true")
	d.Metadata.Set(HeaderOriginalSize, strconv.Itoa(len(m.Payload)))
	d.Metadata.Set(HeaderOriginalSHA256, hex.EncodeToString(sum[:]))
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

// recordDeadLetters writes the records a follower refuses (a payment event
// for another merchant's session, an invalid merchant-settings record) to
// the dead-letter topic: the original key, value and headers, plus the
// headers error ("<reason>: <detail>"), original_topic,
// original_partition and original_offset. A write is retried in place
// with backoff until it succeeds or ctx ends: the refusal is written
// before the batch that refuses it is stored, so it is never lost behind
// a stored offset (at worst written twice after a crash).
type recordDeadLetters struct {
	writer  *kafka.Writer
	topic   string
	metrics *metrics
	health  *deadLetterHealth
	log     *slog.Logger
}

// write dead-letters r, read from topic's partition, for reason.
func (d *recordDeadLetters) write(ctx context.Context, topic string, partition int, r projection.Record, reason, detail string) error {
	msg := kafka.Message{Topic: d.topic, Key: r.Key, Value: r.Value, Headers: []kafka.Header{
		{Key: HeaderError, Value: []byte(truncateUTF8(reason+": "+detail, maxErrorHeader))},
		{Key: HeaderOriginalTopic, Value: []byte(topic)},
		{Key: HeaderOriginalPartition, Value: []byte(strconv.Itoa(partition))},
		{Key: HeaderOriginalOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
	}}
	wait := backoff.Backoff{First: deadLetterFirstBackoff, Max: deadLetterMaxBackoff}
	for {
		err := d.writer.WriteMessages(ctx, msg)
		if err == nil {
			d.health.set(nil)
			d.metrics.deadLetters.WithLabelValues(reason).Inc()
			d.log.Warn("record dead-lettered", "reason", reason, "detail", detail, "original_topic", topic,
				"original_partition", partition, "original_offset", r.Offset)
			return nil
		}
		d.metrics.deadLetterErrors.Inc()
		d.health.set(err)
		next, _ := wait.Next()
		d.log.Error("writing a dead letter failed, retrying; its partition waits", "error", err, "original_topic", topic,
			"original_partition", partition, "retry_in", next.String())
		if backoff.Sleep(ctx, next) != nil {
			return fmt.Errorf("dead letter of %s/%d@%d not written: %w", topic, partition, r.Offset, err)
		}
	}
}
