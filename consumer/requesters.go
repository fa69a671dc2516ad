package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// This file is the Kafka side of requesters living in the process (the
// HTTP API): they publish a resend command and wait for its delivery result
// like any other requester, through the results follower every instance
// runs, so any instance can answer for a command whichever instance
// decided it.

// ErrNotRunning is returned by PublishCommand and Result before the service
// has started (or after it stopped).
var ErrNotRunning = errors.New("notifyd is not running")

// resultWaiters hands the first result of a command_id read from the
// results topic to whoever registered for it. Many may wait for one
// command_id (a request retried while the first is still waiting).
type resultWaiters struct {
	mu      sync.Mutex
	waiting map[string]map[*waiter]struct{}
}

type waiter struct{ ch chan []byte }

// watch registers for commandID. The channel receives the result once;
// cancel must be called when the caller stops waiting, received or not.
func (w *resultWaiters) watch(commandID string) (<-chan []byte, func()) {
	wt := &waiter{ch: make(chan []byte, 1)}
	w.mu.Lock()
	if w.waiting == nil {
		w.waiting = map[string]map[*waiter]struct{}{}
	}
	set := w.waiting[commandID]
	if set == nil {
		set = map[*waiter]struct{}{}
		w.waiting[commandID] = set
	}
	set[wt] = struct{}{}
	w.mu.Unlock()
	return wt.ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if set := w.waiting[commandID]; set != nil {
			delete(set, wt)
			if len(set) == 0 {
				delete(w.waiting, commandID)
			}
		}
	}
}

// wake hands each first result to the waiters of its command_id and
// removes them: each is woken at most once.
func (w *resultWaiters) wake(results []projection.FirstResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.waiting) == 0 {
		return
	}
	for _, r := range results {
		for wt := range w.waiting[r.CommandID] {
			wt.ch <- r.Value // buffered, one send per waiter
		}
		delete(w.waiting, r.CommandID)
	}
}

// WatchResult registers for the first delivery result of commandID read
// from the results topic: the channel receives its bytes as published,
// once. Register before publishing the command (then the result cannot be
// missed), and check Result after registering, for a result published
// before. cancel releases the registration and must always be called.
func (s *Service) WatchResult(commandID string) (result <-chan []byte, cancel func()) {
	return s.waiters.watch(commandID)
}

// Result returns the first delivery result of commandID read from the
// results topic, if the store has it.
func (s *Service) Result(commandID string) ([]byte, bool, error) {
	store := s.parts().store
	if store == nil {
		return nil, false, ErrNotRunning
	}
	return store.PublishedResult(commandID)
}

// PublishCommand publishes a resend command on the commands topic, keyed
// by its session_id (else order_no), with a correlation_id header when
// correlationID is set (copied onto the result), and returns once all
// in-sync replicas have it. The command is validated as the consumer
// would, so that a requester learns of a mistake before waiting.
func (s *Service) PublishCommand(ctx context.Context, cmd schemas.ResendCommand, correlationID string) error {
	value, err := json.Marshal(cmd)
	if err != nil {
		return fmt.Errorf("publish command: %w", err)
	}
	if _, err := schemas.DecodeCommand(value); err != nil {
		return fmt.Errorf("publish command: %w", err)
	}
	w := s.parts().commands
	if w == nil {
		return ErrNotRunning
	}
	m := kafka.Message{Topic: s.cfg.Topics.Commands, Key: []byte(cmd.Key()), Value: value}
	if correlationID != "" {
		m.Headers = []kafka.Header{{Key: "correlation_id", Value: []byte(correlationID)}}
	}
	if err := w.WriteMessages(ctx, m); err != nil {
		return fmt.Errorf("publish command: %w", err)
	}
	return nil
}
