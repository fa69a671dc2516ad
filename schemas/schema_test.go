package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// compiledSchemas holds the embedded schemas compiled twice: with format
// assertion and without (as most validators run draft 2020-12). The
// patterns must make the two agree.
type compiledSchemas struct {
	strict, lax map[string]*jsonschema.Schema
}

var compileOnce = sync.OnceValues(func() (compiledSchemas, error) {
	compile := func(assertFormat bool) (map[string]*jsonschema.Schema, error) {
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		if assertFormat {
			c.AssertFormat()
		}
		out := make(map[string]*jsonschema.Schema)
		for _, name := range SchemaNames() {
			b, err := Schema(name)
			if err != nil {
				return nil, err
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			id := SchemaIDPrefix + name + ".json"
			if err := c.AddResource(id, doc); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if out[name], err = c.Compile(id); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		return out, nil
	}
	var cs compiledSchemas
	var err error
	if cs.strict, err = compile(true); err != nil {
		return cs, err
	}
	cs.lax, err = compile(false)
	return cs, err
})

func schemas(t testing.TB) compiledSchemas {
	t.Helper()
	cs, err := compileOnce()
	if err != nil {
		t.Fatalf("compile schemas: %v", err)
	}
	return cs
}

// validate validates data against the named schema, with format assertion,
// and fails t if the schema without format assertion disagrees.
func validate(t testing.TB, name string, data []byte) error {
	t.Helper()
	cs := schemas(t)
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	strict := cs.strict[name].Validate(inst)
	if lax := cs.lax[name].Validate(inst); (strict == nil) != (lax == nil) {
		t.Fatalf("%s: format assertion changes the verdict on %s: with %v, without %v", name, data, strict, lax)
	}
	return strict
}

// decode runs the decoder of the named schema; a delivery result has none
// and is only unmarshalled.
func decode(name string, data []byte) error {
	switch name {
	case SchemaPaymentEvent:
		_, err := DecodePaymentEvent(data)
		return err
	case SchemaResendCommand:
		_, err := DecodeCommand(data)
		return err
	case SchemaMerchantSettings:
		_, err := DecodeMerchantSettings(data)
		return err
	default:
		var r DeliveryResult
		return json.Unmarshal(data, &r)
	}
}

func schemaDoc(t testing.TB, name string) map[string]any {
	t.Helper()
	b, err := Schema(name)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return doc
}

// at walks doc along keys (object members or array indexes).
func at(t testing.TB, doc any, keys ...any) any {
	t.Helper()
	v := doc
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not an object at %q", keys, k)
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				t.Fatalf("%v: no item %d", keys, k)
			}
			v = a[k]
		}
	}
	return v
}

func TestSchemaNames(t *testing.T) {
	want := []string{SchemaDeliveryEvent, SchemaDeliveryResult, SchemaMerchantSettings, SchemaPaymentEvent, SchemaResendCommand, SchemaSessionEnd}
	if got := SchemaNames(); !slices.Equal(got, want) {
		t.Fatalf("SchemaNames() = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "payment-event.json", "Payment-Event", "../doc", "json/payment-event"} {
		_, err := Schema(bad)
		if err == nil {
			t.Errorf("Schema(%q): no error", bad)
			continue
		}
		for _, n := range want {
			if !strings.Contains(err.Error(), n) {
				t.Errorf("Schema(%q) error %q does not list %q", bad, err, n)
			}
		}
	}
	a, _ := Schema(SchemaPaymentEvent)
	a[0] = 'x'
	if b, _ := Schema(SchemaPaymentEvent); b[0] == 'x' {
		t.Error("Schema returns the embedded bytes, not a copy")
	}
}

func TestSchemaDocuments(t *testing.T) {
	schemas(t) // they compile, so they are valid against the 2020-12 meta-schema
	for _, name := range SchemaNames() {
		doc := schemaDoc(t, name)
		if got, want := doc["$schema"], "https://json-schema.org/draft/2020-12/schema"; got != want {
			t.Errorf("%s: $schema = %v, want %s", name, got, want)
		}
		if got, want := doc["$id"], SchemaIDPrefix+name+".json"; got != want {
			t.Errorf("%s: $id = %v, want %s", name, got, want)
		}
		if _, ok := doc["description"].(string); !ok {
			t.Errorf("%s: no description", name)
		}
		// Every property of the message and of its nested objects and
		// items has a description; sub-schemas that only add constraints
		// (allOf, anyOf, if/then/else) need none.
		var walk func(path string, sch map[string]any)
		walk = func(path string, sch map[string]any) {
			if items, ok := sch["items"].(map[string]any); ok {
				walk(path+"/items", items)
			}
			props, _ := sch["properties"].(map[string]any)
			for p, ps := range props {
				sub := ps.(map[string]any)
				if d, _ := sub["description"].(string); d == "" {
					t.Errorf("%s: %s/properties/%s has no description", name, path, p)
				}
				walk(path+"/properties/"+p, sub)
			}
		}
		walk("", doc)
	}
}

// TestSchemasMatchGo holds the schemas to the Go constants and types they
// duplicate: enums, timestamp patterns and member names.
func TestSchemasMatchGo(t *testing.T) {
	strs := func(v any) []string {
		var out []string
		for _, x := range v.([]any) {
			if x != nil {
				out = append(out, x.(string))
			}
		}
		return out
	}
	asStrings := func(xs any) []string {
		var out []string
		rv := reflect.ValueOf(xs)
		for i := range rv.Len() {
			out = append(out, rv.Index(i).String())
		}
		return out
	}
	pe, rc, dr := schemaDoc(t, SchemaPaymentEvent), schemaDoc(t, SchemaResendCommand), schemaDoc(t, SchemaDeliveryResult)
	states, channels := asStrings(States), asStrings(Channels)
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"payment-event state", strs(at(t, pe, "properties", "state", "enum")), states},
		{"payment-event notifications email", strs(at(t, pe, "properties", "notifications", "properties", "email", "items", "enum")), states},
		{"payment-event timestamp_utc", at(t, pe, "properties", "timestamp_utc", "pattern"), timestampPattern},
		{"resend-command channels", strs(at(t, rc, "properties", "channels", "items", "enum")), channels},
		{"resend-command requested_at", at(t, rc, "properties", "requested_at", "anyOf", 1, "pattern"), dateTimePattern},
		{"delivery-result state", strs(at(t, dr, "properties", "state", "enum")), states},
		{"delivery-result requested_at", at(t, dr, "properties", "requested_at", "pattern"), dateTimePattern},
		{"delivery-result processed_at", at(t, dr, "properties", "processed_at", "pattern"), dateTimePattern},
		{"delivery-result outcome", strs(at(t, dr, "properties", "outcome", "enum")), []string{string(OutcomeNotified), string(OutcomePartiallyNotified), string(OutcomeNotNotified)}},
		{"delivery-result notified message", at(t, dr, "allOf", 1, "then", "properties", "message", "const"), MessageNotified},
		{"delivery-result reason", strs(at(t, dr, "properties", "reason", "enum")), asStrings(CommandReasons())},
		{"delivery-result channel reason", strs(at(t, dr, "properties", "channels", "items", "properties", "reason", "enum")), asStrings(append(RejectionReasons(), FailureReasons()...))},
		{"delivery-result channel", strs(at(t, dr, "properties", "channels", "items", "properties", "channel", "enum")), channels},
		{"delivery-result status", strs(at(t, dr, "properties", "channels", "items", "properties", "status", "enum")), asStrings([]ChannelStatus{StatusSent, StatusRejected, StatusFailed})},
		{"delivery-result id lengths", at(t, dr, "properties", "command_id", "maxLength"), float64(MaxIDLength)},
		{"resend-command requested_by length", at(t, rc, "properties", "requested_by", "maxLength"), float64(MaxRequestedByLength)},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: schema has %v, Go has %v", c.what, c.got, c.want)
		}
	}

	members := func(v any) []string {
		var out []string
		for k := range v.(map[string]any) {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	tags := func(v any) []string {
		var out []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			out = append(out, name)
		}
		sort.Strings(out)
		return out
	}
	for _, c := range []struct {
		what   string
		schema any
		typ    any
	}{
		{"PaymentEvent", at(t, pe, "properties"), PaymentEvent{}},
		{"rawPaymentEvent", at(t, pe, "properties"), rawPaymentEvent{}},
		{"ResendCommand", at(t, rc, "properties"), ResendCommand{}},
		{"rawCommand", at(t, rc, "properties"), rawCommand{}},
		{"DeliveryResult", at(t, dr, "properties"), DeliveryResult{}},
		{"ChannelResult", at(t, dr, "properties", "channels", "items", "properties"), ChannelResult{}},
	} {
		if got, want := tags(c.typ), members(c.schema); !slices.Equal(got, want) {
			t.Errorf("%s has members %v, its schema %v", c.what, got, want)
		}
	}
}

type example struct {
	file, schema string
	data         []byte
}

func examples(t testing.TB, dir string) []example {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []example
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		schema, _, _ := strings.Cut(filepath.Base(f), ".")
		if !slices.Contains(SchemaNames(), schema) {
			t.Fatalf("%s: no schema %q", f, schema)
		}
		out = append(out, example{file: f, schema: schema, data: data})
	}
	return out
}

func TestValidExamples(t *testing.T) {
	count := map[string]int{}
	for _, ex := range examples(t, "examples") {
		count[ex.schema]++
		t.Run(filepath.Base(ex.file), func(t *testing.T) {
			if err := validate(t, ex.schema, ex.data); err != nil {
				t.Fatalf("schema rejects it: %v", err)
			}
			switch ex.schema {
			case SchemaPaymentEvent, SchemaResendCommand, SchemaMerchantSettings:
				if err := decode(ex.schema, ex.data); err != nil {
					t.Fatalf("decoder rejects it: %v", err)
				}
			case SchemaDeliveryResult, SchemaDeliveryEvent, SchemaSessionEnd:
				dec := json.NewDecoder(bytes.NewReader(ex.data))
				dec.DisallowUnknownFields()
				var r any = &DeliveryResult{}
				switch ex.schema {
				case SchemaDeliveryEvent:
					r = &DeliveryEvent{}
				case SchemaSessionEnd:
					r = &SessionEnd{}
				}
				if err := dec.Decode(r); err != nil {
					t.Fatalf("unmarshal: %v", err)
				}
				out, err := json.Marshal(r)
				if err != nil {
					t.Fatalf("marshal: %v", err)
				}
				if err := validate(t, ex.schema, out); err != nil {
					t.Fatalf("re-marshalled result breaks the schema: %v\n%s", err, out)
				}
				var a, b any
				_ = json.Unmarshal(ex.data, &a)
				_ = json.Unmarshal(out, &b)
				if !reflect.DeepEqual(a, b) {
					t.Errorf("round trip changed the result:\n in: %s\nout: %s", ex.data, out)
				}
			}
		})
	}
	for _, name := range SchemaNames() {
		if count[name] < 4 {
			t.Errorf("%s: %d valid examples, want at least 4", name, count[name])
		}
	}
}

func TestInvalidExamples(t *testing.T) {
	count := map[string]int{}
	for _, ex := range examples(t, filepath.Join("examples", "invalid")) {
		count[ex.schema]++
		t.Run(filepath.Base(ex.file), func(t *testing.T) {
			if err := validate(t, ex.schema, ex.data); err == nil {
				t.Error("schema accepts it")
			}
			if ex.schema == SchemaDeliveryResult || ex.schema == SchemaDeliveryEvent || ex.schema == SchemaSessionEnd {
				return // notifyd writes these; it has no decoder for them
			}
			err := decode(ex.schema, ex.data)
			if err == nil {
				t.Fatal("decoder accepts it")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) && !errors.Is(err, ErrNotJSON) {
				t.Errorf("decoder error %v is neither a *ValidationError nor ErrNotJSON", err)
			}
		})
	}
	for _, name := range SchemaNames() {
		if count[name] < 4 {
			t.Errorf("%s: %d invalid examples, want at least 4", name, count[name])
		}
	}
}

// notJSON as an agreement case's field means the decoder's error wraps
// ErrNotJSON.
const notJSON = "(not JSON)"

type agreementCase struct {
	name   string
	schema string
	input  string
	field  string // "" when both accept, else the decoder's ValidationError.Field or notJSON
}

func event(extra string) string {
	s := `{"event_id":"evt-1","session_id":"ps-1","state":"paid","timestamp_utc":"2023-11-02T09:00:07Z"`
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

func eventAt(ts string) string {
	return `{"event_id":"evt-1","session_id":"ps-1","state":"paid","timestamp_utc":` + ts + `}`
}

func command(extra string) string {
	s := `{"command_id":"cmd-1","session_id":"ps-1","channels":["email"]`
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

func rep(s string, n int) string { return `"` + strings.Repeat(s, n) + `"` }

var agreementCases = []agreementCase{
	// payment events: identifiers
	{"minimal event", SchemaPaymentEvent, event(""), ""},
	{"event_id number", SchemaPaymentEvent, `{"event_id":17,"session_id":"ps-1","state":"paid","timestamp_utc":"2023-11-02T09:00:07Z"}`, "event_id"},
	{"event_id empty", SchemaPaymentEvent, `{"event_id":"","session_id":"ps-1","state":"paid","timestamp_utc":"2023-11-02T09:00:07Z"}`, "event_id"},
	{"event_id null", SchemaPaymentEvent, `{"event_id":null,"session_id":"ps-1","state":"paid","timestamp_utc":"2023-11-02T09:00:07Z"}`, "event_id"},
	{"session_id 128 two-byte chars", SchemaPaymentEvent, `{"event_id":"e","session_id":` + rep("é", 128) + `,"state":"paid","timestamp_utc":"2023-11-02T09:00:07Z"}`, ""},
	{"session_id 129 two-byte chars", SchemaPaymentEvent, `{"event_id":"e","session_id":` + rep("é", 129) + `,"state":"paid","timestamp_utc":"2023-11-02T09:00:07Z"}`, "session_id"},
	{"event_id 129 escaped chars", SchemaPaymentEvent, `{"event_id":` + rep(`\u00e9`, 129) + `,"session_id":"s","state":"paid","timestamp_utc":"2023-11-02T09:00:07Z"}`, "event_id"},
	{"order_no 128 four-byte chars", SchemaPaymentEvent, event(`"order_no":` + rep("🧾", 128)), ""},
	{"order_no 129 three-byte chars", SchemaPaymentEvent, event(`"order_no":` + rep("日", 129)), "order_no"},
	{"order_no empty", SchemaPaymentEvent, event(`"order_no":""`), ""},
	{"order_no null", SchemaPaymentEvent, event(`"order_no":null`), ""},
	{"order_no number", SchemaPaymentEvent, event(`"order_no":100245`), "order_no"},
	// member names are exact; the last duplicate wins
	{"upper-case EVENT_ID only", SchemaPaymentEvent, `{"EVENT_ID":"e","session_id":"s","state":"paid","timestamp_utc":"2023-11-02T09:00:07Z"}`, "event_id"},
	{"long-s ſtate only", SchemaPaymentEvent, `{"event_id":"e","session_id":"s","ſtate":"paid","timestamp_utc":"2023-11-02T09:00:07Z"}`, "state"},
	{"State beside state", SchemaPaymentEvent, event(`"State":"bogus"`), ""},
	{"duplicate state, bad last", SchemaPaymentEvent, event(`"state":"bogus"`), "state"},
	{"duplicate state, good last", SchemaPaymentEvent, `{"state":"bogus","event_id":"e","session_id":"s","state":"paid","timestamp_utc":"2023-11-02T09:00:07Z"}`, ""},
	{"escaped member name", SchemaPaymentEvent, `{"event\u005fid":"e","session_id":"s","state":"paid","timestamp_utc":"2023-11-02T09:00:07Z"}`, ""},
	// state
	{"unknown state", SchemaPaymentEvent, event(`"state":"settled"`), "state"},
	{"upper-case state", SchemaPaymentEvent, event(`"state":"PAID"`), "state"},
	{"state missing", SchemaPaymentEvent, `{"event_id":"e","session_id":"s","timestamp_utc":"2023-11-02T09:00:07Z"}`, "state"},
	{"state null", SchemaPaymentEvent, event(`"state":null`), "state"},
	// version
	{"version 0", SchemaPaymentEvent, event(`"version":0`), "version"},
	{"version -1", SchemaPaymentEvent, event(`"version":-1`), "version"},
	{"version 1.5", SchemaPaymentEvent, event(`"version":1.5`), "version"},
	{"version 1.0", SchemaPaymentEvent, event(`"version":1.0`), ""},
	{"version 1e2", SchemaPaymentEvent, event(`"version":1e2`), ""},
	{"version 25E-1", SchemaPaymentEvent, event(`"version":25E-1`), "version"},
	{"version 0.1e1", SchemaPaymentEvent, event(`"version":0.1e1`), ""},
	{"version string", SchemaPaymentEvent, event(`"version":"2"`), "version"},
	{"version max int64", SchemaPaymentEvent, event(`"version":9223372036854775807`), ""},
	{"version max int64 + 1", SchemaPaymentEvent, event(`"version":9223372036854775808`), "version"},
	{"version 1e400", SchemaPaymentEvent, event(`"version":1e400`), "version"},
	{"version null", SchemaPaymentEvent, event(`"version":null`), ""},
	// timestamp_utc
	{"gateway timestamp", SchemaPaymentEvent, eventAt(`"2023-11-02 09:00:07"`), ""},
	{"gateway timestamp with fraction", SchemaPaymentEvent, eventAt(`"2023-11-02 09:00:07.250"`), ""},
	{"offset timestamp with fraction", SchemaPaymentEvent, eventAt(`"2023-11-02T12:00:07.123456789123+03:00"`), ""},
	{"timestamp without offset", SchemaPaymentEvent, eventAt(`"2023-11-02T09:00:07"`), "timestamp_utc"},
	{"gateway timestamp with offset", SchemaPaymentEvent, eventAt(`"2023-11-02 09:00:07Z"`), "timestamp_utc"},
	{"one-digit hour", SchemaPaymentEvent, eventAt(`"2023-11-02T9:00:07Z"`), "timestamp_utc"},
	{"gateway one-digit hour", SchemaPaymentEvent, eventAt(`"2023-11-02 9:00:07"`), "timestamp_utc"},
	{"comma fraction", SchemaPaymentEvent, eventAt(`"2023-11-02T09:00:07,5Z"`), "timestamp_utc"},
	{"leap second", SchemaPaymentEvent, eventAt(`"2016-12-31T23:59:60Z"`), "timestamp_utc"},
	{"offset +24:00", SchemaPaymentEvent, eventAt(`"2023-11-02T09:00:07+24:00"`), "timestamp_utc"},
	{"lower-case t and z", SchemaPaymentEvent, eventAt(`"2023-11-02t09:00:07z"`), "timestamp_utc"},
	{"29 February 2024", SchemaPaymentEvent, eventAt(`"2024-02-29 00:00:00"`), ""},
	{"29 February 2000", SchemaPaymentEvent, eventAt(`"2000-02-29T00:00:00Z"`), ""},
	{"29 February 2100", SchemaPaymentEvent, eventAt(`"2100-02-29T00:00:00Z"`), "timestamp_utc"},
	{"31 April", SchemaPaymentEvent, eventAt(`"2023-04-31 10:00:00"`), "timestamp_utc"},
	{"year 0000", SchemaPaymentEvent, eventAt(`"0000-01-01T00:00:00+01:00"`), "timestamp_utc"},
	{"year 9999", SchemaPaymentEvent, eventAt(`"9999-12-31T23:00:00-05:00"`), "timestamp_utc"},
	{"unix seconds", SchemaPaymentEvent, eventAt(`1698915607`), "timestamp_utc"},
	{"timestamp null", SchemaPaymentEvent, eventAt(`null`), "timestamp_utc"},
	// amount, language, strings
	{"amount number", SchemaPaymentEvent, event(`"amount":249.90`), ""},
	{"amount huge number", SchemaPaymentEvent, event(`"amount":1e400`), ""},
	{"amount object", SchemaPaymentEvent, event(`"amount":{"value":"1"}`), "amount"},
	{"amount true", SchemaPaymentEvent, event(`"amount":true`), "amount"},
	{"language number", SchemaPaymentEvent, event(`"language":5`), ""},
	{"language object", SchemaPaymentEvent, event(`"language":{"code":"ar"}`), ""},
	{"customer_email number", SchemaPaymentEvent, event(`"customer_email":5`), "customer_email"},
	{"customer_phone array", SchemaPaymentEvent, event(`"customer_phone":["+966500000001"]`), "customer_phone"},
	{"merchant_id", SchemaPaymentEvent, event(`"merchant_id":"acme.stores_2-KW"`), ""},
	{"merchant_id null", SchemaPaymentEvent, event(`"merchant_id":null`), ""},
	{"merchant_id 64", SchemaPaymentEvent, event(`"merchant_id":"` + strings.Repeat("m", 64) + `"`), ""},
	{"merchant_id 65", SchemaPaymentEvent, event(`"merchant_id":"` + strings.Repeat("m", 65) + `"`), "merchant_id"},
	{"merchant_id empty", SchemaPaymentEvent, event(`"merchant_id":""`), "merchant_id"},
	{"merchant_id slash", SchemaPaymentEvent, event(`"merchant_id":"acme/b"`), "merchant_id"},
	{"merchant_id colon", SchemaPaymentEvent, event(`"merchant_id":"acme:b"`), "merchant_id"},
	{"merchant_id space", SchemaPaymentEvent, event(`"merchant_id":"acme b"`), "merchant_id"},
	{"merchant_id non-ASCII letter", SchemaPaymentEvent, event(`"merchant_id":"acmé"`), "merchant_id"},
	{"merchant_id trailing newline", SchemaPaymentEvent, event(`"merchant_id":"acme\n"`), "merchant_id"},
	{"merchant_id number", SchemaPaymentEvent, event(`"merchant_id":7`), "merchant_id"},
	{"unknown fields", SchemaPaymentEvent, event(`"gateway":{"id":1},"tags":[1,"x",null],"x":null`), ""},
	// notifications
	{"notifications unknown channel", SchemaPaymentEvent, event(`"notifications":{"push":["whatever"],"telegram":7}`), ""},
	{"notifications Email channel", SchemaPaymentEvent, event(`"notifications":{"Email":"x"}`), ""},
	{"notifications empty list", SchemaPaymentEvent, event(`"notifications":{"email":[]}`), ""},
	{"notifications empty object", SchemaPaymentEvent, event(`"notifications":{}`), ""},
	{"notifications null", SchemaPaymentEvent, event(`"notifications":null`), ""},
	{"notifications array", SchemaPaymentEvent, event(`"notifications":["email"]`), "notifications"},
	{"notifications null list", SchemaPaymentEvent, event(`"notifications":{"email":null}`), "notifications.email"},
	{"notifications string list", SchemaPaymentEvent, event(`"notifications":{"sms":"paid"}`), "notifications.sms"},
	{"notifications unknown state", SchemaPaymentEvent, event(`"notifications":{"whatsapp":["paid","shipped"]}`), "notifications.whatsapp"},
	{"notifications null state", SchemaPaymentEvent, event(`"notifications":{"whatsapp":[null]}`), "notifications.whatsapp"},
	{"notifications duplicate states", SchemaPaymentEvent, event(`"notifications":{"email":["paid","paid"]}`), ""},
	// not objects
	{"array", SchemaPaymentEvent, `[]`, notJSON},
	{"string", SchemaPaymentEvent, `"paid"`, notJSON},
	{"null", SchemaPaymentEvent, `null`, notJSON},
	{"trailing garbage", SchemaPaymentEvent, event("") + "x", notJSON},
	{"JSON white space around", SchemaPaymentEvent, " \t\r\n" + event("") + "\n", ""},
	{"no-break space before", SchemaPaymentEvent, "\u00a0" + event(""), notJSON},

	// resend commands
	{"minimal command", SchemaResendCommand, command(""), ""},
	{"order_no only", SchemaResendCommand, `{"command_id":"c","order_no":"o","channels":["sms"]}`, ""},
	{"no identifier", SchemaResendCommand, `{"command_id":"c","channels":["sms"]}`, "session_id"},
	{"empty identifiers", SchemaResendCommand, `{"command_id":"c","session_id":"","order_no":"","channels":["sms"]}`, "session_id"},
	{"null session_id, order_no", SchemaResendCommand, `{"command_id":"c","session_id":null,"order_no":"o","channels":["sms"]}`, ""},
	{"empty session_id, order_no", SchemaResendCommand, `{"command_id":"c","session_id":"","order_no":"o","channels":["sms"]}`, ""},
	{"session_id number", SchemaResendCommand, `{"command_id":"c","session_id":5,"order_no":"o","channels":["sms"]}`, "session_id"},
	{"command_id 128 euro signs", SchemaResendCommand, `{"command_id":` + rep("€", 128) + `,"session_id":"s","channels":["sms"]}`, ""},
	{"command_id 129 euro signs", SchemaResendCommand, `{"command_id":` + rep("€", 129) + `,"session_id":"s","channels":["sms"]}`, "command_id"},
	{"command_id 129 emoji", SchemaResendCommand, `{"command_id":` + rep("🔁", 129) + `,"session_id":"s","channels":["sms"]}`, "command_id"},
	{"command_id empty", SchemaResendCommand, `{"command_id":"","session_id":"s","channels":["sms"]}`, "command_id"},
	{"Command_ID", SchemaResendCommand, `{"Command_ID":"c","session_id":"s","channels":["sms"]}`, "command_id"},
	{"order_no 129 two-byte chars", SchemaResendCommand, command(`"order_no":` + rep("ø", 129)), "order_no"},
	{"duplicate channel", SchemaResendCommand, `{"command_id":"c","session_id":"s","channels":["sms","email","sms"]}`, "channels"},
	{"empty channels", SchemaResendCommand, `{"command_id":"c","session_id":"s","channels":[]}`, "channels"},
	{"channels missing", SchemaResendCommand, `{"command_id":"c","session_id":"s"}`, "channels"},
	{"channels null", SchemaResendCommand, `{"command_id":"c","session_id":"s","channels":null}`, "channels"},
	{"channels string", SchemaResendCommand, `{"command_id":"c","session_id":"s","channels":"email"}`, "channels"},
	{"channel number", SchemaResendCommand, `{"command_id":"c","session_id":"s","channels":[1]}`, "channels"},
	{"channel upper case", SchemaResendCommand, `{"command_id":"c","session_id":"s","channels":["EMAIL"]}`, "channels"},
	{"channel unknown", SchemaResendCommand, `{"command_id":"c","session_id":"s","channels":["push"]}`, "channels"},
	{"all channels", SchemaResendCommand, `{"command_id":"c","session_id":"s","channels":["whatsapp","sms","email"]}`, ""},
	{"requested_at RFC 3339", SchemaResendCommand, command(`"requested_at":"2023-11-02T12:05:00.5+03:00"`), ""},
	{"requested_at empty", SchemaResendCommand, command(`"requested_at":""`), ""},
	{"requested_at null", SchemaResendCommand, command(`"requested_at":null`), ""},
	{"requested_at gateway form", SchemaResendCommand, command(`"requested_at":"2023-11-02 09:05:00"`), "requested_at"},
	{"requested_at no offset", SchemaResendCommand, command(`"requested_at":"2023-11-02T09:05:00"`), "requested_at"},
	{"requested_at 30 February", SchemaResendCommand, command(`"requested_at":"2023-02-30T09:05:00Z"`), "requested_at"},
	{"requested_at number", SchemaResendCommand, command(`"requested_at":1698915900`), "requested_at"},
	{"requested_by 256 umlauts", SchemaResendCommand, command(`"requested_by":` + rep("ü", 256)), ""},
	{"requested_by 257 umlauts", SchemaResendCommand, command(`"requested_by":` + rep("ü", 257)), "requested_by"},
	{"command_id with a newline", SchemaResendCommand, `{"command_id":"c\nX-Evil: 1","session_id":"s","channels":["sms"]}`, "command_id"},
	{"command_id with a tab", SchemaResendCommand, `{"command_id":"c\t1","session_id":"s","channels":["sms"]}`, "command_id"},
	{"command_id with NUL", SchemaResendCommand, `{"command_id":"c\u0000","session_id":"s","channels":["sms"]}`, "command_id"},
	{"command_id with DEL", SchemaResendCommand, `{"command_id":"c\u007f","session_id":"s","channels":["sms"]}`, "command_id"},
	{"command_id with a C1 control", SchemaResendCommand, `{"command_id":"c\u0085","session_id":"s","channels":["sms"]}`, "command_id"},
	{"command_id with Arabic and spaces", SchemaResendCommand, `{"command_id":"طلب 1 / retry","session_id":"s","channels":["sms"]}`, ""},
	{"command merchant_id", SchemaResendCommand, command(`"merchant_id":"acme"`), ""},
	{"command merchant_id null", SchemaResendCommand, command(`"merchant_id":null`), ""},
	{"command merchant_id empty", SchemaResendCommand, command(`"merchant_id":""`), "merchant_id"},
	{"command merchant_id bad", SchemaResendCommand, command(`"merchant_id":"a*b"`), "merchant_id"},
	{"command merchant_id and no identifier", SchemaResendCommand, `{"command_id":"c","merchant_id":"a*b","channels":["sms"]}`, "session_id"},
	// merchant settings
	{"settings minimal", SchemaMerchantSettings, `{"merchant_id":"acme"}`, ""},
	{"settings no merchant_id", SchemaMerchantSettings, `{"display_name":"x"}`, "merchant_id"},
	{"settings merchant_id null", SchemaMerchantSettings, `{"merchant_id":null}`, "merchant_id"},
	{"settings unknown member", SchemaMerchantSettings, `{"merchant_id":"a","Display_Name":"x"}`, "Display_Name"},
	{"settings display_name 256", SchemaMerchantSettings, `{"merchant_id":"a","display_name":` + rep("ü", 256) + `}`, ""},
	{"settings display_name 257", SchemaMerchantSettings, `{"merchant_id":"a","display_name":` + rep("ü", 257) + `}`, "display_name"},
	{"settings cooldown 1h30m", SchemaMerchantSettings, `{"merchant_id":"a","cooldown":"1h30m"}`, ""},
	{"settings cooldown negative", SchemaMerchantSettings, `{"merchant_id":"a","cooldown":"-5m"}`, "cooldown"},
	{"settings cooldown number", SchemaMerchantSettings, `{"merchant_id":"a","cooldown":600}`, "cooldown"},
	{"settings rate_limit", SchemaMerchantSettings, `{"merchant_id":"a","api":{"rate_limit":{"per_second":0.5,"burst":2}}}`, ""},
	{"settings rate_limit zero", SchemaMerchantSettings, `{"merchant_id":"a","api":{"rate_limit":{"per_second":0}}}`, "api.rate_limit.per_second"},
	{"settings burst 1.0", SchemaMerchantSettings, `{"merchant_id":"a","api":{"rate_limit":{"per_second":1,"burst":1.0}}}`, ""},
	{"settings burst 2^31-1", SchemaMerchantSettings, `{"merchant_id":"a","api":{"rate_limit":{"per_second":1,"burst":2147483647}}}`, ""},
	{"settings burst 2^31", SchemaMerchantSettings, `{"merchant_id":"a","api":{"rate_limit":{"per_second":1,"burst":2147483648}}}`, "api.rate_limit.burst"},
	{"settings per_second a string", SchemaMerchantSettings, `{"merchant_id":"a","api":{"rate_limit":{"per_second":"5"}}}`, "api.rate_limit.per_second"},
	{"settings burst 1.5", SchemaMerchantSettings, `{"merchant_id":"a","api":{"rate_limit":{"per_second":1,"burst":1.5}}}`, "api.rate_limit.burst"},
	{"settings key upper-case hex", SchemaMerchantSettings, `{"merchant_id":"a","api":{"keys":[{"name":"k","sha256":"` + strings.Repeat("A", 64) + `"}]}}`, "api.keys[0].sha256"},
	{"settings key extra member", SchemaMerchantSettings, `{"merchant_id":"a","api":{"keys":[{"name":"k","sha256":"` + strings.Repeat("a", 64) + `","key":"x"}]}}`, "api.keys[0].key"},
	{"settings user with a colon", SchemaMerchantSettings, `{"merchant_id":"a","api":{"users":[{"username":"a:b","bcrypt":"$2a$10$` + strings.Repeat("a", 53) + `","role":"viewer"}]}}`, "api.users[0].username"},
	{"settings provider list", SchemaMerchantSettings, `{"merchant_id":"a","providers":{"sms":[{"kind":"console"},{"kind":"webhook","webhook":{"url":"https://x"}}]}}`, ""},
	{"settings provider empty list", SchemaMerchantSettings, `{"merchant_id":"a","providers":{"sms":[]}}`, "providers.sms"},
	{"settings provider without kind", SchemaMerchantSettings, `{"merchant_id":"a","providers":{"sms":{"twilio":{}}}}`, "providers.sms.kind"},
	{"settings secret in clear", SchemaMerchantSettings, `{"merchant_id":"a","providers":{"email":{"kind":"smtp","smtp":{"password":"p"}}}}`, "providers.email.smtp.password"},
	{"settings sealed secret", SchemaMerchantSettings, `{"merchant_id":"a","providers":{"email":{"kind":"smtp","smtp":{"password":{"sealed":"v1:0123abcd:AAAA"}}}}}`, ""},
	{"settings sealed with more", SchemaMerchantSettings, `{"merchant_id":"a","providers":{"email":{"kind":"smtp","smtp":{"password":{"sealed":"v1:0123abcd:AAAA","plain":"p"}}}}}`, "providers.email.smtp.password"},
	{"settings header in clear", SchemaMerchantSettings, `{"merchant_id":"a","providers":{"sms":[{"kind":"console"},{"kind":"webhook","webhook":{"headers":{"X-Key":"k"}}}]}}`, "providers.sms[1].webhook.headers.X-Key"},
	{"settings templates: a channel not an object after a good one", SchemaMerchantSettings, `{"merchant_id":"a","templates":{"email":{},"sms":"x"}}`, "templates.sms"},
	{"settings invalid UTF-8", SchemaMerchantSettings, "{\"merchant_id\":\"a\",\"display_name\":\"\xff\"}", notJSON},
	{"settings templates fax", SchemaMerchantSettings, `{"merchant_id":"a","templates":{"fax":{}}}`, "templates.fax"},
	{"settings not an object", SchemaMerchantSettings, `[]`, notJSON},
	{"command unknown fields", SchemaResendCommand, command(`"priority":"high","channels_extra":["fax"]`), ""},
	{"command array", SchemaResendCommand, `[{"command_id":"c"}]`, notJSON},
	{"command invalid UTF-8 in key", SchemaResendCommand, "{\"command_id\":\"c\",\"session_id\":\"s\",\"channels\":[\"sms\"],\"x\xff\":1}", notJSON},
}

// TestDecoderSchemaAgreement checks that decoder and schema accept and
// reject the same tricky inputs, and which field the decoder blames.
func TestDecoderSchemaAgreement(t *testing.T) {
	for _, c := range agreementCases {
		t.Run(c.name, func(t *testing.T) {
			data := []byte(c.input)
			serr := validate(t, c.schema, data)
			derr := decode(c.schema, data)
			if c.field == "" {
				if serr != nil {
					t.Errorf("schema rejects it: %v", serr)
				}
				if derr != nil {
					t.Errorf("decoder rejects it: %v", derr)
				}
				return
			}
			if serr == nil && utf8.Valid(data) {
				t.Errorf("schema accepts it")
			}
			if derr == nil {
				t.Fatalf("decoder accepts it")
			}
			if c.field == notJSON {
				if !errors.Is(derr, ErrNotJSON) {
					t.Errorf("decoder error %v does not wrap ErrNotJSON", derr)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(derr, &ve) {
				t.Fatalf("decoder error %v is not a *ValidationError", derr)
			}
			if ve.Field != c.field {
				t.Errorf("decoder blames %q (%v), want %q", ve.Field, derr, c.field)
			}
		})
	}
}

func TestDecodedValues(t *testing.T) {
	ev, err := DecodePaymentEvent([]byte(`{"EVENT_ID":"x","event_id":"e","session_id":"s","state":"paid","version":1e2,` +
		`"timestamp_utc":"2023-11-02 09:00:07.5","amount":249.90,"language":"ar","customer_email":" a@b.c ",` +
		`"notifications":{"email":[],"sms":["paid"],"push":["paid"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := PaymentEvent{
		EventID: "e", SessionID: "s", MerchantID: MerchantDefault, State: StatePaid, Version: 100,
		TimestampUTC: time.Date(2023, 11, 2, 9, 0, 7, 5e8, time.UTC), Amount: json.RawMessage(`249.90`),
		CustomerEmail: "a@b.c", Language: LanguageAR,
		Notifications: map[Channel][]State{ChannelEmail: {}, ChannelSMS: {StatePaid}},
	}
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("got  %+v\nwant %+v", ev, want)
	}
	if got := ev.AmountString(); got != "249.90" {
		t.Errorf("AmountString() = %q", got)
	}
	ts, err := ParseTimestamp("2023-11-02T12:00:07+03:00")
	if err != nil || !ts.Equal(time.Date(2023, 11, 2, 9, 0, 7, 0, time.UTC)) || ts.Location() != time.UTC {
		t.Errorf("ParseTimestamp = %v, %v", ts, err)
	}
	for _, lang := range []string{`"en"`, `"AR"`, `5`, `null`, `"fr"`} {
		ev, err := DecodePaymentEvent([]byte(event(`"language":` + lang)))
		if err != nil || ev.Language != LanguageEN {
			t.Errorf("language %s: %q, %v", lang, ev.Language, err)
		}
	}
}

// TestTimestampCalendar holds the patterns' calendar to Go's for every day
// of some years and every 29 February.
func TestTimestampCalendar(t *testing.T) {
	check := func(y, m, d int) {
		s := fmt.Sprintf("%04d-%02d-%02d 10:00:00", y, m, d)
		_, goErr := time.Parse(GatewayTimeLayout, s)
		goOK := goErr == nil && y >= 1 && y <= 9998
		if _, err := ParseTimestamp(s); (err == nil) != goOK {
			t.Errorf("ParseTimestamp(%q): %v, want ok=%v", s, err, goOK)
		}
		if _, err := parseDateTime(strings.Replace(s, " ", "T", 1) + "Z"); (err == nil) != goOK {
			t.Errorf("parseDateTime(%q): %v, want ok=%v", s, err, goOK)
		}
	}
	for y := 0; y <= 9999; y++ {
		check(y, 2, 28)
		check(y, 2, 29)
	}
	for _, y := range []int{1, 4, 100, 400, 1900, 1999, 2000, 2023, 2024, 2100, 9996, 9998} {
		for m := 0; m <= 13; m++ {
			for d := 0; d <= 32; d++ {
				check(y, m, d)
			}
		}
	}
}

func TestDeliveryResultMarshalsEmptyChannels(t *testing.T) {
	r := DeliveryResult{
		ResultID: "res-1", CommandID: "cmd-1", OrderNo: "ORD-9", Outcome: OutcomeNotNotified,
		Message: "Customer not notified.", Reason: ReasonUnknownTransaction, Detail: "no such order",
		ProcessedAt: time.Date(2023, 11, 2, 9, 0, 7, 0, time.UTC),
	}
	type wrapper struct {
		Result DeliveryResult  `json:"result"`
		Ptr    *DeliveryResult `json:"ptr"`
	}
	for _, v := range []any{r, &r, wrapper{r, &r}, []DeliveryResult{r}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(`null`)) != bytes.Contains(b, []byte(`"state":null`)) || !bytes.Contains(b, []byte(`"channels":[]`)) {
			t.Errorf("%T marshals as %s", v, b)
		}
	}
	b, _ := json.Marshal(r)
	if err := validate(t, SchemaDeliveryResult, b); err != nil {
		t.Errorf("%s: %v", b, err)
	}
	if r.Channels != nil {
		t.Error("MarshalJSON changed its receiver")
	}

	state := StatePaid
	r = DeliveryResult{
		ResultID: "res-2", CommandID: "cmd-2", SessionID: "ps-2", State: &state, Outcome: OutcomeNotified, Message: MessageNotified,
		Channels:    []ChannelResult{{Channel: ChannelEmail, Status: StatusSent, Recipient: "j***@example.com", Attempts: 1}},
		ProcessedAt: time.Date(2023, 11, 2, 9, 0, 7, 0, time.UTC),
	}
	b, _ = json.Marshal(r)
	if err := validate(t, SchemaDeliveryResult, b); err != nil {
		t.Errorf("%s: %v", b, err)
	}
	var back DeliveryResult
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

// fuzzSeeds adds the examples and agreement cases of schema to f.
func fuzzSeeds(f *testing.F, schema string) {
	for _, dir := range []string{"examples", filepath.Join("examples", "invalid")} {
		for _, ex := range examples(f, dir) {
			if ex.schema == schema {
				f.Add(ex.data)
			}
		}
	}
	for _, c := range agreementCases {
		if c.schema == schema {
			f.Add([]byte(c.input))
		}
	}
}

// fuzzAgreement checks one decoder outcome against the schema: no error but
// *ValidationError or ErrNotJSON; whatever the decoder accepts, the schema
// accepts; and, for valid UTF-8, whatever the schema accepts the decoder
// accepts (the decoder rejects invalid UTF-8, which a JSON parser may
// replace).
func fuzzAgreement(t *testing.T, schema string, data []byte, derr error) {
	if derr != nil {
		var ve *ValidationError
		if !errors.As(derr, &ve) && !errors.Is(derr, ErrNotJSON) {
			t.Fatalf("error %v is neither a *ValidationError nor ErrNotJSON", derr)
		}
	}
	serr := validate(t, schema, data)
	if derr == nil && serr != nil {
		t.Fatalf("decoder accepts what the schema rejects: %v\n%q", serr, data)
	}
	if derr != nil && serr == nil && utf8.Valid(data) {
		t.Fatalf("schema accepts what the decoder rejects: %v\n%q", derr, data)
	}
}

func FuzzDecodePaymentEvent(f *testing.F) {
	fuzzSeeds(f, SchemaPaymentEvent)
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodePaymentEvent(data)
		fuzzAgreement(t, SchemaPaymentEvent, data, err)
		if err == nil {
			if _, err := json.Marshal(ev); err != nil {
				t.Fatalf("accepted event does not marshal: %v\n%q", err, data)
			}
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	fuzzSeeds(f, SchemaResendCommand)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := DecodeCommand(data)
		fuzzAgreement(t, SchemaResendCommand, data, err)
	})
}

// TestDeliveryStatusAdvances is the furthest-status rule for receipts.
func TestDeliveryStatusAdvances(t *testing.T) {
	const none DeliveryStatus = ""
	for _, c := range []struct {
		from, next DeliveryStatus
		want       bool
	}{
		{none, DeliverySent, true},
		{none, DeliveryDelivered, true},
		{none, DeliveryRead, true},
		{none, DeliveryFailed, true},
		{none, DeliveryUndelivered, true},
		{DeliverySent, DeliverySent, false},
		{DeliverySent, DeliveryDelivered, true},
		{DeliverySent, DeliveryUndelivered, true},
		{DeliverySent, DeliveryFailed, true},
		{DeliveryDelivered, DeliverySent, false},
		{DeliveryDelivered, DeliveryRead, true},
		{DeliveryDelivered, DeliveryUndelivered, false},
		{DeliveryRead, DeliveryDelivered, false},
		{DeliveryRead, DeliveryFailed, false},
		{DeliveryUndelivered, DeliveryDelivered, false},
		{DeliveryUndelivered, DeliveryFailed, false},
		{DeliveryFailed, DeliveryRead, false},
		{DeliverySent, "opened", false},
	} {
		if got := c.from.Advances(c.next); got != c.want {
			t.Errorf("%q.Advances(%q) = %v, want %v", c.from, c.next, got, c.want)
		}
	}
}

// TestDeliveryEventMoves: the furthest-status rule between two events of
// one message, and the exception for an uncorrelated event from another
// sender, which does not hold back the correlated sender's receipts.
func TestDeliveryEventMoves(t *testing.T) {
	ev := func(provider, account, command string, st DeliveryStatus) DeliveryEvent {
		return DeliveryEvent{Provider: provider, ProviderAccount: account, CommandID: command, Status: st}
	}
	cases := []struct {
		name  string
		prev  DeliveryEvent
		found bool
		next  DeliveryEvent
		want  bool
	}{
		{"first event", DeliveryEvent{}, false, ev("twilio", "AC1", "c", DeliverySent), true},
		{"first, invalid status", DeliveryEvent{}, false, ev("twilio", "AC1", "c", "opened"), false},
		{"further", ev("twilio", "AC1", "c", DeliverySent), true, ev("twilio", "AC1", "c", DeliveryDelivered), true},
		{"repeat", ev("twilio", "AC1", "c", DeliveryDelivered), true, ev("twilio", "AC1", "c", DeliveryDelivered), false},
		{"back", ev("twilio", "AC1", "c", DeliveryRead), true, ev("twilio", "AC1", "c", DeliveryDelivered), false},
		{"uncorrelated claim of another kind", ev("webhook", "h.example", "", DeliveryRead), true, ev("twilio", "AC1", "c", DeliveryDelivered), true},
		{"uncorrelated claim of another account", ev("twilio", "AC2", "", DeliveryRead), true, ev("twilio", "AC1", "c", DeliveryDelivered), true},
		{"uncorrelated, the second of a chain is the same kind", ev("webhook", "", "", DeliveryRead), true, ev("webhook#2", "h.example", "c", DeliveryDelivered), false},
		{"uncorrelated from the same sender", ev("twilio", "AC1", "", DeliveryRead), true, ev("twilio", "AC1", "c", DeliveryDelivered), false},
		{"uncorrelated without account, same kind", ev("twilio", "", "", DeliveryRead), true, ev("twilio", "AC1", "c", DeliveryDelivered), false},
		{"correlated prev holds whatever the sender", ev("twilio", "AC1", "c", DeliveryRead), true, ev("webhook", "h.example", "c", DeliveryDelivered), false},
		{"two uncorrelated claims", ev("webhook", "a.example", "", DeliveryRead), true, ev("twilio", "AC1", "", DeliveryDelivered), false},
	}
	for _, c := range cases {
		if got := c.next.Moves(c.prev, c.found); got != c.want {
			t.Errorf("%s: Moves = %v, want %v", c.name, got, c.want)
		}
	}
	for name, want := range map[string]string{"twilio": "twilio", "webhook#2": "webhook", "": ""} {
		if got := ProviderKind(name); got != want {
			t.Errorf("ProviderKind(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestDecodeEdges pins the decoders' answers where their fast paths hand
// over to encoding/json, and their messages: escaped member names, channel
// names, values and states (a backslash first included, every item
// escaped), an object where a string belongs, a language written with
// escapes, lists of several items without spaces, a control character
// first in a command_id, an echoed value of exactly the echo limit, a
// field's error with and without its name, and a version whose exponent
// would make a number of a trillion digits.
func TestDecodeEdges(t *testing.T) {
	ev := func(fields string) []byte {
		return []byte(`{"event_id":"e","timestamp_utc":"2026-11-02T09:00:07Z",` + fields + `}`)
	}
	for _, c := range []struct {
		name, data string
		session    string
		lang       Language
		states     []State
		err        string
	}{
		{name: "an escaped member name", data: `"\u0073ession_id":"s1","state":"paid"`, session: "s1", lang: LanguageEN},
		{name: "a language with escapes", data: `"session_id":"s1","state":"paid","language":"\u0061r"`, session: "s1", lang: LanguageAR},
		{name: "en with escapes stays en", data: `"session_id":"s1","state":"paid","language":"\u0065n"`, session: "s1", lang: LanguageEN},
		{name: "states without spaces, one escaped", data: `"session_id":"s1","state":"paid","notifications":{"sms":["created","\u0070aid","failed"]}}`,
			session: "s1", lang: LanguageEN, states: []State{StateCreated, StatePaid, StateFailed}},
		{name: "states without spaces", data: `"session_id":"s1","state":"paid","notifications":{"sms":["created","paid"]}}`,
			session: "s1", lang: LanguageEN, states: []State{StateCreated, StatePaid}},
		{name: "states each escaped", data: `"session_id":"s1","state":"paid","notifications":{"sms":["\u0070aid","\u0066ailed"]}}`,
			session: "s1", lang: LanguageEN, states: []State{StatePaid, StateFailed}},
		{name: "an escaped channel name", data: `"session_id":"s1","state":"paid","notifications":{"\u0073ms":["paid"]}}`,
			session: "s1", lang: LanguageEN, states: []State{StatePaid}},
		{name: "an object for a string", data: `"session_id":{"a":"s1"},"state":"paid"`, err: "payment event: session_id: must be a string"},
		{name: "an unknown state of exactly 32 characters is echoed whole", data: `"session_id":"s1","state":"abcdefghijklmnopqrstuvwxyz012345"`,
			err: `payment event: state: unknown state "abcdefghijklmnopqrstuvwxyz012345"`},
		{name: "a short unknown state is echoed whole", data: `"session_id":"s1","state":"nope"`, err: `payment event: state: unknown state "nope"`},
		{name: "a longer one is cut", data: `"session_id":"s1","state":"abcdefghijklmnopqrstuvwxyz0123456"`,
			err: `payment event: state: unknown state "abcdefghijklmnopqrstuvwxyz012345…"`},
		{name: "a version of 2^40 zeros", data: `"session_id":"s1","state":"paid","version":1e1099511627776`, err: "payment event: version: "},
	} {
		data := ev(c.data)
		if strings.HasSuffix(c.data, "}}") {
			data = []byte(`{"event_id":"e","timestamp_utc":"2026-11-02T09:00:07Z",` + strings.TrimSuffix(c.data, "}") + `}`)
		}
		got, err := DecodePaymentEvent(data)
		switch {
		case c.err != "":
			if err == nil || !strings.HasPrefix(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.name, err, c.err)
			}
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case got.SessionID != c.session || got.Language != c.lang || !slices.Equal(got.Notifications[ChannelSMS], c.states):
			t.Errorf("%s: session %q, language %q, sms states %v", c.name, got.SessionID, got.Language, got.Notifications[ChannelSMS])
		}
	}
	for _, c := range []struct{ data, err string }{
		{`{"command_id":"c1","session_id":"s","channels":[1]}`, "resend command: channels: items must be a string, got number"},
		{`{"command_id":"c1","session_id":"s","channels":"sms"}`, "resend command: channels: must be an array, got string"},
		{`{"command_id":"\u0001c","session_id":"s","channels":["sms"]}`, "resend command: command_id: holds a control character"},
		{`{"command_id":"c\u0001","session_id":"s","channels":["sms"]}`, "resend command: command_id: holds a control character"},
	} {
		if _, err := DecodeCommand([]byte(c.data)); err == nil || err.Error() != c.err {
			t.Errorf("%s: error %v, want %q", c.data, err, c.err)
		}
	}
	if got := (&ValidationError{Problem: "not JSON"}).Error(); got != "not JSON" {
		t.Errorf("a message's own problem: %q", got)
	}
	if got := (&ValidationError{Field: "state", Problem: "unknown"}).Error(); got != "state: unknown" {
		t.Errorf("a field's problem: %q", got)
	}
}
