package projection

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/notifyd/notifyd/schemas"
)

// RecoveryPlan is a bulk resend of the channels that need attention under
// a filter: one command per transaction, for the channels of it the filter
// selected. The console and `notifyd recover` plan it here, so both give
// the same command_ids.
type RecoveryPlan struct {
	// BatchID is derived from the filter: the same recovery confirmed
	// twice, by one operator or two at once, from the console or the CLI,
	// has the same BatchID and so the same command_ids, and each customer
	// gets one message (the second command of a command_id is answered
	// with the first one's result). Recovering again after the recovery's
	// own sends failed needs another filter (a later window).
	BatchID  string
	Commands []schemas.ResendCommand
	// Entries is how many needs-attention entries the commands cover.
	Entries int
}

// BatchID derives a recovery's batch id from its filter (channel, provider,
// reason and window; After and Limit aside).
func BatchID(f AttentionFilter) string {
	canon := strings.Join([]string{string(f.Channel), f.Provider, string(f.Reason), stamp(f.Since), stamp(f.Until)}, "\x00")
	sum := sha256.Sum256([]byte("notifyd-recovery-v1\x00" + canon))
	return hex.EncodeToString(sum[:6])
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// RecoveryCommandID is the command_id of a recovery batch's command for a
// transaction: "recover-<batch>-<session_id>", or with the session_id's
// SHA-256 (hex) when it would not fit 128 characters or holds a control
// character.
func RecoveryCommandID(batchID, sessionID string) string {
	id := "recover-" + batchID + "-" + sessionID
	if len(id) > schemas.MaxIDLength || strings.IndexFunc(sessionID, unicode.IsControl) >= 0 {
		sum := sha256.Sum256([]byte(sessionID))
		id = "recover-" + batchID + "-" + hex.EncodeToString(sum[:20])
	}
	return id
}

// PlanRecovery plans the recovery of items (the entries f selects, as
// Attention lists them): one command per session_id, in the order of their
// newest entry, naming the session's channels among the items in the
// order of schemas.Channels, requested by requestedBy at requestedAt.
func PlanRecovery(f AttentionFilter, items []AttentionItem, requestedBy string, requestedAt time.Time) RecoveryPlan {
	p := RecoveryPlan{BatchID: BatchID(f)}
	index := map[string]int{}
	channels := map[string][]schemas.Channel{}
	for _, it := range items {
		if !f.Matches(it) {
			continue
		}
		p.Entries++
		if _, ok := index[it.SessionID]; !ok {
			index[it.SessionID] = len(p.Commands)
			p.Commands = append(p.Commands, schemas.ResendCommand{
				CommandID:   RecoveryCommandID(p.BatchID, it.SessionID),
				SessionID:   it.SessionID,
				RequestedBy: requestedBy,
				RequestedAt: requestedAt.UTC().Format(time.RFC3339),
			})
		}
		if !slices.Contains(channels[it.SessionID], it.Channel) {
			channels[it.SessionID] = append(channels[it.SessionID], it.Channel)
		}
	}
	for i := range p.Commands {
		have := channels[p.Commands[i].SessionID]
		for _, ch := range schemas.Channels {
			if slices.Contains(have, ch) {
				p.Commands[i].Channels = append(p.Commands[i].Channels, ch)
			}
		}
	}
	return p
}

// String describes the plan in a line.
func (p RecoveryPlan) String() string {
	return fmt.Sprintf("recovery %s: %d command(s) for %d channel(s) needing attention", p.BatchID, len(p.Commands), p.Entries)
}
