package schemas

import "time"

// SessionEnd is a record of the console-sessions topic
// (kafka.topics.console_sessions, compacted, keyed by username): every
// console session of Username opened at or before EndedAt is over, on
// every instance. The latest EndedAt of a user is the one that counts.
type SessionEnd struct {
	Username string    `json:"username"`
	EndedAt  time.Time `json:"ended_at"`
	// Reason is SessionSignedOut.
	Reason string `json:"reason,omitempty"`
}

// SessionSignedOut is the reason of a SessionEnd published when the user
// signs out.
const SessionSignedOut = "signed_out"

// Valid reports whether the record names a user and a time.
func (e SessionEnd) Valid() bool { return e.Username != "" && !e.EndedAt.IsZero() }
