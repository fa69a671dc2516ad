package schemas

import (
	"embed"
	"fmt"
	"sort"
	"strings"
)

// The names of the embedded JSON Schemas, as Schema takes them. Each schema
// is the file json/<name>.json and has the $id
// https://notifyd.dev/schemas/<name>.json.
const (
	SchemaPaymentEvent   = "payment-event"
	SchemaResendCommand  = "resend-command"
	SchemaDeliveryResult = "delivery-result"
	SchemaDeliveryEvent  = "delivery-event"
	SchemaSessionEnd     = "session-end"
)

// SchemaIDPrefix is the start of every embedded schema's $id, which ends
// with the schema's name and ".json".
const SchemaIDPrefix = "https://notifyd.dev/schemas/"

//go:embed json/*.json
var schemaFiles embed.FS

// SchemaNames returns the names of the embedded schemas, sorted.
func SchemaNames() []string {
	entries, err := schemaFiles.ReadDir("json")
	if err != nil {
		panic("schemas: embedded json directory: " + err.Error()) // cannot happen: embedded
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok && !e.IsDir() {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// Schema returns a copy of the JSON Schema (draft 2020-12) named name: one
// of SchemaNames. An unknown name is an error that lists the valid ones.
func Schema(name string) ([]byte, error) {
	names := SchemaNames()
	for _, n := range names {
		if n == name {
			return schemaFiles.ReadFile("json/" + name + ".json")
		}
	}
	return nil, fmt.Errorf("unknown schema %q: valid names are %s", name, strings.Join(names, ", "))
}
