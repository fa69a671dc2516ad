package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/notifyd/notifyd/schemas"
)

// TestOpenAPIDeliveryResultIsTheContract: the delivery result embedded in
// failure answers is described by a copy of the delivery-result schema;
// the copy must not drift from schemas/json/delivery-result.json.
func TestOpenAPIDeliveryResultIsTheContract(t *testing.T) {
	var doc struct {
		OpenAPI    string `json:"openapi"`
		Components struct {
			Schemas map[string]map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q", doc.OpenAPI)
	}
	b, err := schemas.Schema(schemas.SchemaDeliveryResult)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	delete(want, "$schema")
	delete(want, "$id")
	if got := doc.Components.Schemas["DeliveryResult"]; !reflect.DeepEqual(got, want) {
		t.Error("components.schemas.DeliveryResult of api/openapi.json differs from schemas/json/delivery-result.json: copy it again (without $schema and $id)")
	}
}

// TestOpenAPIAnswersValidate: the answers the code builds validate against
// the document's schemas (the integration tests check the live ones).
func TestOpenAPIAnswersValidate(t *testing.T) {
	c := jsonschema.NewCompiler()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(OpenAPI()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("https://notifyd.dev/openapi.json", doc); err != nil {
		t.Fatal(err)
	}
	compile := func(name string) *jsonschema.Schema {
		s, err := c.Compile("https://notifyd.dev/openapi.json#/components/schemas/" + name)
		if err != nil {
			t.Fatalf("compile %s: %v", name, err)
		}
		return s
	}
	paid := schemas.StatePaid
	res := schemas.DeliveryResult{ResultID: "r", CommandID: "c", SessionID: "s1", State: &paid, Outcome: schemas.OutcomeNotNotified,
		Message: "m", Channels: []schemas.ChannelResult{{Channel: "sms", Status: schemas.StatusFailed, Reason: schemas.ReasonProviderUnavailable, Attempts: 3}}}
	raw, _ := json.Marshal(res)
	for _, tc := range []struct {
		schema string
		body   any
	}{
		{"Notified", resultAnswer(notification{}, schemas.DeliveryResult{Outcome: schemas.OutcomeNotified}, nil).body},
		{"Failed", resultAnswer(notification{SessionID: "s1"}, res, raw).body},
		{"FieldErrors", fieldErrors{"channels": {msgRequired}}},
		{"Detail", detail{msgNoCredentials}},
	} {
		b, _ := json.Marshal(tc.body)
		v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err := compile(tc.schema).Validate(v); err != nil {
			t.Errorf("%s: %s does not validate: %v", tc.schema, b, err)
		}
	}
}
