package projection

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/notifyd/notifyd/schemas"
)

// ApplyStats counts what one ApplyEvents call did with its records.
type ApplyStats struct {
	Applied    int // snapshots stored
	Stale      int // events ignored because their version was not newer
	Tombstones int // session_ids forgotten
	Invalid    int // records that are not valid payment events (skipped)
	// Mismatched counts events for a stored session naming another
	// merchant (refused: Options.Reject was told, nothing changed).
	Mismatched int
}

// Add adds o to s.
func (s *ApplyStats) Add(o ApplyStats) {
	s.Applied += o.Applied
	s.Stale += o.Stale
	s.Tombstones += o.Tombstones
	s.Invalid += o.Invalid
	s.Mismatched += o.Mismatched
}

// A session is stored under two keys: a/<session_id> holds its head,
// version (BE64) | len(order_no) (BE16) | order_no | merchant_id (empty for
// schemas.MerchantDefault) | NUL | the time of its recent-transactions
// entries (BE64, see recent.go; absent from a head written before them),
// and t/<session_id> its
// snapshot (see snapshot.go). Applying an event reads only the head (the
// version guard and an order_no move need nothing else), and only when the
// session filter cannot rule out that the session is stored: in a large
// store a lookup that finds nothing costs several microseconds, reading
// sstable filter blocks the cache no longer holds. The heads also make the
// filter cheap to fill at Open: about 50 bytes a session to scan.
func encodeHead(version int64, orderNo, merchantID string, listedAt int64) []byte {
	if merchantID == schemas.MerchantDefault {
		merchantID = ""
	}
	b := make([]byte, 0, 19+len(orderNo)+len(merchantID))
	b = binary.BigEndian.AppendUint64(b, uint64(version))
	b = binary.BigEndian.AppendUint16(b, uint16(len(orderNo)))
	b = append(append(b, orderNo...), merchantID...)
	return binary.BigEndian.AppendUint64(append(b, 0), uint64(listedAt))
}

// decodeHead parses a head; rest is what follows it (the merchant_id in a
// head key, see headMerchant; the JSON in a snapshot of projection version
// 1).
func decodeHead(b []byte) (version int64, orderNo string, rest []byte, err error) {
	if len(b) < 10 {
		return 0, "", nil, errors.New("corrupt head")
	}
	n := int(binary.BigEndian.Uint16(b[8:10]))
	if len(b) < 10+n {
		return 0, "", nil, errors.New("corrupt head")
	}
	return int64(binary.BigEndian.Uint64(b[:8])), string(b[10 : 10+n]), b[10+n:], nil
}

// headMerchant is the merchant_id of a head's rest.
func headMerchant(rest []byte) string {
	m, _, _ := headRecent(rest)
	return m
}

// headRecent reads a head's rest: the merchant_id, and the time the
// session's recent-transactions entries are under (listed false: a head
// written before the index, with none). A merchant_id holds no NUL.
func headRecent(rest []byte) (merchantID string, listedAt int64, listed bool) {
	if n := len(rest) - 9; n >= 0 && rest[n] == 0 {
		return schemas.MerchantOf(string(rest[:n])), int64(binary.BigEndian.Uint64(rest[n+1:])), true
	}
	return schemas.MerchantOf(string(rest)), 0, false
}

// orderKey is the order index's key of a merchant's order_no: o/<order_no>
// for schemas.MerchantDefault (the layout of a single-merchant store), else
// O/<merchant_id>/<order_no>, unambiguous because a merchant_id holds no
// '/'.
func orderKey(merchantID, orderNo string) []byte {
	if merchantID == schemas.MerchantDefault || merchantID == "" {
		return []byte(prefixOrder + orderNo)
	}
	return []byte(prefixMerchantOrder + merchantID + "/" + orderNo)
}

// ApplyEvents applies records of one payment-events partition, in order, in
// one atomic batch that also stores the partition's next offset (the last
// record's offset + 1). Invalid records are skipped, logged and counted; they
// never stop the projection. Only a store failure returns an error, in which
// case nothing of the batch was applied.
func (s *Store) ApplyEvents(partition int, records []Record) (ApplyStats, error) {
	var st ApplyStats
	if len(records) == 0 {
		return st, nil
	}
	b := s.db.NewIndexedBatch()
	defer s.release(b)
	var txnDelta int64
	for i := range records {
		r := &records[i]
		delta, outcome, err := s.applyEvent(b, partition, r)
		if err != nil {
			return ApplyStats{}, fmt.Errorf("apply payment event partition %d offset %d: %w", partition, r.Offset, err)
		}
		txnDelta += delta
		switch outcome {
		case outcomeApplied:
			st.Applied++
		case outcomeStale:
			st.Stale++
		case outcomeTombstone:
			st.Tombstones++
		case outcomeInvalid:
			st.Invalid++
		case outcomeMismatch:
			st.Mismatched++
		}
	}
	next := records[len(records)-1].Offset + 1
	if err := b.Set(offsetKey(prefixEventOffset, s.opts.EventsTopic, partition), binary.BigEndian.AppendUint64(nil, uint64(next)), nil); err != nil {
		return ApplyStats{}, fmt.Errorf("apply payment events: %w", err)
	}
	// Batches of different partitions commit one at a time from here on,
	// so that the transaction count each writes is the one it publishes.
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if txnDelta != 0 {
		s.mu.Lock()
		count := s.txnCount + txnDelta
		s.mu.Unlock()
		if err := b.Set([]byte(keyTxnCount), binary.BigEndian.AppendUint64(nil, uint64(count)), nil); err != nil {
			return ApplyStats{}, fmt.Errorf("apply payment events: %w", err)
		}
	}
	// NoSync: the batch is atomic with its offset, so losing the tail of the
	// WAL in a machine crash only means re-reading those records.
	if err := s.commit("apply_events", b, pebble.NoSync); err != nil {
		return ApplyStats{}, fmt.Errorf("apply payment events: %w", err)
	}
	s.publish(s.eventOffsets, partition, next, txnDelta)
	return st, nil
}

type applyOutcome int

const (
	outcomeApplied applyOutcome = iota
	outcomeStale
	outcomeTombstone
	outcomeInvalid
	outcomeMismatch
)

// RejectMerchantMismatch is the reason given to Options.Reject for an event
// whose session is stored for another merchant.
const RejectMerchantMismatch = "merchant_mismatch"

func (s *Store) applyEvent(b *pebble.Batch, partition int, r *Record) (txnDelta int64, _ applyOutcome, _ error) {
	if len(r.Value) == 0 {
		if len(r.Key) == 0 {
			s.log.Warn("payment event skipped: tombstone without a key", "offset", r.Offset)
			return 0, outcomeInvalid, nil
		}
		existed, err := s.forget(b, string(r.Key))
		if err != nil {
			return 0, 0, err
		}
		if existed {
			txnDelta = -1
		}
		return txnDelta, outcomeTombstone, nil
	}
	ev, err := schemas.DecodePaymentEvent(r.Value)
	if err != nil {
		s.log.Warn("payment event skipped", "offset", r.Offset, "error", err)
		return 0, outcomeInvalid, nil
	}
	headKey := []byte(prefixHead + ev.SessionID)
	var prev []byte
	found := false
	if !s.sessions.SurelyAbsent(headKey[len(prefixHead):]) {
		if prev, found, err = getCopy(b, headKey); err != nil {
			return 0, 0, err
		}
	}
	if found {
		prevVersion, prevOrder, rest, err := decodeHead(prev)
		if err != nil {
			return 0, 0, fmt.Errorf("session %s: %w", ev.SessionID, err)
		}
		if prevMerchant := headMerchant(rest); prevMerchant != ev.MerchantID {
			// A transaction belongs to one merchant: checked before the
			// version, so a stale event of another merchant is refused too.
			detail := fmt.Sprintf("session_id %q belongs to another merchant than %q", ev.SessionID, ev.MerchantID)
			s.log.Warn("payment event refused: "+RejectMerchantMismatch, "offset", r.Offset, "session_id", ev.SessionID, "merchant_id", ev.MerchantID)
			if err := s.opts.reject(partition, *r, RejectMerchantMismatch, detail); err != nil {
				return 0, 0, err
			}
			return 0, outcomeMismatch, nil
		}
		if prevVersion > 0 && ev.Version > 0 && ev.Version <= prevVersion {
			return 0, outcomeStale, nil
		}
		if prevOrder != "" && prevOrder != ev.OrderNo {
			if err := s.unmapOrder(b, ev.MerchantID, prevOrder, ev.SessionID); err != nil {
				return 0, 0, err
			}
		}
		if err := unlistRecent(b, rest, ev.SessionID); err != nil {
			return 0, 0, err
		}
	} else {
		txnDelta = 1
		s.sessions.Add(headKey[len(prefixHead):])
	}
	at := recentAt(&ev)
	if err := b.Set(headKey, encodeHead(ev.Version, ev.OrderNo, ev.MerchantID, at), nil); err != nil {
		return 0, 0, err
	}
	if err := listRecent(b, ev.MerchantID, at, ev.SessionID); err != nil {
		return 0, 0, err
	}
	snap, err := encodeSnapshot(&ev)
	if err != nil {
		return 0, 0, err
	}
	if err := b.Set([]byte(prefixTxn+ev.SessionID), snap, nil); err != nil {
		return 0, 0, err
	}
	if ev.OrderNo != "" {
		if err := b.Set(orderKey(ev.MerchantID, ev.OrderNo), []byte(ev.SessionID), nil); err != nil {
			return 0, 0, err
		}
	}
	return txnDelta, outcomeApplied, nil
}

// forget deletes a session's snapshot and head, its order_no mapping and
// its needs-attention entries (its history stays).
func (s *Store) forget(b *pebble.Batch, sessionID string) (bool, error) {
	headKey := []byte(prefixHead + sessionID)
	prev, found, err := getCopy(b, headKey)
	if err != nil || !found {
		return false, err
	}
	if _, prevOrder, rest, err := decodeHead(prev); err == nil {
		if prevOrder != "" {
			if err := s.unmapOrder(b, headMerchant(rest), prevOrder, sessionID); err != nil {
				return false, err
			}
		}
		if err := unlistRecent(b, rest, sessionID); err != nil {
			return false, err
		}
	}
	if err := forgetAttention(b, sessionID); err != nil {
		return false, err
	}
	if err := b.Delete(headKey, nil); err != nil {
		return false, err
	}
	return true, b.Delete([]byte(prefixTxn+sessionID), nil)
}

// unmapOrder removes a merchant's order_no -> sessionID unless order_no now
// names another session.
func (s *Store) unmapOrder(b *pebble.Batch, merchantID, orderNo, sessionID string) error {
	key := orderKey(merchantID, orderNo)
	cur, found, err := getCopy(b, key)
	if err != nil || !found || string(cur) != sessionID {
		return err
	}
	return b.Delete(key, nil)
}

// Transaction returns the current snapshot of a session_id.
func (s *Store) Transaction(sessionID string) (schemas.PaymentEvent, bool, error) {
	v, found, err := getCopy(s.db, []byte(prefixTxn+sessionID))
	if err != nil || !found {
		if err != nil {
			err = fmt.Errorf("look up session: %w", err)
		}
		return schemas.PaymentEvent{}, false, err
	}
	ev, err := decodeSnapshotAt(sessionID, v)
	if err != nil {
		return schemas.PaymentEvent{}, false, fmt.Errorf("look up session: %w", err)
	}
	return ev, true, nil
}

// SessionForOrder returns the session_id a merchant's order_no names ("" is
// schemas.MerchantDefault).
func (s *Store) SessionForOrder(merchantID, orderNo string) (string, bool, error) {
	v, found, err := getCopy(s.db, orderKey(merchantID, orderNo))
	if err != nil {
		return "", false, fmt.Errorf("look up order_no: %w", err)
	}
	return string(v), found, nil
}
