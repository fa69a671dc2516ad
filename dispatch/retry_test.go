package dispatch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

func TestRetryPolicyDefaultsAndValidate(t *testing.T) {
	var p RetryPolicy
	p.SetDefaults()
	want := RetryPolicy{MaxAttempts: 5, InitialBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second, MaxElapsed: 2 * time.Minute, AttemptTimeout: 10 * time.Second}
	if p != want {
		t.Fatalf("SetDefaults = %+v, want %+v", p, want)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	kept := RetryPolicy{MaxAttempts: 2, MaxElapsed: time.Second}
	kept.SetDefaults()
	if kept.MaxAttempts != 2 || kept.MaxElapsed != time.Second || kept.InitialBackoff != 500*time.Millisecond {
		t.Errorf("SetDefaults overwrote set fields: %+v", kept)
	}
	tests := []struct {
		mod  func(*RetryPolicy)
		want string
	}{
		{func(p *RetryPolicy) { p.MaxAttempts = 0 }, "max_attempts: must be >= 1"},
		{func(p *RetryPolicy) { p.MaxAttempts = -1 }, "max_attempts: must be >= 1"},
		{func(p *RetryPolicy) { p.InitialBackoff = -time.Second }, "initial_backoff: must be > 0"},
		{func(p *RetryPolicy) { p.MaxBackoff = -1 }, "max_backoff: must be > 0"},
		{func(p *RetryPolicy) { p.MaxBackoff = time.Millisecond }, "max_backoff: must be >= initial_backoff"},
		// Larger values overflow the doubling of the backoff.
		{func(p *RetryPolicy) { p.MaxBackoff = 2562047 * time.Hour; p.MaxElapsed = time.Hour }, "max_backoff: must be at most 24h"},
		{func(p *RetryPolicy) { p.MaxElapsed = 25 * time.Hour }, "max_elapsed: must be at most 24h"},
		{func(p *RetryPolicy) { p.MaxElapsed = -time.Minute }, "max_elapsed: must be > 0"},
		{func(p *RetryPolicy) { p.AttemptTimeout = 0 }, "attempt_timeout: must be > 0"},
	}
	for _, tt := range tests {
		p := want
		tt.mod(&p)
		if err := p.Validate(); err == nil || err.Error() != tt.want {
			t.Errorf("Validate(%+v) = %v, want %q", p, err, tt.want)
		}
	}
}

func TestBackoffFullJitterBounds(t *testing.T) {
	p := RetryPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	ceilings := map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second, 1000: time.Second}
	for n, ceiling := range ceilings {
		var maxSeen time.Duration
		for range 2000 {
			w := p.backoff(n)
			if w < 0 || w > ceiling {
				t.Fatalf("backoff(%d) = %v, want within [0, %v]", n, w, ceiling)
			}
			maxSeen = max(maxSeen, w)
		}
		if maxSeen < ceiling/2 {
			t.Errorf("backoff(%d) never above %v in 2000 draws (ceiling %v): not full jitter", n, maxSeen, ceiling)
		}
	}
}

// smsOnly returns a Dispatcher sending sms through p with policy, its fake
// clock, and an sms command.
func smsOnly(t *testing.T, p Provider, policy RetryPolicy) (*Dispatcher, *fakeClock, schemas.ResendCommand) {
	t.Helper()
	d := newTestDispatcher(t, map[schemas.Channel]Provider{schemas.ChannelSMS: p},
		map[schemas.Channel]RetryPolicy{schemas.ChannelSMS: policy}, nil)
	return d, useFakeClock(d), command(schemas.ChannelSMS)
}

func TestRetries(t *testing.T) {
	fast := RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, MaxElapsed: time.Minute, AttemptTimeout: time.Second}
	tests := []struct {
		name         string
		errs         []error
		policy       RetryPolicy
		wantStatus   schemas.ChannelStatus
		wantReason   schemas.Reason
		wantAttempts int
		wantDetail   string
	}{
		{"success first time", nil, fast, schemas.StatusSent, "", 1, ""},
		{"transient twice then success", []error{Transient("503", 0, errBoom), errBoom}, fast, schemas.StatusSent, "", 3, ""},
		{"plain errors are transient", []error{errBoom, errBoom, errBoom, errBoom}, fast, schemas.StatusSent, "", 5, ""},
		{"attempts used up", []error{errBoom, errBoom, errBoom, errBoom, errBoom, errBoom}, fast, schemas.StatusFailed, schemas.ReasonProviderUnavailable, 5, "provider unavailable after 5 attempts: provider error"},
		{"max attempts 1", []error{Transient("timeout", 0, nil)}, RetryPolicy{MaxAttempts: 1, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxElapsed: time.Minute, AttemptTimeout: time.Second},
			schemas.StatusFailed, schemas.ReasonProviderUnavailable, 1, "provider unavailable after 1 attempt: timeout"},
		{"permanent never retried", []error{Permanent("number blocked", errBoom)}, fast, schemas.StatusFailed, schemas.ReasonProviderRejected, 1, "provider rejected the message: number blocked"},
		{"permanent after transient", []error{errBoom, Permanent("bad sender", nil)}, fast, schemas.StatusFailed, schemas.ReasonProviderRejected, 2, "provider rejected the message: bad sender"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &scriptProvider{errs: tt.errs}
			d, _, cmd := smsOnly(t, p, tt.policy)
			r := d.Deliver(context.Background(), cmd, paidTxn())
			c := channelResult(t, r, schemas.ChannelSMS)
			if c.Status != tt.wantStatus || c.Reason != tt.wantReason || c.Attempts != tt.wantAttempts {
				t.Errorf("got %s/%s attempts %d, want %s/%s attempts %d (%+v)", c.Status, c.Reason, c.Attempts, tt.wantStatus, tt.wantReason, tt.wantAttempts, c)
			}
			if p.callCount() != c.Attempts {
				t.Errorf("attempts %d but provider called %d times", c.Attempts, p.callCount())
			}
			if c.Detail != tt.wantDetail {
				t.Errorf("detail %q, want %q", c.Detail, tt.wantDetail)
			}
			if c.Provider != "script" || c.Recipient != "+965****1234" {
				t.Errorf("provider/recipient: %+v", c)
			}
			if (c.Status == schemas.StatusSent) != (c.ProviderMessageID == "script-ok") {
				t.Errorf("provider_message_id %q with status %s", c.ProviderMessageID, c.Status)
			}
		})
	}
}

func TestRetryWaitsGrowWithinCeilings(t *testing.T) {
	p := &scriptProvider{errs: []error{errBoom, errBoom, errBoom, errBoom}}
	policy := RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Second, MaxBackoff: 3 * time.Second, MaxElapsed: time.Hour, AttemptTimeout: time.Second}
	d, clock, cmd := smsOnly(t, p, policy)
	d.Deliver(context.Background(), cmd, paidTxn())
	waits := clock.Waits()
	ceilings := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}
	if len(waits) != len(ceilings) {
		t.Fatalf("waits %v, want %d", waits, len(ceilings))
	}
	for i, w := range waits {
		if w < 0 || w > ceilings[i] {
			t.Errorf("wait %d = %v, want within [0, %v]", i+1, w, ceilings[i])
		}
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	p := &scriptProvider{errs: []error{Transient("rate limited", 7*time.Second, nil), Transient("rate limited", 45*time.Second, nil)}}
	policy := RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, MaxElapsed: time.Minute, AttemptTimeout: time.Second}
	d, clock, cmd := smsOnly(t, p, policy)
	r := d.Deliver(context.Background(), cmd, paidTxn())
	c := channelResult(t, r, schemas.ChannelSMS)
	if c.Status != schemas.StatusSent || c.Attempts != 3 {
		t.Fatalf("got %+v", c)
	}
	// RetryAfter beyond max_backoff is still honoured, within max_elapsed.
	if w := clock.Waits(); len(w) != 2 || w[0] != 7*time.Second || w[1] != 45*time.Second {
		t.Errorf("waits %v, want [7s 45s]", w)
	}
}

func TestRetryAfterBeyondBudgetGivesUp(t *testing.T) {
	p := &scriptProvider{errs: []error{Transient("rate limited", 5*time.Minute, nil)}}
	policy := RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxElapsed: 2 * time.Minute, AttemptTimeout: time.Second}
	d, clock, cmd := smsOnly(t, p, policy)
	c := channelResult(t, d.Deliver(context.Background(), cmd, paidTxn()), schemas.ChannelSMS)
	if c.Status != schemas.StatusFailed || c.Reason != schemas.ReasonProviderUnavailable || c.Attempts != 1 {
		t.Fatalf("got %+v", c)
	}
	if !strings.Contains(c.Detail, "retry budget of 2m0s") {
		t.Errorf("detail %q", c.Detail)
	}
	if w := clock.Waits(); len(w) != 0 {
		t.Errorf("slept %v although the wait could not fit the budget", w)
	}
}

func TestElapsedBudgetExhausted(t *testing.T) {
	var clock *fakeClock
	// Every call fails after 40s of (fake) time.
	p := &scriptProvider{errs: make([]error, 100)}
	for i := range p.errs {
		p.errs[i] = Transient("upstream timeout", 0, nil)
	}
	p.onCall = func(context.Context, int) { clock.Advance(40 * time.Second) }
	policy := RetryPolicy{MaxAttempts: 100, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxElapsed: 100 * time.Second, AttemptTimeout: time.Minute}
	d, c0, cmd := smsOnly(t, p, policy)
	clock = c0
	c := channelResult(t, d.Deliver(context.Background(), cmd, paidTxn()), schemas.ChannelSMS)
	if c.Status != schemas.StatusFailed || c.Reason != schemas.ReasonProviderUnavailable || c.Attempts != 3 {
		t.Fatalf("got %+v, want failed/provider_unavailable after 3 attempts", c)
	}
	if !strings.Contains(c.Detail, "budget") || !strings.Contains(c.Detail, "upstream timeout") {
		t.Errorf("detail %q", c.Detail)
	}
}

// TestAttemptTimeoutBoundsEachCall: each call runs under a deadline of its
// own (attempt_timeout): a call its provider never answers ends with that
// deadline and is retried, and the next call starts with a deadline still
// to come.
func TestAttemptTimeoutBoundsEachCall(t *testing.T) {
	var ends []error
	p := &scriptProvider{errs: []error{Transient("no answer", 0, nil)}}
	p.onCall = func(ctx context.Context, call int) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("attempt context has no deadline")
			return
		}
		if call == 1 {
			<-ctx.Done() // no answer: only the attempt's own deadline ends it
		}
		ends = append(ends, ctx.Err())
	}
	policy := RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxElapsed: time.Hour, AttemptTimeout: 20 * time.Millisecond}
	d, _, cmd := smsOnly(t, p, policy)
	c := channelResult(t, d.Deliver(context.Background(), cmd, paidTxn()), schemas.ChannelSMS)
	if c.Status != schemas.StatusSent || c.Attempts != 2 {
		t.Errorf("got %+v, want sent at the second attempt", c)
	}
	if !slices.Equal(ends, []error{context.DeadlineExceeded, nil}) {
		t.Errorf("the calls' contexts ended %v, want the first by its deadline and the second not", ends)
	}
}

func TestContextEndStopsRetries(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &scriptProvider{errs: []error{errBoom, errBoom, errBoom}}
	p.onCall = func(context.Context, int) { cancel() }
	policy := RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxElapsed: time.Hour, AttemptTimeout: time.Second}
	d, _, cmd := smsOnly(t, p, policy)
	c := channelResult(t, d.Deliver(ctx, cmd, paidTxn()), schemas.ChannelSMS)
	if c.Status != schemas.StatusFailed || c.Reason != schemas.ReasonProviderUnavailable || c.Attempts != 1 {
		t.Fatalf("got %+v", c)
	}
	if !strings.Contains(c.Detail, "context canceled") {
		t.Errorf("detail %q", c.Detail)
	}

	// Already ended: no call at all.
	p2 := &scriptProvider{}
	d2, _, _ := smsOnly(t, p2, policy)
	c = channelResult(t, d2.Deliver(ctx, cmd, paidTxn()), schemas.ChannelSMS)
	if c.Status != schemas.StatusFailed || c.Reason != schemas.ReasonProviderUnavailable || c.Attempts != 0 || p2.callCount() != 0 {
		t.Fatalf("got %+v, calls %d", c, p2.callCount())
	}
}

func TestProviderErrors(t *testing.T) {
	perm := Permanent("invalid recipient", errBoom)
	trans := Transient("503", 2*time.Second, errBoom)
	if !IsPermanent(perm) || IsPermanent(trans) || IsPermanent(errBoom) || IsPermanent(nil) {
		t.Error("IsPermanent misclassifies")
	}
	wrapped := &wrapErr{perm}
	if !IsPermanent(wrapped) {
		t.Error("IsPermanent does not see through wrapping")
	}
	if retryAfter(trans) != 2*time.Second || retryAfter(errBoom) != 0 {
		t.Error("retryAfter")
	}
	if perm.Error() != "permanent provider error: invalid recipient: boom" || trans.Error() != "transient provider error: 503: boom" {
		t.Errorf("Error() = %q / %q", perm, trans)
	}
	var pe *ProviderError
	if pe, _ = perm.(*ProviderError); pe == nil || pe.Unwrap() != errBoom {
		t.Error("Unwrap")
	}
}

type wrapErr struct{ err error }

func (w *wrapErr) Error() string { return "wrapped: " + w.err.Error() }
func (w *wrapErr) Unwrap() error { return w.err }

// TestGuardBeforeEveryCall: the guard is asked before every provider call,
// retries included; once it refuses, no further call is made and
// DeliverGuarded returns the refusal instead of a result.
func TestGuardBeforeEveryCall(t *testing.T) {
	errLost := errors.New("partition handed over")
	fast := RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxElapsed: time.Minute, AttemptTimeout: time.Second}
	tests := []struct {
		name      string
		errs      []error // the provider's answers
		allow     int     // the guard allows this many calls, then refuses (-1: always)
		wantCalls int
		wantErr   bool
	}{
		{"allowed: one call, one check", nil, -1, 1, false},
		{"allowed through retries", []error{errBoom, errBoom}, -1, 3, false},
		{"refused before the first call", nil, 0, 0, true},
		{"refused before a retry", []error{errBoom, errBoom, errBoom}, 2, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &scriptProvider{errs: tt.errs}
			d, _, cmd := smsOnly(t, p, fast)
			checks := 0
			guard := func() error {
				checks++
				if tt.allow >= 0 && checks > tt.allow {
					return errLost
				}
				return nil
			}
			r, err := d.DeliverGuarded(context.Background(), cmd, paidTxn(), guard)
			if p.callCount() != tt.wantCalls {
				t.Errorf("provider called %d times, want %d", p.callCount(), tt.wantCalls)
			}
			if tt.wantErr {
				if !errors.Is(err, errLost) || r.ResultID != "" {
					t.Errorf("refused delivery returned %v and result %+v", err, r)
				}
				return
			}
			if err != nil || channelResult(t, r, schemas.ChannelSMS).Status != schemas.StatusSent {
				t.Errorf("allowed delivery: %v %+v", err, r)
			}
			if checks != tt.wantCalls {
				t.Errorf("guard asked %d times for %d calls", checks, tt.wantCalls)
			}
		})
	}
	// A command whose channels are all rejected makes no call: no guard.
	d, _, _ := smsOnly(t, &scriptProvider{}, fast)
	if _, err := d.DeliverGuarded(context.Background(), command(schemas.ChannelWhatsApp), paidTxn(), func() error { return errLost }); err != nil {
		t.Errorf("no provider call, yet the guard's refusal was returned: %v", err)
	}
}
