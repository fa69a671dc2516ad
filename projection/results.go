package projection

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/notifyd/notifyd/schemas"
)

// ApplyResults records delivery results of one results-topic partition in the
// idempotency table (command_id -> the result's bytes as published), in one
// atomic batch with the partition's next offset. The first result recorded
// for a command_id is kept: it is the one every instance republishes for a
// duplicate command. Records without a readable command_id are skipped.
func (s *Store) ApplyResults(partition int, records []Record) (int, error) {
	if len(records) == 0 {
		return 0, nil
	}
	b := s.db.NewIndexedBatch()
	defer b.Close()
	added := 0
	for i := range records {
		id, ok := resultCommandID(records[i].Value)
		if !ok {
			s.log.Warn("result skipped: no command_id", "partition", partition, "offset", records[i].Offset)
			continue
		}
		ok, err := s.putResult(b, id, records[i].Value)
		if err != nil {
			return 0, fmt.Errorf("apply results partition %d offset %d: %w", partition, records[i].Offset, err)
		}
		if ok {
			added++
		}
	}
	next := records[len(records)-1].Offset + 1
	if err := b.Set(offsetKey(prefixResultOffset, s.opts.ResultsTopic, partition), binary.BigEndian.AppendUint64(nil, uint64(next)), nil); err != nil {
		return 0, fmt.Errorf("apply results: %w", err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, fmt.Errorf("apply results: commit: %w", err)
	}
	s.publish(s.resultOffsets, partition, next, 0)
	return added, nil
}

// resultCommandID returns the command_id of a result record, ok=false when
// the record is not a delivery result notifyd could publish again (it must
// decode whole: a record stored here is republished for duplicates).
func resultCommandID(v []byte) (string, bool) {
	var r schemas.DeliveryResult
	if len(v) == 0 || json.Unmarshal(v, &r) != nil || r.CommandID == "" || r.ResultID == "" {
		return "", false
	}
	return r.CommandID, true
}

func (s *Store) putResult(b *pebble.Batch, commandID string, value []byte) (bool, error) {
	key := []byte(prefixResult + commandID)
	_, found, err := getCopy(b, key)
	if err != nil || found {
		return false, err
	}
	return true, b.Set(key, value, nil)
}

// RecordResult writes a result this instance is about to publish into the
// idempotency table, so that a duplicate arriving before the result comes
// back from the topic is answered from it. It keeps an existing entry (the
// first result of a command_id wins, whichever instance decided it) and
// returns the value the table now holds: the one to publish.
func (s *Store) RecordResult(commandID string, value []byte) (stored []byte, err error) {
	b := s.db.NewIndexedBatch()
	defer b.Close()
	added, err := s.putResult(b, commandID, value)
	if err != nil {
		return nil, fmt.Errorf("record result: %w", err)
	}
	if !added {
		prev, _, err := getCopy(b, []byte(prefixResult+commandID))
		if err != nil {
			return nil, fmt.Errorf("record result: %w", err)
		}
		return prev, nil
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, fmt.Errorf("record result: %w", err)
	}
	return value, nil
}

// Result returns the stored result of a command_id, as it was published.
func (s *Store) Result(commandID string) ([]byte, bool, error) {
	v, found, err := getCopy(s.db, []byte(prefixResult+commandID))
	if err != nil {
		return nil, false, fmt.Errorf("look up result: %w", err)
	}
	return v, found, nil
}
