package wmkafka

import (
	"fmt"
	"math/rand"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The tracker tests are scripts in a small language, one step per line:
//
//	add P/O [KEY] [reset=N]   add a record (KEY defaults to ""); reset=N: expect a reset releasing N entries
//	next P/O | next -         expect next() to hand out that record, or nothing
//	ack P/O                   ack the last handed-out entry of P/O; expects released count if "rel=N" given
//	nack P/O                  nack it
//	requeue P/O ok|dropped    requeue it after its delay; expect it queued or dropped (stale)
//	abandon P/O               abandon it
//	commits P:O... | commits -  expect exactly these commit points, then mark them committed
//	stalecommit P:O           take a commit point now, to be confirmed later with "confirm"
//	confirm                   confirm the commit point taken by stalecommit
//	inflight N / buffered N   expect counters
func TestTracker(t *testing.T) {
	cases := []struct {
		name        string
		concurrency int
		steps       []string
	}{
		{
			name:        "out-of-order acks commit only up to the lowest unfinished offset",
			concurrency: 10,
			steps: []string{
				"add 0/0 a", "add 0/1 b", "add 0/2 c", "add 0/3 d", "add 0/4 e",
				"next 0/0", "next 0/1", "next 0/2", "next 0/3", "next 0/4", "next -",
				"ack 0/3 rel=0", "ack 0/1 rel=0", "ack 0/2 rel=0",
				"commits -", // 0 is unfinished: nothing above the start position may be committed
				"buffered 5",
				"ack 0/0 rel=4",
				"commits 0:4",
				"commits -",
				"ack 0/4 rel=1",
				"commits 0:5",
				"inflight 0", "buffered 0",
			},
		},
		{
			name:        "same key is held and released in offset order, other keys pass",
			concurrency: 10,
			steps: []string{
				"add 0/0 a", "add 0/1 a", "add 0/2 b", "add 0/3 a", "add 0/4 b",
				"next 0/0", "next 0/2", "next -",
				"ack 0/2", "next 0/4", "next -",
				"ack 0/0", "next 0/1", "next -",
				"ack 0/1", "next 0/3",
				"ack 0/3", "ack 0/4",
				"commits 0:5",
			},
		},
		{
			name:        "empty key is one key per partition",
			concurrency: 10,
			steps: []string{
				"add 0/0", "add 0/1", "add 1/0", "add 1/1",
				"next 0/0", "next 1/0", "next -",
				"ack 1/0", "next 1/1", "next -",
				"ack 0/0", "next 0/1",
			},
		},
		{
			name:        "concurrency bounds handed-out messages across partitions",
			concurrency: 2,
			steps: []string{
				"add 0/0 a", "add 1/0 b", "add 0/1 c",
				"next 0/0", "next 1/0", "next -", "inflight 2",
				"ack 1/0", "next 0/1", "next -",
				"ack 0/0", "ack 0/1",
				"commits 0:2 1:1",
			},
		},
		{
			name:        "nack keeps the key's turn and redelivers the same record",
			concurrency: 10,
			steps: []string{
				"add 0/0 a", "add 0/1 a", "add 0/2 b",
				"next 0/0", "next 0/2",
				"nack 0/0", "next -", "inflight 2",
				"requeue 0/0 ok", "next 0/0", // redelivered, 0/1 still waits
				"next -",
				"ack 0/0", "next 0/1",
				"ack 0/1", "ack 0/2", "commits 0:3",
			},
		},
		{
			name:        "redelivery is not limited by concurrency (it already owns a slot)",
			concurrency: 1,
			steps: []string{
				"add 0/0 a", "add 0/1 b",
				"next 0/0", "next -",
				"nack 0/0", "requeue 0/0 ok", "next 0/0", "next -",
				"ack 0/0", "next 0/1",
			},
		},
		{
			name:        "partition reset drops waiting records and ignores stale acks for commits",
			concurrency: 10,
			steps: []string{
				"add 0/0 a", "add 0/1 b", "add 0/2 a", "add 1/0 z",
				"next 0/0", "next 0/1", "next 1/0", "next -",
				"ack 0/1",
				// The group re-reads partition 0 from committed offset 0: 0/0, 0/1, 0/2 again.
				"add 0/0 a reset=3", "add 0/1 b", "add 0/2 a",
				"buffered 4", // 3 new records of partition 0 + 1/0
				"next 0/1",   // new 0/1 (key b free); new 0/0 waits for the stale 0/0 holding key a
				"next -",
				"ack 0/0 rel=0", // stale ack: releases key a, commits nothing
				"commits -",
				"next 0/0", // the re-fetched record, delivered again
				"ack 0/0", "ack 0/1",
				"commits 0:2",
				"next 0/2", "ack 0/2", "ack 1/0",
				"commits 0:3 1:1",
			},
		},
		{
			name:        "reset after partial commit restarts from the committed offset",
			concurrency: 10,
			steps: []string{
				"add 0/5 a", "add 0/6 b", "add 0/7 c",
				"next 0/5", "next 0/6", "next 0/7",
				"ack 0/5", "ack 0/6",
				"commits 0:7",
				"add 0/7 c reset=1", // re-fetched from committed 7 while 0/7 is in flight
				"next -",            // key c held by the stale 0/7
				"commits -",         // position 7 is the new start
				"ack 0/7",           // stale
				"commits -",
				"next 0/7", "ack 0/7",
				"commits 0:8",
			},
		},
		{
			name:        "nack before reset: stale redelivery is dropped, the re-fetched copy is delivered",
			concurrency: 10,
			steps: []string{
				"add 0/0 a", "next 0/0", "nack 0/0",
				"add 0/0 a reset=1",
				"next -", // key a held by the nacked stale entry
				"requeue 0/0 dropped",
				"inflight 0",
				"next 0/0", "ack 0/0", "commits 0:1",
			},
		},
		{
			name:        "redelivery queued before reset is dropped at hand-out time",
			concurrency: 10,
			steps: []string{
				"add 0/0 a", "next 0/0", "nack 0/0", "requeue 0/0 ok",
				"add 0/0 a reset=1",
				"next 0/0", // the new copy, once the stale redelivery was dropped
				"inflight 1",
				"ack 0/0", "commits 0:1",
			},
		},
		{
			name:        "commit point computed before a reset is not recorded after it",
			concurrency: 10,
			steps: []string{
				"add 0/0 a", "next 0/0", "ack 0/0",
				"stalecommit 0:1",
				"add 0/0 a reset=0", // everything was done: nothing buffered to release
				"confirm",
				"commits -", // committed is the new start position (0), committable is 0
				"next 0/0", "ack 0/0", "commits 0:1",
			},
		},
		{
			name:        "abandoned message frees its slots but is never committed past",
			concurrency: 10,
			steps: []string{
				"add 0/0 a", "add 0/1 a", "add 0/2 b",
				"next 0/0", "next 0/2",
				"abandon 0/0", "inflight 1",
				"next 0/1", "ack 0/1", "ack 0/2",
				"commits -",
				"ack 0/0 rel=0", // late ack after abandon is ignored
				"commits -",
			},
		},
		{
			name:        "duplicate ack and ack after nack are ignored",
			concurrency: 10,
			steps: []string{
				"add 0/0 a", "add 0/1 a", "next 0/0",
				"ack 0/0", "ack 0/0 rel=0", "inflight 0",
				"next 0/1", "nack 0/1", "ack 0/1 rel=0", "inflight 1",
			},
		},
		{
			name:        "offset gaps (compaction) are fine",
			concurrency: 10,
			steps: []string{
				"add 0/10 a", "add 0/13 b", "add 0/20 c",
				"next 0/10", "next 0/13", "next 0/20",
				"ack 0/13", "commits -", "ack 0/10", "commits 0:20", "ack 0/20", "commits 0:21",
			},
		},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &trackerHarness{t: t, tr: newTracker[string](tc.concurrency), handed: map[string]*entry[string]{}}
			for i, s := range tc.steps {
				h.step = fmt.Sprintf("step %d %q", i, s)
				h.run(s)
			}
		})
	}
}

type trackerHarness struct {
	t      *testing.T
	tr     *tracker[string]
	handed map[string]*entry[string] // "P/O" -> last handed-out entry
	stale  []commitPoint
	step   string
}

func (h *trackerHarness) fatalf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("%s: %s", h.step, fmt.Sprintf(format, args...))
}

func parsePO(s string) (int, int64) {
	p, o, _ := strings.Cut(s, "/")
	pi, err1 := strconv.Atoi(p)
	oi, err2 := strconv.ParseInt(o, 10, 64)
	if err1 != nil || err2 != nil {
		panic("bad P/O " + s)
	}
	return pi, oi
}

func parseCommit(s string) commitPoint {
	p, o, _ := strings.Cut(s, ":")
	pi, err1 := strconv.Atoi(p)
	oi, err2 := strconv.ParseInt(o, 10, 64)
	if err1 != nil || err2 != nil {
		panic("bad P:O " + s)
	}
	return commitPoint{partition: pi, offset: oi}
}

func (h *trackerHarness) get(po string) *entry[string] {
	h.t.Helper()
	e := h.handed[po]
	if e == nil {
		h.fatalf("%s was never handed out", po)
	}
	return e
}

func (h *trackerHarness) run(s string) {
	h.t.Helper()
	f := strings.Fields(s)
	switch f[0] {
	case "add":
		p, o := parsePO(f[1])
		key, wantReset := "", -1
		for _, a := range f[2:] {
			if n, ok := strings.CutPrefix(a, "reset="); ok {
				wantReset, _ = strconv.Atoi(n)
			} else {
				key = a
			}
		}
		_, reset, released := h.tr.add(p, o, key, f[1])
		switch {
		case wantReset < 0 && reset:
			h.fatalf("unexpected reset")
		case wantReset >= 0 && !reset:
			h.fatalf("expected a reset")
		case wantReset >= 0 && released != wantReset:
			h.fatalf("reset released %d, want %d", released, wantReset)
		}
	case "next":
		e := h.tr.next()
		switch {
		case f[1] == "-" && e != nil:
			h.fatalf("next handed out %d/%d, want nothing", e.partition, e.offset)
		case f[1] == "-":
		case e == nil:
			h.fatalf("next handed out nothing, want %s", f[1])
		default:
			if got := fmt.Sprintf("%d/%d", e.partition, e.offset); got != f[1] {
				h.fatalf("next handed out %s, want %s", got, f[1])
			}
			if e.value != f[1] {
				h.fatalf("entry value %q, want %q", e.value, f[1])
			}
			h.handed[f[1]] = e
		}
	case "ack":
		released := h.tr.ack(h.get(f[1]))
		if len(f) > 2 {
			want, _ := strconv.Atoi(strings.TrimPrefix(f[2], "rel="))
			if released != want {
				h.fatalf("ack released %d, want %d", released, want)
			}
		}
	case "nack":
		if !h.tr.nack(h.get(f[1])) {
			h.fatalf("nack refused")
		}
	case "requeue":
		if got := h.tr.requeue(h.get(f[1])); got != (f[2] == "ok") {
			h.fatalf("requeue returned %v, want %s", got, f[2])
		}
	case "abandon":
		h.tr.abandon(h.get(f[1]))
	case "commits":
		var want []commitPoint
		if f[1] != "-" {
			for _, c := range f[1:] {
				want = append(want, parseCommit(c))
			}
		}
		got := h.tr.commits()
		slices.SortFunc(got, func(a, b commitPoint) int { return a.partition - b.partition })
		if len(got) != len(want) {
			h.fatalf("commits %v, want %v", got, want)
		}
		for i := range got {
			if got[i].partition != want[i].partition || got[i].offset != want[i].offset {
				h.fatalf("commits %v, want %v", got, want)
			}
			h.tr.committed(got[i])
		}
	case "stalecommit":
		want := parseCommit(f[1])
		got := h.tr.commits()
		if len(got) != 1 || got[0].partition != want.partition || got[0].offset != want.offset {
			h.fatalf("commits %v, want [%v]", got, want)
		}
		h.stale = got
	case "confirm":
		for _, cp := range h.stale {
			h.tr.committed(cp)
		}
	case "inflight":
		want, _ := strconv.Atoi(f[1])
		if h.tr.handedOut != want {
			h.fatalf("handed out %d, want %d", h.tr.handedOut, want)
		}
	case "buffered":
		want, _ := strconv.Atoi(f[1])
		if h.tr.buffered != want {
			h.fatalf("buffered %d, want %d", h.tr.buffered, want)
		}
	default:
		panic("unknown step " + s)
	}
}

// TestTrackerRandomized drives the tracker with random acks, nacks and resets and checks the invariants:
// per-key hand-out order, the concurrency bound, and that a commit never passes an unacked record.
func TestTrackerRandomized(t *testing.T) {
	for seed := range int64(50) {
		rnd := rand.New(rand.NewSource(seed))
		const concurrency = 4
		tr := newTracker[int](concurrency)
		keys := []string{"", "a", "b", "c", "d", "e"}
		next := map[int]int64{}          // next offset to add per partition
		keyOf := map[[2]int64]string{}   // (p,o) -> key
		acked := map[[2]int64]bool{}     // records acked at least once (current or stale epoch)
		lastHanded := map[string]int64{} // "p/key" -> last offset handed out in the current epoch
		var inflight []*entry[int]
		for range 2000 {
			switch r := rnd.Intn(10); {
			case r < 4: // fetch
				p := rnd.Intn(3)
				o := next[p]
				if rnd.Intn(40) == 0 && o > 0 {
					o = int64(rnd.Intn(int(o))) // rebalance: restart lower
					for k := range lastHanded {
						if strings.HasPrefix(k, strconv.Itoa(p)+"/") {
							delete(lastHanded, k)
						}
					}
				}
				k, ok := keyOf[[2]int64{int64(p), o}]
				if !ok {
					k = keys[rnd.Intn(len(keys))]
					keyOf[[2]int64{int64(p), o}] = k
				}
				tr.add(p, o, k, int(o))
				next[p] = o + 1
			case r < 7: // hand out
				e := tr.next()
				if e == nil {
					continue
				}
				if tr.handedOut > concurrency {
					t.Fatalf("seed %d: %d handed out > %d", seed, tr.handedOut, concurrency)
				}
				if e.deliveries == 1 && !tr.stale(e) {
					lk := strconv.Itoa(e.partition) + "/" + e.key
					if last, ok := lastHanded[lk]; ok && last >= e.offset {
						t.Fatalf("seed %d: key %q handed out %d after %d", seed, lk, e.offset, last)
					}
					lastHanded[lk] = e.offset
				}
				// Only one handed-out entry per (partition, key).
				for _, o := range inflight {
					handedOut := o.state == stateInFlight || o.state == stateNacked || o.state == stateRedeliver
					if handedOut && o.partition == e.partition && o.key == e.key && o != e {
						t.Fatalf("seed %d: key %d/%q handed out twice", seed, e.partition, e.key)
					}
				}
				if !slices.Contains(inflight, e) {
					inflight = append(inflight, e)
				}
			default: // finish one
				if len(inflight) == 0 {
					continue
				}
				i := rnd.Intn(len(inflight))
				e := inflight[i]
				if rnd.Intn(5) == 0 {
					tr.nack(e)
					tr.requeue(e)
					if e.state == stateRedeliver {
						continue // stays handed out
					}
				} else {
					if e.state == stateInFlight {
						acked[[2]int64{int64(e.partition), e.offset}] = true
					}
					tr.ack(e)
				}
				inflight = slices.Delete(inflight, i, i+1)
			}
			for _, cp := range tr.commits() {
				ps := tr.partitions[cp.partition]
				for o := ps.committed; o < cp.offset; o++ {
					if _, fetched := keyOf[[2]int64{int64(cp.partition), o}]; fetched && !acked[[2]int64{int64(cp.partition), o}] {
						t.Fatalf("seed %d: commit %d:%d passes unacked offset %d", seed, cp.partition, cp.offset, o)
					}
				}
				tr.committed(cp)
			}
		}
	}
}
