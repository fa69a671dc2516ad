package consumer

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSessionEndsReachEveryInstance: a session end published by one
// instance is known there at once, reaches another instance over the
// console-sessions topic, and a new instance with an empty store reads it
// before it answers for any session.
func TestSessionEndsReachEveryInstance(t *testing.T) {
	h := newHarness(t)
	a := h.start(instanceOpts{})
	b := h.start(instanceOpts{})
	at := time.Date(2026, 12, 7, 9, 0, 0, 123_000_000, time.UTC)
	if err := a.svc.EndSessions(context.Background(), "ops", at); err != nil {
		t.Fatal(err)
	}
	if got, err := a.svc.SessionsEnded("ops"); err != nil || !got.Equal(at) {
		t.Errorf("on the instance that published it: %v %v, want %v", got, err, at)
	}
	h.poll("the end on the other instance", 30*time.Second, func() bool {
		got, err := b.svc.SessionsEnded("ops")
		return err == nil && got.Equal(at)
	})
	// An earlier end read later changes nothing.
	if err := b.svc.EndSessions(context.Background(), "ops", at.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.svc.SessionsEnded("nobody"); !got.IsZero() {
		t.Errorf("a user never signed out: %v", got)
	}
	c := h.start(instanceOpts{})
	var got time.Time
	h.poll("the new instance read up to date", 30*time.Second, func() bool {
		var err error
		got, err = c.svc.SessionsEnded("ops")
		return !errors.Is(err, ErrCatchingUp) // answered for only once read up to date
	})
	if !got.Equal(at) {
		t.Errorf("a new instance: %v, want %v", got, at)
	}
}
