package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// CETypeDelivery is the ce_type of delivery events.
const CETypeDelivery = "dev.notifyd.delivery_event.v1"

// receipts turns providers' verified receipts into delivery events on the
// deliveries topic. For each receipt, in this order:
//
//  1. receipts of one provider message are handled one at a time (here;
//     two instances may each publish the same change, which the furthest-
//     status rule makes harmless);
//  2. the message is correlated with the result that reported it sent,
//     from the store (every instance has it, from the results topic),
//     waiting up to wait (processing.catch_up_wait) for a result not read
//     yet; then the event is published with what is known;
//  3. a receipt about a message that another provider sent (another kind,
//     or an account the receipt was not verified for) is ignored:
//     dispatch.ErrForeignReceipt;
//  4. a receipt that does not move the message's furthest status
//     (schemas.DeliveryEvent.Moves: a repeat, or one arriving out of
//     order) publishes nothing;
//  5. the event is published and acknowledged by all in-sync replicas
//     before record returns: the provider is answered 200 only then, so a
//     crash after the answer loses nothing;
//  6. the store records it at once, so a repeat is known before the event
//     is read back.
type receipts struct {
	store   *projection.Store
	writer  *kafka.Writer
	topic   string
	source  string
	wait    time.Duration
	redact  *dispatch.Redactor
	metrics *metrics
	log     *slog.Logger

	mu    sync.Mutex
	locks map[string]*keyLock
}

// keyLock is the lock of one provider message id, shared by its waiters.
type keyLock struct {
	mu   sync.Mutex
	refs int
}

func (r *receipts) lock(id string) func() {
	r.mu.Lock()
	if r.locks == nil {
		r.locks = map[string]*keyLock{}
	}
	l := r.locks[id]
	if l == nil {
		l = &keyLock{}
		r.locks[id] = l
	}
	l.refs++
	r.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		r.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(r.locks, id)
		}
		r.mu.Unlock()
	}
}

// correlate returns the correlation of a message, waiting up to r.wait for
// the result that reports it sent.
func (r *receipts) correlate(ctx context.Context, id string) (projection.Correlation, bool, error) {
	deadline := time.NewTimer(r.wait)
	defer deadline.Stop()
	for {
		changed := r.store.Changed()
		c, ok, err := r.store.Correlate(id)
		if err != nil || ok {
			return c, ok, err
		}
		select {
		case <-changed:
		case <-deadline.C:
			return c, false, nil
		case <-ctx.Done():
			return c, false, context.Cause(ctx)
		}
	}
}

// record handles one receipt: ev carries what the provider said
// (provider, provider_message_id, status, provider_status, error_code,
// error_detail as received, occurred_at, received_at, and the channel
// when the provider implies one); recipient is the message's recipient as
// the provider gave it, if it did, to be masked in the detail; accounts
// are the accounts of ev.Provider's kind the receipt was verified for. It
// returns nil once the event is published, or when there is nothing to
// publish; dispatch.ErrForeignReceipt when the message is another
// provider account's.
func (r *receipts) record(ctx context.Context, ev schemas.DeliveryEvent, recipient string, accounts []string) error {
	if ev.ProviderMessageID == "" || !ev.Status.Valid() {
		return fmt.Errorf("receipt: no message id or an unknown status %q", ev.Status)
	}
	unlock := r.lock(ev.ProviderMessageID)
	defer unlock()
	log := r.log.With("provider", ev.Provider, "provider_message_id", ev.ProviderMessageID, "status", ev.Status)
	c, correlated, err := r.correlate(ctx, ev.ProviderMessageID)
	if err != nil {
		return fmt.Errorf("receipt %s: %w", ev.ProviderMessageID, err)
	}
	switch {
	case correlated && !sentFrom(c, ev.Provider, accounts):
		log.Warn("receipt for a message another provider account sent: ignored", "sent_by", c.Provider, "account", c.Account)
		return dispatch.ErrForeignReceipt
	case correlated:
		ev.CommandID, ev.ResultID, ev.SessionID, ev.OrderNo, ev.Channel, ev.Provider = c.CommandID, c.ResultID, c.SessionID, c.OrderNo, c.Channel, c.Provider
		if c.SessionID != "" {
			ev.MerchantID = schemas.MerchantOf(c.MerchantID) // a result from before merchants is the default's
		}
		ev.ProviderAccount = c.Account
	default:
		if len(accounts) == 1 {
			ev.ProviderAccount = accounts[0]
		}
		log.Warn("receipt for a message no result reports sent (yet): published with what the provider said", "waited", r.wait.String())
	}
	prev, found, err := r.store.Delivery(ev.ProviderMessageID)
	if err != nil {
		return fmt.Errorf("receipt %s: %w", ev.ProviderMessageID, err)
	}
	if !ev.Moves(prev, found) {
		log.Debug("receipt changes nothing", "furthest", prev.Status)
		return nil
	}
	var from schemas.DeliveryStatus
	if found {
		from = prev.Status
	}
	ev.DeliveryID = uuid.NewString()
	ev.ErrorDetail = r.redact.Text(ev.Channel, recipient, ev.ErrorDetail)
	value, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("receipt %s: %w", ev.ProviderMessageID, err)
	}
	m := kafka.Message{Topic: r.topic, Key: []byte(ev.Key()), Value: value, Headers: []kafka.Header{
		{Key: "ce_specversion", Value: []byte(ceSpecVersion)},
		{Key: "ce_id", Value: []byte(ev.DeliveryID)},
		{Key: "ce_type", Value: []byte(CETypeDelivery)},
		{Key: "ce_source", Value: []byte(r.source)},
		{Key: "ce_time", Value: []byte(ev.ReceivedAt.UTC().Format(time.RFC3339Nano))},
		{Key: "content-type", Value: []byte("application/json")},
	}}
	if err := r.writer.WriteMessages(ctx, m); err != nil {
		return fmt.Errorf("publish delivery event of %s: %w", ev.ProviderMessageID, err)
	}
	if _, err := r.store.RecordDelivery(ev); err != nil && !errors.Is(err, projection.ErrClosed) {
		// Published: the follower applies it when it reads it back.
		log.Warn("delivery event published but not recorded in the store yet", "error", err)
	}
	channel := string(ev.Channel)
	if channel == "" {
		channel = "unknown"
	}
	r.metrics.deliveries.WithLabelValues(channel, ev.Provider, string(ev.Status)).Inc()
	log.Info("delivery event published", "delivery_id", ev.DeliveryID, "command_id", ev.CommandID, "session_id", ev.SessionID,
		"channel", ev.Channel, "from", from)
	return nil
}

// sentFrom reports whether the message c correlates was sent by a provider
// of kind with one of accounts: the same kind, and, when the result named
// the account (results from before notifyd recorded it do not), one the
// receipt was verified for.
func sentFrom(c projection.Correlation, kind string, accounts []string) bool {
	return schemas.ProviderKind(c.Provider) == kind && (c.Account == "" || slices.Contains(accounts, c.Account))
}

// RecordReceipt turns a provider's verified receipt into a delivery event
// (see receipts for the order of steps) and returns once it is published,
// or once it is known to change nothing. ev holds what the provider said;
// recipient, when the provider gave it, is masked in the error detail;
// accounts are the accounts of ev.Provider's kind the receipt was verified
// for. dispatch.ErrForeignReceipt when the message is another provider
// account's; ErrNotRunning when the service does not run.
func (s *Service) RecordReceipt(ctx context.Context, ev schemas.DeliveryEvent, recipient string, accounts []string) error {
	r := s.parts().receipts
	if r == nil {
		return ErrNotRunning
	}
	return r.record(ctx, ev, recipient, accounts)
}
