package projection

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/notifyd/notifyd/schemas"
)

// The recent-transactions index, for the console's find page: every stored
// transaction in its merchant's list, under the time of its latest payment
// event:
//
//	w/<merchant_id>\x00<newestFirst(timestamp_utc)>\x00<session_id> -> nothing
//
// so that a merchant's most recent transactions are one forward scan. One
// entry a transaction, not two (a list of every merchant's as well made
// applying events 0.81–0.97× as fast): a platform user names the merchant.
// The head of a transaction records the time its entry was written under
// (see encodeHead), so that the next event of the session, or its
// tombstone, deletes it without reading the snapshot. A head written
// before the index records none: that transaction enters the index with
// its next event (a store is not scanned at Open for it; the index is for
// the newest transactions, which are the ones that move).
const prefixRecent = "w/"

// recentKey is the entry of a session in merchantID's list.
func recentKey(merchantID string, at int64, sessionID string) []byte {
	k := append([]byte(prefixRecent), merchantID...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint64(k, uint64(maxNanos-at))
	return append(append(k, 0), sessionID...)
}

const maxNanos = 1<<63 - 1

// recentAt is the time an event is listed under: its timestamp_utc in Unix
// nanoseconds, 0 for one before 1970 (or none).
func recentAt(ev *schemas.PaymentEvent) int64 {
	if ev.TimestampUTC.Before(time.Unix(0, 0)) {
		return 0
	}
	return ev.TimestampUTC.UnixNano()
}

// listRecent writes a session's entry in the index.
func listRecent(b *pebble.Batch, merchantID string, at int64, sessionID string) error {
	return b.Set(recentKey(schemas.MerchantOf(merchantID), at, sessionID), nil, nil)
}

// unlistRecent deletes the entry a head recorded (none for a head written
// before the index).
func unlistRecent(b *pebble.Batch, rest []byte, sessionID string) error {
	merchantID, at, listed := headRecent(rest)
	if !listed {
		return nil
	}
	return b.Delete(recentKey(merchantID, at, sessionID), nil)
}

// RecentFilter selects transactions from the recent-transactions index.
type RecentFilter struct {
	// MerchantID is the merchant whose transactions are listed ("" is
	// schemas.MerchantDefault).
	MerchantID string
	// After is the cursor a previous call returned: the list goes on after
	// it.
	After string
	// Limit is the most transactions returned (at least 1).
	Limit int
}

// Recent returns the transactions with the most recent payment events,
// newest first (by the timestamp_utc of each one's latest event), as the
// filter selects them. next is the cursor to pass as After for the
// following page, or "" when there is none.
func (s *Store) Recent(f RecentFilter) (txns []schemas.PaymentEvent, next string, err error) {
	f.Limit = max(f.Limit, 1)
	prefix := append(append([]byte(prefixRecent), schemas.MerchantOf(f.MerchantID)...), 0)
	lower, upper := prefix, bytes.Clone(prefix)
	upper[len(upper)-1]++
	if f.After != "" {
		var after []byte
		if _, err := fmt.Sscanf(f.After, "%x", &after); err != nil || !bytes.HasPrefix(after, prefix) {
			return nil, "", errors.New("recent transactions: not a cursor of this list")
		}
		lower = append(after, 0) // just past it
	}
	// The entries and the snapshots are read from one view of the store:
	// an event or a tombstone applied meanwhile changes both or neither.
	view := s.db.NewSnapshot()
	defer view.Close()
	it, err := view.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, "", fmt.Errorf("recent transactions: %w", err)
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) < len(prefix)+9 {
			return nil, "", fmt.Errorf("recent transactions: corrupt entry %q", k)
		}
		if len(txns) == f.Limit {
			return txns, next, it.Error()
		}
		sid := string(k[len(prefix)+9:])
		v, found, err := getCopy(view, []byte(prefixTxn+sid))
		if err != nil {
			return nil, "", fmt.Errorf("recent transactions: %w", err)
		}
		if !found { // the entry and the snapshot are written and deleted together
			return nil, "", fmt.Errorf("recent transactions: entry %q without its transaction", k)
		}
		txn, err := decodeSnapshotAt(sid, v)
		if err != nil {
			return nil, "", fmt.Errorf("recent transactions: %w", err)
		}
		txns = append(txns, txn)
		next = fmt.Sprintf("%x", k)
	}
	return txns, "", it.Error()
}

// PrefixFilter selects transactions whose session_id or order_no starts
// with a prefix.
type PrefixFilter struct {
	// MerchantID limits the search to one merchant's transactions; with
	// "", session_ids are searched among every merchant's and order_nos
	// among the default merchant's.
	MerchantID string
	// Prefix is the start of the identifier (not empty).
	Prefix string
	// OrderNo searches order_nos; else session_ids.
	OrderNo bool
	// Limit is the most transactions returned (at least 1).
	Limit int
}

// prefixScanned bounds the index entries one prefix search reads: a
// merchant's session_ids lie among every merchant's, so a short prefix
// could otherwise read the whole store.
const prefixScanned = 10_000

// FindPrefix returns the transactions whose identifier starts with
// f.Prefix, in identifier order. more says the search stopped at the limit
// or after reading prefixScanned entries: more may match (a longer prefix
// narrows it).
func (s *Store) FindPrefix(f PrefixFilter) (txns []schemas.PaymentEvent, more bool, err error) {
	if f.Prefix == "" {
		return nil, false, errors.New("find by prefix: empty prefix")
	}
	f.Limit = max(f.Limit, 1)
	var lower []byte
	if f.OrderNo {
		lower = orderKey(f.MerchantID, f.Prefix)
	} else {
		lower = []byte(prefixHead + f.Prefix)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, false, fmt.Errorf("find by prefix: %w", err)
	}
	defer it.Close()
	scanned := 0
	for valid := it.First(); valid; valid = it.Next() {
		if scanned++; scanned > prefixScanned || len(txns) == f.Limit {
			return txns, true, it.Error()
		}
		sid := string(it.Value())
		if !f.OrderNo {
			sid = string(it.Key()[len(prefixHead):])
			_, _, rest, err := decodeHead(it.Value())
			if err != nil {
				return nil, false, fmt.Errorf("find by prefix: session %s: %w", sid, err)
			}
			if m, _, _ := headRecent(rest); f.MerchantID != "" && m != f.MerchantID {
				continue
			}
		}
		txn, found, err := s.Transaction(sid)
		if err != nil {
			return nil, false, fmt.Errorf("find by prefix: %w", err)
		}
		if found {
			txns = append(txns, txn)
		}
	}
	return txns, false, it.Error()
}

// prefixEnd is the least key greater than every key starting with p (nil:
// none, p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
