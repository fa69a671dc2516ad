package idempotency

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// TestAnsweredBy: a key's result answers a request again when the same
// client asks for the same channels in the same order of the same
// transaction (either identifier of it); a whole-command answer when the
// identifiers are exactly the command's.
func TestAnsweredBy(t *testing.T) {
	res := schemas.DeliveryResult{SessionID: "s1", OrderNo: "o1", RequestedBy: "shop",
		Channels: []schemas.ChannelResult{{Channel: "sms"}, {Channel: "email"}}}
	unknown := schemas.DeliveryResult{OrderNo: "o9", RequestedBy: "shop", Reason: schemas.ReasonUnknownTransaction}
	sms, email := schemas.ChannelSMS, schemas.ChannelEmail
	for _, tc := range []struct {
		name   string
		given  Request
		result schemas.DeliveryResult
		same   bool
	}{
		{"same", Request{By: "shop", SessionID: "s1", Channels: []schemas.Channel{sms, email}}, res, true},
		{"the other identifier of the same transaction", Request{By: "shop", OrderNo: "o1", Channels: []schemas.Channel{sms, email}}, res, true},
		{"both identifiers", Request{By: "shop", SessionID: "s1", OrderNo: "o1", Channels: []schemas.Channel{sms, email}}, res, true},
		{"another client", Request{By: "other", SessionID: "s1", Channels: []schemas.Channel{sms, email}}, res, false},
		{"other channels", Request{By: "shop", SessionID: "s1", Channels: []schemas.Channel{sms}}, res, false},
		{"channels in another order", Request{By: "shop", SessionID: "s1", Channels: []schemas.Channel{email, sms}}, res, false},
		{"another transaction", Request{By: "shop", SessionID: "s2", Channels: []schemas.Channel{sms, email}}, res, false},
		{"another order_no", Request{By: "shop", SessionID: "s1", OrderNo: "o2", Channels: []schemas.Channel{sms, email}}, res, false},
		{"unknown transaction, same identifiers", Request{By: "shop", OrderNo: "o9", Channels: []schemas.Channel{sms}}, unknown, true},
		{"unknown transaction, an identifier added", Request{By: "shop", OrderNo: "o9", SessionID: "s9", Channels: []schemas.Channel{sms}}, unknown, false},
	} {
		if got := tc.given.AnsweredBy(tc.result); got != tc.same {
			t.Errorf("%s: AnsweredBy = %v, want %v", tc.name, got, tc.same)
		}
	}
}

// TestSame: two requests in flight with one key are the same when the
// client and the channels (in order) are, and the identifiers agree where
// both give one and share one.
func TestSame(t *testing.T) {
	sms, email := schemas.ChannelSMS, schemas.ChannelEmail
	a := Request{By: "shop", SessionID: "s1", Channels: []schemas.Channel{sms, email}}
	for _, tc := range []struct {
		name string
		b    Request
		same bool
	}{
		{"identical", a, true},
		{"and the order_no", Request{By: "shop", SessionID: "s1", OrderNo: "o1", Channels: []schemas.Channel{sms, email}}, true},
		{"by order_no only: cannot tell", Request{By: "shop", OrderNo: "o1", Channels: []schemas.Channel{sms, email}}, false},
		{"another session", Request{By: "shop", SessionID: "s2", Channels: []schemas.Channel{sms, email}}, false},
		{"another client", Request{By: "other", SessionID: "s1", Channels: []schemas.Channel{sms, email}}, false},
		{"channels in another order", Request{By: "shop", SessionID: "s1", Channels: []schemas.Channel{email, sms}}, false},
	} {
		if got := a.Same(tc.b); got != tc.same {
			t.Errorf("%s: Same = %v, want %v", tc.name, got, tc.same)
		}
		if got := tc.b.Same(a); got != tc.same {
			t.Errorf("%s (reversed): Same = %v, want %v", tc.name, got, tc.same)
		}
	}
	orders := Request{By: "shop", OrderNo: "o1", Channels: []schemas.Channel{sms}}
	if !orders.Same(orders) {
		t.Error("two requests by the same order_no are not the same")
	}
	if (Request{By: "shop", OrderNo: "o1"}).Same(Request{By: "shop", OrderNo: "o2"}) {
		t.Error("two order_nos are the same")
	}
}

// TestInFlight: one holder per key; the others see its value and wait for
// its release; Lock serialises holders of a key (never two at once) and
// gives up with the context's cause.
func TestInFlight(t *testing.T) {
	f := NewInFlight[string]()
	release, _, _, ok := f.Hold("k", "first")
	if !ok {
		t.Fatal("a free key was not held")
	}
	_, holder, released, ok := f.Hold("k", "second")
	if ok || holder != "first" {
		t.Fatalf("a held key: ok %v, holder %q", ok, holder)
	}
	if _, _, _, ok := f.Hold("other", "x"); !ok {
		t.Error("another key was not held")
	}
	select {
	case <-released:
		t.Fatal("released before release")
	default:
	}
	release()
	<-released
	release2, _, _, ok := f.Hold("k", "second")
	if !ok {
		t.Fatal("a released key was not held again")
	}
	release2()

	var inside, most, waits atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			release, err := f.Lock(context.Background(), "shared", "", func() { waits.Add(1) })
			if err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			release()
		})
	}
	wg.Wait()
	if most.Load() != 1 || waits.Load() == 0 {
		t.Errorf("at most %d holders at once (want 1), %d waits", most.Load(), waits.Load())
	}
	hold, _, _, _ := f.Hold("busy", "")
	defer hold()
	cause := errors.New("handed over")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	if _, err := f.Lock(ctx, "busy", "", nil); !errors.Is(err, cause) {
		t.Errorf("Lock on an ended context: %v", err)
	}
}
