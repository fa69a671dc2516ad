package schemas

import (
	"strings"
	"time"
)

// DeliveryStatus is how far a sent message got, as the provider's receipt
// says.
type DeliveryStatus string

// The delivery statuses of a delivery event.
const (
	// DeliverySent: the provider (or the carrier) took the message on.
	DeliverySent DeliveryStatus = "sent"
	// DeliveryDelivered: it reached the customer's device or mailbox.
	DeliveryDelivered DeliveryStatus = "delivered"
	// DeliveryRead: the customer opened it (WhatsApp read receipts).
	DeliveryRead DeliveryStatus = "read"
	// DeliveryUndelivered: the carrier could not deliver it (final).
	DeliveryUndelivered DeliveryStatus = "undelivered"
	// DeliveryFailed: the provider could not send it (final).
	DeliveryFailed DeliveryStatus = "failed"
)

// DeliveryStatuses lists every DeliveryStatus in a stable order.
var DeliveryStatuses = []DeliveryStatus{DeliverySent, DeliveryDelivered, DeliveryRead, DeliveryUndelivered, DeliveryFailed}

// Valid reports whether s is one of DeliveryStatuses.
func (s DeliveryStatus) Valid() bool {
	for _, v := range DeliveryStatuses {
		if v == s {
			return true
		}
	}
	return false
}

// Final reports whether nothing can follow s: undelivered and failed.
func (s DeliveryStatus) Final() bool {
	return s == DeliveryUndelivered || s == DeliveryFailed
}

// Advances reports whether a receipt saying next moves a message whose
// furthest status is s (empty: none yet) further. This is the one rule for
// receipts that arrive out of order or repeated: sent < delivered < read;
// undelivered and failed are final, after sent but never after delivered
// or read (a late failure report does not undo a delivery); nothing moves
// a final status, and a status never moves to itself.
func (s DeliveryStatus) Advances(next DeliveryStatus) bool {
	if !next.Valid() || s == next || s.Final() {
		return false
	}
	if next.Final() {
		return s.rank() < DeliveryDelivered.rank()
	}
	return next.rank() > s.rank()
}

// Moves reports whether ev moves the furthest status of its message, whose
// delivery event so far is prev (found false: there is none). This is the
// one rule, applied where receipts are recorded and where the deliveries
// topic is followed: DeliveryStatus.Advances, except that an event no
// result correlated (no command_id: it names the sender its receipt
// claimed, which no result confirmed) from another sender than ev's does
// not hold back a correlated ev, so a receipt posted for a message before
// it was sent cannot block the genuine ones.
func (ev DeliveryEvent) Moves(prev DeliveryEvent, found bool) bool {
	if !found || (ev.CommandID != "" && prev.CommandID == "" && !prev.sameSender(ev)) {
		return ev.Status.Valid()
	}
	return prev.Status.Advances(ev.Status)
}

// sameSender reports whether e and o speak for the same sender.
func (e DeliveryEvent) sameSender(o DeliveryEvent) bool {
	return e.From(o.Provider, o.ProviderAccount)
}

// From reports whether e speaks for the sender provider (as results name
// it) with account: the same provider kind and, when both name one, the
// same account.
func (e DeliveryEvent) From(provider, account string) bool {
	return ProviderKind(e.Provider) == ProviderKind(provider) &&
		(e.ProviderAccount == "" || account == "" || e.ProviderAccount == account)
}

// ProviderKind is the kind of a provider as results name it (twilio, meta,
// webhook, smtp, console): the name without the "#<n>" that tells the n-th
// provider of one kind in a channel's failover chain (webhook#2 is a
// webhook).
func ProviderKind(name string) string {
	kind, _, _ := strings.Cut(name, "#")
	return kind
}

// rank orders the statuses that can move further: none, sent, delivered,
// read.
func (s DeliveryStatus) rank() int {
	switch s {
	case DeliverySent:
		return 1
	case DeliveryDelivered:
		return 2
	case DeliveryRead:
		return 3
	}
	return 0
}

// DeliveryEvent is one change of a sent message's delivery status, from a
// provider's receipt, on the deliveries topic (kafka.topics.deliveries, key
// session_id; the provider_message_id when the message is not known).
// command_id, result_id, session_id, order_no and channel come from the
// delivery result that reported the message sent; they are empty when no
// such result was found in time.
type DeliveryEvent struct {
	DeliveryID string `json:"delivery_id"`
	CommandID  string `json:"command_id,omitempty"`
	ResultID   string `json:"result_id,omitempty"`
	SessionID  string `json:"session_id,omitempty"`
	OrderNo    string `json:"order_no,omitempty"`
	// MerchantID is the transaction's merchant, from the correlated result.
	MerchantID string  `json:"merchant_id,omitempty"`
	Channel    Channel `json:"channel,omitempty"`
	Provider   string  `json:"provider"`
	// ProviderAccount is the account that sent the message (see
	// ChannelResult.ProviderAccount): the result's when correlated, else
	// the one the receipt was verified for, when it names one.
	ProviderAccount   string         `json:"provider_account,omitempty"`
	ProviderMessageID string         `json:"provider_message_id"`
	Status            DeliveryStatus `json:"status"`
	// ProviderStatus is the status as the provider wrote it (Twilio's
	// MessageStatus, Meta's status).
	ProviderStatus string `json:"provider_status"`
	ErrorCode      string `json:"error_code,omitempty"`
	// ErrorDetail is the provider's error text with secrets and the
	// recipient masked.
	ErrorDetail string    `json:"error_detail,omitempty"`
	OccurredAt  time.Time `json:"occurred_at"`
	ReceivedAt  time.Time `json:"received_at"`
}

// Key is the record key of the event on the deliveries topic.
func (e DeliveryEvent) Key() string {
	if e.SessionID != "" {
		return e.SessionID
	}
	return e.ProviderMessageID
}
