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
// Consuming is at-least-once, through a consumer group (SubscriberConfig.GroupID), with a drained
// hand-over at every rebalance:
//
//   - Records with different keys are handed out concurrently, up to SubscriberConfig.Concurrency unacked
//     messages. Records with the same key (same partition) are handed out strictly one after the other in
//     offset order: the next one only after the previous one was acked. Null and empty keys count as key ""
//     of their partition, so keyless records of a partition are processed one at a time, in order.
//   - Ack marks a record done. Offsets are committed per partition, every CommitInterval and at every
//     hand-over, up to the lowest unfinished offset only: a crash redelivers everything not acked, plus what
//     was acked since the last commit.
//   - Nack redelivers the same record (same UUID, payload and metadata, new *message.Message) after
//     NackResendSleep, before any later record with the same key.
//   - Claim(msg) reserves the right to take an irreversible step for a message. A partition changes owner
//     only after its claimed messages finished (or the drain deadline gave up on them, cancelling their
//     contexts so that they can claim nothing more), and never while this member's lease says the group
//     coordinator may still count on it; so a handler that claims before each irreversible step never acts on
//     a record while another member acts on it too, except after a pause past the session timeout, for the
//     steps claimed before the pause (see Subscribe).
//   - After a rebalance, messages handed out but not claimed, and messages acked after the last commit
//     (behind an unfinished lower offset), are delivered again to the partition's next owner. The
//     application's idempotency (for instance keyed on Message.UUID, stable across redeliveries) absorbs
//     these duplicates; Claim makes sure they are never concurrent.
//   - Closing (Subscriber.Close or cancelling Subscribe's context) hands the partitions over the same way,
//     commits, leaves the group and closes the channel. It is bounded (see Subscribe) and leaves no
//     goroutine behind once kafka-go has finished closing.
//
// Each Subscribe call is a separate group member with its own kafka.ConsumerGroup. Several Subscribe calls
// on one Subscriber (one GroupID) are members of the same group and rebalance together.
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
//  6. The Reader has no rebalance hooks: records it had fetched for a partition that moved away are still
//     delivered while the new owner reads them too. So the Reader's group mode is not used. The
//     subscription drives kafka-go's ConsumerGroup itself and runs each generation as one function started
//     with Generation.Start: kafka-go rejoins the group only after every such function returned, so the end
//     of a generation is a barrier, and the function returns only after the hand-over (drain and commit).
//     Each assigned partition is read by its own kafka.Reader (no group) from the committed offset.
//  7. Commits go through Generation.CommitOffsets with the generation's ID and member ID, synchronously, so
//     the subscription knows whether each one succeeded, and a coordinator that no longer knows the
//     generation refuses it (which ends the lease at once). The coordinator accepts commits of the ending
//     generation while the group rebalances, which is when the hand-over commits.
//  8. kafka-go's Heartbeat responses of version 1 and later are decoded with their fields swapped
//     (segmentio/kafka-go#1371): the error code arrives as the throttle time and every heartbeat looks
//     successful, even one of a member removed long ago. The lease's own heartbeats decode the error from
//     the throttle field (heartbeatError; TestHeartbeatErrors fails once kafka-go is fixed). kafka-go's own
//     heartbeat loop uses its older Conn encoding, which is right. LeaveGroup responses have the same
//     swap; their errors only change a log line here.
//  9. kafka-go's ConsumerGroup exits without LeaveGroup when it is closed right after a join or sync failed
//     with RebalanceInProgress, which happens to members closing while the group rebalances, as in a
//     rolling deploy, and its Close waits for a join in progress (up to RebalanceTimeout). The coordinator
//     keeps such a member until SessionTimeout and holds the next rebalance for it, so the whole group
//     stalls for up to 30s. The subscription records the member ID (from the "joined group" call kafka-go
//     makes to its Logger: the only place kafka-go exposes the ID before a generation exists) and sends its
//     own LeaveGroup on close.
//  10. Without WatchPartitionChanges the group never consumes partitions added to a topic until some
//     rebalance happens. It is enabled here (PartitionWatchInterval, default 5s).
//  11. When the committed offset has fallen below the log start (retention), a partition reader fails with
//     OffsetOutOfRange; the subscription resumes at the earliest offset and logs it as an error (those
//     records are lost to the group).
//  12. kafka-go's heartbeat interval defaults to 3s, which is also how long a member takes to notice a
//     rebalance. The default here is 1s.
//
// # Observability
//
// Subscriber.Stats returns, per subscription, the messages in flight and buffered, the group membership,
// the hand-overs (how many, how long the last one took, the messages given up unclaimed or at the
// deadline), the refused claims, and per partition the committed and committable offsets and the last
// fetched offset. It makes no broker round trip and does not compute lag.
package wmkafka
