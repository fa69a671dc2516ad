package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/notifyd/notifyd/schemas"
)

// Message is one rendered notification handed to a Provider.
type Message struct {
	// Channel is the channel the message goes out on.
	Channel schemas.Channel
	// To is the full contact (email address or E.164 phone number). Never
	// log it unmasked: use MaskRecipient.
	To string
	// CommandID is the resend command's id, usable as an idempotency key.
	CommandID string
	// Subject, Text and HTML are the rendered email subject and bodies, and
	// Text the sms body.
	Subject, Text, HTML string
	// WhatsApp is the rendered whatsapp template message (whatsapp only).
	WhatsApp *WhatsAppTemplate
}

// Receipt is a provider's acknowledgement of a sent message.
type Receipt struct {
	// MessageID is the provider's id for the message.
	MessageID string
}

// Provider sends one message. Implementations must be safe for concurrent
// use and honour ctx. A returned error is classified with IsPermanent:
// permanent errors are never retried; any other error is transient. Errors
// are logged (with the contact masked if it appears verbatim), so they must
// not carry secrets.
type Provider interface {
	// Name names the provider in results and logs.
	Name() string
	// Send sends m and returns the provider's receipt.
	Send(ctx context.Context, m Message) (Receipt, error)
}

// Accounter is a Provider whose delivery receipts come back (twilio, meta,
// webhook). Account names the account that sends: results carry it as
// provider_account, and a receipt applies only to a message sent from the
// account it was verified for (a Twilio AccountSid, a Meta phone number id,
// a webhook provider's host), so that one provider's receipt secret cannot
// change the status of another's messages.
type Accounter interface {
	Account() string
}

// ErrForeignReceipt is returned for a verified receipt about a message that
// another provider account sent: it is ignored.
var ErrForeignReceipt = errors.New("receipt for a message another provider account sent")

// ProviderError classifies a provider failure. Detail is a short human text
// that goes into delivery results, so it must not hold the contact or any
// secret.
type ProviderError struct {
	// Permanent is true when retrying cannot help (e.g. the provider
	// rejected the recipient or the content).
	Permanent bool
	// Account, with Permanent, blames the provider account, its
	// credentials or its sender: another provider may succeed, so the
	// channel fails over (see Route).
	Account bool
	// Detail is a short human description of the failure.
	Detail string
	// RetryAfter, when positive, is the least time to wait before the next
	// attempt, as the provider asked (transient errors only).
	RetryAfter time.Duration
	// Err is the underlying error, if any.
	Err error
}

// Error returns Detail and the underlying error.
func (e *ProviderError) Error() string {
	kind := "transient"
	if e.Permanent {
		kind = "permanent"
	}
	msg := kind + " provider error"
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *ProviderError) Unwrap() error { return e.Err }

// Permanent returns a permanent *ProviderError: the message must not be
// retried.
func Permanent(detail string, err error) error {
	return &ProviderError{Permanent: true, Detail: detail, Err: err}
}

// Transient returns a transient *ProviderError: the message may be retried,
// no sooner than retryAfter when it is positive.
func Transient(detail string, retryAfter time.Duration, err error) error {
	return &ProviderError{Detail: detail, RetryAfter: retryAfter, Err: err}
}

// IsPermanent reports whether err is, or wraps, a permanent *ProviderError.
// Any other non-nil error is transient.
func IsPermanent(err error) bool {
	var pe *ProviderError
	return errors.As(err, &pe) && pe.Permanent
}

// retryAfter returns the RetryAfter of the *ProviderError in err, if any.
func retryAfter(err error) time.Duration {
	var pe *ProviderError
	if errors.As(err, &pe) && pe.RetryAfter > 0 {
		return pe.RetryAfter
	}
	return 0
}

// errorDetail returns the Detail of the *ProviderError in err, or "".
func errorDetail(err error) string {
	var pe *ProviderError
	if errors.As(err, &pe) {
		return pe.Detail
	}
	return ""
}

// Console is a Provider for development that prints each message to a
// writer, with the recipient masked. It is safe for concurrent use: writes
// are serialised.
type Console struct {
	mu sync.Mutex
	w  io.Writer
}

// NewConsole returns a Console printing to w.
func NewConsole(w io.Writer) *Console { return &Console{w: w} }

// Name returns "console".
func (c *Console) Name() string { return "console" }

// Send prints m with its recipient masked and returns a "console-<uuid>"
// message id. A write error is transient.
func (c *Console) Send(ctx context.Context, m Message) (Receipt, error) {
	if err := ctx.Err(); err != nil {
		return Receipt{}, Transient("canceled", 0, err)
	}
	id := "console-" + uuid.NewString()
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s to %s (command %s, message %s)\n", m.Channel, MaskRecipient(m.Channel, m.To), m.CommandID, id)
	if m.Subject != "" {
		fmt.Fprintf(&b, "Subject: %s\n", m.Subject)
	}
	if m.Text != "" {
		b.WriteString(strings.TrimRight(m.Text, "\n") + "\n")
	}
	if m.HTML != "" {
		fmt.Fprintf(&b, "HTML: %s\n", m.HTML)
	}
	if wa := m.WhatsApp; wa != nil {
		fmt.Fprintf(&b, "WhatsApp template %s (%s) params %q\n", wa.Name, wa.Language, wa.Params)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := io.WriteString(c.w, b.String()); err != nil {
		return Receipt{}, Transient("console write failed", 0, err)
	}
	return Receipt{MessageID: id}, nil
}

// consoleKind is the console kind: any channel, printed (development).
func consoleKind() Kind {
	return Kind{Name: "console", Channels: schemas.Channels,
		New: func(_ ProviderConfig, env Env) (Provider, error) { return NewConsole(env.Console), nil }}
}
