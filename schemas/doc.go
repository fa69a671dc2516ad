// Package schemas is notifyd's message contract: the JSON Schemas (draft
// 2020-12) of the payment event, the resend command and the delivery result,
// embedded in the binary; the Go types that mirror them; the decoders that
// validate incoming values; and example messages that the tests check
// against the schemas.
//
// Decoders accept exactly what the schemas accept (the tests hold them to
// that): unknown fields are ignored, wrong types, missing required fields,
// unknown states or channels and over-long identifiers are rejected with a
// *ValidationError naming the field, and values that are not JSON objects
// wrap ErrNotJSON. Two normalisations happen on decode and are stated in the
// schemas' descriptions: language other than "ar" becomes "en", and the
// gateway's "2006-01-02 15:04:05" timestamps are read as UTC.
//
// This package imports nothing else of notifyd's.
package schemas
