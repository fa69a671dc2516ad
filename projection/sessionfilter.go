package projection

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// sessionFilter is an in-memory Bloom filter of the session_ids that have a
// head in the store. Applying a payment event asks it first: "surely not
// stored" means the event is a new transaction and the store is not read at
// all, which spares the lookup that dominates a rebuild (a miss in a large
// LSM reads a filter block per table, and those are evicted by the
// snapshots streaming through the block cache). "Maybe stored" falls back to
// reading the head, so the filter never changes an answer: a false positive
// (about 0.05 %) costs one read, as every lookup did before.
//
// The filter only answers once it is complete, that is when it covers every
// head in the store: at once for an empty store, else after scanning the
// head keyspace in the background (Open does not wait for it). Deleted
// sessions stay in the filter (a false positive). It grows by adding a
// filter of twice the capacity when the last one is full, so its false
// positive rate stays near 0.05 % whatever the store holds, for 16 bits
// a session.
type sessionFilter struct {
	seed     maphash.Seed
	complete atomic.Bool

	mu     sync.RWMutex
	blooms []*bloomBits
}

const (
	filterBitsPerKey   = 16
	filterHashes       = 11
	filterMinCapacity  = 1 << 16
	filterWordBits     = 64
	filterGrowthFactor = 2
)

type bloomBits struct {
	words    []uint64
	capacity int
	n        int
}

func newBloomBits(capacity int) *bloomBits {
	words := (capacity*filterBitsPerKey + filterWordBits - 1) / filterWordBits
	return &bloomBits{words: make([]uint64, words), capacity: capacity}
}

func newSessionFilter() *sessionFilter {
	return &sessionFilter{seed: maphash.MakeSeed(), blooms: []*bloomBits{newBloomBits(filterMinCapacity)}}
}

// probes calls fn with the bit index of each of the filter's hash probes for
// a key of hash h in a filter of m bits (double hashing).
func probes(h uint64, m uint64, fn func(bit uint64) bool) bool {
	h1, h2 := h, (h>>32|h<<32)|1
	for i := uint64(0); i < filterHashes; i++ {
		if !fn((h1 + i*h2) % m) {
			return false
		}
	}
	return true
}

func (b *bloomBits) add(h uint64) {
	m := uint64(len(b.words)) * filterWordBits
	probes(h, m, func(bit uint64) bool {
		b.words[bit/filterWordBits] |= 1 << (bit % filterWordBits)
		return true
	})
	b.n++
}

func (b *bloomBits) mayContain(h uint64) bool {
	m := uint64(len(b.words)) * filterWordBits
	return probes(h, m, func(bit uint64) bool {
		return b.words[bit/filterWordBits]&(1<<(bit%filterWordBits)) != 0
	})
}

func (f *sessionFilter) hash(sessionID []byte) uint64 {
	return maphash.Bytes(f.seed, sessionID)
}

// Add records that sessionID has a head in the store.
func (f *sessionFilter) Add(sessionID []byte) {
	h := f.hash(sessionID)
	f.mu.Lock()
	defer f.mu.Unlock()
	last := f.blooms[len(f.blooms)-1]
	if last.n >= last.capacity {
		last = newBloomBits(last.capacity * filterGrowthFactor)
		f.blooms = append(f.blooms, last)
	}
	last.add(h)
}

// SurelyAbsent reports whether sessionID surely has no head in the store:
// only a complete filter that does not contain it says so.
func (f *sessionFilter) SurelyAbsent(sessionID []byte) bool {
	if !f.complete.Load() {
		return false
	}
	h := f.hash(sessionID)
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, b := range f.blooms {
		if b.mayContain(h) {
			return false
		}
	}
	return true
}

// Bytes returns the memory the filter's bits take.
func (f *sessionFilter) Bytes() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n := 0
	for _, b := range f.blooms {
		n += len(b.words) * 8
	}
	return n
}
