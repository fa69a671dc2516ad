// Package projection is notifyd's local state: the view of every payment
// transaction derived from the payment-events topic, and the idempotency
// table (command_id -> delivery result) derived from the results topic.
//
// # Contract
//
// The state lives in an embedded on-disk key-value store (Pebble). Records of
// one topic partition are applied in one atomic batch that also records the
// next offset to read for that partition, so the state and its position in
// the log can never disagree: after a crash, a restart resumes from the
// stored offsets and replays at most the batches that were not yet written,
// which is harmless because applying a record twice gives the same state.
// An empty store starts every partition from the earliest offset and so
// rebuilds itself from the topics.
//
// A payment event is a snapshot: it replaces the stored view of its
// session_id. When both the stored snapshot and the new event carry a
// version, an event whose version is <= the stored one is ignored (stale).
// An event without a version applies in log order. A record with an empty
// value is a tombstone: the session_id, its order_no and its version are
// forgotten. A transaction belongs to one merchant (schemas.MerchantDefault
// when its events name none): an event for a stored session naming
// another merchant is refused (Options.Reject is told before the batch
// commits) and changes nothing. (merchant_id, order_no) -> session_id is
// last-writer-wins within a merchant: when a later transaction of the
// same merchant reuses an order_no, the order_no names the later one;
// another merchant's order_no is another key; a tombstone or a change of
// order_no removes a mapping only while it still points at that
// session_id.
//
// A session is stored as a head (version and order_no, a/<session_id>)
// and a snapshot (t/<session_id>, the decoded event in snapshot.go's
// binary form). Applying an event reads the head only when the session
// filter (sessionfilter.go) cannot rule out that the session is stored, so
// the cost of an event does not grow with the store. Neither changes an
// answer: the filter says "surely absent" only when the head read would
// have found nothing. Each transaction is also listed by the time of its
// latest event in its merchant's list (recent.go), and the heads and order index answer searches by the start
// of a session_id or order_no (Store.FindPrefix, bounded), for the
// console's find page.
//
// From the results topic the store also keeps a history index, the last
// send of each channel and state (processing.cooldown) and the correlation
// of provider message ids (history.go) and per-merchant counts of channel
// results by UTC day (counts.go: each command's answer counted once, so a
// duplicate's republished result or a replay adds nothing); from the
// deliveries topic, the
// furthest delivery status of each message (deliveries.go); from the
// console-sessions topic, when each console user's sessions last ended
// (sessions.go). All rebuild from their topics like the rest.
//
// Every write goes through one commit (Store.commit). A write that fails
// (Pebble's fatal commit error: a full disk, an I/O error) fails the store
// for good: Pebble cannot be written again in the process, so every later
// write is refused at once with ErrStoreFailed, a writer waiting behind the
// failed batch is answered at once, reads keep answering, nothing panics,
// Failed is closed and the failure is logged once with the operation, the
// file and the free space (failure.go). Errors are reported by operation
// (Options.OnError). Background flush and compaction errors are retried by
// Pebble and reported as "background".
//
// The package knows nothing of Kafka: callers (package consumer) fetch
// records and hand them over with their partition and offsets, and wait on
// the store (WaitEvents, WaitResults, Changed) for read-your-writes.
//
// It imports only its store and package schemas.
package projection
