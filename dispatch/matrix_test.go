package dispatch

import (
	"testing"

	"github.com/notifyd/notifyd/schemas"
)

func TestSupportsMatrix(t *testing.T) {
	// want[state] = {email, sms, whatsapp}
	want := map[schemas.State][3]bool{
		schemas.StateCreated:        {true, true, true},
		schemas.StatePending:        {false, false, false},
		schemas.StateAttempted:      {false, false, false},
		schemas.StateAuthorized:     {true, true, true},
		schemas.StatePaid:           {true, true, true},
		schemas.StateFailed:         {true, true, true},
		schemas.StateCanceled:       {true, true, true},
		schemas.StateExpired:        {true, true, true},
		schemas.StateInvalided:      {false, false, false},
		schemas.StateRefunded:       {true, true, false},
		schemas.StateVoided:         {true, true, false},
		schemas.StateCaptured:       {true, true, false},
		schemas.StateCOD:            {false, false, false},
		schemas.StateRefundQueued:   {false, false, false},
		schemas.StateRefundRejected: {false, false, false},
	}
	if len(want) != len(schemas.States) {
		t.Fatalf("table covers %d states, schemas has %d", len(want), len(schemas.States))
	}
	channels := []schemas.Channel{schemas.ChannelEmail, schemas.ChannelSMS, schemas.ChannelWhatsApp}
	for _, st := range schemas.States {
		w, ok := want[st]
		if !ok {
			t.Fatalf("state %s missing from table", st)
		}
		for i, ch := range channels {
			if got := Supports(ch, st); got != w[i] {
				t.Errorf("Supports(%s, %s) = %v, want %v", ch, st, got, w[i])
			}
		}
	}
	for _, st := range []schemas.State{"", "PAID", "unknown"} {
		for _, ch := range channels {
			if Supports(ch, st) {
				t.Errorf("Supports(%s, %q) = true", ch, st)
			}
		}
	}
	if Supports("fax", schemas.StatePaid) || Supports("", schemas.StatePaid) {
		t.Error("an unknown channel supports paid")
	}
	for _, ch := range channels {
		for _, st := range SupportedStates(ch) {
			if !Supports(ch, st) {
				t.Errorf("SupportedStates(%s) lists %s but Supports says no", ch, st)
			}
		}
	}
}
