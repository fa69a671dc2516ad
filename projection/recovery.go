package projection

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
	// BatchID names the recovery (its progress page, the correlation_id
	// of its commands); it is derived from the filter, whose window must
	// be closed (Until set) for it to mean the same thing twice.
	BatchID  string
	Commands []schemas.ResendCommand
	// Entries is how many needs-attention entries the commands cover.
	Entries int
}

// BatchID derives a recovery's batch id from its filter (channel, provider,
// reason and window; After and Limit aside).
func BatchID(f AttentionFilter) string {
	fields := []string{string(f.Channel), f.Provider, string(f.Reason), stamp(f.Since), stamp(f.Until)}
	if f.Merchant != "" {
		fields = append(fields, f.Merchant) // a platform-wide batch keeps the id it had before merchants
	}
	canon := strings.Join(fields, "\x00")
	sum := sha256.Sum256([]byte("notifyd-recovery-v1\x00" + canon))
	return hex.EncodeToString(sum[:6])
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// RecoveryCommandID is the command_id of the recovery of a transaction's
// failures (its needs-attention entries being recovered): derived from the
// session_id and from which failures (channel and the command_id of the
// failed attempt) it recovers, so that whoever confirms the recovery of
// the same failures, twice, at once, from the console or the CLI, with one
// filter or another that selects the same failures, publishes the same
// command_id, decided once: each customer gets one message per failure. A
// later failure of the same channel (the recovery's own send failing too)
// is another failure, recovered by another command. The form is
// "recover-<session_id>-<12 hex>", or "recover-<40 hex>" when the
// session_id would not fit 128 characters or holds a control character.
func RecoveryCommandID(sessionID string, failures []AttentionItem) string {
	parts := make([]string, 0, len(failures))
	for _, f := range failures {
		parts = append(parts, string(f.Channel)+":"+f.CommandID)
	}
	slices.Sort(parts)
	sum := sha256.Sum256([]byte(sessionID + "\x00" + strings.Join(parts, "\x00")))
	id := "recover-" + sessionID + "-" + hex.EncodeToString(sum[:6])
	if len(id) > schemas.MaxIDLength || strings.IndexFunc(sessionID, unicode.IsControl) >= 0 {
		id = "recover-" + hex.EncodeToString(sum[:20])
	}
	return id
}

// PlanRecovery plans the recovery of items (the entries f selects, as
// Attention lists them): one command per session_id, in the order of their
// newest entry, naming the session's channels among the items in the
// order of schemas.Channels, requested by requestedBy at requestedAt.
func PlanRecovery(f AttentionFilter, items []AttentionItem, requestedBy string, requestedAt time.Time) RecoveryPlan {
	p := RecoveryPlan{BatchID: BatchID(f)}
	var order []string
	failures := map[string][]AttentionItem{}
	for _, it := range items {
		if !f.Matches(it) {
			continue
		}
		p.Entries++
		if _, ok := failures[it.SessionID]; !ok {
			order = append(order, it.SessionID)
		}
		failures[it.SessionID] = append(failures[it.SessionID], it)
	}
	for _, sid := range order {
		cmd := schemas.ResendCommand{
			CommandID: RecoveryCommandID(sid, failures[sid]),
			SessionID: sid,
			// The transaction's own merchant: the command reaches it only.
			MerchantID:  failures[sid][0].MerchantID,
			RequestedBy: requestedBy,
			RequestedAt: requestedAt.UTC().Format(time.RFC3339),
		}
		for _, ch := range schemas.Channels {
			if slices.ContainsFunc(failures[sid], func(it AttentionItem) bool { return it.Channel == ch }) {
				cmd.Channels = append(cmd.Channels, ch)
			}
		}
		p.Commands = append(p.Commands, cmd)
	}
	return p
}

// String describes the plan in a line.
func (p RecoveryPlan) String() string {
	return fmt.Sprintf("recovery %s: %d command(s) for %d channel(s) needing attention", p.BatchID, len(p.Commands), p.Entries)
}

// ParseTime reads a time as the console's filters and `notifyd recover`
// take it (a recovery's window): RFC 3339, or a minute (or second) without a zone, in UTC.
func ParseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("want RFC 3339 or 2006-01-02T15:04 (UTC)")
}
