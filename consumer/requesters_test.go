package consumer

import (
	"testing"

	"github.com/notifyd/notifyd/projection"
)

// TestResultWaiters: every registration of a command_id is woken once with
// its first result; a cancelled one is not, and nothing is left behind.
func TestResultWaiters(t *testing.T) {
	var w resultWaiters
	a, cancelA := w.watch("c1")
	b, cancelB := w.watch("c1")
	c, cancelC := w.watch("c2")
	cancelC()
	w.wake([]projection.FirstResult{{CommandID: "c1", Value: []byte("r1")}, {CommandID: "c2", Value: []byte("r2")}, {CommandID: "c3", Value: []byte("r3")}})
	for name, ch := range map[string]<-chan []byte{"a": a, "b": b} {
		select {
		case v := <-ch:
			if string(v) != "r1" {
				t.Errorf("%s woken with %q", name, v)
			}
		default:
			t.Errorf("%s not woken", name)
		}
	}
	select {
	case v := <-c:
		t.Errorf("cancelled registration woken with %q", v)
	default:
	}
	// A second result of c1 (a replay) wakes nobody: the waiters are gone.
	w.wake([]projection.FirstResult{{CommandID: "c1", Value: []byte("again")}})
	cancelA()
	cancelB()
	if len(w.waiting) != 0 {
		t.Errorf("registrations left: %v", w.waiting)
	}
}
