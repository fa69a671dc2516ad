package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/notifyd/notifyd/consumer/wmkafka"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// CloudEvents binary-mode headers of a delivery result.
const (
	ceSpecVersion = "1.0"
	// CEType is the ce_type of delivery results.
	CEType = "dev.notifyd.delivery_result.v1"
)

// poisonError marks a message that can never be processed: it goes to the
// dead-letter topic instead of being retried.
type poisonError struct{ err error }

func (e poisonError) Error() string { return e.err.Error() }
func (e poisonError) Unwrap() error { return e.err }

// isPoison decides what the PoisonQueue middleware dead-letters: messages
// the handler declared poison, and messages whose handling panicked (a panic
// on a message would recur on every redelivery and stall its key).
func isPoison(err error) bool {
	var p poisonError
	var panicked middleware.RecoveredPanicError
	return errors.As(err, &p) || errors.As(err, &panicked)
}

// commandHandler turns one resend command into one published delivery
// result. Its errors are infrastructure failures (broker, store): the
// message is nacked and redelivered, and the idempotency table makes the
// redelivery answer with the same result.
type commandHandler struct {
	// ctx ends when in-flight commands must give up (shutdown deadline).
	ctx         context.Context
	store       *projection.Store
	dispatcher  *dispatch.Dispatcher
	watermarks  *watermarks
	events      *follower
	results     *follower
	publisher   message.Publisher
	resultTopic string
	source      string
	catchUpWait time.Duration
	maxAge      time.Duration
	now         func() time.Time
	log         *slog.Logger
	metrics     *metrics

	// inflight serialises commands with the same command_id within this
	// instance, so a duplicate waits for the first and replays its result.
	mu       sync.Mutex
	inflight map[string]chan struct{}
}

// Handle is the watermill handler function.
func (h *commandHandler) Handle(msg *message.Message) error {
	arrived := h.now()
	h.metrics.inFlight.Inc()
	defer h.metrics.inFlight.Dec()
	cmd, err := schemas.DecodeCommand(msg.Payload)
	if err != nil {
		if errors.Is(err, schemas.ErrNotJSON) {
			msg.Metadata.Set(metadataDeadLetterReason, deadLetterNotJSON)
			return poisonError{err}
		}
		msg.Metadata.Set(metadataDeadLetterReason, deadLetterInvalidCommand)
		id, ok := schemas.PeekCommand(msg.Payload)
		if !ok {
			return poisonError{err}
		}
		bad := schemas.ResendCommand{CommandID: id.CommandID, SessionID: id.SessionID, OrderNo: id.OrderNo}
		answerErr := h.answer(msg, bad, func(context.Context) (schemas.DeliveryResult, error) {
			return h.dispatcher.Failure(bad, nil, schemas.ReasonInvalidCommand, err.Error()), nil
		})
		if answerErr != nil {
			return answerErr
		}
		return poisonError{err}
	}
	return h.answer(msg, cmd, func(ctx context.Context) (schemas.DeliveryResult, error) {
		return h.decide(ctx, msg, cmd, arrived)
	})
}

// answer publishes the result of cmd: the stored one when the command_id
// was answered before (by any instance), else the one build returns, which
// is recorded before it is published so that a redelivery republishes the
// same result (same result_id).
func (h *commandHandler) answer(msg *message.Message, cmd schemas.ResendCommand, build func(context.Context) (schemas.DeliveryResult, error)) error {
	ctx := h.ctx
	start := time.Now()
	log := h.log.With("command_id", cmd.CommandID, "session_id", cmd.SessionID, "order_no", cmd.OrderNo)
	release, err := h.acquire(ctx, cmd.CommandID)
	if err != nil {
		return err
	}
	defer release()

	// Idempotency: the results topic is followed into the store; make sure
	// it holds every result published before this command arrived.
	offs, err := h.watermarks.Get(ctx)
	if err != nil {
		return fmt.Errorf("command %s: read high-water marks: %w", cmd.CommandID, err)
	}
	if err := h.catchUp(ctx, offs); err != nil {
		return fmt.Errorf("command %s: %w", cmd.CommandID, err)
	}
	stored, found, err := h.store.Result(cmd.CommandID)
	if err != nil {
		return fmt.Errorf("command %s: %w", cmd.CommandID, err)
	}
	if found {
		log.Info("duplicate command: replaying its stored result")
		if err := h.publish(msg, stored); err != nil {
			return err
		}
		h.metrics.replayed.Inc()
		h.metrics.observe(start)
		return nil
	}
	res, err := build(ctx)
	if err != nil {
		return fmt.Errorf("command %s: %w", cmd.CommandID, err)
	}
	if ctx.Err() != nil {
		// The shutdown deadline cut the sends short: channels still being
		// tried would read provider_unavailable. Record nothing; the command
		// stays unacked and is decided again after the restart.
		return fmt.Errorf("command %s: stopped before it was decided: %w", cmd.CommandID, context.Cause(ctx))
	}
	value, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("command %s: encode result: %w", cmd.CommandID, err)
	}
	stored, err = h.store.RecordResult(cmd.CommandID, value)
	if err != nil {
		return fmt.Errorf("command %s: %w", cmd.CommandID, err)
	}
	if !bytes.Equal(stored, value) {
		// Another instance decided this command_id first (its result came
		// in from the topic meanwhile): that one is the answer.
		log.Info("command decided elsewhere meanwhile: publishing that result")
		if err := h.publish(msg, stored); err != nil {
			return err
		}
		h.metrics.replayed.Inc()
		h.metrics.observe(start)
		return nil
	}
	h.metrics.decided(&res) // counted once: a redelivery replays it
	log.Info("command answered", "outcome", res.Outcome, "reason", res.Reason, "result_id", res.ResultID)
	if err := h.publish(msg, value); err != nil {
		return err
	}
	h.metrics.observe(start)
	return nil
}

// catchUp waits until the store has applied both followed topics up to the
// given end offsets, starting readers for partitions it sees for the first
// time.
func (h *commandHandler) catchUp(ctx context.Context, offs map[string]map[int]Offsets) error {
	for _, f := range []*follower{h.events, h.results} {
		ends := make(map[int]int64, len(offs[f.topic]))
		parts := make([]int, 0, len(offs[f.topic]))
		for p, o := range offs[f.topic] {
			parts = append(parts, p)
			// A partition with no records left (retention or compaction
			// removed them all) has nothing to wait for; one whose stored
			// offset is below First is moved up to First by the follower.
			if o.End > o.First {
				ends[p] = o.End
			}
		}
		f.Follow(parts)
		wait := h.store.WaitResults
		if f == h.events {
			wait = h.store.WaitEvents
		}
		if err := wait(ctx, ends); err != nil {
			return fmt.Errorf("catch up with %s: %w", f.topic, err)
		}
	}
	return nil
}

// decide computes the result of a valid command that has no result yet.
func (h *commandHandler) decide(ctx context.Context, msg *message.Message, cmd schemas.ResendCommand, arrived time.Time) (schemas.DeliveryResult, error) {
	if ts, ok := recordTime(msg); ok && h.maxAge > 0 && arrived.Sub(ts) > h.maxAge {
		detail := fmt.Sprintf("command published %s ago, more than processing.max_command_age (%s)", arrived.Sub(ts).Round(time.Second), h.maxAge)
		return h.dispatcher.Failure(cmd, nil, schemas.ReasonCommandExpired, detail), nil
	}
	// Read-your-writes: the projection has applied every payment event
	// published before the command arrived (catchUp in answer), and a
	// transaction still unknown gets until catch_up_wait to appear.
	deadline := arrived.Add(h.catchUpWait)
	for {
		changed := h.store.Changed()
		res, err := h.dispatcher.Resolve(cmd)
		if err != nil {
			return schemas.DeliveryResult{}, err
		}
		switch {
		case res.Reason == "":
			return h.dispatcher.Deliver(ctx, cmd, res.Txn), nil
		case res.Reason != schemas.ReasonUnknownTransaction:
			return h.dispatcher.Failure(cmd, nil, res.Reason, res.Detail), nil
		}
		wait := deadline.Sub(h.now())
		if wait <= 0 {
			return h.dispatcher.Failure(cmd, nil, res.Reason, res.Detail), nil
		}
		timer := time.NewTimer(wait)
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return schemas.DeliveryResult{}, context.Cause(ctx)
		}
		timer.Stop()
	}
}

// acquire waits until no other handler of this instance holds commandID.
func (h *commandHandler) acquire(ctx context.Context, commandID string) (func(), error) {
	for {
		h.mu.Lock()
		busy, ok := h.inflight[commandID]
		if !ok {
			done := make(chan struct{})
			h.inflight[commandID] = done
			h.mu.Unlock()
			return func() {
				h.mu.Lock()
				delete(h.inflight, commandID)
				h.mu.Unlock()
				close(done)
			}, nil
		}
		h.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// publish writes a result (as stored) to the results topic with its key and
// CloudEvents headers, and returns once all in-sync replicas have it.
func (h *commandHandler) publish(in *message.Message, value []byte) error {
	var r schemas.DeliveryResult
	if err := json.Unmarshal(value, &r); err != nil {
		return fmt.Errorf("decode stored result: %w", err)
	}
	out := message.NewMessage(r.ResultID, value)
	out.Metadata.Set(wmkafka.MetadataKey, r.Key())
	out.Metadata.Set("ce_specversion", ceSpecVersion)
	out.Metadata.Set("ce_id", r.ResultID)
	out.Metadata.Set("ce_type", CEType)
	out.Metadata.Set("ce_source", h.source)
	out.Metadata.Set("ce_time", r.ProcessedAt.UTC().Format(time.RFC3339Nano))
	out.Metadata.Set("content-type", "application/json")
	if id := middleware.MessageCorrelationID(in); id != "" {
		middleware.SetCorrelationID(id, out)
	}
	if err := h.publisher.Publish(h.resultTopic, out); err != nil {
		return fmt.Errorf("publish result %s of command %s: %w", r.ResultID, r.CommandID, err)
	}
	return nil
}

func recordTime(msg *message.Message) (time.Time, bool) {
	v := msg.Metadata.Get(wmkafka.MetadataTimestamp)
	if v == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil && !t.IsZero()
}
