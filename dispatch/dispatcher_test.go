package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/notifyd/notifyd/internal/testkit"
	"github.com/notifyd/notifyd/schemas"
)

func TestChannelRejectionReasons(t *testing.T) {
	onlyPaidSMS := map[schemas.Channel][]schemas.State{schemas.ChannelSMS: {schemas.StateFailed}}
	tests := []struct {
		name       string
		ch         schemas.Channel
		txn        func(*schemas.PaymentEvent)
		noProvider bool
		templates  TemplateConfig // nil: defaults
		wantReason schemas.Reason // "" means sent
		wantRecip  string
	}{
		{"sent", schemas.ChannelEmail, nil, false, nil, "", "l***@example.com"},
		{"empty list enables every supported state", schemas.ChannelWhatsApp, nil, false, nil, "", "+965****1234"},
		{"listed state enabled", schemas.ChannelSMS, nil, false, nil, "", "+965****1234"},

		{"state_not_supported", schemas.ChannelWhatsApp, func(x *schemas.PaymentEvent) { x.State = schemas.StateRefunded },
			false, nil, schemas.ReasonStateNotSupported, "+965****1234"},
		{"state_not_supported before channel_not_enabled and missing_contact", schemas.ChannelEmail, func(x *schemas.PaymentEvent) {
			x.State = schemas.StatePending
			x.Notifications = nil
			x.CustomerEmail = ""
		}, true, nil, schemas.ReasonStateNotSupported, ""},

		{"channel_not_enabled", schemas.ChannelEmail, func(x *schemas.PaymentEvent) { x.Notifications = onlyPaidSMS },
			false, nil, schemas.ReasonChannelNotEnabled, "l***@example.com"},
		{"channel_not_enabled with nil notifications", schemas.ChannelSMS, func(x *schemas.PaymentEvent) { x.Notifications = nil },
			false, nil, schemas.ReasonChannelNotEnabled, "+965****1234"},
		{"channel_not_enabled before missing_contact", schemas.ChannelWhatsApp, func(x *schemas.PaymentEvent) {
			x.Notifications = onlyPaidSMS
			x.CustomerPhone = ""
		}, false, nil, schemas.ReasonChannelNotEnabled, ""},

		{"state_not_enabled", schemas.ChannelSMS, func(x *schemas.PaymentEvent) { x.Notifications = onlyPaidSMS },
			false, nil, schemas.ReasonStateNotEnabled, "+965****1234"},
		{"state_not_enabled before missing_contact", schemas.ChannelSMS, func(x *schemas.PaymentEvent) {
			x.Notifications = onlyPaidSMS
			x.CustomerPhone = ""
		}, true, nil, schemas.ReasonStateNotEnabled, ""},

		{"missing_contact email", schemas.ChannelEmail, func(x *schemas.PaymentEvent) { x.CustomerEmail = "" },
			false, nil, schemas.ReasonMissingContact, ""},
		{"missing_contact before provider_not_configured", schemas.ChannelWhatsApp, func(x *schemas.PaymentEvent) { x.CustomerPhone = "" },
			true, nil, schemas.ReasonMissingContact, ""},

		{"invalid_contact email", schemas.ChannelEmail, func(x *schemas.PaymentEvent) { x.CustomerEmail = "Lina <lina@example.com>" },
			false, nil, schemas.ReasonInvalidContact, "***"},
		{"invalid_contact phone not E.164", schemas.ChannelSMS, func(x *schemas.PaymentEvent) { x.CustomerPhone = "+965 5000 1234" },
			false, nil, schemas.ReasonInvalidContact, "+965****1234"},
		{"invalid_contact before provider_not_configured", schemas.ChannelSMS, func(x *schemas.PaymentEvent) { x.CustomerPhone = "50001234" },
			true, nil, schemas.ReasonInvalidContact, "***"},

		{"provider_not_configured", schemas.ChannelEmail, nil, true, nil, schemas.ReasonProviderNotConfigured, "l***@example.com"},
		{"provider_not_configured before template_not_configured", schemas.ChannelEmail, nil, true,
			TemplateConfig{}, schemas.ReasonProviderNotConfigured, "l***@example.com"},

		{"template_not_configured", schemas.ChannelEmail, nil, false,
			TemplateConfig{"sms": {"paid": {"en": {Text: "x"}}}}, schemas.ReasonTemplateNotConfigured, "l***@example.com"},
		{"template_not_configured for the state", schemas.ChannelSMS, func(x *schemas.PaymentEvent) { x.State = schemas.StateFailed }, false,
			TemplateConfig{"sms": {"paid": {"en": {Text: "x"}}}}, schemas.ReasonTemplateNotConfigured, "+965****1234"},
		{"ar falls back to en template", schemas.ChannelSMS, func(x *schemas.PaymentEvent) { x.Language = schemas.LanguageAR }, false,
			TemplateConfig{"sms": {"paid": {"en": {Text: "x"}}}}, "", "+965****1234"},

		// A first name that makes the rendered message as long as the
		// channel takes, and one character longer.
		{"sms of 1600 characters", schemas.ChannelSMS, named(1597), false, smsHi, "", "+965****1234"},
		{"message_too_long sms of 1601 characters", schemas.ChannelSMS, named(1598), false, smsHi, schemas.ReasonMessageTooLong, "+965****1234"},
		{"sms in Arabic counted in characters", schemas.ChannelSMS, func(x *schemas.PaymentEvent) { x.CustomerFirstName = strings.Repeat("ل", 1597) },
			false, smsHi, "", "+965****1234"},
		{"email subject of 998 characters", schemas.ChannelEmail, named(998), false, emailSubject, "", "l***@example.com"},
		{"message_too_long email subject of 999", schemas.ChannelEmail, named(999), false, emailSubject, schemas.ReasonMessageTooLong, "l***@example.com"},
		{"email body of 1 MiB", schemas.ChannelEmail, named(MaxEmailBodyBytes - 1), false,
			TemplateConfig{"email": {"paid": {"en": {Subject: "s", Text: "{{.CustomerFirstName}}!"}}}}, "", "l***@example.com"},
		{"message_too_long email body over 1 MiB", schemas.ChannelEmail, named(MaxEmailBodyBytes), false,
			TemplateConfig{"email": {"paid": {"en": {Subject: "s", Text: "{{.CustomerFirstName}}!"}}}}, schemas.ReasonMessageTooLong, "l***@example.com"},
		{"whatsapp parameters of 1024 characters", schemas.ChannelWhatsApp, named(1024), false, waParams, "", "+965****1234"},
		{"message_too_long whatsapp parameters of 1025", schemas.ChannelWhatsApp, named(1025), false, waParams, schemas.ReasonMessageTooLong, "+965****1234"},
		{"template_not_configured before message_too_long", schemas.ChannelSMS, named(5000), false,
			TemplateConfig{"email": {"paid": {"en": {Subject: "s", Text: "x"}}}}, schemas.ReasonTemplateNotConfigured, "+965****1234"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txn := paidTxn()
			if tt.txn != nil {
				tt.txn(&txn)
			}
			prov := &okProvider{name: "ok"}
			providers := map[schemas.Channel]Provider{}
			if !tt.noProvider {
				providers[tt.ch] = prov
			}
			d := newTestDispatcher(t, providers, nil, nil)
			if tt.templates != nil {
				tpl, err := ParseTemplates(tt.templates)
				if err != nil {
					t.Fatal(err)
				}
				d.platform.templates = tpl
			}
			r := d.Deliver(context.Background(), command(tt.ch), txn)
			if len(r.Channels) != 1 {
				t.Fatalf("channels %+v", r.Channels)
			}
			c := r.Channels[0]
			if c.Channel != tt.ch || c.Reason != tt.wantReason || c.Recipient != tt.wantRecip {
				t.Errorf("got %+v, want reason %q recipient %q", c, tt.wantReason, tt.wantRecip)
			}
			if tt.wantReason == "" {
				if c.Status != schemas.StatusSent || c.Attempts != 1 || c.Provider != "ok" || c.ProviderMessageID != "ok-msg-"+string(tt.ch) {
					t.Errorf("not sent: %+v", c)
				}
				if r.Outcome != schemas.OutcomeNotified || r.Message != schemas.MessageNotified {
					t.Errorf("outcome %s %q", r.Outcome, r.Message)
				}
				return
			}
			if c.Status != schemas.StatusRejected || c.Attempts != 0 || c.Provider != "" || c.ProviderMessageID != "" || c.Detail == "" {
				t.Errorf("bad rejection: %+v", c)
			}
			if len(prov.sent()) != 0 {
				t.Error("a rejected channel was sent")
			}
			for _, contact := range []string{txn.CustomerEmail, txn.CustomerPhone} {
				if contact != "" && strings.Contains(c.Detail, contact) {
					t.Errorf("detail %q holds the contact", c.Detail)
				}
			}
			want := fmt.Sprintf("Customer not notified: %s rejected (%s).", tt.ch, tt.wantReason)
			if r.Outcome != schemas.OutcomeNotNotified || r.Message != want {
				t.Errorf("outcome %s %q, want %q", r.Outcome, r.Message, want)
			}
		})
	}
}

// Templates and transactions of the message_too_long cases.
var (
	smsHi        = TemplateConfig{"sms": {"paid": {"en": {Text: "Hi {{.CustomerFirstName}}"}}}}
	emailSubject = TemplateConfig{"email": {"paid": {"en": {Subject: "{{.CustomerFirstName}}", Text: "x"}}}}
	waParams     = TemplateConfig{"whatsapp": {"paid": {"en": {Name: "payment_received", Language: "en", Params: []string{"{{.CustomerFirstName}}"}}}}}
)

// named gives the transaction a first name of n letters.
func named(n int) func(*schemas.PaymentEvent) {
	return func(x *schemas.PaymentEvent) { x.CustomerFirstName = strings.Repeat("a", n) }
}

func TestDeliverResultFields(t *testing.T) {
	email := &okProvider{name: "mailer"}
	sms := &okProvider{name: "texter"}
	d := newTestDispatcher(t, map[schemas.Channel]Provider{schemas.ChannelEmail: email, schemas.ChannelSMS: sms}, nil, nil)
	txn := paidTxn()
	txn.Language = schemas.LanguageAR
	cmd := command(schemas.ChannelWhatsApp, schemas.ChannelSMS, schemas.ChannelEmail)
	cmd.SessionID = ""
	cmd.OrderNo = "ORD-1"
	r := d.Deliver(context.Background(), cmd, txn)

	if _, err := uuid.Parse(r.ResultID); err != nil {
		t.Errorf("result_id %q: %v", r.ResultID, err)
	}
	if r.CommandID != "cmd-1" || r.SessionID != "sess-1" || r.OrderNo != "ORD-1" {
		t.Errorf("ids %q %q %q", r.CommandID, r.SessionID, r.OrderNo)
	}
	if r.State == nil || *r.State != schemas.StatePaid {
		t.Errorf("state %v", r.State)
	}
	if r.RequestedBy != cmd.RequestedBy || r.RequestedAt != cmd.RequestedAt {
		t.Errorf("requested %q %q", r.RequestedBy, r.RequestedAt)
	}
	if !r.ProcessedAt.Equal(fixedNow) || r.ProcessedAt.Location() != time.UTC {
		t.Errorf("processed_at %v", r.ProcessedAt)
	}
	if r.Reason != "" || r.Detail != "" {
		t.Errorf("whole-command reason on a delivered result: %q %q", r.Reason, r.Detail)
	}
	order := []schemas.Channel{schemas.ChannelWhatsApp, schemas.ChannelSMS, schemas.ChannelEmail}
	for i, c := range r.Channels {
		if c.Channel != order[i] {
			t.Errorf("channel %d is %s, want %s", i, c.Channel, order[i])
		}
	}
	wa := r.Channels[0]
	if wa.Status != schemas.StatusRejected || wa.Reason != schemas.ReasonProviderNotConfigured {
		t.Errorf("whatsapp %+v", wa)
	}
	if r.Outcome != schemas.OutcomePartiallyNotified ||
		r.Message != "Customer partially notified: sms sent; email sent; whatsapp rejected (provider_not_configured)." {
		t.Errorf("outcome %s %q", r.Outcome, r.Message)
	}
	// The messages carry the full contact, rendered in Arabic.
	m := sms.sent()
	if len(m) != 1 || m[0].To != testPhone || m[0].CommandID != "cmd-1" || !hasArabic(m[0].Text) {
		t.Errorf("sms message %+v", m)
	}
	m = email.sent()
	if len(m) != 1 || m[0].To != testEmail || m[0].Subject == "" || m[0].HTML == "" || !hasArabic(m[0].Subject) {
		t.Errorf("email message %+v", m)
	}
	// The caller's state is not aliased.
	*r.State = schemas.StateFailed
	if txn.State != schemas.StatePaid {
		t.Error("result state aliases the transaction")
	}
}

func TestSummaries(t *testing.T) {
	tests := []struct {
		in      []schemas.ChannelResult
		outcome schemas.Outcome
		msg     string
	}{
		{[]schemas.ChannelResult{{Channel: "email", Status: "sent"}, {Channel: "sms", Status: "sent"}},
			schemas.OutcomeNotified, "Customer notified."},
		{[]schemas.ChannelResult{{Channel: "email", Status: "failed", Reason: schemas.ReasonProviderUnavailable}, {Channel: "sms", Status: "sent"}},
			schemas.OutcomePartiallyNotified, "Customer partially notified: sms sent; email failed (provider_unavailable)."},
		{[]schemas.ChannelResult{{Channel: "email", Status: "rejected", Reason: schemas.ReasonStateNotEnabled}},
			schemas.OutcomeNotNotified, "Customer not notified: email rejected (state_not_enabled)."},
		{[]schemas.ChannelResult{{Channel: "email", Status: "rejected", Reason: schemas.ReasonMissingContact}, {Channel: "whatsapp", Status: "failed", Reason: schemas.ReasonProviderRejected}},
			schemas.OutcomeNotNotified, "Customer not notified: email rejected (missing_contact); whatsapp failed (provider_rejected)."},
		{nil, schemas.OutcomeNotNotified, "Customer not notified: no channels requested."},
	}
	for _, tt := range tests {
		o, m := summarise(tt.in)
		if o != tt.outcome || m != tt.msg {
			t.Errorf("summarise(%+v) = %s %q, want %s %q", tt.in, o, m, tt.outcome, tt.msg)
		}
	}
}

// barrierProvider blocks each Send until n sends are in progress at once,
// proving they run concurrently; it fails after a timeout instead of
// hanging.
type barrierProvider struct {
	name    string
	arrived *atomic.Int32
	n       int32
	all     chan struct{}
	once    *sync.Once
}

func (p *barrierProvider) Name() string { return p.name }

func (p *barrierProvider) Send(ctx context.Context, m Message) (Receipt, error) {
	if p.arrived.Add(1) == p.n {
		p.once.Do(func() { close(p.all) })
	}
	select {
	case <-p.all:
		return Receipt{MessageID: p.name + "-1"}, nil
	case <-time.After(10 * time.Second):
		return Receipt{}, Permanent("barrier timeout: sends are not concurrent", nil)
	case <-ctx.Done():
		return Receipt{}, Permanent("barrier: context ended", ctx.Err())
	}
}

func TestChannelsSentConcurrently(t *testing.T) {
	var arrived atomic.Int32
	all := make(chan struct{})
	once := &sync.Once{}
	providers := map[schemas.Channel]Provider{}
	for _, ch := range allChannels() {
		providers[ch] = &barrierProvider{name: "b-" + string(ch), arrived: &arrived, n: 3, all: all, once: once}
	}
	policy := RetryPolicy{MaxAttempts: 1, AttemptTimeout: time.Minute}
	d := newTestDispatcher(t, providers, map[schemas.Channel]RetryPolicy{
		schemas.ChannelEmail: policy, schemas.ChannelSMS: policy, schemas.ChannelWhatsApp: policy,
	}, nil)
	r := d.Deliver(context.Background(), command(allChannels()...), paidTxn())
	if r.Outcome != schemas.OutcomeNotified {
		t.Fatalf("not all sent concurrently: %+v", r.Channels)
	}
	for _, c := range r.Channels {
		if c.ProviderMessageID != "b-"+string(c.Channel)+"-1" || c.Attempts != 1 {
			t.Errorf("%+v", c)
		}
	}
}

func TestResolve(t *testing.T) {
	a := paidTxn() // sess-1 / ORD-1
	b := paidTxn()
	b.SessionID, b.OrderNo = "sess-2", "ORD-2"
	c := paidTxn()
	c.SessionID, c.OrderNo = "sess-3", ""
	store := newMemStore(a, b, c)
	store.orders[orderKey("", "ORD-STALE")] = "sess-gone" // order mapped to a session that is gone
	d := newTestDispatcher(t, nil, nil, store)

	tests := []struct {
		name, session, order string
		wantSession          string
		wantReason           schemas.Reason
	}{
		{"session only", "sess-1", "", "sess-1", ""},
		{"session only without order", "sess-3", "", "sess-3", ""},
		{"order only", "", "ORD-2", "sess-2", ""},
		{"both consistent", "sess-2", "ORD-2", "sess-2", ""},
		{"both known, mismatched", "sess-1", "ORD-2", "", schemas.ReasonIdentifierMismatch},
		{"session known, order unknown", "sess-1", "ORD-404", "", schemas.ReasonIdentifierMismatch},
		{"session without order, order given", "sess-3", "ORD-404", "", schemas.ReasonIdentifierMismatch},
		{"session unknown, order known", "sess-404", "ORD-1", "", schemas.ReasonIdentifierMismatch},
		{"both unknown", "sess-404", "ORD-404", "", schemas.ReasonUnknownTransaction},
		{"session unknown", "sess-404", "", "", schemas.ReasonUnknownTransaction},
		{"order unknown", "", "ORD-404", "", schemas.ReasonUnknownTransaction},
		{"order mapped to a gone session", "", "ORD-STALE", "", schemas.ReasonUnknownTransaction},
		{"neither given", "", "", "", schemas.ReasonUnknownTransaction},
	}
	// The details of the refusals (none when resolved): they say which
	// identifier is wrong.
	details := map[string]string{
		"both known, mismatched":             `session_id "sess-1" and order_no "ORD-2" name different transactions`,
		"session known, order unknown":       `order_no "ORD-404" is not the order of session_id "sess-1"`,
		"session without order, order given": `order_no "ORD-404" is not the order of session_id "sess-3"`,
		"session unknown, order known":       `session_id "sess-404" is unknown but order_no "ORD-1" names another session`,
		"both unknown":                       `no transaction with session_id "sess-404" or order_no "ORD-404"`,
		"session unknown":                    `no transaction with session_id "sess-404"`,
		"order unknown":                      `no transaction with order_no "ORD-404"`,
		"order mapped to a gone session":     `no transaction with order_no "ORD-STALE"`,
		"neither given":                      "the command names neither session_id nor order_no",
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := d.Resolve(schemas.ResendCommand{CommandID: "c", SessionID: tt.session, OrderNo: tt.order})
			if err != nil {
				t.Fatal(err)
			}
			if res.Reason != tt.wantReason || res.Txn.SessionID != tt.wantSession {
				t.Errorf("Resolve = %q %q (%s), want %q %q", res.Reason, res.Txn.SessionID, res.Detail, tt.wantReason, tt.wantSession)
			}
			if res.Detail != details[tt.name] {
				t.Errorf("detail %q, want %q", res.Detail, details[tt.name])
			}
		})
	}

	store.err = errors.New("disk on fire")
	if _, err := d.Resolve(schemas.ResendCommand{CommandID: "c", SessionID: "sess-1"}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("store error not returned: %v", err)
	}
	if _, err := d.Resolve(schemas.ResendCommand{CommandID: "c", OrderNo: "ORD-1"}); err == nil {
		t.Error("store error not returned for order lookup")
	}
}

// TestResolveMerchants: a command with a merchant_id sees only that
// merchant's transactions, another merchant's answered exactly as one that
// does not exist (same reason, same detail); one without finds a session
// whatever its merchant and an order_no of the default merchant.
func TestResolveMerchants(t *testing.T) {
	txn := func(merchant, session, order string) schemas.PaymentEvent {
		x := paidTxn()
		x.MerchantID, x.SessionID, x.OrderNo = merchant, session, order
		return x
	}
	store := newMemStore(txn("acme", "s-acme", "1001"), txn("globex", "s-globex", "1001"), txn("", "s-default", "1001"),
		txn("acme", "s-acme-2", "1002"))
	d := newTestDispatcher(t, nil, nil, store)
	tests := []struct {
		name, merchant, session, order string
		want                           string // the session resolved, else the detail
		reason                         schemas.Reason
	}{
		{"own session", "acme", "s-acme", "", "s-acme", ""},
		{"own order", "acme", "", "1001", "s-acme", ""},
		{"the same order_no, other merchant", "globex", "", "1001", "s-globex", ""},
		{"own session and order", "acme", "s-acme", "1001", "s-acme", ""},
		{"another merchant's session", "acme", "s-globex", "", `no transaction with session_id "s-globex"`, schemas.ReasonUnknownTransaction},
		{"a session that does not exist", "acme", "s-nowhere", "", `no transaction with session_id "s-nowhere"`, schemas.ReasonUnknownTransaction},
		{"another merchant's order", "acme", "", "9", `no transaction with order_no "9"`, schemas.ReasonUnknownTransaction},
		{"another merchant's session with own order", "acme", "s-globex", "1001",
			`session_id "s-globex" is unknown but order_no "1001" names another session`, schemas.ReasonIdentifierMismatch},
		{"another merchant's session and order", "initech", "s-globex", "1001",
			`no transaction with session_id "s-globex" or order_no "1001"`, schemas.ReasonUnknownTransaction},
		{"own session, another own order", "acme", "s-acme", "1002",
			`session_id "s-acme" and order_no "1002" name different transactions`, schemas.ReasonIdentifierMismatch},
		{"no merchant: any session", "", "s-globex", "", "s-globex", ""},
		{"no merchant: the default's order", "", "", "1001", "s-default", ""},
		{"no merchant: another merchant's order only", "", "", "1002", `no transaction with order_no "1002"`, schemas.ReasonUnknownTransaction},
		{"default named", schemas.MerchantDefault, "", "1001", "s-default", ""},
		{"default named, another merchant's session", schemas.MerchantDefault, "s-acme", "", `no transaction with session_id "s-acme"`, schemas.ReasonUnknownTransaction},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := d.Resolve(schemas.ResendCommand{CommandID: "c", MerchantID: tt.merchant, SessionID: tt.session, OrderNo: tt.order})
			if err != nil {
				t.Fatal(err)
			}
			got := res.Txn.SessionID
			if res.Reason != "" {
				got = res.Detail
			}
			if res.Reason != tt.reason || got != tt.want {
				t.Errorf("Resolve = %q %q, want %q %q", res.Reason, got, tt.reason, tt.want)
			}
		})
	}
	// The result names the transaction's merchant; a failure the command's.
	res := d.Deliver(t.Context(), schemas.ResendCommand{CommandID: "c", Channels: []schemas.Channel{schemas.ChannelEmail}}, store.txns["s-acme"])
	if res.MerchantID != "acme" {
		t.Errorf("result merchant_id %q, want acme", res.MerchantID)
	}
	if f := d.Failure(schemas.ResendCommand{CommandID: "c", MerchantID: "globex"}, nil, schemas.ReasonUnknownTransaction, ""); f.MerchantID != "globex" {
		t.Errorf("failure merchant_id %q, want globex", f.MerchantID)
	}
}

func TestFailure(t *testing.T) {
	d := newTestDispatcher(t, nil, nil, nil)
	cmd := schemas.ResendCommand{CommandID: "cmd-9", SessionID: "s", OrderNo: "o", RequestedBy: "me", RequestedAt: "2025-01-01T00:00:00Z"}
	r := d.Failure(cmd, nil, schemas.ReasonUnknownTransaction, "no transaction with session_id \"s\"")
	if _, err := uuid.Parse(r.ResultID); err != nil {
		t.Error(err)
	}
	if r.CommandID != "cmd-9" || r.SessionID != "s" || r.OrderNo != "o" || r.RequestedBy != "me" || r.RequestedAt != cmd.RequestedAt {
		t.Errorf("ids %+v", r)
	}
	if r.State != nil || r.Outcome != schemas.OutcomeNotNotified || r.Reason != schemas.ReasonUnknownTransaction || r.Detail == "" {
		t.Errorf("%+v", r)
	}
	if r.Channels == nil || len(r.Channels) != 0 {
		t.Errorf("channels %#v, want empty non-nil", r.Channels)
	}
	if r.Message != "Customer not notified: the transaction is not known." {
		t.Errorf("message %q", r.Message)
	}
	if !r.ProcessedAt.Equal(fixedNow) || r.ProcessedAt.Location() != time.UTC {
		t.Errorf("processed_at %v", r.ProcessedAt)
	}
	st := schemas.StatePaid
	r = d.Failure(cmd, &st, schemas.ReasonCommandExpired, "too old")
	if r.State == nil || *r.State != schemas.StatePaid || r.State == &st {
		t.Errorf("state %v", r.State)
	}
	for _, reason := range []schemas.Reason{schemas.ReasonInvalidCommand, schemas.ReasonIdentifierMismatch, schemas.ReasonCommandExpired, "something_new"} {
		if m := d.Failure(cmd, nil, reason, "").Message; !strings.HasPrefix(m, "Customer not notified") || !strings.HasSuffix(m, ".") {
			t.Errorf("message for %s: %q", reason, m)
		}
	}
}

// leakyProvider fails with an error text that holds the full contact.
type leakyProvider struct{}

func (leakyProvider) Name() string { return "leaky" }
func (leakyProvider) Send(_ context.Context, m Message) (Receipt, error) {
	return Receipt{}, Transient("upstream 503", 0, fmt.Errorf("POST /send to=%s: 503", m.To))
}

func TestLogsNeverHoldContacts(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	policy := RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxElapsed: time.Minute, AttemptTimeout: time.Second}
	d, err := New(Config{
		Routes: map[schemas.Channel][]Route{schemas.ChannelEmail: {{Provider: leakyProvider{}, Retry: policy}},
			schemas.ChannelSMS: {{Provider: leakyProvider{}, Retry: policy}}},
		Templates: defaultTemplates(t),
	}, newMemStore(), log)
	if err != nil {
		t.Fatal(err)
	}
	useFakeClock(d)
	r := d.Deliver(context.Background(), command(schemas.ChannelEmail, schemas.ChannelSMS), paidTxn())
	if r.Outcome != schemas.OutcomeNotNotified {
		t.Fatalf("%+v", r)
	}
	out := buf.String()
	if n := strings.Count(out, "provider attempt failed"); n != 4 {
		t.Errorf("%d failure lines, want 4 (2 attempts x 2 channels):\n%s", n, out)
	}
	for _, secret := range []string{testEmail, testPhone, "96550001234", "lina.haddad"} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{`"command_id":"cmd-1"`, `"channel":"email"`, `"recipient":"l***@example.com"`, `"recipient":"+965****1234"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	for _, c := range r.Channels {
		if strings.Contains(c.Detail, testEmail) || strings.Contains(c.Detail, testPhone) {
			t.Errorf("detail holds a contact: %q", c.Detail)
		}
	}
}

func TestConsoleProvider(t *testing.T) {
	var buf testkit.SyncBuffer
	con := NewConsole(&buf)
	if con.Name() != "console" {
		t.Fatal(con.Name())
	}
	providers := map[schemas.Channel]Provider{schemas.ChannelEmail: con, schemas.ChannelSMS: con, schemas.ChannelWhatsApp: con}
	d := newTestDispatcher(t, providers, nil, nil)
	var wg sync.WaitGroup
	results := make([]schemas.DeliveryResult, 8)
	for i := range results {
		wg.Go(func() { results[i] = d.Deliver(context.Background(), command(allChannels()...), paidTxn()) })
	}
	wg.Wait()
	ids := map[string]bool{}
	for _, r := range results {
		if r.Outcome != schemas.OutcomeNotified || r.Message != schemas.MessageNotified {
			t.Fatalf("%+v", r)
		}
		for _, c := range r.Channels {
			if !strings.HasPrefix(c.ProviderMessageID, "console-") || c.Provider != "console" {
				t.Errorf("%+v", c)
			}
			if _, err := uuid.Parse(strings.TrimPrefix(c.ProviderMessageID, "console-")); err != nil {
				t.Errorf("message id %q: %v", c.ProviderMessageID, err)
			}
			ids[c.ProviderMessageID] = true
		}
	}
	if len(ids) != 24 {
		t.Errorf("%d distinct message ids, want 24", len(ids))
	}
	out := buf.String()
	if strings.Contains(out, testEmail) || strings.Contains(out, testPhone) {
		t.Errorf("console printed a full contact:\n%s", out)
	}
	for _, want := range []string{"email to l***@example.com", "sms to +965****1234", "whatsapp to +965****1234", "payment_paid"} {
		if !strings.Contains(out, want) {
			t.Errorf("console output lacks %q", want)
		}
	}
	if n := strings.Count(out, "--- "); n != 24 {
		t.Errorf("%d messages printed, want 24 (interleaved writes?)", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := con.Send(ctx, Message{Channel: "sms", To: testPhone}); err == nil || IsPermanent(err) {
		t.Errorf("canceled Send = %v, want transient error", err)
	}
	if _, err := NewConsole(failWriter{}).Send(context.Background(), Message{Channel: "sms", To: testPhone}); err == nil || IsPermanent(err) {
		t.Errorf("failed write = %v, want transient error", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestNewValidates(t *testing.T) {
	tpl := defaultTemplates(t)
	store := newMemStore()
	tests := []struct {
		name string
		cfg  Config
		txns Transactions
		want string
	}{
		{"no templates", Config{}, store, "templates are required"},
		{"no store", Config{Templates: tpl}, nil, "transactions are required"},
		{"unknown route channel", Config{Templates: tpl, Routes: map[schemas.Channel][]Route{"fax": {{Provider: NewConsole(io.Discard)}}}}, store, `routes: unknown channel "fax"`},
		{"route without provider", Config{Templates: tpl, Routes: map[schemas.Channel][]Route{"sms": {{Provider: NewConsole(io.Discard)}, {}}}}, store, `sms[1]: no provider`},
		{"bad retry", Config{Templates: tpl, Routes: map[schemas.Channel][]Route{"sms": {{Provider: NewConsole(io.Discard), Retry: RetryPolicy{MaxAttempts: -1}}}}}, store, "sms[0].retry: max_attempts: must be >= 1"},
		{"bad rate limit", Config{Templates: tpl, Routes: map[schemas.Channel][]Route{"sms": {{Provider: NewConsole(io.Discard), RateLimit: RateLimit{PerSecond: -1}}}}}, store, "sms[0].rate_limit: "},
		{"bad breaker", Config{Templates: tpl, Routes: map[schemas.Channel][]Route{"email": {{Provider: NewConsole(io.Discard)}, {Provider: NewConsole(io.Discard), Breaker: BreakerPolicy{FailureRatio: 1.5}}}}}, store, "email[1].circuit_breaker: failure_ratio: must be in (0, 1]"},
		{"negative cooldown", Config{Templates: tpl, Cooldown: -time.Second}, store, "cooldown: must not be negative"},
		{"ok", Config{Templates: tpl}, store, ""},
	}
	for _, tt := range tests {
		_, err := New(tt.cfg, tt.txns, nil)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.want)
		}
	}
	d, _ := New(Config{Templates: tpl, Routes: map[schemas.Channel][]Route{schemas.ChannelWhatsApp: {{Provider: NewConsole(io.Discard)}}}}, store, nil)
	if got := d.routes[schemas.ChannelWhatsApp][0].policy; got.MaxAttempts != DefaultMaxAttempts || got.AttemptTimeout != DefaultAttemptTimeout {
		t.Errorf("missing retry policy not defaulted: %+v", got)
	}
}

func BenchmarkDeliver(b *testing.B) {
	con := NewConsole(io.Discard)
	d := newTestDispatcher(b, map[schemas.Channel]Provider{
		schemas.ChannelEmail: con, schemas.ChannelSMS: con, schemas.ChannelWhatsApp: con,
	}, nil, nil)
	cmd := command(allChannels()...)
	txn := paidTxn()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if r := d.Deliver(ctx, cmd, txn); r.Outcome != schemas.OutcomeNotified {
			b.Fatalf("%+v", r)
		}
	}
}

// TestCheckIsWhatDeliverDecides: Check answers, for every channel, the
// reason Deliver rejects it with (or none when Deliver sends it), without
// calling a provider.
func TestCheckIsWhatDeliverDecides(t *testing.T) {
	for _, mutate := range []func(*schemas.PaymentEvent){
		nil,
		func(x *schemas.PaymentEvent) { x.State = schemas.StateRefunded },
		func(x *schemas.PaymentEvent) { x.CustomerPhone = "" },
		func(x *schemas.PaymentEvent) {
			x.Notifications = map[schemas.Channel][]schemas.State{schemas.ChannelEmail: {schemas.StateFailed}}
		},
		func(x *schemas.PaymentEvent) { x.CustomerEmail = "not an address" },
		named(2000),
	} {
		txn := paidTxn()
		if mutate != nil {
			mutate(&txn)
		}
		prov := &okProvider{name: "ok"}
		d := newTestDispatcher(t, map[schemas.Channel]Provider{schemas.ChannelEmail: prov, schemas.ChannelSMS: prov}, nil, nil)
		checks := d.Check(txn)
		if len(prov.sent()) != 0 {
			t.Fatal("Check called a provider")
		}
		r := d.Deliver(context.Background(), command(schemas.Channels...), txn)
		for i, c := range checks {
			got := r.Channels[i]
			if c.Channel != got.Channel || c.Reason != got.Reason || c.Recipient != got.Recipient {
				t.Errorf("%s: Check says %q %q %q, Deliver %q %q %q", c.Channel, c.Reason, c.Detail, c.Recipient, got.Reason, got.Detail, got.Recipient)
			}
			if (c.Reason == "") != (c.Provider == "ok") {
				t.Errorf("%s: provider %q with reason %q", c.Channel, c.Provider, c.Reason)
			}
		}
	}
}
