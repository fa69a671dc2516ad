// Package dispatch is notifyd's decision and sending part: given a resend
// command and the transaction it names, it decides which channels may be
// notified, renders the messages, sends them through providers with retries,
// and builds the one delivery result of the command. It knows nothing of
// Kafka: it reads the local projection of payment events through the small
// Transactions interface and returns schemas.DeliveryResult values for the
// caller to publish.
//
// # Resolving the transaction
//
// Dispatcher.Resolve finds the transaction a command names. Its Reason is ""
// when the command names exactly one known transaction; unknown_transaction
// when no identifier names a known transaction; identifier_mismatch when
// session_id and order_no are both given, at least one is known, and they do
// not name one and the same transaction. Resolve returns an error only when
// the store fails. Whole-command failures are turned into a result with
// Dispatcher.Failure: outcome not_notified, an empty channels list, the
// reason and detail.
//
// # Merchants
//
// A transaction's merchant decides the profile its decision uses
// (merchants.go): the platform's providers, templates and cooldown, with a
// merchant's own (SetMerchant) over them channel by channel and template
// cell by cell. A decision takes its profile when it starts and keeps it.
// A merchant's providers get their own limiters and breakers, built at its
// first decision; CheckMerchant builds them beforehand to refuse settings
// that cannot apply. A command with a merchant_id resolves only that
// merchant's transactions (Resolve); the answer for another merchant's is
// the answer for one that does not exist. LiveReceipts verifies receipts
// with the platform's provider secrets and every merchant's as they are.
//
// # Channel checks
//
// Dispatcher.Deliver checks each requested channel in this order and
// rejects it (status "rejected", attempts 0) with the first reason that
// applies:
//
//  1. state_not_supported: the channel matrix (Supports) has no such cell.
//     email and sms support created, paid, canceled, failed, expired,
//     authorized, voided, refunded and captured; whatsapp supports created,
//     paid, canceled, failed, expired and authorized; no channel supports
//     any other state.
//  2. channel_not_enabled: the channel is absent from the transaction's
//     notifications.
//  3. state_not_enabled: the channel's list lacks the state. An empty list
//     means every state the channel supports.
//  4. missing_contact: email needs customer_email, sms and whatsapp need
//     customer_phone.
//  5. invalid_contact: email must be a bare address that net/mail accepts
//     (ValidateEmail); phones must be valid E.164 numbers (ValidatePhone).
//  6. provider_not_configured: no Provider for the channel.
//  7. template_not_configured: no template for the channel and state in the
//     customer's language nor in en (or it failed to render).
//  8. message_too_long: the rendered message exceeds its channel's limits
//     (limits.go: MaxSMSCharacters, MaxEmailSubjectCharacters,
//     MaxEmailBodyBytes, MaxWhatsAppParamsCharacters), which the providers
//     would refuse.
//  9. cooldown_active: with Config.Cooldown (processing.cooldown) set, the
//     channel was sent for the transaction's current state less than the
//     cooldown ago, and the command has no force.
//
// Dispatcher.Check answers these nine checks for every channel of a
// transaction without sending (the console's grid): the same code.
//
// # Sending and retries
//
// The accepted channels are sent concurrently, one goroutine per channel;
// Deliver returns when all are done. Each channel follows its RetryPolicy:
// an attempt is bounded by attempt_timeout and by what is left of
// max_elapsed; after a transient error the next attempt waits an exponential
// backoff with full jitter (uniform in [0, min(max_backoff,
// initial_backoff*2^(n-1))]), or the provider's ProviderError.RetryAfter when
// that is longer. A permanent error (IsPermanent) is never retried and fails
// the channel with provider_rejected. The channel fails with
// provider_unavailable when max_attempts calls have failed, when the next
// wait would end beyond max_elapsed, or when ctx ends. A channel that was
// sent has status "sent", no reason, the provider's message id, and attempts
// = the calls made.
//
// DeliverGuarded also asks a Guard before every provider call (every
// attempt of every channel). Once it refuses, no further call is made and
// DeliverGuarded returns its error and no result: the caller may no longer
// decide the command (package consumer's guard is "this instance still owns
// the command's partition"), and a result with channels it was not allowed
// to try would be wrong.
//
// # Failover
//
// A channel has one or more Routes, tried in order: each with its own
// retry policy, rate limit and circuit breaker (BreakerPolicy). The next route is used
// when one ends provider_unavailable, its circuit is open, or it rejected
// the message for a fault of the account or sender (AccountFault); never
// when it rejected the recipient or the content, or when an answer may
// mean the message went out. The channel's result names the provider that
// sent (or the last one tried), providers_tried, the attempts of all, and
// a detail naming each route's failure.
//
// # Providers: the registry
//
// Registry (registry.go) is the one home of what a provider kind is: its
// name, the channels it sends on, the check of its block of
// ProviderConfig, its constructor and, for kinds whose receipts come back
// (twilio, meta, webhook), the ReceiptVerifier of its callback
// (receipts.go). NewRegistry holds the built-in kinds, each defined in
// its provider's file (console in provider.go, webhook.go, smtp.go,
// twilio.go, meta.go); Registry.Build makes a Route from a ProviderConfig
// value at run time. Neither cmd (configuration) nor api (callbacks)
// switches on kinds.
//
// # The result
//
// Channels appear in the order requested. recipient is the masked contact
// (MaskRecipient) whenever the transaction has the contact for the channel;
// provider is Provider.Name() for channels that were handed to a provider.
// The outcome is notified when every channel was sent, partially_notified
// when some were, not_notified when none were. The message is exactly
// schemas.MessageNotified when notified, otherwise a summary such as
// "Customer partially notified: sms sent; email failed (provider_unavailable)."
// (sent channels first, then the others, each in the order requested).
// session_id, order_no and state come from the transaction, requested_by and
// requested_at from the command, processed_at is Config.Now in UTC, and
// result_id is a new UUID.
//
// # What is never logged or reported
//
// Full contacts never appear in logs, in result details or in console
// output: only their masks (MaskEmail, MaskPhone). Details are short human
// texts; provider details come from ProviderError.Detail, which providers
// must keep free of contacts and secrets. The package logs one line per
// failed provider attempt (command_id, channel, masked recipient, provider,
// attempt, whether permanent, and the provider's error with any verbatim
// contact replaced by its mask); it never logs message bodies, rendered
// template parameters or credentials.
package dispatch
