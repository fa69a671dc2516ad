package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
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
	// Field is the member at fault, e.g. "version" or "notifications.sms";
	// "" when the message as a whole is at fault.
	Field string
	// Problem says what is wrong with it.
	Problem string
}

// Error returns "field: problem", or the problem alone without a field.
func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Problem
	}
	return e.Field + ": " + e.Problem
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// decodeObject unmarshals the JSON object data into the struct v (a pointer),
// reporting non-JSON and non-object values as ErrNotJSON and type mismatches
// as a *ValidationError. Unlike json.Unmarshal it matches member names
// exactly, as JSON Schema does: "EVENT_ID" or "ſtate" are unknown members,
// not event_id or state. Of duplicate members the last one wins, as in the
// schema validator.
func decodeObject(data []byte, v any, fields []string) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("%w: invalid UTF-8", ErrNotJSON)
	}
	// One pass checks the syntax and finds the members; the last of
	// duplicate members wins.
	members := make([][]byte, len(fields))
	if !walkJSON(data, func(name, value []byte) {
		for i, f := range fields {
			if string(name) == f {
				members[i] = value
				return
			}
		}
	}) {
		return fmt.Errorf("%w: malformed JSON", ErrNotJSON)
	}
	// Only JSON's own whitespace: walkJSON has accepted nothing else.
	if trimmed := bytes.TrimLeft(data, " \t\r\n"); trimmed[0] != '{' {
		return fmt.Errorf("%w: value is not an object", ErrNotJSON)
	}
	rv := reflect.ValueOf(v).Elem()
	rt := rv.Type()
	for i, name := range fields {
		member := json.RawMessage(members[i])
		if member == nil {
			continue
		}
		if ok, err := decodeFast(member, rv.Field(i)); ok {
			if err != nil {
				return invalid(name, "%v", err)
			}
			continue
		}
		if err := json.Unmarshal(member, rv.Field(i).Addr().Interface()); err != nil {
			var te *json.UnmarshalTypeError
			if !errors.As(err, &te) {
				return invalid(name, "%v", err)
			}
			want := jsonType(te.Type.Kind().String())
			if rt.Field(i).Type.Kind() == reflect.Slice && te.Type.Kind() != reflect.Slice {
				return invalid(name, "items must be %s, got %s", want, te.Value)
			}
			return invalid(name, "must be %s, got %s", want, te.Value)
		}
	}
	return nil
}

// jsonNames lists the JSON member name of each field of a struct type, in
// field order. The decoders compute theirs once, at package initialisation.
func jsonNames(t reflect.Type) []string {
	names := make([]string, t.NumField())
	for i := range names {
		names[i], _, _ = strings.Cut(t.Field(i).Tag.Get("json"), ",")
	}
	return names
}

// eachMember calls fn with the name and the raw value of each top-level
// member of data, which must be a valid JSON object (validJSON). Names are
// unescaped; values are sub-slices of data. It replaces decoding into a
// map[string]json.RawMessage, which costs most of a payment event's decode.
func eachMember(data []byte, fn func(name, value []byte)) {
	i := bytes.IndexByte(data, '{') + 1
	for {
		i = skipSpace(data, i)
		if data[i] == '}' {
			return
		}
		end := skipString(data, i)
		name := data[i+1 : end-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			var unescaped string
			_ = json.Unmarshal(data[i:end], &unescaped)
			name = []byte(unescaped)
		}
		i = skipSpace(data, end)
		i = skipSpace(data, i+1) // ':'
		vend := skipValue(data, i)
		fn(name, data[i:vend])
		i = skipSpace(data, vend)
		if data[i] == ',' {
			i++
		}
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at data[i] == '"'.
func skipString(data []byte, i int) int {
	for i++; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index after the JSON value starting at data[i].
func skipValue(data []byte, i int) int {
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				i = skipString(data, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number, true, false, null
		for i < len(data) && !strings.ContainsRune(",}] \t\r\n", rune(data[i])) {
			i++
		}
		return i
	}
}

var (
	paymentEventFields = jsonNames(reflect.TypeFor[rawPaymentEvent]())
	commandFields      = jsonNames(reflect.TypeFor[rawCommand]())
	rawMessageType     = reflect.TypeFor[json.RawMessage]()
	stringPtrType      = reflect.TypeFor[*string]()
	rawMapType         = reflect.TypeFor[map[string]json.RawMessage]()
)

// plainStrings decodes a JSON array of strings without escapes (the
// common case) without the JSON decoder; ok=false leaves anything else to
// json.Unmarshal. list is known to be valid JSON.
func plainStrings(list []byte) (out []string, ok bool) {
	if len(list) < 2 || list[0] != '[' {
		return nil, false
	}
	out = []string{}
	i := skipSpace(list, 1)
	if list[i] == ']' {
		return out, true
	}
	for {
		if list[i] != '"' {
			return nil, false
		}
		end := skipString(list, i)
		v := list[i+1 : end-1]
		if bytes.IndexByte(v, '\\') >= 0 {
			return nil, false
		}
		out = append(out, string(v))
		i = skipSpace(list, end)
		switch list[i] {
		case ']':
			return out, true
		case ',':
			i = skipSpace(list, i+1)
		default:
			return nil, false
		}
	}
}

// decodeFast decodes the common members without a second pass of the JSON
// decoder: raw members, and strings without escapes into *string fields.
// member is already known to be valid JSON (the whole object was parsed).
// ok=false leaves the member to json.Unmarshal.
func decodeFast(member json.RawMessage, field reflect.Value) (ok bool, err error) {
	if field.Type() == rawMessageType {
		field.SetBytes(member)
		return true, nil
	}
	if field.Type() == rawMapType {
		if member[0] != '{' {
			return false, nil // null, or not an object: json.Unmarshal says
		}
		m := map[string]json.RawMessage{}
		eachMember(member, func(name, value []byte) { m[string(name)] = value })
		field.Set(reflect.ValueOf(m))
		return true, nil
	}
	if field.Type() != stringPtrType {
		return false, nil
	}
	if len(member) < 2 || member[0] != '"' || bytes.IndexByte(member, '\\') >= 0 {
		return false, nil
	}
	s := string(member[1 : len(member)-1])
	field.Set(reflect.ValueOf(&s))
	return true, nil
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

// Patterns of the timestamps accepted, shared with the JSON Schemas (the
// tests check that the schemas carry the same patterns). They check the
// calendar (month lengths, leap years) so that a schema validator without
// format assertion agrees with the decoders. Years run from 0001 to 9998 so
// that any offset leaves the UTC instant within what time.Time marshals.
const (
	yearPattern     = `(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])`
	leapYearPattern = `(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)`
	datePattern     = `(?:` + yearPattern + `-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))|` + leapYearPattern + `-02-29)`
	clockPattern    = `(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:[.][0-9]+)?`
	offsetPattern   = `(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])`

	// dateTimePattern is RFC 3339 date-time with an upper-case T and Z (Go's
	// time package rejects lower case) and no leap second.
	dateTimePattern = `^` + datePattern + `T` + clockPattern + offsetPattern + `$`
	// timestampPattern is dateTimePattern or GatewayTimeLayout, optionally
	// with a fraction of a second.
	timestampPattern = `^` + datePattern + `(?:T` + clockPattern + offsetPattern + `| ` + clockPattern + `)$`
)

var (
	dateTimeRE     = regexp.MustCompile(dateTimePattern)
	gatewayTimeRE  = regexp.MustCompile(`^` + datePattern + ` ` + clockPattern + `$`)
	errNotDateTime = errors.New("not an RFC 3339 date-time")
)

// parseDateTime reads an RFC 3339 date-time as dateTimePattern restricts it.
func parseDateTime(s string) (time.Time, error) {
	if !dateTimeRE.MatchString(s) {
		return time.Time{}, errNotDateTime
	}
	return time.Parse(time.RFC3339Nano, s)
}

// ParseTimestamp reads an RFC 3339 timestamp or the gateway's
// "2006-01-02 15:04:05" UTC form, either optionally with a fraction of a
// second. It is strict where time.Parse is lenient: two-digit hours, a
// period before the fraction, upper-case T and Z, offsets up to ±23:59 and
// years 0001 to 9998, exactly as the payment event schema's timestamp_utc.
func ParseTimestamp(s string) (time.Time, error) {
	if t, err := parseDateTime(s); err == nil {
		return t.UTC(), nil
	}
	if gatewayTimeRE.MatchString(s) {
		if t, err := time.ParseInLocation(GatewayTimeLayout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("not RFC 3339 nor %q", GatewayTimeLayout)
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
	MerchantID        *string                    `json:"merchant_id"`
	State             *string                    `json:"state"`
	Version           json.RawMessage            `json:"version"`
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
	if err := decodeObject(data, &raw, paymentEventFields); err != nil {
		return PaymentEvent{}, fmt.Errorf("payment event: %w", err)
	}
	ev, err := raw.validate()
	if err != nil {
		return PaymentEvent{}, fmt.Errorf("payment event: %w", err)
	}
	return ev, nil
}

func (raw *rawPaymentEvent) validate() (_ PaymentEvent, err error) {
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
	if ev.MerchantID, err = merchantID(raw.MerchantID); err != nil {
		return ev, err
	}
	ev.MerchantID = MerchantOf(ev.MerchantID)
	if raw.State == nil {
		return ev, invalid("state", "is required")
	}
	if !ev.State.Valid() {
		return ev, invalid("state", "unknown state %q", truncate(string(ev.State), 32))
	}
	if len(raw.Version) > 0 && string(raw.Version) != "null" {
		v, ok := positiveInt(string(raw.Version))
		if !ok {
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
	if string(raw.Language) == `"ar"` ||
		(bytes.IndexByte(raw.Language, '\\') >= 0 && json.Unmarshal(raw.Language, &lang) == nil && Language(lang) == LanguageAR) {
		ev.Language = LanguageAR
	}
	if raw.Notifications != nil {
		ev.Notifications = make(map[Channel][]State, len(raw.Notifications))
		// Unknown channels are ignored like unknown fields: a newer gateway
		// may offer channels notifyd does not send on. A known channel's
		// list must be an array (null is not the empty list).
		for _, ch := range Channels {
			name := string(ch)
			list, ok := raw.Notifications[name]
			if !ok {
				continue
			}
			states, ok := plainStrings(list)
			if !ok && (json.Unmarshal(list, &states) != nil || states == nil) {
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
	MerchantID  *string  `json:"merchant_id"`
	Channels    []string `json:"channels"`
	RequestedAt *string  `json:"requested_at"`
	RequestedBy *string  `json:"requested_by"`
	Force       *bool    `json:"force"`
}

// MaxRequestedByLength bounds requested_by, which is echoed into results.
const MaxRequestedByLength = 256

// DecodeCommand decodes and validates a resend command. Errors wrap
// ErrNotJSON or are a *ValidationError naming the field.
func DecodeCommand(data []byte) (ResendCommand, error) {
	var raw rawCommand
	if err := decodeObject(data, &raw, commandFields); err != nil {
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
		Force:       raw.Force != nil && *raw.Force,
	}
	if err := checkID("command_id", cmd.CommandID, true); err != nil {
		return cmd, err
	}
	if strings.IndexFunc(cmd.CommandID, unicode.IsControl) >= 0 {
		// It goes into headers (the webhook's Idempotency-Key), where a
		// control character makes the request invalid.
		return cmd, invalid("command_id", "holds a control character")
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
	var err error
	if cmd.MerchantID, err = merchantID(raw.MerchantID); err != nil {
		return cmd, err
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
		if _, err := parseDateTime(cmd.RequestedAt); err != nil {
			return cmd, invalid("requested_at", "must be an RFC 3339 timestamp")
		}
	}
	if n := utf8.RuneCountInString(cmd.RequestedBy); n > MaxRequestedByLength {
		return cmd, invalid("requested_by", "is %d characters, at most %d allowed", n, MaxRequestedByLength)
	}
	return cmd, nil
}

// merchantID checks an optional merchant_id member: null or absent is "".
func merchantID(p *string) (string, error) {
	if p == nil {
		return "", nil
	}
	if !ValidMerchantID(*p) {
		return "", invalid("merchant_id", "must be 1 to %d of A-Z, a-z, 0-9, '.', '_' and '-'", MaxMerchantIDLength)
	}
	return *p, nil
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

// positiveInt returns the value of the JSON number lit if it is an integer
// from 1 to math.MaxInt64, whatever its spelling: 1.0, 1e2 and 10e-1 are
// integers to JSON Schema, so they are here.
func positiveInt(lit string) (int64, bool) {
	if lit == "" || lit[0] == '-' || lit[0] < '0' || lit[0] > '9' {
		return 0, false
	}
	mant, exp := lit, int64(0)
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		mant = lit[:i]
		e, err := strconv.ParseInt(lit[i+1:], 10, 64)
		// A nonzero value with so large an exponent is a fraction or
		// too big, whatever the length of its mantissa.
		if err != nil || e > 1<<40 || e < -1<<40 {
			return 0, false
		}
		exp = e
	}
	whole, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(whole+frac, "0")
	exp -= int64(len(frac))
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	digits = trimmed
	if digits == "" || exp < 0 || int64(len(digits))+exp > 19 {
		return 0, false
	}
	v, err := strconv.ParseInt(digits+strings.Repeat("0", int(exp)), 10, 64)
	return v, err == nil
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}
