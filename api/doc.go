// Package api is notifyd's HTTP side: for merchants, the payment gateway's
// Message Notifications endpoint, POST /b/pbl/v2/message-notification/,
// with the gateway's request and answer shapes, described by the OpenAPI
// 3.1 document openapi.json (served at /b/pbl/v2/openapi.json); for
// support staff, the operator console under /console/ (console.go, its
// templates and CSS embedded from console/).
//
// # Shape
//
// One door: routes.go is the table of api.listen, every route of the
// merchant API (server.go), the console (console.go) and the receipt
// callbacks (callbacks.go) by method and pattern in one http.ServeMux,
// behind one chain written once in middleware.go: the request id and the
// access line, the metrics, the panic guard, then the route's own
// authentication (admit for API keys and users, signedIn for console
// sessions, the provider's signature for callbacks). Bulk recoveries are
// published by their own component (recovery.go), stopped with the
// server. cmd/notifyd's ops.go is the table of http.listen, behind the same
// panic guard (RecoverPanics).
//
// # Contract
//
//   - Every principal belongs to a merchant or to the platform (Principal,
//     Deps.Merchants for merchants' own keys and users): a merchant's
//     reaches its merchant's transactions, results, console pages and
//     recoveries only, and what it may not reach is answered as what does
//     not exist; its Idempotency-Keys are scoped to it (scopedCommandID).
//   - Kafka is reached only through small interfaces, Commands (publish
//     a resend command), Results (the first result of a command_id on the
//     results topic, and a registration woken when it arrives), Receipts,
//     SignOuts and ConsoleBackend, which cmd/notifyd wires to
//     consumer.Service. This package never imports consumer.
//   - A request is checked in one order, written once in Server.admit
//     (run by every merchant API route, apiRoute) and Server.readCommand
//     and Server.notify (notify.go): authentication (401), permission (403: a viewer may
//     only read; Role.MaySend is the one rule of roles, for the console
//     too), the client's rate limit (429), the method (405), the instance
//     serving (503), the Idempotency-Key, the body's size (413), type (415)
//     and fields (400); then a place
//     among the waiting requests (api.max_in_flight, else 503), the
//     registration for the result, the idempotency look-up, the publish,
//     and the wait (api.wait, else 202 with a Location to GET).
//   - The mapping from a delivery result to an HTTP answer has one home,
//     resultAnswer (answer.go); the rules of an Idempotency-Key (one
//     request in flight per key on an instance, and whether a key used
//     again names the same request) have one home, shared with the
//     consumer: internal/idempotency.
//   - Credentials: API keys are configured by the hex SHA-256 of the key and
//     compared in constant time; Basic users by a bcrypt hash. Neither a
//     key nor a password is ever logged, echoed or stored in clear; the
//     access log names the key or user.
//   - The console reads the projection, the history index and the
//     dispatcher's checks through ConsoleBackend (consumer.Service, wired by
//     cmd/notifyd) and publishes through Commands: the grid is computed by
//     the code that decides commands, never a copy. Its sessions are
//     HMAC-signed cookies naming the user and when they were opened; the
//     role is read from api.users at every request; a session opened at or
//     before the user's last sign-out, which every instance learns from
//     SignOuts (the console-sessions topic), is refused everywhere, and an
//     instance that cannot tell refuses them all. Password checks back off
//     after failures (signin.go). Every state-changing request is a POST that
//     http.CrossOriginProtection checks; viewers may not POST but to sign
//     out. Bulk recoveries are planned by projection.PlanRecovery, the one
//     home of their command_ids, shared with `notifyd recover`.
//   - Providers' delivery receipts arrive on /callbacks/<kind>
//     (callbacks.go), one route per kind that has a verifier
//     (Deps.Callbacks, dispatch.Registry.Receipts: twilio, meta, webhook):
//     each request is verified by its kind's dispatch.ReceiptVerifier
//     (constant-time signatures) before anything of it is used; a bad one
//     is 401 and publishes nothing; a verified one is handed to Receipts
//     (consumer.Service, wired by cmd/notifyd) with the provider accounts
//     its secret speaks for, and answered 200 only once recorded, 503
//     otherwise so that the provider tries again; one about a message
//     another account sent is 200 and changes nothing (foreign_message).
//   - Every body is read through readBody or formsOnly (bodies.go), within
//     its route's limit (the API 64 KiB, console forms 16 KiB, receipts
//     1 MiB): one declared larger is refused before a byte is read; only
//     the merchant API parses multipart.
//   - Bad input never reaches Kafka: it is answered 400/413/415 with the
//     gateway's field errors or a detail; a panic in any handler of
//     api.listen (API, console, callbacks, a receipt being recorded) is
//     answered 500 and logged (the fuzzer in scripts/api-fuzz checks there
//     are none).
package api
