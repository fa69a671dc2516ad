package projection

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/notifyd/notifyd/schemas"
)

// A snapshot (t/<session_id>) is the decoded payment event in a compact
// binary form, not the JSON as published: it holds only what notifyd reads
// (a 1 KB event with a merchant's extra members is stored in about 200
// bytes), which divides what the store writes, flushes and compacts per
// event, and a lookup decodes it without parsing JSON. It is written only
// from an event that passed schemas.DecodePaymentEvent, and
// decodeSnapshot(encodeSnapshot(ev)) equals ev (snapshot_test.go checks it
// on every example). A change of layout is a change of projectionVersion,
// whose upgrade rewrites the snapshots.
//
// Layout: the tag (snapshotTag, or snapshotMerchantTag for a transaction
// of a merchant other than schemas.MerchantDefault), then each field in PaymentEvent's order:
// strings as uvarint length and bytes, Version as a varint, TimestampUTC as
// time.Time's MarshalBinary (length first), Amount as a presence byte then
// a string, Notifications as a presence byte, a uvarint count and each
// channel (in name order, so equal events encode alike) with its states,
// then, after snapshotMerchantTag only, MerchantID as a string. Snapshots
// written before merchants are snapshotTag's: the default merchant's.
const (
	snapshotTag         = 0x01
	snapshotMerchantTag = 0x02
)

var errCorruptSnapshot = errors.New("corrupt snapshot")

func encodeSnapshot(ev *schemas.PaymentEvent) ([]byte, error) {
	ts, err := ev.TimestampUTC.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	b := make([]byte, 0, 128+len(ev.EventID)+len(ev.SessionID)+len(ev.OrderNo)+len(ev.CustomerEmail)+len(ev.CustomerFirstName)+len(ev.CustomerLastName))
	if ev.MerchantID == schemas.MerchantDefault || ev.MerchantID == "" {
		b = append(b, snapshotTag)
	} else {
		b = append(b, snapshotMerchantTag)
	}
	b = appendString(b, ev.EventID)
	b = appendString(b, ev.SessionID)
	b = appendString(b, ev.OrderNo)
	b = appendString(b, string(ev.State))
	b = binary.AppendVarint(b, ev.Version)
	b = appendString(b, string(ts))
	if ev.Amount == nil {
		b = append(b, 0)
	} else {
		b = appendString(append(b, 1), string(ev.Amount))
	}
	for _, s := range []string{ev.CurrencyCode, ev.CustomerEmail, ev.CustomerPhone, ev.CustomerFirstName, ev.CustomerLastName, string(ev.Language)} {
		b = appendString(b, s)
	}
	if ev.Notifications == nil {
		return appendMerchant(append(b, 0), ev.MerchantID), nil
	}
	b = binary.AppendUvarint(append(b, 1), uint64(len(ev.Notifications)))
	channels := make([]schemas.Channel, 0, len(ev.Notifications))
	for ch := range ev.Notifications {
		channels = append(channels, ch)
	}
	slices.Sort(channels)
	for _, ch := range channels {
		b = appendString(b, string(ch))
		states := ev.Notifications[ch]
		b = binary.AppendUvarint(b, uint64(len(states)))
		for _, st := range states {
			b = appendString(b, string(st))
		}
	}
	return appendMerchant(b, ev.MerchantID), nil
}

// appendMerchant ends a snapshot with its merchant_id, unless default.
func appendMerchant(b []byte, merchantID string) []byte {
	if merchantID == schemas.MerchantDefault || merchantID == "" {
		return b
	}
	return appendString(b, merchantID)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// snapshotReader reads the fields of a snapshot in order; the first
// malformed one sets err and every later read returns zero values.
type snapshotReader struct {
	b   []byte
	err error
}

func (r *snapshotReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorruptSnapshot
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *snapshotReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorruptSnapshot
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *snapshotReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errCorruptSnapshot
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *snapshotReader) string() string { return string(r.bytes()) }

func (r *snapshotReader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = errCorruptSnapshot
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func decodeSnapshot(b []byte) (schemas.PaymentEvent, error) {
	r := &snapshotReader{b: b}
	var ev schemas.PaymentEvent
	tag := r.byte()
	if tag != snapshotTag && tag != snapshotMerchantTag {
		return ev, errCorruptSnapshot
	}
	ev.EventID = r.string()
	ev.SessionID = r.string()
	ev.OrderNo = r.string()
	ev.State = schemas.State(r.string())
	ev.Version = r.varint()
	if ts := r.bytes(); r.err == nil {
		if err := ev.TimestampUTC.UnmarshalBinary(ts); err != nil {
			return ev, fmt.Errorf("%w: timestamp: %w", errCorruptSnapshot, err)
		}
	}
	if r.byte() == 1 {
		ev.Amount = append([]byte{}, r.bytes()...)
	}
	ev.CurrencyCode = r.string()
	ev.CustomerEmail = r.string()
	ev.CustomerPhone = r.string()
	ev.CustomerFirstName = r.string()
	ev.CustomerLastName = r.string()
	ev.Language = schemas.Language(r.string())
	if r.byte() == 1 {
		n := r.uvarint()
		if n > uint64(len(r.b)) {
			return ev, errCorruptSnapshot
		}
		ev.Notifications = make(map[schemas.Channel][]schemas.State, n)
		for range n {
			ch := schemas.Channel(r.string())
			m := r.uvarint()
			if m > uint64(len(r.b)) {
				return ev, errCorruptSnapshot
			}
			states := make([]schemas.State, 0, m)
			for range m {
				states = append(states, schemas.State(r.string()))
			}
			ev.Notifications[ch] = states
		}
	}
	ev.MerchantID = schemas.MerchantDefault
	if tag == snapshotMerchantTag {
		if ev.MerchantID = r.string(); !schemas.ValidMerchantID(ev.MerchantID) {
			r.err = errCorruptSnapshot
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errCorruptSnapshot
	}
	return ev, r.err
}

// decodeSnapshotAt is decodeSnapshot with the session named in its error.
func decodeSnapshotAt(sessionID string, b []byte) (schemas.PaymentEvent, error) {
	ev, err := decodeSnapshot(b)
	if err != nil {
		return ev, fmt.Errorf("snapshot of session %s: %w", sessionID, err)
	}
	return ev, nil
}
