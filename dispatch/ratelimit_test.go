package dispatch

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

func TestRateLimitValidate(t *testing.T) {
	cases := []struct {
		rl   RateLimit
		want string
	}{
		{RateLimit{}, ""},
		{RateLimit{PerSecond: 5}, ""},
		{RateLimit{PerSecond: 0.5, Burst: 3}, ""},
		{RateLimit{PerSecond: -1}, "per_second:"},
		{RateLimit{PerSecond: 1, Burst: -1}, "burst:"},
		{RateLimit{Burst: 2}, "burst: needs per_second"},
	}
	for _, tc := range cases {
		err := tc.rl.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("%+v: err = %v, want %q", tc.rl, err, tc.want)
		}
	}
}

// TestRateLimitSpacesCallsWithoutFailing: with 20 calls/s and a burst of 1,
// six commands wait 50 ms each for their token after the first (on the
// dispatcher's clock, a fake one here); each is sent, even though waiting
// for the limiter takes longer than the 50 ms retry budget: the wait is not
// a failure.
func TestRateLimitSpacesCallsWithoutFailing(t *testing.T) {
	p := &okProvider{name: "ok"}
	d, err := New(Config{
		Routes: map[schemas.Channel][]Route{schemas.ChannelSMS: {{Provider: p, Retry: RetryPolicy{MaxElapsed: 50 * time.Millisecond},
			RateLimit: RateLimit{PerSecond: 20, Burst: 1}}}},
		Templates: defaultTemplates(t),
	}, newMemStore(paidTxn()), nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := useFakeClock(d)
	for i := 0; i < 6; i++ {
		if r := d.Deliver(context.Background(), command(schemas.ChannelSMS), paidTxn()); r.Outcome != schemas.OutcomeNotified {
			t.Errorf("rate-limited command: %+v", r)
		}
	}
	// The first call takes the burst's token; each next one waits 1/20 s
	// for its own, on the dispatcher's clock.
	want := []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}
	if got := clock.Waits(); !slices.Equal(got, want) {
		t.Errorf("6 calls at 20/s with burst 1 waited %v, want %v", got, want)
	}
	if n := len(p.sent()); n != 6 {
		t.Errorf("sent %d, want 6", n)
	}
}

func TestRateLimitUnknownChannel(t *testing.T) {
	_, err := New(Config{Templates: defaultTemplates(t), Routes: map[schemas.Channel][]Route{"fax": {{Provider: NewConsole(io.Discard), RateLimit: RateLimit{PerSecond: 1}}}}}, newMemStore(), nil)
	if err == nil {
		t.Fatal("accepted a rate limit for an unknown channel")
	}
}

// TestRateLimitPastDeadline: when the limiter's next token comes after the
// command's deadline, the channel fails at once instead of spinning.
func TestRateLimitPastDeadline(t *testing.T) {
	p := &okProvider{name: "ok"}
	d, err := New(Config{
		Routes:    map[schemas.Channel][]Route{schemas.ChannelSMS: {{Provider: p, RateLimit: RateLimit{PerSecond: 0.1, Burst: 1}}}},
		Templates: defaultTemplates(t),
	}, newMemStore(paidTxn()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := d.Deliver(context.Background(), command(schemas.ChannelSMS), paidTxn()); r.Outcome != schemas.OutcomeNotified {
		t.Fatalf("first call: %+v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r := d.Deliver(ctx, command(schemas.ChannelSMS), paidTxn())
	c := channelResult(t, r, schemas.ChannelSMS)
	if c.Status != schemas.StatusFailed || c.Reason != schemas.ReasonProviderUnavailable || c.Attempts != 0 || !strings.Contains(c.Detail, "rate limit") {
		t.Errorf("second call: %+v", c)
	}
	if ctx.Err() != nil {
		t.Error("Deliver waited for the deadline instead of giving up at once")
	}
}
