package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sony/gobreaker"
	"golang.org/x/time/rate"

	"github.com/notifyd/notifyd/internal/backoff"
	"github.com/notifyd/notifyd/schemas"
)

// Transactions is the read side of the projection that dispatch needs.
type Transactions interface {
	// Transaction returns the latest snapshot of a session; ok is false
	// when the session is unknown.
	Transaction(sessionID string) (schemas.PaymentEvent, bool, error)
	// SessionForOrder returns the session of a merchant's order ("" is
	// schemas.MerchantDefault); ok is false when the order is unknown.
	SessionForOrder(merchantID, orderNo string) (string, bool, error)
	// LastSent returns when a channel of a transaction was last sent for
	// a state; ok is false when it never was. It feeds the cooldown.
	LastSent(sessionID string, ch schemas.Channel, state schemas.State) (at time.Time, ok bool, err error)
}

// Config configures a Dispatcher.
type Config struct {
	// Routes are each channel's providers, in failover order (see Route);
	// a channel without one is rejected with provider_not_configured.
	// Waiting for a route's rate limit is not a failure and does not use
	// its retry budget.
	Routes map[schemas.Channel][]Route
	// Cooldown, when positive, rejects a channel with cooldown_active when
	// it was sent for the transaction's current state less than Cooldown
	// ago, unless the command has Force (processing.cooldown; zero: off).
	Cooldown time.Duration
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
	// Merchants builds merchants' own providers and templates
	// (SetMerchant); zero: merchants' settings change the cooldown only.
	Merchants MerchantConfig
}

// Dispatcher decides and sends the notifications of resend commands. It is
// safe for concurrent use.
type Dispatcher struct {
	// routes are the platform's (platform.routes), by channel.
	routes map[schemas.Channel][]*route
	// platform is the configuration's profile; merchants the merchants'
	// settings (merchants.go), replaced whole on each change.
	platform    *profile
	merchants   atomic.Pointer[map[string]*merchantEntry]
	merchantsMu sync.Mutex // serialises changes of merchants
	merchantCfg MerchantConfig
	metrics     *Metrics
	redact      *Redactor
	now         func() time.Time
	txns        Transactions
	log         *slog.Logger

	// clock and sleep drive the retry budget and backoff waits; tests
	// replace them.
	clock func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// route is a Route as the Dispatcher runs it: defaulted, named, with its
// limiter and breaker.
type route struct {
	provider Provider
	name     string
	policy   RetryPolicy
	limiter  *rate.Limiter
	breaker  *breaker
}

// New returns a Dispatcher reading transactions from txns and logging to log
// (nil discards). It fails on a missing Templates or txns, routes for an
// unknown channel or without a provider, or an invalid retry policy, rate
// limit or breaker (the error names it, e.g. "sms[0].retry: max_attempts:
// must be >= 1").
func New(cfg Config, txns Transactions, log *slog.Logger) (*Dispatcher, error) {
	if cfg.Templates == nil {
		return nil, errors.New("dispatch: templates are required")
	}
	if cfg.Cooldown < 0 {
		return nil, errors.New("dispatch: cooldown: must not be negative")
	}
	if txns == nil {
		return nil, errors.New("dispatch: transactions are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{
		metrics: cfg.Metrics,
		redact:  cfg.Redactor,
		now:     cfg.Now,
		txns:    txns,
		log:     log,
		clock:   time.Now,
		sleep:   backoff.Sleep,
	}
	if d.now == nil {
		d.now = time.Now
	}
	routes, err := d.buildRoutes(cfg.Routes, "", d.log)
	if err != nil {
		return nil, err
	}
	d.platform = &profile{routes: routes, templates: cfg.Templates, cooldown: cfg.Cooldown}
	d.routes = routes
	d.merchants.Store(&map[string]*merchantEntry{})
	d.merchantCfg = cfg.Merchants
	d.metrics.init(d.routes)
	return d, nil
}

// buildRoutes makes the routes the Dispatcher runs (defaulted, named, each
// with its limiter and breaker) of each channel's Routes; owner prefixes
// their breakers' names ("" for the platform's, "<merchant_id>/" for a
// merchant's) and log is where their circuits' changes are told.
func (d *Dispatcher) buildRoutes(cfg map[schemas.Channel][]Route, owner string, log *slog.Logger) (map[schemas.Channel][]*route, error) {
	out := map[schemas.Channel][]*route{}
	for ch, routes := range cfg {
		if !ch.Valid() {
			return nil, fmt.Errorf("dispatch: routes: unknown channel %q", ch)
		}
		for i, r := range routes {
			if r.Provider == nil {
				return nil, fmt.Errorf("dispatch: %s[%d]: no provider", ch, i)
			}
			rt := &route{provider: r.Provider, name: routeName(routes, i), policy: r.Retry}
			rt.policy.SetDefaults()
			if err := rt.policy.Validate(); err != nil {
				return nil, fmt.Errorf("dispatch: %s[%d].retry: %w", ch, i, err)
			}
			if err := r.RateLimit.Validate(); err != nil {
				return nil, fmt.Errorf("dispatch: %s[%d].rate_limit: %w", ch, i, err)
			}
			rt.limiter = r.RateLimit.Limiter()
			bp := r.Breaker
			bp.SetDefaults()
			if err := bp.Validate(); err != nil {
				return nil, fmt.Errorf("dispatch: %s[%d].circuit_breaker: %w", ch, i, err)
			}
			rlog := log.With("channel", string(ch), "provider", rt.name)
			rt.breaker = newBreaker(owner+string(ch)+"/"+rt.name, bp, func(to gobreaker.State) {
				d.metrics.circuit(rt.name, ch, float64(to))
				rlog.Warn("provider circuit " + to.String())
			})
			out[ch] = append(out[ch], rt)
		}
	}
	return out, nil
}

// Resolution is the transaction a command names. Reason is "" when the
// command names exactly one known transaction (Txn); otherwise it is
// unknown_transaction or identifier_mismatch and Detail says why.
type Resolution struct {
	Txn    schemas.PaymentEvent
	Reason schemas.Reason
	Detail string
}

// Resolve finds the transaction cmd names. A command with a merchant_id
// sees that merchant's transactions only: another merchant's session is
// looked up and then treated exactly as one that does not exist, and its
// order_no is looked up within the merchant; a command without one finds
// a session_id whatever its merchant and an order_no in
// schemas.MerchantDefault. With session_id only or order_no
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
		if ok && cmd.MerchantID != "" && txn.MerchantID != cmd.MerchantID {
			txn, ok = schemas.PaymentEvent{}, false
		}
		bySession, sessionOK = txn, ok
	}
	if cmd.OrderNo != "" && !(sessionOK && bySession.OrderNo == cmd.OrderNo) {
		sid, ok, err := d.txns.SessionForOrder(cmd.MerchantID, cmd.OrderNo)
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
	p := d.profileFor(txn.MerchantID)
	for i, ch := range cmd.Channels {
		res, j := d.check(p, cmd, &txn, ch, lang, data)
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
		MerchantID:  schemas.MerchantOf(txn.MerchantID),
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
	p := d.profileFor(txn.MerchantID)
	for _, ch := range schemas.Channels {
		res, j := d.check(p, schemas.ResendCommand{SessionID: txn.SessionID}, &txn, ch, lang, data)
		c := ChannelCheck{Channel: ch, Reason: res.Reason, Detail: res.Detail, Recipient: res.Recipient}
		if j != nil {
			c.Provider = j.routes[0].name
		}
		out = append(out, c)
	}
	return out
}

// check applies the per-channel checks in order, with p's providers,
// templates and cooldown. It returns the channel's result and, when the
// channel is accepted, the job that sends it.
func (d *Dispatcher) check(p *profile, cmd schemas.ResendCommand, txn *schemas.PaymentEvent, ch schemas.Channel, lang schemas.Language, data TemplateData) (schemas.ChannelResult, *job) {
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
	routes := p.routes[ch]
	if len(routes) == 0 {
		return reject(schemas.ReasonProviderNotConfigured, "no %s provider is configured", ch)
	}
	r, ok, err := p.templates.Render(ch, txn.State, lang, data)
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
	if ago, active := d.coolingDown(p.cooldown, cmd, txn, ch); active {
		return reject(schemas.ReasonCooldownActive, "%s was sent for state %s %s ago, within processing.cooldown (%s); a command with \"force\": true sends it again",
			ch, txn.State, ago.Round(time.Second), p.cooldown)
	}
	return res, &job{
		routes:    routes,
		sessionID: txn.SessionID,
		msg: Message{
			Channel: ch, To: contact, CommandID: cmd.CommandID,
			Subject: r.Subject, Text: r.Text, HTML: r.HTML, WhatsApp: r.WhatsApp,
		},
	}
}

// coolingDown reports whether ch was sent for txn's state less than
// cooldown ago (and how long ago), for a command without Force. A store
// error is logged and lets the channel through: a redundant notification
// is better than none.
func (d *Dispatcher) coolingDown(cooldown time.Duration, cmd schemas.ResendCommand, txn *schemas.PaymentEvent, ch schemas.Channel) (time.Duration, bool) {
	if cooldown <= 0 || cmd.Force {
		return 0, false
	}
	at, ok, err := d.txns.LastSent(txn.SessionID, ch, txn.State)
	if err != nil {
		d.log.Error("cooldown not checked", "command_id", cmd.CommandID, "session_id", txn.SessionID, "channel", string(ch), "error", err)
		return 0, false
	}
	if !ok {
		return 0, false
	}
	ago := max(d.now().Sub(at), 0)
	return ago, ago < cooldown
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
		MerchantID:  cmd.MerchantID,
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
