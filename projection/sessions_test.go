package projection

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// TestSessionEnds: the latest end of a user's sessions counts, whatever
// order the records come in; other users are untouched; a tombstone or a
// record that is not a session end changes nothing; the offsets and ends
// survive a reopen; an end recorded here counts at once.
func TestSessionEnds(t *testing.T) {
	dir := t.TempDir()
	opts := Options{EventsTopic: "payment-events", ResultsTopic: "notification-results", SessionsTopic: "notifyd-console-sessions"}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	at := func(sec int) time.Time { return time.Date(2026, 12, 7, 9, 0, sec, 0, time.UTC) }
	end := func(user string, sec int) []byte {
		b, _ := json.Marshal(schemas.SessionEnd{Username: user, EndedAt: at(sec), Reason: schemas.SessionSignedOut})
		return b
	}
	records := []Record{
		{Offset: 0, Key: []byte("ops"), Value: end("ops", 20)},
		{Offset: 1, Key: []byte("ops"), Value: end("ops", 10)}, // earlier, read later
		{Offset: 2, Key: []byte("look"), Value: end("look", 5)},
		{Offset: 3, Key: []byte("ops"), Value: nil},
		{Offset: 4, Key: []byte("x"), Value: []byte(`{"username":""}`)},
		{Offset: 5, Key: []byte("x"), Value: []byte(`not json`)},
	}
	if err := s.ApplySessionEnds(2, records); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, user string, want time.Time) {
		t.Helper()
		got, err := s.SessionsEnded(user)
		if err != nil || !got.Equal(want) {
			t.Errorf("SessionsEnded(%q) = %v %v, want %v", user, got, err, want)
		}
	}
	check(s, "ops", at(20))
	check(s, "look", at(5))
	check(s, "nobody", time.Time{})
	if err := s.RecordSessionEnd(schemas.SessionEnd{Username: "look", EndedAt: at(30)}); err != nil {
		t.Fatal(err)
	}
	check(s, "look", at(30))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.SessionOffsets(); got[2] != 6 || len(got) != 1 {
		t.Errorf("offsets after reopen: %v, want partition 2 at 6", got)
	}
	check(s, "ops", at(20))
	check(s, "look", at(30))
	if err := (&Store{opts: Options{}}).ApplySessionEnds(0, records[:1]); err == nil {
		t.Error("applied with no SessionsTopic")
	}
}
