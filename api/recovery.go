package api

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// recoveries publishes the bulk recoveries confirmed on this instance's
// console, each by a pool of recoveryWorkers, and remembers the last
// maxBatches for their progress pages. It is a component of the server:
// stop cancels what is being published (confirming again publishes the
// rest: the command_ids are the same) and waits for the workers.
type recoveries struct {
	commands Commands
	log      *slog.Logger
	// ctx is cancelled by stop: the workers stop publishing.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	batches map[string]*batch
	order   []string // batch ids, oldest first
	// publishing tracks the recoveries being published, which stop waits for.
	publishing sync.WaitGroup
}

func newRecoveries(commands Commands, log *slog.Logger) *recoveries {
	ctx, cancel := context.WithCancel(context.Background())
	return &recoveries{commands: commands, log: log, ctx: ctx, cancel: cancel, batches: map[string]*batch{}}
}

// batch is a bulk recovery this instance is publishing or has published:
// the union of the plans confirmed under its batch id.
type batch struct {
	filter  projection.AttentionFilter
	by      string
	started time.Time

	mu        sync.Mutex
	commands  []schemas.ResendCommand
	published map[string]bool // command_ids the brokers took
	running   bool
}

// batchProgress is a recovery's progress as the batch page shows it.
type batchProgress struct {
	ID                       string
	Total, Published, Failed int
	Decided, Sent, NotSent   int
	Done                     bool
	Started                  time.Time
	By                       string
	Filter                   projection.AttentionFilter
}

// confirm publishes a recovery's commands in the background. A batch
// confirmed again (here, or on another instance, by the same operator or
// another) has the same batch id and command_ids: here it adds what the
// new plan holds that the batch has not published yet (a command whose
// publishing failed, a transaction that failed since), and is a no-op
// while the batch is being published; elsewhere it publishes the same
// command_ids, which are decided once.
func (c *recoveries) confirm(plan projection.RecoveryPlan, f projection.AttentionFilter, by string) {
	c.mu.Lock()
	b := c.batches[plan.BatchID]
	if b == nil {
		b = &batch{filter: f, by: by, started: time.Now(), published: map[string]bool{}}
		c.batches[plan.BatchID] = b
		c.order = append(c.order, plan.BatchID)
		c.evictLocked()
	}
	c.mu.Unlock()
	b.mu.Lock()
	if b.running {
		b.mu.Unlock()
		return
	}
	known := map[string]bool{}
	for _, cmd := range b.commands {
		known[cmd.CommandID] = true
	}
	var todo []schemas.ResendCommand
	for _, cmd := range plan.Commands {
		if !known[cmd.CommandID] {
			b.commands = append(b.commands, cmd)
		}
		if !b.published[cmd.CommandID] {
			todo = append(todo, cmd)
		}
	}
	b.running = len(todo) > 0
	b.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	c.log.Info("console: recovery started", "user", by, "batch", plan.BatchID, "commands", len(todo))
	c.publishing.Add(1)
	go func() {
		defer c.publishing.Done()
		ctx := c.ctx
		work := make(chan schemas.ResendCommand)
		var wg sync.WaitGroup
		for range recoveryWorkers {
			wg.Go(func() {
				for cmd := range work {
					if err := c.commands.PublishCommand(ctx, cmd, "recover-"+plan.BatchID); err == nil {
						b.mu.Lock()
						b.published[cmd.CommandID] = true
						b.mu.Unlock()
					}
				}
			})
		}
	send:
		for _, cmd := range todo {
			select {
			case work <- cmd:
			case <-ctx.Done(): // the server stops: confirming again publishes the rest
				break send
			}
		}
		close(work)
		wg.Wait()
		b.mu.Lock()
		b.running = false
		published := len(b.published)
		b.mu.Unlock()
		c.log.Info("console: recovery published", "batch", plan.BatchID, "published", published)
	}()
}

// evictLocked forgets the oldest recoveries that are not being published
// beyond maxBatches (their commands are decided all the same).
func (c *recoveries) evictLocked() {
	for len(c.order) > maxBatches {
		evicted := false
		for i, id := range c.order {
			b := c.batches[id]
			b.mu.Lock()
			running := b.running
			b.mu.Unlock()
			if !running {
				delete(c.batches, id)
				c.order = append(c.order[:i], c.order[i+1:]...)
				evicted = true
				break
			}
		}
		if !evicted {
			return
		}
	}
}

// progress is a recovery's progress as far as this instance published it,
// and its commands (whose results the page counts); ok is false for a
// batch this instance does not know (never confirmed here, or forgotten).
func (c *recoveries) progress(id string) (p batchProgress, commands []schemas.ResendCommand, ok bool) {
	c.mu.Lock()
	b := c.batches[id]
	c.mu.Unlock()
	if b == nil {
		return p, nil, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	commands = slices.Clone(b.commands)
	p = batchProgress{ID: id, Total: len(commands), Published: len(b.published), Done: !b.running,
		Started: b.started, By: b.by, Filter: b.filter}
	if p.Done {
		p.Failed = p.Total - p.Published // not published (yet): confirming again retries them
	}
	return p, commands, true
}

// stop cancels the recoveries being published and waits for their
// workers, or for ctx.
func (c *recoveries) stop(ctx context.Context) {
	c.cancel()
	done := make(chan struct{})
	go func() { c.publishing.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
