package projection

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/notifyd/notifyd/schemas"
)

// ApplyResults records delivery results of one results-topic partition in the
// idempotency table (command_id -> the result's bytes as published), the
// history index and the per-merchant counts, in one atomic batch with the
// partition's next offset. The first result of a
// command_id read from the topic is kept and supersedes one this instance
// recorded itself (RecordResult) but has not read back yet: the first
// result on the topic is the command's answer, the one every instance
// republishes for a duplicate. Records without a readable command_id are
// skipped. It returns the results that are the first of their command_id on
// the topic, recorded by this call (so that whoever waits for them can be
// told).
func (s *Store) ApplyResults(partition int, records []Record) (added []FirstResult, err error) {
	if len(records) == 0 {
		return nil, nil
	}
	b := s.db.NewIndexedBatch()
	defer s.release(b)
	for i := range records {
		r, ok := decodeResult(records[i].Value)
		if !ok {
			s.log.Warn("result skipped: no command_id", "partition", partition, "offset", records[i].Offset)
			continue
		}
		first, answer, err := s.putResult(b, r.CommandID, records[i].Value)
		if err != nil {
			return nil, fmt.Errorf("apply results partition %d offset %d: %w", partition, records[i].Offset, err)
		}
		if first {
			added = append(added, FirstResult{CommandID: r.CommandID, Value: records[i].Value})
			if err := countResult(b, &r); err != nil {
				return nil, fmt.Errorf("apply results partition %d offset %d: counts: %w", partition, records[i].Offset, err)
			}
		}
		// The history indexes the command's answer: its first result, and
		// that one again (a replay, or a re-read that builds the index).
		if answer {
			if err := indexResult(b, &r); err != nil {
				return nil, fmt.Errorf("apply results partition %d offset %d: history: %w", partition, records[i].Offset, err)
			}
		}
	}
	next := records[len(records)-1].Offset + 1
	if err := b.Set(offsetKey(prefixResultOffset, s.opts.ResultsTopic, partition), binary.BigEndian.AppendUint64(nil, uint64(next)), nil); err != nil {
		return nil, fmt.Errorf("apply results: %w", err)
	}
	if err := s.commit("apply_results", b, pebble.NoSync); err != nil {
		return nil, fmt.Errorf("apply results: %w", err)
	}
	s.publish(s.resultOffsets, partition, next, 0)
	return added, nil
}

// FirstResult is the first result of a command_id read from the results
// topic: its answer.
type FirstResult struct {
	CommandID string
	// Value is the result as published.
	Value []byte
}

// decodeResult decodes a result record, ok=false when it is not a
// delivery result notifyd could publish again (it must decode whole: a
// record stored here is republished for duplicates) or has no command_id.
func decodeResult(v []byte) (r schemas.DeliveryResult, ok bool) {
	if len(v) == 0 || json.Unmarshal(v, &r) != nil || r.CommandID == "" || r.ResultID == "" {
		return r, false
	}
	return r, true
}

// putResult records a result read from the topic unless the command_id has
// one from the topic already, and drops the pending entry it supersedes.
// first says it was recorded now; answer that value is the command's
// answer (recorded now, or the same bytes as the one recorded before).
func (s *Store) putResult(b *pebble.Batch, commandID string, value []byte) (first, answer bool, err error) {
	key := []byte(prefixResult + commandID)
	stored, found, err := getCopy(b, key)
	if err != nil {
		return false, false, err
	}
	if found {
		return false, bytes.Equal(stored, value), nil
	}
	pending := []byte(prefixPending + commandID)
	if _, had, err := getCopy(b, pending); err != nil {
		return false, false, err
	} else if had {
		if err := b.Delete(pending, nil); err != nil {
			return false, false, err
		}
	}
	return true, true, b.Set(key, value, nil)
}

// RecordResult writes a result this instance is about to publish into the
// idempotency table, so that a duplicate arriving before the result comes
// back from the topic is answered from it. When the command_id has a result
// already (read from the topic, or recorded here before), that one is kept
// and returned: it is the one to publish. Otherwise value is recorded as
// pending until ApplyResults reads the first result of the command_id from
// the topic, which then replaces it if it differs. The write is synced
// (concurrent records share one sync): once RecordResult returns, the
// decision survives the process and the machine, so the caller may let
// another command send before this result is on the topic, and a restart
// republishes it instead of sending again.
func (s *Store) RecordResult(commandID string, value []byte) (stored []byte, err error) {
	prev, found, err := s.Result(commandID)
	if err != nil || found {
		return prev, err
	}
	// Handlers of one command_id are serialised by the caller, and
	// ApplyResults never writes a pending entry: nothing can slip in
	// between the look-up and this write except a result from the topic,
	// which Result prefers from then on; reading back returns it.
	b := s.db.NewBatch()
	defer s.release(b)
	if err := b.Set([]byte(prefixPending+commandID), value, nil); err != nil {
		return nil, fmt.Errorf("record result: %w", err)
	}
	if err := s.commit("record_result", b, pebble.Sync); err != nil {
		return nil, fmt.Errorf("record result: %w", err)
	}
	stored, _, err = s.Result(commandID)
	return stored, err
}

// Result returns the result of a command_id: the first one read from the
// topic, else the one recorded here by RecordResult.
func (s *Store) Result(commandID string) ([]byte, bool, error) {
	for _, prefix := range []string{prefixResult, prefixPending} {
		v, found, err := getCopy(s.db, []byte(prefix+commandID))
		if err != nil {
			return nil, false, fmt.Errorf("look up result: %w", err)
		}
		if found {
			return v, true, nil
		}
	}
	return nil, false, nil
}

// PublishedResult returns the first result of a command_id read from the
// results topic: the command's answer, the same on every instance. Unlike
// Result it ignores a result this instance recorded but has not read back
// from the topic yet.
func (s *Store) PublishedResult(commandID string) ([]byte, bool, error) {
	v, found, err := getCopy(s.db, []byte(prefixResult+commandID))
	if err != nil {
		return nil, false, fmt.Errorf("look up result: %w", err)
	}
	return v, found, nil
}
