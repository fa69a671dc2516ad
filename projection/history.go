package projection

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/notifyd/notifyd/schemas"
)

// The history index, derived from the results topic like the idempotency
// table, so that every instance has it and it rebuilds from the log:
//
//	h/<session_id><newest-first time><command_id> -> command_id
//	    every first result of a command about a known transaction, newest
//	    first by processed_at: the transaction's history;
//	c/<session_id><channel> -> channelState
//	    the latest attempt to send each channel of a transaction (sent, or
//	    failed by the provider); a rejection (the checks refused the channel,
//	    nothing was tried) leaves it as it was;
//	n/<newest-first time><session_id><channel> -> AttentionItem
//	    the channels whose latest attempt failed with provider_unavailable or
//	    provider_rejected and that were not sent since, newest first: what
//	    needs attention. A later sent result removes the entry, and so
//	    does the transaction's deletion (a tombstone on payment-events);
//	s/<session_id><channel>\x00<state> -> processed_at (unix ns, BE64)
//	    when each channel was last sent for each state of a transaction:
//	    what processing.cooldown is checked against (LastSent);
//	x/<provider_message_id> -> Correlation (see deliveries.go).
//
// A receipt saying a channel's latest message was undelivered or failed
// adds a needs-attention entry too (deliveries.go).
//
// A session_id in a key is its length (uvarint) then its bytes. The time is
// processed_at, inverted so that byte order is newest first.
//
// A result applied again (a rebuild, a replay) writes the same entries; an
// older result arriving after a newer one for the same channel does not
// change the channel's state.
const (
	prefixHistory   = "h/"
	prefixChannel   = "c/"
	prefixAttention = "n/"
	prefixSent      = "s/"
	// keyHistoryVersion marks a store whose history index covers every
	// result it applied; a store without it re-reads the results topic.
	keyHistoryVersion = "m/history-version"
	historyVersion    = 3 // 2: the s/ entries; 3: the x/ entries (deliveries.go)
)

// channelState is the latest attempt of one channel of a transaction.
type channelState struct {
	ProcessedAt time.Time `json:"processed_at"`
	CommandID   string    `json:"command_id"`
	// Attention is the key of its needs-attention entry, when it has one.
	Attention []byte `json:"attention,omitempty"`
}

// AttentionItem is a channel whose latest attempt failed and that was not
// sent since: the provider failed (Reason), or the provider's receipt says
// the message was not delivered (Delivery undelivered or failed; Reason
// empty, ProcessedAt the receipt's occurred_at).
type AttentionItem struct {
	SessionID string `json:"session_id"`
	OrderNo   string `json:"order_no,omitempty"`
	// MerchantID is the transaction's merchant (empty in entries from
	// results published before merchants: the default's).
	MerchantID  string                 `json:"merchant_id,omitempty"`
	Channel     schemas.Channel        `json:"channel"`
	Reason      schemas.Reason         `json:"reason,omitempty"`
	Delivery    schemas.DeliveryStatus `json:"delivery,omitempty"`
	Provider    string                 `json:"provider,omitempty"`
	Detail      string                 `json:"detail,omitempty"`
	CommandID   string                 `json:"command_id"`
	RequestedBy string                 `json:"requested_by,omitempty"`
	ProcessedAt time.Time              `json:"processed_at"`
}

// needsAttention reports whether a channel result is a failure a resend may
// mend.
func needsAttention(c schemas.ChannelResult) bool {
	return c.Status == schemas.StatusFailed &&
		(c.Reason == schemas.ReasonProviderUnavailable || c.Reason == schemas.ReasonProviderRejected)
}

// newestFirst encodes t so that byte order is newest first.
func newestFirst(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(math.MaxInt64-t.UnixNano()))
}

// sessionPart is a session_id in an index key: its length (uvarint), then
// its bytes, so that no session_id is a key prefix of another's entries
// (a session_id may hold any character, NUL included).
func sessionPart(prefix, sessionID string) []byte {
	k := append([]byte(prefix), binary.AppendUvarint(nil, uint64(len(sessionID)))...)
	return append(k, sessionID...)
}

func historyKey(sessionID string, at time.Time, commandID string) []byte {
	return append(append(sessionPart(prefixHistory, sessionID), newestFirst(at)...), commandID...)
}

func channelKey(sessionID string, ch schemas.Channel) []byte {
	return append(sessionPart(prefixChannel, sessionID), ch...)
}

func sentKey(sessionID string, ch schemas.Channel, state schemas.State) []byte {
	k := append(sessionPart(prefixSent, sessionID), ch...)
	return append(append(k, 0), state...)
}

func attentionKey(at time.Time, sessionID string, ch schemas.Channel) []byte {
	k := append([]byte(prefixAttention), newestFirst(at)...)
	k = append(k, sessionPart("", sessionID)...)
	return append(k, ch...)
}

// forgetAttention drops what a deleted transaction (a tombstone) has in
// the index besides its history: its channels' states and its
// needs-attention entries, so that no recovery sends to it.
func forgetAttention(b *pebble.Batch, sessionID string) error {
	sent := sessionPart(prefixSent, sessionID)
	if err := b.DeleteRange(sent, append(bytes.Clone(sent), 0xff), nil); err != nil {
		return err
	}
	prefix := sessionPart(prefixChannel, sessionID)
	upper := append(bytes.Clone(prefix), 0xff)
	it, err := b.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return err
	}
	var dels [][]byte
	for it.First(); it.Valid(); it.Next() {
		var st channelState
		if json.Unmarshal(it.Value(), &st) == nil && st.Attention != nil {
			dels = append(dels, st.Attention)
		}
		dels = append(dels, bytes.Clone(it.Key()))
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, k := range dels {
		if err := b.Delete(k, nil); err != nil {
			return err
		}
	}
	return nil
}

// indexResult adds a delivery result, the first of its command on the
// topic, to the history index in batch b (an indexed batch: later results
// of the same batch see it).
func indexResult(b *pebble.Batch, r *schemas.DeliveryResult) error {
	if r.SessionID == "" || r.State == nil {
		return nil // not about a known transaction
	}
	if err := b.Set(historyKey(r.SessionID, r.ProcessedAt, r.CommandID), []byte(r.CommandID), nil); err != nil {
		return err
	}
	var sent []schemas.ChannelResult // indexed once their channel states are
	for _, c := range r.Channels {
		if c.Status == schemas.StatusSent {
			if err := noteSent(b, sentKey(r.SessionID, c.Channel, *r.State), r.ProcessedAt); err != nil {
				return err
			}
		}
		if c.Status == schemas.StatusSent {
			sent = append(sent, c)
		}
		if c.Status != schemas.StatusSent && !needsAttention(c) {
			continue // rejected: nothing was tried
		}
		ck := channelKey(r.SessionID, c.Channel)
		var prev channelState
		raw, found, err := getCopy(b, ck)
		if err != nil {
			return err
		}
		if found {
			if err := json.Unmarshal(raw, &prev); err != nil {
				return fmt.Errorf("corrupt channel state %q: %w", ck, err)
			}
			if prev.ProcessedAt.After(r.ProcessedAt) {
				continue // a newer attempt is known
			}
			if prev.Attention != nil {
				if err := b.Delete(prev.Attention, nil); err != nil {
					return err
				}
			}
		}
		st := channelState{ProcessedAt: r.ProcessedAt, CommandID: r.CommandID}
		var item *AttentionItem
		if needsAttention(c) {
			st.Attention = attentionKey(r.ProcessedAt, r.SessionID, c.Channel)
			item = &AttentionItem{
				SessionID: r.SessionID, OrderNo: r.OrderNo, MerchantID: r.MerchantID, Channel: c.Channel, Reason: c.Reason, Provider: c.Provider,
				Detail: c.Detail, CommandID: r.CommandID, RequestedBy: r.RequestedBy, ProcessedAt: r.ProcessedAt,
			}
		}
		if err := putChannelState(b, ck, st, item); err != nil {
			return err
		}
	}
	for _, c := range sent {
		if err := indexSent(b, r, c); err != nil {
			return err
		}
	}
	return nil
}

// putChannelState writes a channel's state at ck and, when item is set,
// its needs-attention entry at st.Attention.
func putChannelState(b *pebble.Batch, ck []byte, st channelState, item *AttentionItem) error {
	if item != nil {
		v, err := json.Marshal(item)
		if err != nil {
			return err
		}
		if err := b.Set(st.Attention, v, nil); err != nil {
			return err
		}
	}
	v, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return b.Set(ck, v, nil)
}

// noteSent records at in the s/ entry key unless a later send is recorded.
func noteSent(b *pebble.Batch, key []byte, at time.Time) error {
	prev, found, err := getCopy(b, key)
	if err != nil {
		return err
	}
	if found && len(prev) == 8 && int64(binary.BigEndian.Uint64(prev)) >= at.UnixNano() {
		return nil
	}
	return b.Set(key, binary.BigEndian.AppendUint64(nil, uint64(at.UnixNano())), nil)
}

// LastSent returns when a channel of a transaction was last sent for a
// state, by the processed_at of the first result of each command read from
// the results topic; ok is false when it never was (or the transaction was
// deleted since). A result this instance published but has not read back
// yet does not count.
func (s *Store) LastSent(sessionID string, ch schemas.Channel, state schemas.State) (time.Time, bool, error) {
	v, found, err := getCopy(s.db, sentKey(sessionID, ch, state))
	if err != nil {
		return time.Time{}, false, fmt.Errorf("last sent: %w", err)
	}
	if !found || len(v) != 8 {
		return time.Time{}, false, nil
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC(), true, nil
}

// History returns the delivery results of a transaction as published (the
// first of each command), newest first, at most limit (0: all).
func (s *Store) History(sessionID string, limit int) ([][]byte, error) {
	lower := sessionPart(prefixHistory, sessionID)
	upper := append(bytes.Clone(lower), 0xff)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	var ids []string
	for it.First(); it.Valid() && (limit <= 0 || len(ids) < limit); it.Next() {
		ids = append(ids, string(it.Value()))
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	out := make([][]byte, 0, len(ids))
	for _, id := range ids {
		v, found, err := s.PublishedResult(id)
		if err != nil {
			return nil, fmt.Errorf("history: %w", err)
		}
		if found {
			out = append(out, v)
		}
	}
	return out, nil
}

// AttentionFilter selects needs-attention entries. Zero fields select
// everything.
type AttentionFilter struct {
	// Merchant, when set, selects that merchant's entries only.
	Merchant string
	Channel  schemas.Channel
	Provider string
	Reason   schemas.Reason
	// Delivery selects the channels whose receipt said undelivered or
	// failed.
	Delivery schemas.DeliveryStatus
	// Since and Until bound processed_at: Since <= t < Until.
	Since, Until time.Time
	// After continues a listing after the entry whose Cursor it is.
	After string
	// Limit bounds the entries returned (0: all).
	Limit int
}

// Matches reports whether the filter selects item (After and Limit aside).
func (f AttentionFilter) Matches(item AttentionItem) bool {
	return (f.Merchant == "" || schemas.MerchantOf(item.MerchantID) == f.Merchant) &&
		(f.Channel == "" || item.Channel == f.Channel) &&
		(f.Provider == "" || item.Provider == f.Provider) &&
		(f.Reason == "" || item.Reason == f.Reason) &&
		(f.Delivery == "" || item.Delivery == f.Delivery) &&
		(f.Since.IsZero() || !item.ProcessedAt.Before(f.Since)) &&
		(f.Until.IsZero() || item.ProcessedAt.Before(f.Until))
}

// Cursor is the position of an entry in the needs-attention listing.
func (item AttentionItem) Cursor() string {
	return fmt.Sprintf("%x", attentionKey(item.ProcessedAt, item.SessionID, item.Channel))
}

// Attention lists the channels that need attention, newest first, as the
// filter selects them. next is the cursor of the last entry returned when
// more may follow (Limit reached), else "".
func (s *Store) Attention(f AttentionFilter) (items []AttentionItem, next string, err error) {
	lower, upper := []byte(prefixAttention), []byte(prefixAttention)
	upper[len(upper)-1]++
	// Newest first: Until bounds from below, Since from above.
	if !f.Until.IsZero() {
		lower = append([]byte(prefixAttention), newestFirst(f.Until.Add(-time.Nanosecond))...)
	}
	if !f.Since.IsZero() {
		upper = append([]byte(prefixAttention), newestFirst(f.Since.Add(-time.Nanosecond))...)
	}
	if f.After != "" {
		var after []byte
		if _, err := fmt.Sscanf(f.After, "%x", &after); err != nil || !bytes.HasPrefix(after, []byte(prefixAttention)) {
			return nil, "", errors.New("attention: not a cursor")
		}
		after = append(after, 0) // just past it
		if bytes.Compare(after, lower) > 0 {
			lower = after
		}
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, "", fmt.Errorf("attention: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		var item AttentionItem
		if err := json.Unmarshal(it.Value(), &item); err != nil {
			return nil, "", fmt.Errorf("attention: corrupt entry %q: %w", it.Key(), err)
		}
		if !f.Matches(item) {
			continue
		}
		if f.Limit > 0 && len(items) == f.Limit {
			return items, items[len(items)-1].Cursor(), it.Error()
		}
		items = append(items, item)
	}
	return items, "", it.Error()
}
