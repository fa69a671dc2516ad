// Package consumer is notifyd's Kafka side: it follows the payment-events
// and results topics into the local projection, answers resend commands on
// a watermill Router, and publishes delivery results and dead letters. All
// Kafka I/O goes through github.com/segmentio/kafka-go; the watermill
// Publisher/Subscriber pair on top of it is in package wmkafka.
//
// # Flow of one command
//
//  1. The Subscriber hands the command to the Router (concurrently with
//     commands of other keys, in order with those of its key).
//  2. Middleware: CorrelationID, PoisonQueue (dead-letter topic, see below),
//     Retry (infrastructure errors, with backoff, up to a minute), Recoverer.
//  3. The handler reads the end offsets of payment-events and of the
//     results topic (one shared round trip for all commands arriving at
//     the same time) and waits until the store has applied both up to
//     them. The projection then reflects every payment event published
//     before the command arrived (read-your-writes across producers), and
//     the idempotency table every result published before it.
//  4. A command_id that already has a result is not dispatched again: the
//     stored result is published again, unchanged (same result_id).
//  5. A command older than processing.max_command_age by its Kafka
//     timestamp is answered command_expired.
//  6. The transaction is resolved; an unknown one is waited for until it
//     appears or processing.catch_up_wait has passed since the command
//     arrived, then answered unknown_transaction.
//  7. package dispatch decides and sends; the result is recorded in the
//     store, then published with acks from all in-sync replicas and
//     CloudEvents binary-mode headers; only then is the command acked, and
//     its offset committed once every lower offset of its partition is
//     acked too.
//
// Infrastructure failures (broker, store) are retried in place with
// backoff, then nack the command; it is redelivered and, thanks to step 4,
// answered with the same result.
//
// # Bad input
//
// A command that is not a JSON object goes to the dead-letter topic (same
// key, the original bytes and headers, plus the headers error,
// original_topic, original_partition and original_offset). A JSON command
// that breaks the schema goes there too, and when it has a usable
// command_id it also gets an invalid_command result. A handler panic
// dead-letters its message (it would recur on every redelivery). Invalid
// payment events are skipped, logged and counted; they never stop the
// projection.
//
// # Start-up and shutdown
//
// Service.Run creates missing topics (or checks them), opens the store,
// rebuilds it when it is ahead of the log (a recreated topic or another
// cluster), starts following every partition of payment-events and
// results from the stored offsets (the earliest offset for a new store),
// then starts the Router. On stop it stops fetching, lets in-flight
// commands finish within ShutdownTimeout, commits, stops following and
// closes the store.
package consumer
