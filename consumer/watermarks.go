package consumer

import (
	"context"
	"sync"

	"github.com/segmentio/kafka-go"
)

// watermarks answers "what are the log bounds of these topics now?" for
// many concurrent callers with few requests: a caller joins the next round,
// which starts after its call, so the answer it gets was read from the
// broker after it asked (the read-your-writes guarantee rests on that),
// while every caller that arrives during one round shares the following one.
type watermarks struct {
	client *kafka.Client
	topics []string

	mu      sync.Mutex
	running bool
	next    *round
}

type round struct {
	done    chan struct{}
	offsets map[string]map[int]Offsets
	err     error
}

func newWatermarks(client *kafka.Client, topics ...string) *watermarks {
	return &watermarks{client: client, topics: topics}
}

// Get returns offsets read from the broker after the call began.
func (w *watermarks) Get(ctx context.Context) (map[string]map[int]Offsets, error) {
	w.mu.Lock()
	if w.next == nil {
		w.next = &round{done: make(chan struct{})}
	}
	r := w.next
	if !w.running {
		w.startLocked()
	}
	w.mu.Unlock()
	select {
	case <-r.done:
		return r.offsets, r.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (w *watermarks) startLocked() {
	r := w.next
	w.next = nil
	w.running = true
	go func() {
		// A round is not tied to one caller's context: it serves several.
		// The client's own timeouts bound it.
		r.offsets, r.err = ListOffsets(context.Background(), w.client, w.topics...)
		close(r.done)
		w.mu.Lock()
		w.running = false
		if w.next != nil {
			w.startLocked()
		}
		w.mu.Unlock()
	}()
}
