package projection

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/cockroachdb/pebble"
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

func resultCommandID(v []byte) (string, bool) {
	var r struct {
		CommandID string `json:"command_id"`
	}
	if len(v) == 0 || json.Unmarshal(v, &r) != nil || r.CommandID == "" {
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

// RecordResult writes a result this instance has just published into the
// idempotency table, so that a duplicate arriving before the result comes
// back from the topic is answered from it. It keeps an existing entry.
func (s *Store) RecordResult(commandID string, value []byte) error {
	b := s.db.NewIndexedBatch()
	defer b.Close()
	if _, err := s.putResult(b, commandID, value); err != nil {
		return fmt.Errorf("record result: %w", err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("record result: %w", err)
	}
	return nil
}

// Result returns the stored result of a command_id, as it was published.
func (s *Store) Result(commandID string) ([]byte, bool, error) {
	v, found, err := getCopy(s.db, []byte(prefixResult+commandID))
	if err != nil {
		return nil, false, fmt.Errorf("look up result: %w", err)
	}
	return v, found, nil
}
