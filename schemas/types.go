package schemas

import (
	"encoding/json"
	"time"
)

// State is a payment transaction state as the gateway's webhooks name it.
type State string

// The states a payment event may carry.
const (
	StateCreated        State = "created"
	StatePending        State = "pending"
	StateAttempted      State = "attempted"
	StateAuthorized     State = "authorized"
	StatePaid           State = "paid"
	StateFailed         State = "failed"
	StateCanceled       State = "canceled"
	StateExpired        State = "expired"
	StateInvalided      State = "invalided"
	StateRefunded       State = "refunded"
	StateVoided         State = "voided"
	StateCaptured       State = "captured"
	StateCOD            State = "cod"
	StateRefundQueued   State = "refund_queued"
	StateRefundRejected State = "refund_rejected"
)

// States lists every valid State in a stable order.
var States = []State{
	StateCreated, StatePending, StateAttempted, StateAuthorized, StatePaid,
	StateFailed, StateCanceled, StateExpired, StateInvalided, StateRefunded,
	StateVoided, StateCaptured, StateCOD, StateRefundQueued, StateRefundRejected,
}

// Valid reports whether s is one of States.
func (s State) Valid() bool {
	for _, v := range States {
		if v == s {
			return true
		}
	}
	return false
}

// Channel is a notification channel.
type Channel string

// The channels a resend command may name.
const (
	ChannelEmail    Channel = "email"
	ChannelSMS      Channel = "sms"
	ChannelWhatsApp Channel = "whatsapp"
)

// Channels lists every valid Channel in a stable order.
var Channels = []Channel{ChannelEmail, ChannelSMS, ChannelWhatsApp}

// Valid reports whether c is one of Channels.
func (c Channel) Valid() bool {
	return c == ChannelEmail || c == ChannelSMS || c == ChannelWhatsApp
}

// Language is the customer's language for templates.
type Language string

// The supported languages; anything else is treated as LanguageEN.
const (
	LanguageEN Language = "en"
	LanguageAR Language = "ar"
)

// PaymentEvent is a snapshot of a payment transaction, published on the
// payment-events topic keyed by session_id. It replaces the stored view of its
// session_id. Field names follow the payment gateway's webhooks.
type PaymentEvent struct {
	EventID   string `json:"event_id"`
	SessionID string `json:"session_id"`
	OrderNo   string `json:"order_no,omitempty"`
	// MerchantID is the merchant the transaction belongs to; decoding
	// makes an absent one MerchantDefault, so it is never empty.
	MerchantID   string    `json:"merchant_id,omitempty"`
	State        State     `json:"state"`
	Version      int64     `json:"version,omitempty"`
	TimestampUTC time.Time `json:"timestamp_utc"`
	// Amount is kept as the gateway sent it (a decimal string or number).
	Amount            json.RawMessage `json:"amount,omitempty"`
	CurrencyCode      string          `json:"currency_code,omitempty"`
	CustomerEmail     string          `json:"customer_email,omitempty"`
	CustomerPhone     string          `json:"customer_phone,omitempty"`
	CustomerFirstName string          `json:"customer_first_name,omitempty"`
	CustomerLastName  string          `json:"customer_last_name,omitempty"`
	// Language is normalised on decode: "ar" stays, anything else is "en".
	Language Language `json:"language,omitempty"`
	// Notifications maps a channel to the states enabled for it at checkout.
	// A channel present with an empty list is enabled for every state the
	// channel supports; a channel absent is not enabled.
	Notifications map[Channel][]State `json:"notifications,omitempty"`
}

// MerchantDefault is the merchant of every transaction, command and
// principal published without a merchant_id: a single-merchant deployment
// has only this one.
const MerchantDefault = "default"

// MaxMerchantIDLength is the longest merchant_id.
const MaxMerchantIDLength = 64

// ValidMerchantID reports whether id is a merchant_id: 1 to 64 of
// A-Z, a-z, 0-9, '.', '_' and '-' (so it is safe in a key, a path and a
// header, and never holds '/' or ':').
func ValidMerchantID(id string) bool {
	if id == "" || len(id) > MaxMerchantIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// MerchantOf returns id, or MerchantDefault when id is empty.
func MerchantOf(id string) string {
	if id == "" {
		return MerchantDefault
	}
	return id
}

// AmountString returns the amount as text without JSON quotes ("" if absent).
func (e *PaymentEvent) AmountString() string {
	if len(e.Amount) == 0 || string(e.Amount) == "null" {
		return ""
	}
	var s string
	if err := json.Unmarshal(e.Amount, &s); err == nil {
		return s
	}
	return string(e.Amount)
}

// ResendCommand asks notifyd to notify the customer of a transaction's current
// state on the listed channels. It is published on the notification-commands
// topic keyed by session_id or order_no.
type ResendCommand struct {
	CommandID string `json:"command_id"`
	SessionID string `json:"session_id,omitempty"`
	OrderNo   string `json:"order_no,omitempty"`
	// MerchantID, when set, limits the command to that merchant's
	// transactions; "" finds a session_id whatever its merchant and an
	// order_no in MerchantDefault (see MerchantOf).
	MerchantID  string    `json:"merchant_id,omitempty"`
	Channels    []Channel `json:"channels"`
	RequestedAt string    `json:"requested_at,omitempty"`
	RequestedBy string    `json:"requested_by,omitempty"`
	// Force sends even when the channel was sent for the same state less
	// than processing.cooldown ago (no cooldown_active rejection).
	Force bool `json:"force,omitempty"`
}

// Key returns the Kafka key of the command: session_id, else order_no.
func (c *ResendCommand) Key() string {
	if c.SessionID != "" {
		return c.SessionID
	}
	return c.OrderNo
}

// Outcome summarises a delivery result.
type Outcome string

// The outcomes of a delivery result.
const (
	OutcomeNotified          Outcome = "notified"
	OutcomePartiallyNotified Outcome = "partially_notified"
	OutcomeNotNotified       Outcome = "not_notified"
)

// MessageNotified is the result message when every channel was sent.
const MessageNotified = "Customer notified."

// Reason is a machine-readable cause of a whole-command failure or of a
// channel that was not sent.
type Reason string

// Whole-command failure reasons (the result's channels list is empty).
const (
	ReasonInvalidCommand     Reason = "invalid_command"
	ReasonUnknownTransaction Reason = "unknown_transaction"
	ReasonIdentifierMismatch Reason = "identifier_mismatch"
	ReasonCommandExpired     Reason = "command_expired"
)

// Per-channel rejection reasons, in the order they are checked.
const (
	ReasonStateNotSupported     Reason = "state_not_supported"
	ReasonChannelNotEnabled     Reason = "channel_not_enabled"
	ReasonStateNotEnabled       Reason = "state_not_enabled"
	ReasonMissingContact        Reason = "missing_contact"
	ReasonInvalidContact        Reason = "invalid_contact"
	ReasonProviderNotConfigured Reason = "provider_not_configured"
	ReasonTemplateNotConfigured Reason = "template_not_configured"
	ReasonMessageTooLong        Reason = "message_too_long"
	ReasonCooldownActive        Reason = "cooldown_active"
	ReasonProviderRejected      Reason = "provider_rejected"
	ReasonProviderUnavailable   Reason = "provider_unavailable"
)

// CommandReasons are the whole-command failure reasons.
func CommandReasons() []Reason {
	return []Reason{ReasonInvalidCommand, ReasonUnknownTransaction, ReasonIdentifierMismatch, ReasonCommandExpired}
}

// RejectionReasons are the reasons of a channel rejected before any
// provider call (status rejected), in the order they are checked.
func RejectionReasons() []Reason {
	return []Reason{ReasonStateNotSupported, ReasonChannelNotEnabled, ReasonStateNotEnabled, ReasonMissingContact,
		ReasonInvalidContact, ReasonProviderNotConfigured, ReasonTemplateNotConfigured, ReasonMessageTooLong,
		ReasonCooldownActive}
}

// FailureReasons are the reasons of a channel the provider did not take
// (status failed).
func FailureReasons() []Reason {
	return []Reason{ReasonProviderRejected, ReasonProviderUnavailable}
}

// Outcomes are the outcomes of a delivery result.
func Outcomes() []Outcome {
	return []Outcome{OutcomeNotified, OutcomePartiallyNotified, OutcomeNotNotified}
}

// ChannelStatus is the status of one channel in a delivery result.
type ChannelStatus string

// The channel statuses.
const (
	StatusSent     ChannelStatus = "sent"
	StatusRejected ChannelStatus = "rejected"
	StatusFailed   ChannelStatus = "failed"
)

// ChannelResult is the outcome of one requested channel.
type ChannelResult struct {
	Channel   Channel       `json:"channel"`
	Status    ChannelStatus `json:"status"`
	Reason    Reason        `json:"reason,omitempty"`
	Detail    string        `json:"detail,omitempty"`
	Recipient string        `json:"recipient,omitempty"`
	// Provider is the provider that sent the message, else the last one
	// tried; ProvidersTried lists every provider called, in order.
	Provider       string   `json:"provider,omitempty"`
	ProvidersTried []string `json:"providers_tried,omitempty"`
	// ProviderAccount is the account of the provider that sent the
	// message, where its receipts come back: a Twilio AccountSid, a Meta
	// phone number id, a webhook provider's host. A receipt applies only
	// to a message sent from the account it is verified for.
	ProviderAccount   string `json:"provider_account,omitempty"`
	ProviderMessageID string `json:"provider_message_id,omitempty"`
	Attempts          int    `json:"attempts"`
}

// DeliveryResult is published on the notification-results topic, one per
// resend command.
type DeliveryResult struct {
	ResultID  string `json:"result_id"`
	CommandID string `json:"command_id"`
	SessionID string `json:"session_id,omitempty"`
	OrderNo   string `json:"order_no,omitempty"`
	// MerchantID is the transaction's merchant, else the command's.
	MerchantID string `json:"merchant_id,omitempty"`
	// State is the state notified about; nil when the transaction is unknown.
	State    *State          `json:"state"`
	Outcome  Outcome         `json:"outcome"`
	Message  string          `json:"message"`
	Reason   Reason          `json:"reason,omitempty"`
	Detail   string          `json:"detail,omitempty"`
	Channels []ChannelResult `json:"channels"`
	// RequestedBy and RequestedAt are copied from the command.
	RequestedBy string    `json:"requested_by,omitempty"`
	RequestedAt string    `json:"requested_at,omitempty"`
	ProcessedAt time.Time `json:"processed_at"`
}

// MarshalJSON encodes the result with nil Channels as "channels":[], never
// null, as the delivery-result schema requires.
func (r DeliveryResult) MarshalJSON() ([]byte, error) {
	type plain DeliveryResult // no methods: no recursion
	p := plain(r)
	if p.Channels == nil {
		p.Channels = []ChannelResult{}
	}
	return json.Marshal(p)
}

// Key returns the Kafka key of the result: session_id, else order_no, else
// command_id.
func (r *DeliveryResult) Key() string {
	switch {
	case r.SessionID != "":
		return r.SessionID
	case r.OrderNo != "":
		return r.OrderNo
	default:
		return r.CommandID
	}
}
