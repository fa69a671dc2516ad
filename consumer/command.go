package consumer

import (
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
	"github.com/notifyd/notifyd/internal/backoff"
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

// errHandedOver marks a command left undecided because this instance may
// no longer decide it: its partition was handed over (rebalance, stop)
// before it was claimed, the hand-over's deadline passed, or the group
// membership is uncertain. The Retry middleware does not retry it; the
// message is not committed and the partition's next owner decides it.
var errHandedOver = errors.New("command handed over undecided")

// commandLifecycle is the life of one resend command in this instance. Its
// steps, in order (Handle):
//
//  0. wait while the free-space guard pauses (store.dir nearly full): the
//     command is not started, and a hand-over meanwhile leaves it to the
//     next owner;
//  1. decode: bytes that are not a JSON object go to the dead-letter topic;
//     a command that breaks the schema but has a command_id also gets an
//     invalid_command result;
//  2. lock the command_id within the instance (idempotency);
//  3. wait for the projection: read the end offsets of payment-events and
//     results (after the command arrived) and wait until the store has
//     applied both up to them (read-your-writes, and every earlier answer);
//  4. replay: a command_id that has an answer is answered with it, unchanged;
//  5. decide once, holding one of processing.concurrency sending slots
//     until the decision is recorded (6): expired, unknown, ambiguous or
//     rejected commands are answered without sending; otherwise the
//     channels are sent through dispatch, which claims the message
//     (wmkafka.Claim) before every provider call, retries included;
//  6. record: claim again, then record the result as this instance's
//     decision (or take the answer another instance published first); a
//     decision the store cannot record is published from memory instead,
//     never decided again (unrecorded), and a store that failed decides
//     nothing more (step 5 leaves the command to the next owner);
//  7. publish the answer with acks from all in-sync replicas;
//  8. return nil: the Router acks, and the subscription commits the offset
//     once every lower offset of the partition is acked too.
//
// A hand-over of the command's partition (a rebalance or a stop) cancels the
// message's context if it was not claimed yet, and steps 2 to 6 give up
// undecided (errHandedOver): the next owner decides it. A claimed command
// finishes, unless the hand-over's deadline passes first (then it gives up
// undecided too, and only a send already made can repeat). Other errors are
// infrastructure failures (broker, store), retried in place by the Retry
// middleware, then nacked and redelivered; step 4 makes a redelivery answer
// with the same result.
type commandLifecycle struct {
	store       *projection.Store
	decisions   *idempotency
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
	hooks       hooks
	// guard pauses new commands while store.dir is nearly full.
	guard *diskGuard
	// sending holds a token per command in steps 5 and 6: its capacity is
	// processing.concurrency, the provider calls in flight. Steps 2 to 4
	// and 7 (waiting for the projection, publishing) run outside it, so
	// their few milliseconds do not idle a slot the providers could use.
	// The slot is freed only once the decision is recorded durably
	// (RecordResult syncs), so that a process or machine dying repeats the
	// sends of at most processing.concurrency commands: the others are
	// republished from the record.
	sending chan struct{}
}

// handedOutPerSlot is how many commands the subscription hands out per
// sending slot: enough for the ones catching up or publishing to keep
// every slot busy.
const handedOutPerSlot = 2

// Handle is the watermill handler function: the lifecycle above.
func (h *commandLifecycle) Handle(msg *message.Message) error {
	// 0. No new command while store.dir is nearly full: it waits here,
	// unclaimed (a hand-over gives it to the next owner).
	if h.guard != nil {
		if err := h.guard.wait(msg.Context()); err != nil {
			h.metrics.handedOver.Inc()
			return fmt.Errorf("paused for disk space: %w: %w", errHandedOver, err)
		}
	}
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

// answer runs steps 2 to 7 for cmd; decide computes a new result (step 5).
func (h *commandLifecycle) answer(msg *message.Message, cmd schemas.ResendCommand, decide func(context.Context) (schemas.DeliveryResult, error)) error {
	ctx := msg.Context()
	start := time.Now()
	log := h.log.With(commandFields(cmd)...)
	undecided := func(step string, err error) error {
		if ctx.Err() != nil || errors.Is(err, wmkafka.ErrNotOwner) {
			h.metrics.handedOver.Inc()
			log.Info("command handed over undecided", "step", step, "why", err)
			return fmt.Errorf("command %s: %s: %w: %w", cmd.CommandID, step, errHandedOver, err)
		}
		return fmt.Errorf("command %s: %s: %w", cmd.CommandID, step, err)
	}

	// 2. One handler per command_id in this instance.
	release, err := h.decisions.lock(ctx, cmd.CommandID)
	if err != nil {
		return undecided("lock", err)
	}
	defer release()

	// 3. Wait for the projection and the idempotency table.
	offs, err := h.watermarks.Get(ctx)
	if err != nil {
		return undecided("read high-water marks", err)
	}
	if err := h.catchUp(ctx, cmd.CommandID, offs); err != nil {
		return undecided("catch up", err)
	}

	// 4. Replay an earlier answer.
	stored, found, err := h.decisions.answer(cmd.CommandID)
	if err != nil {
		return undecided("look up", err)
	}
	if found {
		if err := wmkafka.Claim(msg); err != nil {
			return undecided("replay", err)
		}
		log.Info("duplicate command: replaying its stored result")
		return h.replay(msg, stored, start)
	}

	// 5. Decide, holding a sending slot until the decision is recorded. A
	// store that failed decides nothing more: the command is left to the
	// partition's next owner (this instance is stopping).
	res, freeSlot, step, err := h.decideInSlot(ctx, decide)
	defer freeSlot()
	if err != nil {
		return undecided(step, err)
	}

	// 6. Record.
	if err := wmkafka.Claim(msg); err != nil {
		return undecided("record", err)
	}
	value, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("command %s: encode result: %w", cmd.CommandID, err)
	}
	stored, mine, err := h.decisions.record(cmd.CommandID, value)
	if err != nil {
		// Decided (and sent): it must not be decided again. See unrecorded.
		return h.unrecorded(msg, cmd, res, value, start, err, log)
	}
	freeSlot()

	// 7. Publish.
	if !mine {
		// Another instance's answer reached the topic first: it is the answer.
		log.Info("command decided elsewhere meanwhile: publishing that result")
		return h.replay(msg, stored, start)
	}
	h.metrics.decided(&res) // counted once: a redelivery replays it
	log.Info("command answered", append(resolvedFields(cmd, res), "outcome", res.Outcome, "reason", res.Reason, "result_id", res.ResultID)...)
	if err := h.publish(msg, value); err != nil {
		return err
	}
	h.metrics.observe(start)
	return nil
}

// commandFields are the identifiers a command carries, for every log line
// about it: command_id, and session_id and order_no when given.
func commandFields(cmd schemas.ResendCommand) []any {
	f := []any{"command_id", cmd.CommandID}
	if cmd.SessionID != "" {
		f = append(f, "session_id", cmd.SessionID)
	}
	if cmd.OrderNo != "" {
		f = append(f, "order_no", cmd.OrderNo)
	}
	if cmd.MerchantID != "" {
		f = append(f, "merchant_id", cmd.MerchantID)
	}
	return f
}

// resolvedFields are the identifiers of the transaction a decision
// resolved that the command did not carry (an order_no command's
// session_id), for the line that answers it.
func resolvedFields(cmd schemas.ResendCommand, res schemas.DeliveryResult) []any {
	var f []any
	if cmd.SessionID == "" && res.SessionID != "" {
		f = append(f, "session_id", res.SessionID)
	}
	if cmd.OrderNo == "" && res.OrderNo != "" {
		f = append(f, "order_no", res.OrderNo)
	}
	if cmd.MerchantID == "" && res.MerchantID != "" {
		f = append(f, "merchant_id", res.MerchantID)
	}
	return f
}

// decideInSlot decides a command holding a sending slot, which freeSlot
// (idempotent) gives back; the caller frees it once the decision is
// recorded. A store that failed decides nothing more: the command is left
// to the partition's next owner (this instance is stopping). On error,
// step names what did not happen.
func (h *commandLifecycle) decideInSlot(ctx context.Context, decide func(context.Context) (schemas.DeliveryResult, error)) (
	res schemas.DeliveryResult, freeSlot func(), step string, err error) {
	freeSlot = func() {}
	if err := h.store.Err(); err != nil {
		return res, freeSlot, "decide", fmt.Errorf("%w: %w", errHandedOver, err)
	}
	select {
	case h.sending <- struct{}{}:
	case <-ctx.Done():
		return res, freeSlot, "wait for a sending slot", context.Cause(ctx)
	}
	var once sync.Once
	freeSlot = func() { once.Do(func() { <-h.sending }) }
	res, err = decide(ctx)
	if err == nil && ctx.Err() != nil {
		// The hand-over's deadline cut the sends short: channels still being
		// tried would read provider_unavailable. Record nothing.
		err = context.Cause(ctx)
	}
	if err != nil {
		return res, freeSlot, "decide", err
	}
	return res, freeSlot, "", nil
}

// unrecorded settles a decision the store could not record (a store error:
// a full disk, a failed database). The channels were sent, so the command
// is never decided again: the decision is published as it is, from memory
// (the results topic is the record of decisions; every store applies it
// from there, this one once it works again), and only then acked. While
// neither the store nor the topic takes it, both are retried in place with
// backoff, the sending slot held (the caller frees it on return). If the
// command's partition is handed over first (a stop, a rebalance: its
// context ends), the decision is lost and the next owner decides again:
// one of the at most processing.concurrency commands a crash may repeat.
func (h *commandLifecycle) unrecorded(msg *message.Message, cmd schemas.ResendCommand, res schemas.DeliveryResult, value []byte,
	start time.Time, recordErr error, log *slog.Logger) error {
	ctx := msg.Context()
	log.Warn("decision not recorded (store error): publishing it from what was sent; it is not sent again", "error", recordErr)
	var wait backoff.Backoff // 200 ms, doubling up to 10 s, jittered
	for {
		err := h.publish(msg, value)
		if err == nil {
			h.metrics.decided(&res)
			h.metrics.unrecorded.Inc()
			log.Info("command answered", append(resolvedFields(cmd, res), "outcome", res.Outcome, "reason", res.Reason, "result_id", res.ResultID, "recorded", false)...)
			h.metrics.observe(start)
			return nil
		}
		log.Warn("decision neither recorded nor published yet, retrying", "record_error", recordErr, "publish_error", err)
		if werr := wait.Wait(ctx); werr != nil {
			h.metrics.handedOver.Inc()
			log.Error("decision lost: sent, neither recorded nor published before the hand-over; the next owner decides the command again",
				"record_error", recordErr, "publish_error", err)
			return fmt.Errorf("command %s: record: %w: %w", cmd.CommandID, errHandedOver, errors.Join(recordErr, err, werr))
		}
		if h.store.Err() == nil {
			// The store may work again (an error it recovers from): record
			// first, so that a duplicate is answered from it.
			if stored, mine, rerr := h.decisions.record(cmd.CommandID, value); rerr == nil {
				recordErr = nil
				if !mine {
					value = stored // another instance's answer came first
				}
			} else {
				recordErr = rerr
			}
		}
	}
}

// replay publishes an answer decided before (here or elsewhere) again.
func (h *commandLifecycle) replay(msg *message.Message, answer []byte, start time.Time) error {
	if err := h.publish(msg, answer); err != nil {
		return err
	}
	h.metrics.replayed.Inc()
	h.metrics.observe(start)
	return nil
}

// catchUp waits until the store has applied both followed topics up to the
// given end offsets, starting readers for partitions it sees for the first
// time.
func (h *commandLifecycle) catchUp(ctx context.Context, commandID string, offs map[string]map[int]Offsets) error {
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
		if h.hooks.catchUpWait != nil && behind(f.stored(), ends) {
			h.hooks.catchUpWait(commandID, f.topic)
		}
		if err := wait(ctx, ends); err != nil {
			return fmt.Errorf("catch up with %s: %w", f.topic, err)
		}
	}
	return nil
}

// behind reports whether stored (next offsets per partition) is short of
// any of ends.
func behind(stored, ends map[int]int64) bool {
	for p, end := range ends {
		if stored[p] < end {
			return true
		}
	}
	return false
}

// decide computes the result of a valid command that has no result yet. It
// claims the message before every provider call.
func (h *commandLifecycle) decide(ctx context.Context, msg *message.Message, cmd schemas.ResendCommand, arrived time.Time) (schemas.DeliveryResult, error) {
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
			// Every provider call, retries included, is claimed first.
			return h.dispatcher.DeliverGuarded(ctx, cmd, res.Txn, func() error { return wmkafka.Claim(msg) })
		case res.Reason != schemas.ReasonUnknownTransaction:
			return h.dispatcher.Failure(cmd, nil, res.Reason, res.Detail), nil
		}
		wait := deadline.Sub(h.now())
		if wait <= 0 {
			return h.dispatcher.Failure(cmd, nil, res.Reason, res.Detail), nil
		}
		if h.hooks.unknownWait != nil {
			h.hooks.unknownWait(cmd.CommandID)
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

// publish writes a result (as stored) to the results topic with its key and
// CloudEvents headers, and returns once all in-sync replicas have it.
func (h *commandLifecycle) publish(in *message.Message, value []byte) error {
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
