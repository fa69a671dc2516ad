// Package wmkafka is a watermill Publisher and Subscriber for Kafka, written on segmentio/kafka-go, for
// notifyd's command handling (a watermill Router consumes commands and publishes results through it).
//
// # Delivery contract
//
// Publishing is synchronous and at-least-once. Publish returns nil only once every record is acknowledged
// by all in-sync replicas. On an error, any subset of the records may have been written, and a retry can
// duplicate them. Records are partitioned by key with the Java client's murmur2 partitioner. Within one
// Publish call, records for the same partition are written in argument order.
//
// Consuming is at-least-once, through a consumer group (SubscriberConfig.GroupID):
//
//   - Records with different keys are handed out concurrently, up to SubscriberConfig.Concurrency unacked
//     messages. Records with the same key (same partition) are handed out strictly one after the other in
//     offset order: the next one only after the previous one was acked. Null and empty keys count as key ""
//     of their partition, so keyless records of a partition are processed one at a time, in order.
//   - Ack marks a record done. Offsets are committed per partition, every CommitInterval and on close, up to
//     the lowest unfinished offset only: a crash redelivers everything not acked, plus what was acked since
//     the last commit.
//   - Nack redelivers the same record (same UUID, payload and metadata, new *message.Message) after
//     NackResendSleep, before any later record with the same key.
//   - After a rebalance, messages in flight and messages acked since the last commit may be delivered again,
//     to this member or to another one. The application's idempotency (for instance keyed on Message.UUID,
//     which is stable across redeliveries) must absorb duplicates.
//   - Closing (Subscriber.Close or cancelling Subscribe's context) stops fetching, waits up to CloseTimeout
//     for the messages in flight to be acked, commits, leaves the group and closes the channel. It is
//     bounded (see Subscribe) and leaves no goroutine behind once kafka-go's reader has finished closing.
//
// Each Subscribe call is a separate group member with its own kafka.Reader. Several Subscribe calls on one
// Subscriber (one GroupID) are members of the same group and rebalance together.
//
// # Metadata and headers
//
// Received messages carry the transport metadata (MetadataKey, MetadataTopic, MetadataPartition,
// MetadataOffset, MetadataTimestamp, MetadataHighWaterMark) and one metadata entry per record header.
// Publish writes every metadata entry as a header except the reserved "kafka." ones, and writes
// Message.UUID as the UUIDHeader header. A received message re-published unchanged therefore has the
// original key and headers, with these corner cases:
//   - headers are written sorted by key, so the original header order is not kept;
//   - a record with a repeated header key keeps only the last value;
//   - null and empty keys both read as "" and are re-published as null;
//   - received headers with the "kafka." prefix are dropped, because that namespace is reserved for
//     transport metadata;
//   - a record without UUIDHeader gets Message.UUID = UUIDv5(topic/partition/offset). The UUID is stable
//     across redeliveries, and a re-publish adds the header.
//
// # kafka-go traps, and what this package does about each
//
//  1. Writer.BatchTimeout defaults to 1s, and a synchronous WriteMessages waits for its batch, so every
//     Publish would take about a second. The default here is 1ms. Concurrent Publish calls share one
//     Writer; their records for the same partition join the current batch, and each partition has one
//     produce request in flight. kafka-go has no separate in-flight or concurrency setting.
//  2. Writer.RequiredAcks defaults to none (fire and forget). This package always uses kafka.RequireAll,
//     and the setting cannot be turned down.
//  3. The Writer's default balancer is round-robin, and kafka.Hash is FNV-1a, which is not what Java
//     producers use. This package uses kafka.Murmur2Balancer, so a key lands on the same partition as when
//     a Java (or librdkafka murmur2_random) producer writes it. Keyless records go to a random partition.
//  4. There is no idempotent producer, so a retried batch can be written twice. A batch that fails after
//     MaxAttempts does not stop later batches for the same partition, so records can be reordered around a
//     failed Publish. Callers see the error and retry; consumers deduplicate.
//  5. Cancelling WriteMessages's context does not cancel the write: records can still be written after
//     Publish returned an error. This is the same at-least-once case as above. For this reason message
//     contexts are not used for publishing; WriteTimeout bounds each call instead.
//  6. The Reader has no rebalance hooks. The subscription notices that a partition restarts from an offset
//     not above the last one fetched (the partition was moved away and back, or a new generation re-read
//     the committed offset) and resets that partition's tracking. Records waiting for their key's turn are
//     dropped, since they are being fetched again. Acks of records handed out before the reset no longer
//     move the committed offset, but those records keep their key's turn until acked, so one key is never
//     processed twice at the same time in this process. A partition that moved away for good cannot be
//     detected: records already fetched for it are still delivered here, duplicating the new owner's work.
//     kafka-go itself drops buffered records of a previous generation.
//  7. Reader.ReadMessage commits before the message is processed, and commits are per-message calls. The
//     subscription uses FetchMessage and its own commit loop, and calls kafka-go's synchronous
//     CommitMessages with the lowest unfinished offset per partition, so it knows whether each commit
//     succeeded. A commit issued while no generation is active stays queued in kafka-go and is applied with
//     the next generation. It can move the group's offset backward (more duplicates, never a skipped
//     record), because it only ever covers acked records.
//  8. Reader.Close waits for in-progress fetches, up to MaxWait (default 10s), and for an in-progress group
//     join or sync (up to RebalanceTimeout). Here MaxWait defaults to 250ms. The subscription waits for
//     Close for a bounded time only; after that the reader finishes closing in the background.
//  9. kafka-go's ConsumerGroup exits without LeaveGroup when it is closed right after a join or sync failed
//     with RebalanceInProgress, which happens to members closing while the group rebalances, as in a
//     rolling deploy. The coordinator keeps such a member until SessionTimeout and holds the next rebalance
//     for it, so the whole group stalls for up to 30s. The subscription records the member ID (from the
//     "joined group" call kafka-go makes to its Logger, the only place kafka-go exposes it) and sends its
//     own LeaveGroup on close.
//  10. Without WatchPartitionChanges the Reader never consumes partitions added to a topic until some
//     rebalance happens. It is enabled here (PartitionWatchInterval, default 5s).
//  11. When the committed offset has fallen below the log start (retention), the Reader silently skips ahead
//     to the first available offset. Those records are lost to the group; nothing can be done at this
//     level except monitoring lag.
//
// # Observability
//
// Subscriber.Stats returns, per subscription, the messages in flight and buffered, the group membership,
// and per partition the committed and committable offsets, the last fetched offset and the number of
// detected resets. It makes no broker round trip and does not compute lag.
package wmkafka
