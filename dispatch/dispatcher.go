package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/notifyd/notifyd/schemas"
)

// Transactions is the read side of the projection that dispatch needs.
type Transactions interface {
	// Transaction returns the latest snapshot of a session; ok is false
	// when the session is unknown.
	Transaction(sessionID string) (schemas.PaymentEvent, bool, error)
	// SessionForOrder returns the session of an order; ok is false when
	// the order is unknown.
	SessionForOrder(orderNo string) (string, bool, error)
}

// Config configures a Dispatcher.
type Config struct {
	// Providers sends each channel; a channel without a provider is
	// rejected with provider_not_configured.
	Providers map[schemas.Channel]Provider
	// Retry is each channel's retry policy; a missing channel, or zero
	// fields, take the defaults.
	Retry map[schemas.Channel]RetryPolicy
	// RateLimits bounds each channel's provider calls; a missing channel
	// has no limit. Waiting for the limiter is not a failure and does not
	// use the retry budget.
	RateLimits map[schemas.Channel]RateLimit
	// Templates renders the messages; required.
	Templates *Templates
	// Now stamps processed_at; default time.Now.
	Now func() time.Time
	// Metrics records provider calls and channel outcomes; nil records
	// nothing.
	Metrics *Metrics
	// Redactor knows every configured secret; with the recipient of each
	// channel it hides them from every provider detail in results and
	// logs, whatever the provider itself already hid. Nil hides contacts
	// only.
	Redactor *Redactor
}

// Dispatcher decides and sends the notifications of resend commands. It is
// safe for concurrent use.
type Dispatcher struct {
	providers map[schemas.Channel]Provider
	retry     map[schemas.Channel]RetryPolicy
	limiters  map[schemas.Channel]*rate.Limiter
	templates *Templates
	metrics   *Metrics
	redact    *Redactor
	now       func() time.Time
	txns      Transactions
	log       *slog.Logger

	// clock and sleep drive the retry budget and backoff waits; tests
	// replace them.
	clock func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// New returns a Dispatcher reading transactions from txns and logging to log
// (nil discards). It fails on a missing Templates or txns, a provider or
// retry policy for an unknown channel, or an invalid retry policy (the error
// names it, e.g. "retry.sms: max_attempts: must be >= 1").
func New(cfg Config, txns Transactions, log *slog.Logger) (*Dispatcher, error) {
	if cfg.Templates == nil {
		return nil, errors.New("dispatch: templates are required")
	}
	if txns == nil {
		return nil, errors.New("dispatch: transactions are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{
		providers: map[schemas.Channel]Provider{},
		retry:     map[schemas.Channel]RetryPolicy{},
		limiters:  map[schemas.Channel]*rate.Limiter{},
		templates: cfg.Templates,
		metrics:   cfg.Metrics,
		redact:    cfg.Redactor,
		now:       cfg.Now,
		txns:      txns,
		log:       log,
		clock:     time.Now,
		sleep:     sleepCtx,
	}
	if d.now == nil {
		d.now = time.Now
	}
	for ch, p := range cfg.Providers {
		if !ch.Valid() {
			return nil, fmt.Errorf("dispatch: providers: unknown channel %q", ch)
		}
		if p != nil {
			d.providers[ch] = p
		}
	}
	for ch := range cfg.Retry {
		if !ch.Valid() {
			return nil, fmt.Errorf("dispatch: retry: unknown channel %q", ch)
		}
	}
	for ch, rl := range cfg.RateLimits {
		if !ch.Valid() {
			return nil, fmt.Errorf("dispatch: rate_limit: unknown channel %q", ch)
		}
		if err := rl.Validate(); err != nil {
			return nil, fmt.Errorf("dispatch: rate_limit.%s: %w", ch, err)
		}
		if l := rl.Limiter(); l != nil {
			d.limiters[ch] = l
		}
	}
	d.metrics.init(d.providers)
	for _, ch := range schemas.Channels {
		p := cfg.Retry[ch]
		p.SetDefaults()
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("dispatch: retry.%s: %w", ch, err)
		}
		d.retry[ch] = p
	}
	return d, nil
}

// Resolution is the transaction a command names. Reason is "" when the
// command names exactly one known transaction (Txn); otherwise it is
// unknown_transaction or identifier_mismatch and Detail says why.
type Resolution struct {
	Txn    schemas.PaymentEvent
	Reason schemas.Reason
	Detail string
}

// Resolve finds the transaction cmd names. With session_id only or order_no
// only, the transaction is that of the identifier, or unknown_transaction.
// With both: unknown_transaction when neither names a known transaction;
// identifier_mismatch when at least one does but they do not name one and
// the same transaction (the session's snapshot carries the command's
// order_no, or the order maps to the command's session). The error is only
// for store failures.
func (d *Dispatcher) Resolve(cmd schemas.ResendCommand) (Resolution, error) {
	var (
		bySession   schemas.PaymentEvent
		sessionOK   bool
		orderTxn    schemas.PaymentEvent
		orderOK     bool
		orderSessID string
	)
	if cmd.SessionID != "" {
		txn, ok, err := d.txns.Transaction(cmd.SessionID)
		if err != nil {
			return Resolution{}, fmt.Errorf("dispatch: look up session: %w", err)
		}
		bySession, sessionOK = txn, ok
	}
	if cmd.OrderNo != "" && !(sessionOK && bySession.OrderNo == cmd.OrderNo) {
		sid, ok, err := d.txns.SessionForOrder(cmd.OrderNo)
		if err != nil {
			return Resolution{}, fmt.Errorf("dispatch: look up order: %w", err)
		}
		if ok {
			txn, ok, err := d.txns.Transaction(sid)
			if err != nil {
				return Resolution{}, fmt.Errorf("dispatch: look up order's session: %w", err)
			}
			orderTxn, orderOK, orderSessID = txn, ok, sid
		}
	}
	switch {
	case cmd.SessionID != "" && cmd.OrderNo != "":
		switch {
		case sessionOK && (bySession.OrderNo == cmd.OrderNo || orderSessID == cmd.SessionID):
			return Resolution{Txn: bySession}, nil
		case sessionOK && orderOK:
			return Resolution{Reason: schemas.ReasonIdentifierMismatch,
				Detail: fmt.Sprintf("session_id %q and order_no %q name different transactions", cmd.SessionID, cmd.OrderNo)}, nil
		case sessionOK:
			return Resolution{Reason: schemas.ReasonIdentifierMismatch,
				Detail: fmt.Sprintf("order_no %q is not the order of session_id %q", cmd.OrderNo, cmd.SessionID)}, nil
		case orderOK:
			return Resolution{Reason: schemas.ReasonIdentifierMismatch,
				Detail: fmt.Sprintf("session_id %q is unknown but order_no %q names another session", cmd.SessionID, cmd.OrderNo)}, nil
		default:
			return Resolution{Reason: schemas.ReasonUnknownTransaction,
				Detail: fmt.Sprintf("no transaction with session_id %q or order_no %q", cmd.SessionID, cmd.OrderNo)}, nil
		}
	case cmd.SessionID != "":
		if sessionOK {
			return Resolution{Txn: bySession}, nil
		}
		return Resolution{Reason: schemas.ReasonUnknownTransaction,
			Detail: fmt.Sprintf("no transaction with session_id %q", cmd.SessionID)}, nil
	case cmd.OrderNo != "":
		if orderOK {
			return Resolution{Txn: orderTxn}, nil
		}
		return Resolution{Reason: schemas.ReasonUnknownTransaction,
			Detail: fmt.Sprintf("no transaction with order_no %q", cmd.OrderNo)}, nil
	default:
		return Resolution{Reason: schemas.ReasonUnknownTransaction,
			Detail: "the command names neither session_id nor order_no"}, nil
	}
}

// job is one accepted channel waiting to be sent.
type job struct {
	index     int
	provider  Provider
	policy    RetryPolicy
	msg       Message
	sessionID string // for log lines
	guard     *guarded
}

// Guard is asked before every provider call of a delivery (each attempt of
// each channel). An error stops the delivery: that call and every later one
// are not made, and DeliverGuarded returns the error instead of a result (a
// result with channels it was not allowed to try is no answer). The
// consumer's guard is wmkafka.Claim: an instance that no longer owns the
// command's partition must not call a provider again, not even to retry.
type Guard func() error

// guarded runs a Guard for the channels of one delivery and keeps its first
// refusal.
type guarded struct {
	guard Guard
	mu    sync.Mutex
	err   error
}

func (g *guarded) check() error {
	if g == nil || g.guard == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		g.err = g.guard()
	}
	return g.err
}

// refused returns the guard's refusal, if any, without asking it again.
func (g *guarded) refused() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// Deliver is DeliverGuarded without a guard.
func (d *Dispatcher) Deliver(ctx context.Context, cmd schemas.ResendCommand, txn schemas.PaymentEvent) schemas.DeliveryResult {
	res, _ := d.DeliverGuarded(ctx, cmd, txn, nil)
	return res
}

// DeliverGuarded checks each channel cmd requests against txn and sends the
// accepted ones concurrently, one goroutine per channel, each with its
// channel's RetryPolicy. See the package documentation for the checks,
// their order and the result. It returns a result unless guard refused a
// provider call (see Guard); ctx ending makes unsent channels fail with
// provider_unavailable.
func (d *Dispatcher) DeliverGuarded(ctx context.Context, cmd schemas.ResendCommand, txn schemas.PaymentEvent, guard Guard) (schemas.DeliveryResult, error) {
	g := &guarded{guard: guard}
	results := make([]schemas.ChannelResult, len(cmd.Channels))
	var jobs []job
	data := dataFor(&txn)
	lang := schemas.Language(data.Language)
	for i, ch := range cmd.Channels {
		res, j := d.check(cmd, &txn, ch, lang, data)
		results[i] = res
		if j != nil {
			j.index = i
			j.guard = g
			jobs = append(jobs, *j)
		}
	}

	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			results[j.index] = d.send(ctx, j, results[j.index])
		})
	}
	wg.Wait()
	if err := g.refused(); err != nil {
		return schemas.DeliveryResult{}, fmt.Errorf("delivery stopped before a provider call: %w", err)
	}

	state := txn.State
	out := schemas.DeliveryResult{
		ResultID:    uuid.NewString(),
		CommandID:   cmd.CommandID,
		SessionID:   txn.SessionID,
		OrderNo:     txn.OrderNo,
		State:       &state,
		Channels:    results,
		RequestedBy: cmd.RequestedBy,
		RequestedAt: cmd.RequestedAt,
		ProcessedAt: d.now().UTC(),
	}
	out.Outcome, out.Message = summarise(results)
	d.metrics.results(results)
	return out, nil
}

// ChannelCheck is what the checks decide for one channel of a transaction,
// before any provider is called.
type ChannelCheck struct {
	Channel schemas.Channel
	// Reason is why a resend of the channel would be rejected; "" when it
	// would be handed to Provider.
	Reason    schemas.Reason
	Detail    string
	Recipient string // masked
	Provider  string
}

// Check runs the per-channel checks of DeliverGuarded, by the same code
// and in the same order, for every channel of txn's current state, without
// calling any provider: what a resend would be answered before sending
// (the operator console's channel grid).
func (d *Dispatcher) Check(txn schemas.PaymentEvent) []ChannelCheck {
	data := dataFor(&txn)
	lang := schemas.Language(data.Language)
	out := make([]ChannelCheck, 0, len(schemas.Channels))
	for _, ch := range schemas.Channels {
		res, j := d.check(schemas.ResendCommand{SessionID: txn.SessionID}, &txn, ch, lang, data)
		c := ChannelCheck{Channel: ch, Reason: res.Reason, Detail: res.Detail, Recipient: res.Recipient}
		if j != nil {
			c.Provider = j.provider.Name()
		}
		out = append(out, c)
	}
	return out
}

// check applies the per-channel checks in order. It returns the channel's
// result and, when the channel is accepted, the job that sends it.
func (d *Dispatcher) check(cmd schemas.ResendCommand, txn *schemas.PaymentEvent, ch schemas.Channel, lang schemas.Language, data TemplateData) (schemas.ChannelResult, *job) {
	contact := contactFor(ch, txn)
	res := schemas.ChannelResult{Channel: ch, Recipient: MaskRecipient(ch, contact)}
	reject := func(reason schemas.Reason, format string, args ...any) (schemas.ChannelResult, *job) {
		res.Status = schemas.StatusRejected
		res.Reason = reason
		res.Detail = fmt.Sprintf(format, args...)
		return res, nil
	}
	if !Supports(ch, txn.State) {
		return reject(schemas.ReasonStateNotSupported, "%s cannot notify about state %s", ch, txn.State)
	}
	enabled, present := txn.Notifications[ch]
	if !present {
		return reject(schemas.ReasonChannelNotEnabled, "%s notifications were not enabled for this transaction", ch)
	}
	if len(enabled) > 0 && !slices.Contains(enabled, txn.State) {
		return reject(schemas.ReasonStateNotEnabled, "%s notifications were not enabled for state %s", ch, txn.State)
	}
	if contact == "" {
		if ch == schemas.ChannelEmail {
			return reject(schemas.ReasonMissingContact, "the transaction has no customer email")
		}
		return reject(schemas.ReasonMissingContact, "the transaction has no customer phone")
	}
	if err := validateContact(ch, contact); err != nil {
		return reject(schemas.ReasonInvalidContact, "%v", err)
	}
	provider := d.providers[ch]
	if provider == nil {
		return reject(schemas.ReasonProviderNotConfigured, "no %s provider is configured", ch)
	}
	r, ok, err := d.templates.Render(ch, txn.State, lang, data)
	if !ok {
		if lang == schemas.LanguageEN {
			return reject(schemas.ReasonTemplateNotConfigured, "no %s template for state %s in en", ch, txn.State)
		}
		return reject(schemas.ReasonTemplateNotConfigured, "no %s template for state %s in %s or en", ch, txn.State, lang)
	}
	if err != nil {
		d.log.Error("template failed to render", "command_id", cmd.CommandID, "session_id", txn.SessionID, "channel", string(ch),
			"state", string(txn.State), "language", string(lang), "error", err)
		return reject(schemas.ReasonTemplateNotConfigured, "the %s template for state %s failed to render", ch, txn.State)
	}
	if detail := tooLong(ch, r); detail != "" {
		return reject(schemas.ReasonMessageTooLong, "%s", detail)
	}
	return res, &job{
		provider:  provider,
		policy:    d.retry[ch],
		sessionID: txn.SessionID,
		msg: Message{
			Channel: ch, To: contact, CommandID: cmd.CommandID,
			Subject: r.Subject, Text: r.Text, HTML: r.HTML, WhatsApp: r.WhatsApp,
		},
	}
}

// send sends one accepted channel with retries and completes its result.
func (d *Dispatcher) send(ctx context.Context, j job, res schemas.ChannelResult) schemas.ChannelResult {
	p := j.policy
	res.Provider = j.provider.Name()
	fail := func(reason schemas.Reason, detail string) schemas.ChannelResult {
		res.Status = schemas.StatusFailed
		res.Reason = reason
		res.Detail = detail
		return res
	}
	start := d.clock()
	deadline := start.Add(p.MaxElapsed)
	var lastDetail string
	for {
		if err := ctx.Err(); err != nil {
			return fail(schemas.ReasonProviderUnavailable, giveUp(res.Attempts, "stopped: "+err.Error(), lastDetail))
		}
		remaining := deadline.Sub(d.clock())
		if remaining <= 0 {
			return fail(schemas.ReasonProviderUnavailable, giveUp(res.Attempts, "retry budget of "+p.MaxElapsed.String()+" used up", lastDetail))
		}
		if l := d.limiters[j.msg.Channel]; l != nil {
			// Waiting for the rate limit is not part of the retry budget.
			waited := d.clock()
			if err := l.Wait(ctx); err != nil {
				if ctx.Err() == nil { // the next token comes after ctx's deadline
					return fail(schemas.ReasonProviderUnavailable, giveUp(res.Attempts, "the rate limit allows no call before the deadline", lastDetail))
				}
				continue // ctx ended; reported at the top of the loop
			}
			deadline = deadline.Add(d.clock().Sub(waited))
		}
		if err := j.guard.check(); err != nil {
			return fail(schemas.ReasonProviderUnavailable, giveUp(res.Attempts, "stopped: "+err.Error(), lastDetail))
		}
		actx, cancel := context.WithTimeout(ctx, min(p.AttemptTimeout, remaining))
		began := time.Now()
		receipt, err := j.provider.Send(actx, j.msg)
		cancel()
		res.Attempts++
		d.metrics.attempt(res.Provider, j.msg.Channel, res.Attempts, time.Since(began), err)
		if err == nil {
			res.ProviderMessageID = receipt.MessageID
			res.Status = schemas.StatusSent
			return res
		}
		permanent := IsPermanent(err)
		// Providers keep secrets and contacts out of details; this makes
		// sure, with every secret of the configuration.
		lastDetail = d.redact.Text(j.msg.Channel, j.msg.To, errorDetail(err))
		if lastDetail == "" {
			lastDetail = "provider error"
		}
		d.log.Warn("provider attempt failed",
			"command_id", j.msg.CommandID,
			"session_id", j.sessionID,
			"channel", string(j.msg.Channel),
			"recipient", res.Recipient,
			"provider", res.Provider,
			"attempt", res.Attempts,
			"permanent", permanent,
			"error", d.redact.Text(j.msg.Channel, j.msg.To, err.Error()))
		if permanent {
			return fail(schemas.ReasonProviderRejected, "provider rejected the message: "+lastDetail)
		}
		if ctx.Err() != nil {
			continue // reported at the top of the loop
		}
		if res.Attempts >= p.MaxAttempts {
			return fail(schemas.ReasonProviderUnavailable, giveUp(res.Attempts, "", lastDetail))
		}
		wait := max(p.backoff(res.Attempts), retryAfter(err))
		if !d.clock().Add(wait).Before(deadline) {
			return fail(schemas.ReasonProviderUnavailable, giveUp(res.Attempts, "next retry in "+wait.String()+" would pass the retry budget of "+p.MaxElapsed.String(), lastDetail))
		}
		if err := d.sleep(ctx, wait); err != nil {
			continue // ctx ended; reported at the top of the loop
		}
	}
}

// giveUp phrases a provider_unavailable detail.
func giveUp(attempts int, why, last string) string {
	var b strings.Builder
	b.WriteString("provider unavailable")
	if attempts > 0 {
		fmt.Fprintf(&b, " after %d attempt", attempts)
		if attempts > 1 {
			b.WriteString("s")
		}
	}
	if why != "" {
		b.WriteString(" (" + why + ")")
	}
	if last != "" {
		b.WriteString(": " + last)
	}
	return b.String()
}

// summarise returns the outcome and message of a result's channels.
func summarise(results []schemas.ChannelResult) (schemas.Outcome, string) {
	var sent, other []string
	for _, r := range results {
		switch r.Status {
		case schemas.StatusSent:
			sent = append(sent, string(r.Channel)+" sent")
		default:
			other = append(other, fmt.Sprintf("%s %s (%s)", r.Channel, r.Status, r.Reason))
		}
	}
	switch {
	case len(results) == 0:
		return schemas.OutcomeNotNotified, "Customer not notified: no channels requested."
	case len(other) == 0:
		return schemas.OutcomeNotified, schemas.MessageNotified
	case len(sent) == 0:
		return schemas.OutcomeNotNotified, "Customer not notified: " + strings.Join(other, "; ") + "."
	default:
		return schemas.OutcomePartiallyNotified, "Customer partially notified: " + strings.Join(append(sent, other...), "; ") + "."
	}
}

// Failure builds the result of a command that failed as a whole: outcome
// not_notified, an empty channels list, state nil unless the transaction is
// known, the reason and detail, a human message, a new result_id, the
// command's ids and requested_by/at, and processed_at.
func (d *Dispatcher) Failure(cmd schemas.ResendCommand, state *schemas.State, reason schemas.Reason, detail string) schemas.DeliveryResult {
	var st *schemas.State
	if state != nil {
		s := *state
		st = &s
	}
	return schemas.DeliveryResult{
		ResultID:    uuid.NewString(),
		CommandID:   cmd.CommandID,
		SessionID:   cmd.SessionID,
		OrderNo:     cmd.OrderNo,
		State:       st,
		Outcome:     schemas.OutcomeNotNotified,
		Message:     failureMessage(reason),
		Reason:      reason,
		Detail:      detail,
		Channels:    []schemas.ChannelResult{},
		RequestedBy: cmd.RequestedBy,
		RequestedAt: cmd.RequestedAt,
		ProcessedAt: d.now().UTC(),
	}
}

// failureMessage phrases a whole-command failure.
func failureMessage(reason schemas.Reason) string {
	switch reason {
	case schemas.ReasonInvalidCommand:
		return "Customer not notified: the command is invalid."
	case schemas.ReasonUnknownTransaction:
		return "Customer not notified: the transaction is not known."
	case schemas.ReasonIdentifierMismatch:
		return "Customer not notified: session_id and order_no do not name the same transaction."
	case schemas.ReasonCommandExpired:
		return "Customer not notified: the command expired before it was processed."
	case "":
		return "Customer not notified."
	default:
		return "Customer not notified (" + string(reason) + ")."
	}
}
