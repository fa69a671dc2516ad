// Package schemas is notifyd's message contract: the JSON Schemas (draft
// 2020-12) of the payment event, the resend command and the delivery result;
// the Go types that mirror them; the decoders that validate incoming values;
// and example messages that the tests check against the schemas.
//
// The schemas are the files json/payment-event.json, json/resend-command.json
// and json/delivery-result.json, embedded in the binary: Schema returns one
// by name (SchemaNames lists the names) and each has the $id
// https://notifyd.dev/schemas/<name>.json. examples/ holds valid messages
// named <schema>.<case>.json and examples/invalid/ messages each schema must
// reject.
//
// Decoders accept exactly what the schemas accept (the tests and fuzz tests
// hold them to that, for JSON text in UTF-8): member names match exactly and
// the last of duplicate members counts; unknown members are ignored; null in
// an optional member means absent; wrong types, missing required members,
// unknown states or channels and over-long identifiers are rejected with a
// *ValidationError naming the field; and values that are not JSON objects (or
// not UTF-8) wrap ErrNotJSON. A null or empty payment-events value is a
// tombstone, which neither the schema nor DecodePaymentEvent handles.
//
// Timestamps are read strictly, by the same patterns the schemas carry: RFC
// 3339 with upper-case T and Z, two-digit hours, no leap second, offsets up to
// ±23:59 and years 0001 to 9998, and for the payment event's timestamp_utc
// also the gateway's "2006-01-02 15:04:05" form. Two normalisations happen on
// decode and are stated in the schemas' descriptions: language other than
// "ar" becomes "en", and gateway timestamps are read as UTC.
//
// A DeliveryResult marshals its nil Channels as [], as its schema requires.
//
// Merchants: merchant_id (ValidMerchantID) is an optional member of payment
// events, commands, results and delivery events; a payment event decoded
// without one is MerchantDefault's. A merchant's settings, the value of a
// merchant-settings record, are json/merchant-settings.json and
// DecodeMerchantSettings, which unlike the others refuses unknown members
// (a misspelt key must not be ignored) and every provider secret that is
// not sealed ({"sealed": "v1:…"}).
//
// This package imports nothing else of notifyd's.
package schemas
