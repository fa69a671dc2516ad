package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/schemas"
)

// ErrCatchingUp is SessionsEnded's answer while this instance has not yet
// read the console-sessions topic as far as it reached at start-up: it
// cannot tell which sessions ended, so none is taken.
var ErrCatchingUp = errors.New("console sessions not read up to date yet")

// EndSessions ends every console session of user opened at or before at,
// on every instance: it publishes a schemas.SessionEnd on the
// console-sessions topic (key username, acknowledged by all in-sync
// replicas) and records it in the store at once, so that this instance
// refuses them before reading it back. ErrNotRunning when the service does
// not run.
func (s *Service) EndSessions(ctx context.Context, user string, at time.Time) error {
	e := schemas.SessionEnd{Username: user, EndedAt: at.UTC(), Reason: schemas.SessionSignedOut}
	value, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("end sessions: %w", err)
	}
	p := s.parts()
	w, store := p.sessionsWriter, p.store
	if w == nil || store == nil {
		return ErrNotRunning
	}
	if err := w.WriteMessages(ctx, kafka.Message{Topic: s.cfg.Topics.ConsoleSessions, Key: []byte(user), Value: value}); err != nil {
		return fmt.Errorf("end sessions of %s: %w", user, err)
	}
	if err := store.RecordSessionEnd(e); err != nil {
		return fmt.Errorf("end sessions of %s: published, not recorded yet: %w", user, err)
	}
	return nil
}

// SessionsEnded returns when user's console sessions last ended (the zero
// time: never), from the console-sessions topic as this instance read it:
// ErrCatchingUp until it has read the topic as far as it reached at
// start-up, ErrNotRunning when the service does not run.
func (s *Service) SessionsEnded(user string) (time.Time, error) {
	p := s.parts()
	store, sessions := p.store, p.sessions
	if store == nil || sessions == nil {
		return time.Time{}, ErrNotRunning
	}
	if !s.sessionsCaughtUp(sessions) {
		return time.Time{}, ErrCatchingUp
	}
	return store.SessionsEnded(user)
}

// sessionsCaughtUp reports whether the console-sessions topic was read as
// far as it reached at start-up (once true, it stays so for the run).
func (s *Service) sessionsCaughtUp(sessions *follower) bool {
	if s.sessionsRead.Load() {
		return true
	}
	if sessions.lag() > 0 {
		return false
	}
	s.sessionsRead.Store(true)
	return true
}
