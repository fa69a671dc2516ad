// Package consumer is notifyd's Kafka side: it follows the payment-events
// and results topics into the local projection, answers resend commands on
// a watermill Router, and publishes delivery results and dead letters. All
// Kafka I/O goes through github.com/segmentio/kafka-go; the watermill
// Publisher/Subscriber pair on top of it is in package wmkafka.
//
// # Contract
//
//   - The life of one command has one home, commandLifecycle (command.go):
//     decode, lock the command_id, wait for the projection, replay an
//     earlier answer, decide once, record, publish, ack. Read it there.
//   - The rule "a command_id is decided once" has one home, idempotency
//     (idempotency.go): the in-process lock (internal/idempotency's
//     in-flight rule, which the API follows too), the answer look-up, and
//     "the first result on the results topic is the answer".
//   - The hand-over of a partition between instances (rebalance, stop) is
//     wmkafka's Subscriber: a partition changes owner only after its claimed
//     commands finished or were given up undecided; commandLifecycle claims
//     (wmkafka.Claim) before every provider call and before recording.
//   - Start-up and stop have one home, runtime (runtime.go): start creates
//     or checks the topics, opens the store (rebuilding it when it is ahead
//     of the log), follows payment-events and results, then consumes
//     commands; stop undoes it in the order written in runtime.stopSteps.
//     What it has started reaches the Service's readers (the API's
//     adapters, readiness, the metrics) as one immutable snapshot
//     (running), published anew as each part starts and stops: no field
//     is mirrored under a lock.
//   - Config's defaults and checks have one home (config.go: Default*,
//     SetDefaults, Validate); cmd/notifyd maps its file onto Config.
//   - Every retry loop waits through internal/backoff (exponential, full
//     jitter, capped, context-aware).
//   - A provider's receipt becomes a delivery event in one place, receipts
//     (receipts.go): correlate from the store (waiting a bounded time for
//     the result), ignore a receipt about a message another provider
//     account sent (dispatch.ErrForeignReceipt), publish only a change of
//     the message's furthest status (schemas.DeliveryEvent.Moves),
//     acknowledged before returning; every instance follows the
//     deliveries topic into its store.
//   - Merchants' settings (merchants.go): every instance follows the
//     merchant-settings topic into its store, applies the stored settings
//     and reads the topic to its end before it consumes a command, then
//     applies each accepted record to the next decisions (the dispatcher)
//     and to the API's principals (Merchants); a record that cannot apply
//     is dead-lettered and the previous settings stay.
//   - Console sign-outs end sessions on every instance (sessions.go): an
//     end is published on the console-sessions topic and recorded here
//     before EndSessions returns; every instance follows the topic into
//     its store, and answers SessionsEnded (and reports ready) only once it
//     read the topic as far as it reached at start-up.
//
// # Bad input
//
// A command that is not a JSON object goes to the dead-letter topic (same
// key, the original bytes and headers, plus the headers error,
// original_topic, original_partition and original_offset). A JSON command
// that breaks the schema goes there too, and when it has a usable
// command_id it also gets an invalid_command result. A handler panic
// dead-letters its message (it would recur on every redelivery). A dead
// letter too large for its topic is written truncated (headers truncated,
// original_size, original_sha256); a dead letter that cannot be written is
// retried in place with backoff and reported by readiness and a metric,
// never redelivered in a loop (deadletter.go). Invalid payment events are
// skipped, logged and counted; they never stop the projection.
//
// Infrastructure failures (broker, store) are retried in place with
// backoff, then nack the command; it is redelivered and, thanks to the
// replay step, answered with the same result. None is dead-lettered.
//
// # Disk full
//
//   - A decision the store cannot record (after its channels were sent) is
//     never decided again: it is published from memory, retried in place
//     holding its sending slot (commandLifecycle.unrecorded).
//   - A store that failed (projection.ErrStoreFailed) decides nothing more
//     and stops the service: Run returns the failure after the usual stop
//     (partitions handed over), and the binary exits with status 75.
//   - The free-space guard (diskguard.go) pauses the followers and new
//     commands below store.min_free_bytes, releasing the ballast, and
//     resumes by itself with hysteresis; readiness says so.
package consumer
