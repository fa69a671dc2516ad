// Command notifyd resends payment notifications: it follows payment-state
// events into a local projection, answers resend commands from Kafka and
// publishes one delivery result per command; it also serves the payment
// gateway's Message Notifications HTTP endpoint (package api), which it
// wires to Kafka here.
//
// Usage:
//
//	notifyd [serve] [-config FILE]     run the service (the default)
//	notifyd resend -session-id X | -order-no Y -channels sms,email [-wait 30s]
//	notifyd publish -topic T           produce JSON lines from stdin
//	notifyd tail                       follow the results topic
//	notifyd schema NAME                print a JSON Schema
//	notifyd api-key NAME               print a new HTTP API key and its api.keys line
//
// serve's parts (the embedded broker, http.listen, the consumer service,
// the API) are the steps of one app (app.go): started in order, stopped in
// reverse, each within its budget. The configuration file is mapped onto
// each package's Config here; the defaults and checks are the packages'
// (consumer.Config.SetDefaults, api.Config, dispatch.Registry for the
// providers).
//
// Every subcommand reads the same configuration (-config FILE or the
// NOTIFYD_CONFIG environment variable); with none, notifyd runs on its
// embedded Kafka-protocol broker with console providers, and the HTTP API
// on 127.0.0.1:8000 with a key made at the first start.
package main
