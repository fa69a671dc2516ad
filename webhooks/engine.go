package webhooks

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Endpoint is one subscription of a merchant: where its messages go, the
// key they are signed with and the event types it takes.
type Endpoint struct {
	// ID names the endpoint for good (its deliveries and state are kept
	// under it).
	ID         string
	MerchantID string
	URL        string
	Key        Key
	// Events are the types it takes (TypeResult, TypeDelivery).
	Events []string
}

// Wants reports whether the endpoint takes messages of type typ.
func (e Endpoint) Wants(typ string) bool { return slices.Contains(e.Events, typ) }

// Delivery is one message due at one endpoint, and how far its schedule
// went.
type Delivery struct {
	EndpointID string
	Message    Message
	// Attempts is the number of attempts made.
	Attempts int
	// Due is when the next attempt is to be made.
	Due time.Time
}

// EndpointState is an endpoint's health as the engine saw it.
type EndpointState struct {
	EndpointID string
	// FailingSince is the time of the first failed attempt since the last
	// delivered one (zero: healthy).
	FailingSince time.Time
	// Disabled is when the endpoint was disabled, after failing for
	// DisableAfter (zero: it is not). A disabled endpoint gets no attempt:
	// its messages are finished as such until it is enabled again (a
	// change of its settings).
	Disabled time.Time
	// Last is its last attempt and LastAt when it was made.
	Last   Attempt
	LastAt time.Time
}

// Journal is where the engine keeps what a restart must find: the
// deliveries not finished, with their schedule, and each endpoint's state.
// Every method is durable when it returns nil. The engine calls it from
// several goroutines.
type Journal interface {
	// Add records a new delivery, unless the endpoint already has one of
	// that message (pending or finished: a record read again after a
	// crash is not delivered again); added says which.
	Add(d Delivery) (added bool, err error)
	// Save records a pending delivery's schedule moved.
	Save(d Delivery) error
	// Finish records the end of a delivery (delivered, refused for good,
	// its schedule spent, or its endpoint disabled) with its last attempt;
	// it is no longer pending.
	Finish(d Delivery, last Attempt) error
	// Pending returns up to limit pending deliveries of an endpoint,
	// earliest due first, leaving out those whose message id skip
	// reports.
	Pending(endpointID string, limit int, skip func(messageID string) bool) ([]Delivery, error)
	// SaveState records an endpoint's state.
	SaveState(s EndpointState) error
}

// Config configures an Engine; zero members take their defaults
// (setDefaults), and Validate refuses the rest.
type Config struct {
	Sender  *Sender
	Journal Journal
	// Schedule is the retry schedule (DefaultSchedule).
	Schedule Schedule
	// DisableAfter disables an endpoint failing for that long
	// (webhooks.disable_after, 5 days).
	DisableAfter time.Duration
	// QueueSize bounds the deliveries an endpoint holds in memory (1,000);
	// more stay in the journal until it has room.
	QueueSize int
	// PerEndpoint bounds an endpoint's attempts in flight (4).
	PerEndpoint int
	// JournalRetry is the wait before a delivery whose journal write
	// failed is taken up again (1 s).
	JournalRetry time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	// Observe, when set, is told of every attempt made.
	Observe func(ep Endpoint, a Attempt, took time.Duration)
}

func (c *Config) setDefaults() {
	if c.Schedule == nil {
		c.Schedule = DefaultSchedule()
	}
	if c.DisableAfter == 0 {
		c.DisableAfter = 5 * 24 * time.Hour
	}
	if c.QueueSize == 0 {
		c.QueueSize = 1000
	}
	if c.PerEndpoint == 0 {
		c.PerEndpoint = 4
	}
	if c.JournalRetry == 0 {
		c.JournalRetry = time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate refuses a configuration the engine cannot run with.
func (c *Config) Validate() error {
	switch {
	case c.Sender == nil:
		return errors.New("webhooks: a Sender is required")
	case c.Journal == nil:
		return errors.New("webhooks: a Journal is required")
	case len(c.Schedule) == 0:
		return errors.New("webhooks: the schedule has no attempt")
	case c.DisableAfter < 0:
		return errors.New("webhooks.disable_after: must not be negative")
	case c.QueueSize < 1 || c.PerEndpoint < 1 || c.JournalRetry < 0:
		return errors.New("webhooks: queue size and attempts per endpoint must be at least 1")
	}
	return nil
}

// Engine delivers messages to endpoints, each endpoint on its own: its
// own queue (bounded), its own attempts in flight (bounded) and its own
// schedule, so a slow or dead endpoint delays no other.
type Engine struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	workers map[string]*worker
	closed  bool
}

// ErrClosed is what Submit answers once Close was called.
var ErrClosed = errors.New("webhooks: engine closed")

// NewEngine returns a running engine.
func NewEngine(cfg Config) (*Engine, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{cfg: cfg, ctx: ctx, cancel: cancel, workers: map[string]*worker{}}, nil
}

// Resume takes up an endpoint after a start: its saved state, and its
// pending deliveries from the journal, each at its saved attempt and due
// time (a schedule resumes, it does not restart). An endpoint's settings
// that changed since (URL, key, events) are taken as given.
func (e *Engine) Resume(ep Endpoint, st EndpointState) error {
	w, err := e.worker(ep, &st)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.spilled = true
	w.mu.Unlock()
	w.poke()
	return nil
}

// Submit delivers m to ep: recorded in the journal first (an error there
// is returned, and nothing is queued), then attempted as soon as the
// endpoint has a free slot. A message the endpoint already has (pending or
// finished) changes nothing. To a disabled endpoint, the delivery is
// recorded finished ("endpoint disabled") without an attempt.
func (e *Engine) Submit(ep Endpoint, m Message) error {
	w, err := e.worker(ep, nil)
	if err != nil {
		return err
	}
	d := Delivery{EndpointID: ep.ID, Message: m, Due: e.cfg.Now()}
	// Recorded and queued under fill: a refill's list of pending
	// deliveries never holds one that reached memory after it was read.
	w.fill.Lock()
	defer w.fill.Unlock()
	added, err := e.cfg.Journal.Add(d)
	if err != nil {
		return fmt.Errorf("webhooks: record delivery %s: %w", m.ID, err)
	}
	if added {
		w.add(d)
	}
	return nil
}

// State returns an endpoint's state as the engine knows it.
func (e *Engine) State(endpointID string) (EndpointState, bool) {
	e.mu.Lock()
	w, ok := e.workers[endpointID]
	e.mu.Unlock()
	if !ok {
		return EndpointState{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, true
}

// Close stops every endpoint: attempts in flight are canceled and not
// counted (their deliveries stay pending in the journal as they were).
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
}

// worker returns ep's worker, started on first use (with st, when given),
// its endpoint updated to ep.
func (e *Engine) worker(ep Endpoint, st *EndpointState) (*worker, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	w, ok := e.workers[ep.ID]
	if !ok {
		w = &worker{e: e, ep: ep, state: EndpointState{EndpointID: ep.ID}, queued: map[string]bool{},
			wake: make(chan struct{}, 1), slots: make(chan struct{}, e.cfg.PerEndpoint)}
		e.workers[ep.ID] = w
		e.wg.Add(1)
		go w.run()
	}
	w.mu.Lock()
	if ok && (w.ep.URL != ep.URL || !w.ep.Key.equal(ep.Key)) {
		w.state.Disabled = time.Time{} // new settings: tried again
		w.state.FailingSince = time.Time{}
	}
	w.ep = ep
	if st != nil {
		w.state = *st
		w.state.EndpointID = ep.ID
	}
	w.mu.Unlock()
	return w, nil
}

// worker is one endpoint's queue and attempts.
type worker struct {
	e *Engine
	// fill orders refills, submissions and finishes (see Submit, finish):
	// a refill's list of pending deliveries is never stale.
	fill sync.Mutex

	mu    sync.Mutex
	ep    Endpoint
	state EndpointState
	queue dueHeap
	// queued holds the message ids in queue or in flight.
	queued map[string]bool
	// spilled says pending deliveries may be in the journal only (the
	// queue was full, or the worker resumed).
	spilled bool

	wake  chan struct{}
	slots chan struct{}
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// add queues d, or leaves it in the journal when the queue is full.
func (w *worker) add(d Delivery) {
	w.mu.Lock()
	switch {
	case w.queued[d.Message.ID]:
	case len(w.queue) >= w.e.cfg.QueueSize:
		w.spilled = true
	default:
		w.queued[d.Message.ID] = true
		heap.Push(&w.queue, d)
	}
	w.mu.Unlock()
	w.poke()
}

func (w *worker) run() {
	defer w.e.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		w.refill()
		wait := w.startDue()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-w.e.ctx.Done():
			// Wait for attempts in flight: they end canceled.
			for range cap(w.slots) {
				w.slots <- struct{}{}
			}
			return
		case <-w.wake:
		case <-timer.C:
		}
	}
}

// refill loads pending deliveries from the journal while the queue has
// room and some may be there only.
func (w *worker) refill() {
	w.fill.Lock()
	defer w.fill.Unlock()
	w.mu.Lock()
	room := w.e.cfg.QueueSize - len(w.queue)
	if !w.spilled || room < max(1, w.e.cfg.QueueSize/2) {
		w.mu.Unlock()
		return
	}
	id := w.ep.ID
	w.mu.Unlock()
	ds, err := w.e.cfg.Journal.Pending(id, room+1, func(msg string) bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.queued[msg]
	})
	if err != nil {
		return // tried again at the next wake or due time
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.spilled = len(ds) > room
	for _, d := range ds[:min(len(ds), room)] {
		if !w.queued[d.Message.ID] {
			w.queued[d.Message.ID] = true
			heap.Push(&w.queue, d)
		}
	}
}

// startDue starts the attempts that are due while slots are free, and
// returns how long until the next one is due (a second at most, so that a
// spilled queue is refilled).
func (w *worker) startDue() time.Duration {
	for {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.mu.Unlock()
			return time.Second
		}
		now := w.e.cfg.Now()
		// A disabled endpoint's deliveries are all finished now.
		if wait := w.queue[0].Due.Sub(now); wait > 0 && w.state.Disabled.IsZero() {
			w.mu.Unlock()
			return min(wait, time.Second)
		}
		select {
		case w.slots <- struct{}{}:
		default:
			w.mu.Unlock()
			return time.Second // a finishing attempt wakes the worker
		}
		d := heap.Pop(&w.queue).(Delivery)
		if !w.state.Disabled.IsZero() {
			w.mu.Unlock()
			<-w.slots
			w.finish(d, Attempt{Outcome: Final, Detail: "endpoint disabled"})
			continue
		}
		ep := w.ep
		w.mu.Unlock()
		go w.attempt(ep, d)
	}
}

// attempt makes one attempt of d and records what follows from it.
func (w *worker) attempt(ep Endpoint, d Delivery) {
	defer func() {
		<-w.slots
		w.poke()
	}()
	start := w.e.cfg.Now()
	a := w.e.cfg.Sender.Send(w.e.ctx, ep.URL, ep.Key, d.Message, start)
	if w.e.ctx.Err() != nil {
		return // closing: not an attempt; the journal keeps d as it was
	}
	took := w.e.cfg.Now().Sub(start)
	if w.e.cfg.Observe != nil {
		w.e.cfg.Observe(ep, a, took)
	}
	d.Attempts++
	if w.health(a, start) {
		a.Detail += "; endpoint disabled"
		w.finish(d, a)
		return
	}
	if a.Outcome == Retry {
		if wait, ok := w.e.cfg.Schedule.Next(d.Attempts, a.RetryAfter); ok {
			d.Due = w.e.cfg.Now().Add(wait)
			if err := w.e.cfg.Journal.Save(d); err != nil {
				d.Due = w.e.cfg.Now().Add(w.e.cfg.JournalRetry)
				d.Attempts-- // not recorded: made again, counted once
			}
			w.requeue(d)
			return
		}
	}
	w.finish(d, a)
}

// finish records d's end; a journal that fails keeps d queued, retried.
// It holds fill, so that a refill never reads d as pending and then finds
// it gone from memory.
func (w *worker) finish(d Delivery, a Attempt) {
	w.fill.Lock()
	defer w.fill.Unlock()
	if err := w.e.cfg.Journal.Finish(d, a); err != nil {
		// Made again (counted: every attempt made is), until its end is
		// recorded.
		d.Due = w.e.cfg.Now().Add(w.e.cfg.JournalRetry)
		w.requeue(d)
		return
	}
	w.mu.Lock()
	delete(w.queued, d.Message.ID)
	w.mu.Unlock()
}

func (w *worker) requeue(d Delivery) {
	w.mu.Lock()
	heap.Push(&w.queue, d)
	w.mu.Unlock()
}

// health updates the endpoint's state with an attempt made at at, and
// disables it once it has failed for DisableAfter; disabled says this
// attempt disabled it.
func (w *worker) health(a Attempt, at time.Time) (disabled bool) {
	w.mu.Lock()
	st := &w.state
	st.Last, st.LastAt = a, at
	if a.Outcome == Delivered {
		st.FailingSince = time.Time{}
	} else {
		if st.FailingSince.IsZero() {
			st.FailingSince = at
		}
		if st.Disabled.IsZero() && at.Sub(st.FailingSince) >= w.e.cfg.DisableAfter {
			st.Disabled, disabled = at, true
		}
	}
	snapshot := *st
	w.mu.Unlock()
	_ = w.e.cfg.Journal.SaveState(snapshot) // the state is advice: recomputed by the next attempt
	return disabled
}

func (k Key) equal(o Key) bool { return string(k.b) == string(o.b) }

// dueHeap orders deliveries by due time.
type dueHeap []Delivery

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].Due.Before(h[j].Due) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(Delivery)) }
func (h *dueHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	*h = old[:len(old)-1]
	return d
}
