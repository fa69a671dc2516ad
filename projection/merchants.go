package projection

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"

	"github.com/cockroachdb/pebble"
)

// Merchants' settings, from the merchant-settings topic:
//
//	g/<merchant_id> -> the merchant's settings as published (the value of
//	    the last record the caller accepted; secrets sealed);
//	i/<topic>/<partition BE32> -> next offset of the topic.
//
// The store does not judge settings: the caller (package consumer) checks
// each record and hands over the ones it accepted, with the offset after
// the last record it read, refused ones included.
const (
	prefixMerchantSettings = "g/"
	prefixMerchantOffset   = "i/"
)

// ApplyMerchantSettings applies accepted records of one merchant-settings
// partition, in offset order (key: merchant_id; a nil value removes the
// merchant), in one batch with next, the partition's next offset to read.
func (s *Store) ApplyMerchantSettings(partition int, accepted []Record, next int64) error {
	if s.opts.MerchantsTopic == "" {
		return errors.New("apply merchant settings: no MerchantsTopic in the store's options")
	}
	b := s.db.NewBatch()
	defer s.release(b)
	for _, r := range accepted {
		key := []byte(prefixMerchantSettings + string(r.Key))
		var err error
		if r.Value == nil {
			err = b.Delete(key, nil)
		} else {
			err = b.Set(key, r.Value, nil)
		}
		if err != nil {
			return fmt.Errorf("apply merchant settings partition %d offset %d: %w", partition, r.Offset, err)
		}
	}
	if err := b.Set(offsetKey(prefixMerchantOffset, s.opts.MerchantsTopic, partition), binary.BigEndian.AppendUint64(nil, uint64(next)), nil); err != nil {
		return fmt.Errorf("apply merchant settings: %w", err)
	}
	// Sync: settings are few, and a merchant's keys and users must not
	// come back after the machine crashes having applied their removal.
	if err := s.commit("apply_merchants", b, pebble.Sync); err != nil {
		return fmt.Errorf("apply merchant settings: %w", err)
	}
	s.publish(s.merchantOffsets, partition, next, 0)
	return nil
}

// MerchantSettings calls fn with each stored merchant's settings, in
// merchant_id order (fn must not keep value).
func (s *Store) MerchantSettings(fn func(merchantID string, value []byte)) error {
	return wrapErr("merchant settings", s.scan(prefixMerchantSettings, func(k, v []byte) {
		fn(string(k[len(prefixMerchantSettings):]), v)
	}))
}

// MerchantOffsets is EventOffsets for the merchant-settings topic.
func (s *Store) MerchantOffsets() map[int]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.merchantOffsets)
}
