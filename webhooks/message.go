package webhooks

import (
	"encoding/json"
	"fmt"
	"time"
)

// Event types a subscription names in its events.
const (
	TypeResult   = "notification.result"   // a delivery result (schemas/delivery-result.schema.json)
	TypeDelivery = "notification.delivery" // a delivery event (schemas/delivery-event.schema.json)
)

// ValidType reports whether t is an event type a subscription may name.
func ValidType(t string) bool { return t == TypeResult || t == TypeDelivery }

// Message is one webhook message: the same on every attempt and on every
// endpoint it goes to.
type Message struct {
	// ID is the message's webhook-id: derived from what it carries (the
	// result's result_id, the delivery event's event_id), so that the same
	// record read again is the same message.
	ID   string
	Type string
	// Timestamp is when the event happened (the result's processed_at, the
	// delivery event's time), the payload's "timestamp".
	Timestamp time.Time
	// Data is the result or the delivery event as published.
	Data json.RawMessage
}

// Body is the message's JSON body: {"type", "timestamp", "data"}, the
// payload structure of the Standard Webhooks specification.
func (m Message) Body() ([]byte, error) {
	if !json.Valid(m.Data) {
		return nil, fmt.Errorf("webhook message %s: data is not JSON", m.ID)
	}
	return json.Marshal(struct {
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}{m.Type, m.Timestamp.UTC().Format(time.RFC3339Nano), m.Data})
}
