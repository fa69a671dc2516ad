package projection

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/notifyd/notifyd/schemas"
)

// The per-merchant counts, derived from the results topic like the history
// index, so that every instance has them without a metric label per
// merchant:
//
//	k/<merchant_id>\x00<YYYYMMDD>\x00<channel> -> sent, failed, rejected (3 × BE64)
//	    the channel results of every command's answer (its first result on
//	    the topic), by the result's merchant_id (none: default), the UTC
//	    day of its processed_at and the channel.
//
// A result counts once: when ApplyResults records it as the first of its
// command_id. A duplicate's republished result, a rebuild of the history
// index or a replay of a batch count nothing again. A store written before
// the counts existed counts the results it holds once, at Open
// (upgradeCounts). A merchant_id holds no NUL, so the merchant part ends
// at the first one.
const (
	prefixCounts = "k/"
	// keyCountsVersion marks a store whose counts cover every result it
	// holds.
	keyCountsVersion = "m/counts-version"
	countsVersion    = 1
	// countsDay is the layout of the day in a counts key.
	countsDay = "20060102"
)

// ChannelCounts are a channel's results of one merchant on one day.
type ChannelCounts struct {
	MerchantID string
	// Day is the UTC day, at midnight.
	Day     time.Time
	Channel schemas.Channel
	// Sent, Failed and Rejected count the channel results by status.
	Sent, Failed, Rejected uint64
}

// Total is the channel's results of every status.
func (c ChannelCounts) Total() uint64 { return c.Sent + c.Failed + c.Rejected }

// add adds the counts of o (its key fields aside).
func (c *ChannelCounts) add(o ChannelCounts) {
	c.Sent += o.Sent
	c.Failed += o.Failed
	c.Rejected += o.Rejected
}

func countsKey(merchantID string, day time.Time, ch schemas.Channel) []byte {
	k := append([]byte(prefixCounts), merchantID...)
	k = append(append(k, 0), day.UTC().Format(countsDay)...)
	return append(append(k, 0), ch...)
}

// parseCountsKey reads a counts key back.
func parseCountsKey(k []byte) (merchantID string, day time.Time, ch schemas.Channel, err error) {
	parts := bytes.Split(k[len(prefixCounts):], []byte{0})
	if len(parts) != 3 {
		return "", time.Time{}, "", fmt.Errorf("corrupt counts key %q", k)
	}
	day, err = time.Parse(countsDay, string(parts[1]))
	if err != nil {
		return "", time.Time{}, "", fmt.Errorf("corrupt counts key %q: %w", k, err)
	}
	return string(parts[0]), day, schemas.Channel(parts[2]), nil
}

func encodeCounts(c ChannelCounts) []byte {
	v := binary.BigEndian.AppendUint64(nil, c.Sent)
	v = binary.BigEndian.AppendUint64(v, c.Failed)
	return binary.BigEndian.AppendUint64(v, c.Rejected)
}

func decodeCounts(v []byte) (ChannelCounts, error) {
	if len(v) != 24 {
		return ChannelCounts{}, fmt.Errorf("corrupt counts value of %d bytes", len(v))
	}
	return ChannelCounts{Sent: binary.BigEndian.Uint64(v), Failed: binary.BigEndian.Uint64(v[8:]), Rejected: binary.BigEndian.Uint64(v[16:])}, nil
}

// resultCounts returns the counts a delivery result adds, one per channel
// result.
func resultCounts(r *schemas.DeliveryResult) []ChannelCounts {
	out := make([]ChannelCounts, 0, len(r.Channels))
	for _, c := range r.Channels {
		// Day is the moment: countsKey keeps its UTC day.
		n := ChannelCounts{MerchantID: schemas.MerchantOf(r.MerchantID), Day: r.ProcessedAt, Channel: c.Channel}
		switch c.Status {
		case schemas.StatusSent:
			n.Sent = 1
		case schemas.StatusFailed:
			n.Failed = 1
		case schemas.StatusRejected:
			n.Rejected = 1
		default:
			continue
		}
		out = append(out, n)
	}
	return out
}

// countResult adds a command's answer to the counts in batch b (an indexed
// batch: later results of the same batch see it).
func countResult(b *pebble.Batch, r *schemas.DeliveryResult) error {
	for _, n := range resultCounts(r) {
		k := countsKey(n.MerchantID, n.Day, n.Channel)
		raw, found, err := getCopy(b, k)
		if err != nil {
			return err
		}
		if found {
			prev, err := decodeCounts(raw)
			if err != nil {
				return fmt.Errorf("%q: %w", k, err)
			}
			n.add(prev)
		}
		if err := b.Set(k, encodeCounts(n), nil); err != nil {
			return err
		}
	}
	return nil
}

// upgradeCounts counts, once, the results of a store written before the
// counts existed: every answer in the idempotency table, in one batch with
// the version (an Open stopped half-way counts again from nothing).
func (s *Store) upgradeCounts() error {
	v, err := s.getInt(keyCountsVersion)
	if err != nil || v >= countsVersion {
		return err
	}
	start := time.Now()
	sum := map[string]ChannelCounts{}
	n := 0
	if err := s.scan(prefixResult, func(_, v []byte) {
		r, ok := decodeResult(v)
		if !ok {
			return
		}
		n++
		for _, a := range resultCounts(&r) {
			k := string(countsKey(a.MerchantID, a.Day, a.Channel))
			c := sum[k]
			c.add(a)
			sum[k] = c
		}
	}); err != nil {
		return fmt.Errorf("count results: %w", err)
	}
	b := s.db.NewBatch()
	defer s.release(b)
	upper := []byte(prefixCounts)
	upper[len(upper)-1]++
	if err := b.DeleteRange([]byte(prefixCounts), upper, nil); err != nil {
		return err
	}
	for k, c := range sum {
		if err := b.Set([]byte(k), encodeCounts(c), nil); err != nil {
			return err
		}
	}
	if err := b.Set([]byte(keyCountsVersion), binary.BigEndian.AppendUint64(nil, countsVersion), nil); err != nil {
		return err
	}
	if err := s.commit("upgrade", b, pebble.Sync); err != nil {
		return err
	}
	if n > 0 {
		s.log.Info("store: per-merchant counts built from the results held", "results", n, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// CountsFilter selects per-merchant counts.
type CountsFilter struct {
	// Merchant, when set, selects that merchant's counts only; else every
	// merchant's, in merchant_id order.
	Merchant string
	// From and To are the first and the last UTC day counted (zero: no
	// bound).
	From, To time.Time
	// After continues a listing of every merchant's counts after the
	// merchant_id it names.
	After string
	// Merchants bounds the merchants returned (0: all).
	Merchants int
}

// Counts returns the per-merchant counts the filter selects, by merchant,
// then day, then channel. next is the last merchant returned when more
// may follow (Merchants reached), else "".
func (s *Store) Counts(f CountsFilter) (counts []ChannelCounts, next string, err error) {
	lower, upper := []byte(prefixCounts), []byte(prefixCounts)
	upper[len(upper)-1]++
	switch {
	case f.Merchant != "":
		lower = append([]byte(prefixCounts), f.Merchant+"\x00"...)
		upper = append([]byte(prefixCounts), f.Merchant+"\x01"...)
	case f.After != "":
		lower = append([]byte(prefixCounts), f.After+"\x01"...)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, "", fmt.Errorf("counts: %w", err)
	}
	defer it.Close()
	merchants, current, seen := 0, "", ""
	for it.First(); it.Valid(); {
		m, day, ch, err := parseCountsKey(it.Key())
		if err != nil {
			return nil, "", err
		}
		if m != seen {
			seen = m
			// A day at midnight before From's moment: on to From's
			// day (itself when From is later on the same day).
			if !f.From.IsZero() && day.Before(f.From) {
				it.SeekGE(countsKey(m, f.From, ""))
				continue
			}
		}
		if !f.To.IsZero() && day.After(f.To) {
			// The merchant's last day selected is behind: on to the next.
			it.SeekGE(append([]byte(prefixCounts), m+"\x01"...))
			continue
		}
		if m != current {
			if f.Merchants > 0 && merchants == f.Merchants {
				return counts, current, nil
			}
			merchants, current = merchants+1, m
		}
		c, err := decodeCounts(it.Value())
		if err != nil {
			return nil, "", fmt.Errorf("counts: %q: %w", it.Key(), err)
		}
		c.MerchantID, c.Day, c.Channel = m, day, ch
		counts = append(counts, c)
		it.Next()
	}
	if err := it.Error(); err != nil {
		return nil, "", fmt.Errorf("counts: %w", err)
	}
	return counts, "", nil
}
