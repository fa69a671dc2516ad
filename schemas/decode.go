package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxIDLength is the longest command_id, session_id or order_no accepted, in
// characters.
const MaxIDLength = 128

// GatewayTimeLayout is the payment gateway's own timestamp form, read as UTC.
const GatewayTimeLayout = "2006-01-02 15:04:05"

// ErrNotJSON is wrapped by decode errors for a value that is not a JSON
// object at all (as opposed to JSON that breaks the schema).
var ErrNotJSON = errors.New("not a JSON object")

// ValidationError says which field of a message breaks its schema and how.
type ValidationError struct {
	Field   string
	Problem string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Problem
	}
	return e.Field + ": " + e.Problem
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// decodeObject unmarshals data into v, reporting non-JSON and non-object
// values as ErrNotJSON and type mismatches as a *ValidationError.
func decodeObject(data []byte, v any) error {
	trimmed := bytes.TrimSpace(data)
	if !utf8.Valid(trimmed) {
		return fmt.Errorf("%w: invalid UTF-8", ErrNotJSON)
	}
	if !json.Valid(trimmed) {
		return fmt.Errorf("%w: malformed JSON", ErrNotJSON)
	}
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return fmt.Errorf("%w: value is not an object", ErrNotJSON)
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return invalid(te.Field, "must be %s, got %s", jsonType(te.Type.Kind().String()), te.Value)
		}
		return invalid("", "%v", err)
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "map", "struct":
		return "an object"
	case "int", "int64":
		return "an integer"
	default:
		return kind
	}
}

// ParseTimestamp reads an RFC 3339 timestamp or the gateway's
// "2006-01-02 15:04:05" UTC form.
func ParseTimestamp(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	t, err := time.ParseInLocation(GatewayTimeLayout, s, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("not RFC 3339 nor %q", GatewayTimeLayout)
	}
	return t, nil
}

func checkID(field, v string, required bool) error {
	if v == "" {
		if required {
			return invalid(field, "is required")
		}
		return nil
	}
	if n := utf8.RuneCountInString(v); n > MaxIDLength {
		return invalid(field, "is %d characters, at most %d allowed", n, MaxIDLength)
	}
	return nil
}

type rawPaymentEvent struct {
	EventID           *string                    `json:"event_id"`
	SessionID         *string                    `json:"session_id"`
	OrderNo           *string                    `json:"order_no"`
	State             *string                    `json:"state"`
	Version           *json.Number               `json:"version"`
	TimestampUTC      *string                    `json:"timestamp_utc"`
	Amount            json.RawMessage            `json:"amount"`
	CurrencyCode      *string                    `json:"currency_code"`
	CustomerEmail     *string                    `json:"customer_email"`
	CustomerPhone     *string                    `json:"customer_phone"`
	CustomerFirstName *string                    `json:"customer_first_name"`
	CustomerLastName  *string                    `json:"customer_last_name"`
	Language          json.RawMessage            `json:"language"`
	Notifications     map[string]json.RawMessage `json:"notifications"`
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// DecodePaymentEvent decodes and validates a payment-events value. A nil or
// empty value is a tombstone and is not handled here. Errors wrap ErrNotJSON
// or are a *ValidationError naming the field.
func DecodePaymentEvent(data []byte) (PaymentEvent, error) {
	var raw rawPaymentEvent
	if err := decodeObject(data, &raw); err != nil {
		return PaymentEvent{}, fmt.Errorf("payment event: %w", err)
	}
	ev, err := raw.validate()
	if err != nil {
		return PaymentEvent{}, fmt.Errorf("payment event: %w", err)
	}
	return ev, nil
}

func (raw *rawPaymentEvent) validate() (PaymentEvent, error) {
	ev := PaymentEvent{
		EventID:           str(raw.EventID),
		SessionID:         str(raw.SessionID),
		OrderNo:           str(raw.OrderNo),
		State:             State(str(raw.State)),
		CurrencyCode:      str(raw.CurrencyCode),
		CustomerEmail:     strings.TrimSpace(str(raw.CustomerEmail)),
		CustomerPhone:     strings.TrimSpace(str(raw.CustomerPhone)),
		CustomerFirstName: str(raw.CustomerFirstName),
		CustomerLastName:  str(raw.CustomerLastName),
		Language:          LanguageEN,
	}
	if err := checkID("event_id", ev.EventID, true); err != nil {
		return ev, err
	}
	if err := checkID("session_id", ev.SessionID, true); err != nil {
		return ev, err
	}
	if err := checkID("order_no", ev.OrderNo, false); err != nil {
		return ev, err
	}
	if raw.State == nil {
		return ev, invalid("state", "is required")
	}
	if !ev.State.Valid() {
		return ev, invalid("state", "unknown state %q", truncate(string(ev.State), 32))
	}
	if raw.Version != nil {
		v, err := raw.Version.Int64()
		if err != nil || v < 1 {
			return ev, invalid("version", "must be a positive integer")
		}
		ev.Version = v
	}
	if raw.TimestampUTC == nil {
		return ev, invalid("timestamp_utc", "is required")
	}
	ts, err := ParseTimestamp(*raw.TimestampUTC)
	if err != nil {
		return ev, invalid("timestamp_utc", "%v", err)
	}
	ev.TimestampUTC = ts
	switch a := bytes.TrimSpace(raw.Amount); {
	case len(a) == 0 || string(a) == "null":
	case a[0] == '"' || a[0] == '-' || (a[0] >= '0' && a[0] <= '9'):
		ev.Amount = append(json.RawMessage(nil), a...)
	default:
		return ev, invalid("amount", "must be a string or a number")
	}
	var lang string
	if len(raw.Language) > 0 && json.Unmarshal(raw.Language, &lang) == nil && Language(lang) == LanguageAR {
		ev.Language = LanguageAR
	}
	if raw.Notifications != nil {
		ev.Notifications = make(map[Channel][]State, len(raw.Notifications))
		for name, list := range raw.Notifications {
			ch := Channel(name)
			if !ch.Valid() {
				// Unknown channels are ignored like unknown fields: a newer
				// gateway may offer channels notifyd does not send on.
				continue
			}
			var states []string
			if err := json.Unmarshal(list, &states); err != nil {
				return ev, invalid("notifications."+name, "must be a list of states")
			}
			out := make([]State, 0, len(states))
			for _, s := range states {
				if !State(s).Valid() {
					return ev, invalid("notifications."+name, "unknown state %q", truncate(s, 32))
				}
				out = append(out, State(s))
			}
			ev.Notifications[ch] = out
		}
	}
	return ev, nil
}

type rawCommand struct {
	CommandID   *string  `json:"command_id"`
	SessionID   *string  `json:"session_id"`
	OrderNo     *string  `json:"order_no"`
	Channels    []string `json:"channels"`
	RequestedAt *string  `json:"requested_at"`
	RequestedBy *string  `json:"requested_by"`
}

// MaxRequestedByLength bounds requested_by, which is echoed into results.
const MaxRequestedByLength = 256

// DecodeCommand decodes and validates a resend command. Errors wrap
// ErrNotJSON or are a *ValidationError naming the field.
func DecodeCommand(data []byte) (ResendCommand, error) {
	var raw rawCommand
	if err := decodeObject(data, &raw); err != nil {
		return ResendCommand{}, fmt.Errorf("resend command: %w", err)
	}
	cmd, err := raw.validate()
	if err != nil {
		return cmd, fmt.Errorf("resend command: %w", err)
	}
	return cmd, nil
}

func (raw *rawCommand) validate() (ResendCommand, error) {
	cmd := ResendCommand{
		CommandID:   str(raw.CommandID),
		SessionID:   str(raw.SessionID),
		OrderNo:     str(raw.OrderNo),
		RequestedAt: str(raw.RequestedAt),
		RequestedBy: str(raw.RequestedBy),
	}
	if err := checkID("command_id", cmd.CommandID, true); err != nil {
		return cmd, err
	}
	if err := checkID("session_id", cmd.SessionID, false); err != nil {
		return cmd, err
	}
	if err := checkID("order_no", cmd.OrderNo, false); err != nil {
		return cmd, err
	}
	if cmd.SessionID == "" && cmd.OrderNo == "" {
		return cmd, invalid("session_id", "session_id or order_no is required")
	}
	if raw.Channels == nil {
		return cmd, invalid("channels", "is required")
	}
	if len(raw.Channels) == 0 {
		return cmd, invalid("channels", "must not be empty")
	}
	seen := make(map[Channel]bool, len(raw.Channels))
	for _, c := range raw.Channels {
		ch := Channel(c)
		if !ch.Valid() {
			return cmd, invalid("channels", "unknown channel %q (want email, sms or whatsapp)", truncate(c, 32))
		}
		if seen[ch] {
			return cmd, invalid("channels", "channel %q listed twice", c)
		}
		seen[ch] = true
		cmd.Channels = append(cmd.Channels, ch)
	}
	if cmd.RequestedAt != "" {
		if _, err := time.Parse(time.RFC3339Nano, cmd.RequestedAt); err != nil {
			return cmd, invalid("requested_at", "must be an RFC 3339 timestamp")
		}
	}
	if n := utf8.RuneCountInString(cmd.RequestedBy); n > MaxRequestedByLength {
		return cmd, invalid("requested_by", "is %d characters, at most %d allowed", n, MaxRequestedByLength)
	}
	return cmd, nil
}

// CommandIdentity is what can be salvaged from a command that breaks its
// schema, to address an invalid_command result.
type CommandIdentity struct {
	CommandID string
	SessionID string
	OrderNo   string
}

// PeekCommand extracts the identifiers of a JSON command that may break its
// schema. ok is false when it has no usable command_id (a string of 1 to 128
// characters); session_id and order_no are kept only when they are strings
// of 1 to 128 characters.
func PeekCommand(data []byte) (id CommandIdentity, ok bool) {
	var raw map[string]json.RawMessage
	if json.Unmarshal(data, &raw) != nil {
		return id, false
	}
	get := func(name string) string {
		var s string
		if json.Unmarshal(raw[name], &s) != nil || checkID(name, s, true) != nil {
			return ""
		}
		return s
	}
	id = CommandIdentity{CommandID: get("command_id"), SessionID: get("session_id"), OrderNo: get("order_no")}
	return id, id.CommandID != ""
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}
