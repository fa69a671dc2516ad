// Package webhooks is the sending side of the webhooks notifyd posts to
// merchants (issue 26): what one delivery attempt is, independent of
// Kafka and of the store.
//
//   - A subscription's secret is the Standard Webhooks one: "whsec_" and
//     the base64 of 24 to 64 random bytes (ParseSecret, NewSecret).
//   - A message (Message) is one delivery result or one delivery event of
//     a merchant, posted as the JSON {"type", "timestamp", "data"} with the
//     headers webhook-id (the message's id, the same on every attempt, so
//     that a receiver drops a repeat), webhook-timestamp (Unix seconds of
//     the attempt) and webhook-signature ("v1," and the base64 HMAC-SHA256
//     of "id.timestamp.body" keyed with the secret's bytes), as the
//     Standard Webhooks specification writes them: receivers verify them
//     with its libraries.
//   - An attempt (Sender.Send) goes to the endpoint's URL only: redirects
//     are not followed, the request carries no credential of notifyd's
//     (no header but Content-Type, User-Agent and the three above), and
//     the connection is refused, after DNS resolution and at connect time,
//     to any address that is not public (loopback, private, shared,
//     link-local and the cloud metadata address, multicast, unspecified,
//     IPv6 unique-local; IPv4-mapped forms included) and to http URLs,
//     unless AllowPrivate (webhooks.allow_private, for tests and
//     on-premises receivers) allows both.
//   - Its outcome (Attempt) is Delivered on a 2xx; Retry on 408, 429, 5xx,
//     a time-out or a connection that failed (honouring Retry-After); Final
//     on any other status (a 3xx included: the answer is not followed).
//   - The schedule of retries (Schedule) is Svix's: immediately, then 5 s,
//     5 min, 30 min, 2 h, 5 h, 10 h and 10 h after the previous attempt; a
//     Retry-After longer than the schedule's wait is honoured, up to the
//     longest wait of the schedule.
//   - The Engine delivers to each endpoint on its own: a queue bounded in
//     memory (Config.QueueSize; beyond it deliveries wait in the journal),
//     at most Config.PerEndpoint attempts in flight, its own schedule, so a
//     slow or dead endpoint delays no other (BenchmarkEndpointIsolation).
//     Every delivery is recorded in a Journal before it is queued, and
//     every schedule step before it is waited on, so a restart resumes
//     each schedule where it was (Engine.Resume); a message an endpoint
//     already has, pending or finished, is not delivered again. An outcome
//     the journal could not record is made again (at least once, never
//     lost). An endpoint failing for Config.DisableAfter (5 days) is
//     disabled: its deliveries are finished "endpoint disabled" without an
//     attempt until its settings change.
//
// Nothing here logs, and no error holds the endpoint's URL (it may carry a
// token in its path or query) or the secret.
package webhooks
