package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/notifyd/notifyd/schemas"
)

// notification is a decoded request body: the transaction and the channels.
type notification struct {
	SessionID string
	OrderNo   string
	// MerchantID names the merchant (merchant_id): a platform principal's
	// choice for an order_no; a merchant principal may name only its own.
	MerchantID string
	Channels   []schemas.Channel
	// Force sends despite processing.cooldown (the command's force).
	Force bool
}

// fieldErrors are validation errors by field, as the gateway's framework
// writes them: {"channels": ["This field is required."]}; the whole
// request's problems go under non_field_errors.
type fieldErrors map[string][]string

func (f fieldErrors) add(field, msg string) { f[field] = append(f[field], msg) }

// The gateway's messages, verbatim: clients match on them.
const (
	msgRequired    = "This field is required."
	msgTooLong     = "Ensure this field has no more than 128 characters."
	msgNotString   = "Not a valid string."
	msgNotList     = "Expected a list of items but got type %q."
	msgEmptyList   = "This list may not be empty."
	msgChoice      = "%q is not a valid choice."
	msgDuplicate   = "%q is listed more than once."
	msgProvideID   = "Provide session_id or order_no."
	msgNotObject   = "Invalid data. Expected a dictionary, but got %s."
	msgNotBoolean  = "Must be a valid boolean."
	msgMerchantID  = "Enter a valid merchant_id: 1 to 64 letters, digits, '.', '_' or '-'."
	fieldNonField  = "non_field_errors"
	maxEchoedValue = 64
)

// errUnsupportedMediaType is answered 415; errMalformed 400 with a detail.
var errUnsupportedMediaType = errors.New("unsupported media type")

type malformedError struct{ detail string }

func (e *malformedError) Error() string { return e.detail }

// decodeBody decodes a body of the given Content-Type into a notification,
// or returns field errors (400), *malformedError (400 with a detail) or
// errUnsupportedMediaType (415). Unknown fields are ignored.
func decodeBody(contentType string, body []byte) (notification, fieldErrors, error) {
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return notification{}, nil, errUnsupportedMediaType
	}
	switch mediaType {
	case "application/json":
		return decodeJSON(body)
	case "application/x-www-form-urlencoded":
		values, err := url.ParseQuery(string(body))
		if err != nil {
			return notification{}, nil, &malformedError{"Form parse error - " + err.Error()}
		}
		return decodeForm(values)
	case "multipart/form-data":
		boundary := params["boundary"]
		if boundary == "" {
			return notification{}, nil, &malformedError{"Multipart form parse error - Invalid boundary in multipart: None"}
		}
		form, err := multipart.NewReader(bytes.NewReader(body), boundary).ReadForm(MaxBodyBytes)
		if err != nil {
			return notification{}, nil, &malformedError{"Multipart form parse error - " + err.Error()}
		}
		defer form.RemoveAll()
		return decodeForm(form.Value)
	}
	return notification{}, nil, errUnsupportedMediaType
}

func decodeJSON(body []byte) (notification, fieldErrors, error) {
	if !utf8.Valid(body) {
		return notification{}, nil, &malformedError{"JSON parse error - invalid UTF-8"}
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return notification{}, nil, &malformedError{"JSON parse error - " + err.Error()}
	}
	if dec.More() {
		return notification{}, nil, &malformedError{"JSON parse error - data after the JSON value"}
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return notification{}, fieldErrors{fieldNonField: {fmt.Sprintf(msgNotObject, jsonTypeName(v))}}, nil
	}
	errs := fieldErrors{}
	var n notification
	n.SessionID = jsonID(obj, "session_id", errs)
	n.OrderNo = jsonID(obj, "order_no", errs)
	switch v := obj["merchant_id"].(type) {
	case nil:
	case string:
		n.MerchantID = merchantField(v, errs)
	default:
		errs.add("merchant_id", msgNotString)
	}
	switch v := obj["force"].(type) {
	case nil:
	case bool:
		n.Force = v
	default:
		errs.add("force", msgNotBoolean)
	}
	switch raw := obj["channels"].(type) {
	case nil:
		errs.add("channels", msgRequired)
	case []any:
		names := make([]string, 0, len(raw))
		for _, item := range raw {
			s, ok := item.(string)
			if !ok {
				// Never a channel: reported as a choice that is not valid.
				s = "\x00" + fmt.Sprint(item)
			}
			names = append(names, s)
		}
		n.Channels = channels(names, errs)
	default:
		errs.add("channels", fmt.Sprintf(msgNotList, jsonTypeName(raw)))
	}
	return n.check(errs)
}

// merchantField checks a merchant_id given in a request; "" is absent.
func merchantField(v string, errs fieldErrors) string {
	if v != "" && !schemas.ValidMerchantID(v) {
		errs.add("merchant_id", msgMerchantID)
		return ""
	}
	return v
}

// jsonID reads session_id or order_no: a string; null or "" mean absent.
func jsonID(obj map[string]any, field string, errs fieldErrors) string {
	switch v := obj[field].(type) {
	case nil:
		return ""
	case string:
		if utf8.RuneCountInString(v) > schemas.MaxIDLength {
			errs.add(field, msgTooLong)
		}
		return v
	default:
		errs.add(field, msgNotString)
		return ""
	}
}

func decodeForm(values map[string][]string) (notification, fieldErrors, error) {
	errs := fieldErrors{}
	last := func(field string) string {
		vs := values[field]
		if len(vs) == 0 {
			return ""
		}
		v := vs[len(vs)-1]
		if utf8.RuneCountInString(v) > schemas.MaxIDLength {
			errs.add(field, msgTooLong)
		}
		return v
	}
	n := notification{SessionID: last("session_id"), OrderNo: last("order_no")}
	if vs := values["merchant_id"]; len(vs) > 0 {
		n.MerchantID = merchantField(vs[len(vs)-1], errs)
	}
	if vs := values["force"]; len(vs) > 0 {
		switch vs[len(vs)-1] {
		case "true", "1":
			n.Force = true
		case "false", "0", "":
		default:
			errs.add("force", msgNotBoolean)
		}
	}
	if vs, ok := values["channels"]; !ok {
		errs.add("channels", msgRequired)
	} else {
		n.Channels = channels(vs, errs)
	}
	return n.check(errs)
}

// channels checks the channel names: each one of the channels, none
// twice, at least one.
func channels(names []string, errs fieldErrors) []schemas.Channel {
	var out []schemas.Channel
	for _, name := range names {
		ch := schemas.Channel(name)
		switch {
		case !ch.Valid():
			errs.add("channels", fmt.Sprintf(msgChoice, echo(strings.TrimPrefix(name, "\x00"))))
		case slices.Contains(out, ch):
			errs.add("channels", fmt.Sprintf(msgDuplicate, name))
		default:
			out = append(out, ch)
		}
	}
	if len(names) == 0 {
		errs.add("channels", msgEmptyList)
	}
	return out
}

// check adds the whole-request rule (an identifier is required) once the
// fields themselves are valid, as the gateway's framework does.
func (n notification) check(errs fieldErrors) (notification, fieldErrors, error) {
	if len(errs) > 0 {
		return n, errs, nil
	}
	if n.SessionID == "" && n.OrderNo == "" {
		return n, fieldErrors{fieldNonField: {msgProvideID}}, nil
	}
	return n, nil, nil
}

// echo shortens a value quoted back in an error.
func echo(s string) string {
	if utf8.RuneCountInString(s) <= maxEchoedValue {
		return s
	}
	r := []rune(s)
	return string(r[:maxEchoedValue]) + "…"
}

func jsonTypeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "bool"
	case json.Number:
		return "int"
	case string:
		return "str"
	case []any:
		return "list"
	case map[string]any:
		return "dict"
	}
	return fmt.Sprintf("%T", v)
}
