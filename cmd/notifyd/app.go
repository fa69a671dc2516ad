package main

import (
	"context"
	"log/slog"
	"time"
)

// step is one long-lived part of the process in the app's table: how it
// starts, how it stops, and how long its stop may take.
type step struct {
	name string
	// start starts the part and returns once it runs (a server listens, a
	// service was launched); an error stops the parts already started.
	start func(ctx context.Context) error
	// stop stops it within ctx (budget); nil: nothing to stop.
	stop   func(ctx context.Context) error
	budget time.Duration
}

// app is the process's lifecycle, written once: its parts are started in
// the order of the table and stopped in reverse, each within its budget,
// with an error per step (as consumer's runtime.stop does for the
// service's own parts). A part that ends on its own (the service failing)
// reports through exit and stops the app as a stop request does.
type app struct {
	log   *slog.Logger
	steps []step
	// exits receives the error of a part that ended on its own.
	exits chan error
}

func newApp(log *slog.Logger) *app {
	return &app{log: log, exits: make(chan error, 1)}
}

// add appends a step to the table.
func (a *app) add(s step) { a.steps = append(a.steps, s) }

// exit reports that a part ended on its own with err (nil: a clean end
// nobody asked for); the app stops. Only the first report counts.
func (a *app) exit(err error) {
	select {
	case a.exits <- err:
	default:
	}
}

// run starts every step in order, waits for ctx to end (a stop request) or
// for a part to end on its own, then stops the started steps in reverse.
// It returns the error of the part that ended (nil after a stop request)
// or the first start error; the stop errors are logged, each with its
// step (a part whose stop decides the exit status reports it itself).
func (a *app) run(ctx context.Context) error {
	started := 0
	var cause error
	for _, s := range a.steps {
		if err := s.start(ctx); err != nil {
			cause = err
			break
		}
		started++
	}
	if cause == nil {
		select {
		case <-ctx.Done():
			a.log.Info("stop requested (SIGTERM or interrupt)")
		case cause = <-a.exits:
		}
	}
	a.stop(started)
	return cause
}

// stop stops the first n steps in reverse order, each within its budget,
// and logs the error of each that fails.
func (a *app) stop(n int) {
	for i := n - 1; i >= 0; i-- {
		s := a.steps[i]
		if s.stop == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.budget)
		err := s.stop(ctx)
		cancel()
		if err != nil {
			a.log.Warn("stop: "+s.name, "error", err)
		}
	}
}
