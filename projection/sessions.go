package projection

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/notifyd/notifyd/schemas"
)

// The console's sessions, from the console-sessions topic:
//
//	e/<username> -> when the user's sessions last ended (unix nanoseconds
//	    BE64): a session opened at or before it is over; the latest of the
//	    records applied counts, whatever order they come in;
//	f/<topic>/<partition BE32> -> next offset of the topic.
const (
	prefixSessionEnd    = "e/"
	prefixSessionOffset = "f/"
)

// ApplySessionEnds applies a batch of one console-sessions partition, in
// offset order, with the next offset to read. A record that is not a
// session end is skipped (logged); a tombstone changes nothing (the topic
// is compacted, and a user's end only ever moves later).
func (s *Store) ApplySessionEnds(partition int, records []Record) error {
	if len(records) == 0 {
		return nil
	}
	if s.opts.SessionsTopic == "" {
		return errors.New("apply session ends: no SessionsTopic in the store's options")
	}
	b := s.db.NewIndexedBatch()
	defer s.release(b)
	for _, r := range records {
		if r.Value == nil {
			continue
		}
		var e schemas.SessionEnd
		if err := json.Unmarshal(r.Value, &e); err != nil || !e.Valid() {
			s.log.Warn("session end skipped: not a session end", "partition", partition, "offset", r.Offset)
			continue
		}
		if err := applySessionEnd(b, e); err != nil {
			return fmt.Errorf("apply session ends partition %d offset %d: %w", partition, r.Offset, err)
		}
	}
	next := records[len(records)-1].Offset + 1
	if err := b.Set(offsetKey(prefixSessionOffset, s.opts.SessionsTopic, partition), binary.BigEndian.AppendUint64(nil, uint64(next)), nil); err != nil {
		return fmt.Errorf("apply session ends: %w", err)
	}
	if err := s.commit("apply_sessions", b, pebble.NoSync); err != nil {
		return fmt.Errorf("apply session ends: %w", err)
	}
	s.publish(s.sessionOffsets, partition, next, 0)
	return nil
}

// RecordSessionEnd applies a session end this instance published, before
// it is read back from the topic, so that the session is refused here at
// once.
func (s *Store) RecordSessionEnd(e schemas.SessionEnd) error {
	b := s.db.NewIndexedBatch()
	defer s.release(b)
	if err := applySessionEnd(b, e); err != nil {
		return wrapErr("record session end", err)
	}
	return wrapErr("record session end", s.commit("record_session_end", b, pebble.Sync))
}

// applySessionEnd keeps e's time unless the user's sessions already ended
// later.
func applySessionEnd(b *pebble.Batch, e schemas.SessionEnd) error {
	key := []byte(prefixSessionEnd + e.Username)
	prev, found, err := getCopy(b, key)
	if err != nil {
		return err
	}
	at := e.EndedAt.UnixNano()
	if found && len(prev) == 8 && int64(binary.BigEndian.Uint64(prev)) >= at {
		return nil
	}
	return b.Set(key, binary.BigEndian.AppendUint64(nil, uint64(at)), nil)
}

// SessionsEnded returns when the user's console sessions last ended, as
// far as the store has applied (the zero time: never).
func (s *Store) SessionsEnded(username string) (time.Time, error) {
	v, found, err := getCopy(s.db, []byte(prefixSessionEnd+username))
	if err != nil || !found {
		return time.Time{}, wrapErr("sessions ended", err)
	}
	if len(v) != 8 {
		return time.Time{}, fmt.Errorf("sessions ended: corrupt entry of %q", username)
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC(), nil
}

// SessionOffsets is EventOffsets for the console-sessions topic.
func (s *Store) SessionOffsets() map[int]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.sessionOffsets)
}
