package dispatch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/notifyd/notifyd/internal/testkit"
	"github.com/notifyd/notifyd/schemas"
)

// switchProvider answers every call with its current error (nil: sent).
type switchProvider struct {
	name  string
	mu    sync.Mutex
	err   error
	calls int
}

func (p *switchProvider) Name() string { return p.name }

func (p *switchProvider) Send(ctx context.Context, m Message) (Receipt, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.err != nil {
		return Receipt{}, p.err
	}
	return Receipt{MessageID: p.name + "-id"}, nil
}

func (p *switchProvider) set(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

func (p *switchProvider) callCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// fastRetry makes two attempts without waiting.
var fastRetry = RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond, MaxElapsed: time.Minute, AttemptTimeout: time.Second}

func TestFailover(t *testing.T) {
	down := Transient("HTTP 503: down", 0, nil)
	tests := []struct {
		name            string
		primary, backup error
		wantStatus      schemas.ChannelStatus
		wantReason      schemas.Reason
		wantProvider    string
		wantTried       []string
		wantAttempts    int
		wantDetail      string
	}{
		{"primary sends", nil, nil, schemas.StatusSent, "", "primary", []string{"primary"}, 1, ""},
		{"primary unavailable: backup sends", down, nil, schemas.StatusSent, "", "backup", []string{"primary", "backup"}, 3, ""},
		{"account fault: backup sends", AccountFault("twilio 20003 (HTTP 401): Authenticate", nil), nil,
			schemas.StatusSent, "", "backup", []string{"primary", "backup"}, 2, ""},
		{"recipient rejected: no failover", Permanent("twilio 21211 (HTTP 400): invalid To", nil), nil,
			schemas.StatusFailed, schemas.ReasonProviderRejected, "primary", []string{"primary"}, 1, "primary: provider rejected the message: twilio 21211"},
		{"may have been sent: no failover", Permanent("answer without a message id (may have been sent): HTTP 200: {}", nil), nil,
			schemas.StatusFailed, schemas.ReasonProviderRejected, "primary", []string{"primary"}, 1, "may have been sent"},
		{"both unavailable", down, down, schemas.StatusFailed, schemas.ReasonProviderUnavailable, "backup", []string{"primary", "backup"}, 4,
			"primary: provider unavailable after 2 attempts: HTTP 503: down; backup: provider unavailable after 2 attempts: HTTP 503: down"},
		{"backup rejects after failover", down, Permanent("HTTP 422: bad number", nil), schemas.StatusFailed, schemas.ReasonProviderRejected,
			"backup", []string{"primary", "backup"}, 3, "; backup: provider rejected the message: HTTP 422: bad number"},
		{"both account faults", AccountFault("HTTP 401", nil), AccountFault("HTTP 403", nil), schemas.StatusFailed, schemas.ReasonProviderRejected,
			"backup", []string{"primary", "backup"}, 2, "backup: provider rejected the message: HTTP 403"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			primary, backup := &switchProvider{name: "primary", err: tc.primary}, &switchProvider{name: "backup", err: tc.backup}
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			d, err := New(Config{
				Routes:    map[schemas.Channel][]Route{schemas.ChannelSMS: {{Provider: primary, Retry: fastRetry}, {Provider: backup, Retry: fastRetry}}},
				Templates: defaultTemplates(t), Metrics: m,
			}, newMemStore(paidTxn()), nil)
			if err != nil {
				t.Fatal(err)
			}
			res := d.Deliver(t.Context(), command(schemas.ChannelSMS), paidTxn())
			c := res.Channels[0]
			if c.Status != tc.wantStatus || c.Reason != tc.wantReason || c.Provider != tc.wantProvider ||
				!slices.Equal(c.ProvidersTried, tc.wantTried) || c.Attempts != tc.wantAttempts || !strings.Contains(c.Detail, tc.wantDetail) {
				t.Fatalf("channel = %+v\nwant status %s reason %q provider %s tried %v attempts %d detail ~%q",
					c, tc.wantStatus, tc.wantReason, tc.wantProvider, tc.wantTried, tc.wantAttempts, tc.wantDetail)
			}
			if c.Status == schemas.StatusSent && c.ProviderMessageID != tc.wantProvider+"-id" {
				t.Errorf("provider_message_id = %q, want the sender's", c.ProviderMessageID)
			}
			wantFailovers := 0.0
			if len(tc.wantTried) > 1 {
				wantFailovers = 1
			}
			if got := testutil.ToFloat64(m.failovers.WithLabelValues("primary", "sms")); got != wantFailovers {
				t.Errorf("failovers from primary = %v, want %v", got, wantFailovers)
			}
		})
	}
}

// TestFailoverAndBackWithBreaker: a failing primary opens its circuit, so
// the next commands go to the backup without calling it; once it works
// again, the trial call after the cool-off closes the circuit and the
// channel is sent by the primary again.
func TestFailoverAndBackWithBreaker(t *testing.T) {
	primary, backup := &switchProvider{name: "primary"}, &switchProvider{name: "backup"}
	primary.set(Transient("HTTP 503: down", 0, nil))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	breaker := BreakerPolicy{FailureRatio: 0.5, MinCalls: 4, Window: time.Minute, CoolOff: 50 * time.Millisecond}
	d, err := New(Config{
		Routes: map[schemas.Channel][]Route{schemas.ChannelSMS: {
			{Provider: primary, Retry: fastRetry, Breaker: breaker}, {Provider: backup, Retry: fastRetry},
		}},
		Templates: defaultTemplates(t), Metrics: m,
	}, newMemStore(paidTxn()), nil)
	if err != nil {
		t.Fatal(err)
	}
	state := func() float64 { return testutil.ToFloat64(m.circuitState.WithLabelValues("primary", "sms")) }
	send := func() schemas.ChannelResult {
		t.Helper()
		return d.Deliver(t.Context(), command(schemas.ChannelSMS), paidTxn()).Channels[0]
	}

	// Two commands: 4 failed calls to the primary open its circuit.
	for i := range 2 {
		if c := send(); c.Status != schemas.StatusSent || c.Provider != "backup" || !slices.Equal(c.ProvidersTried, []string{"primary", "backup"}) {
			t.Fatalf("command %d: %+v", i, c)
		}
	}
	if got := primary.callCount(); got != 4 {
		t.Fatalf("primary called %d times, want 4", got)
	}
	if state() != 2 {
		t.Fatalf("circuit state = %v, want 2 (open)", state())
	}
	// Open: the primary is skipped, not called.
	c := send()
	if c.Status != schemas.StatusSent || c.Provider != "backup" || !slices.Equal(c.ProvidersTried, []string{"backup"}) || c.Attempts != 1 {
		t.Fatalf("with the circuit open: %+v", c)
	}
	if got := primary.callCount(); got != 4 {
		t.Fatalf("primary called %d times with its circuit open, want still 4", got)
	}

	// The primary recovers; after the cool-off one trial call closes the
	// circuit. Until the cool-off passes, commands keep going to the backup.
	primary.set(nil)
	// gobreaker keeps its own clock: commands go on until the trial call.
	testkit.Until(t, 10*time.Second, func() error {
		c := send()
		if c.Status != schemas.StatusSent {
			t.Fatalf("while waiting for the cool-off: %+v", c)
		}
		if c.Provider != "primary" {
			return errors.New("the primary not tried again after its 50 ms cool-off")
		}
		if !slices.Equal(c.ProvidersTried, []string{"primary"}) {
			t.Fatalf("trial call: %+v", c)
		}
		return nil
	})
	if state() != 0 {
		t.Fatalf("circuit state after a good trial call = %v, want 0 (closed)", state())
	}
	backupCalls := backup.callCount()
	for range 3 {
		if c := send(); c.Provider != "primary" {
			t.Fatalf("after the circuit closed: %+v", c)
		}
	}
	if backup.callCount() != backupCalls {
		t.Error("the backup was called after the primary's circuit closed")
	}
}

// TestBreakerIgnoresRecipientRejections: rejections of the recipient say
// the provider works; they never open its circuit.
func TestBreakerIgnoresRecipientRejections(t *testing.T) {
	primary, backup := &switchProvider{name: "primary"}, &switchProvider{name: "backup"}
	primary.set(Permanent("HTTP 400: invalid To", nil))
	d, err := New(Config{
		Routes: map[schemas.Channel][]Route{schemas.ChannelSMS: {
			{Provider: primary, Retry: fastRetry, Breaker: BreakerPolicy{MinCalls: 2, CoolOff: time.Hour}}, {Provider: backup, Retry: fastRetry},
		}},
		Templates: defaultTemplates(t),
	}, newMemStore(paidTxn()), nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if c := d.Deliver(t.Context(), command(schemas.ChannelSMS), paidTxn()).Channels[0]; c.Reason != schemas.ReasonProviderRejected || c.Provider != "primary" {
			t.Fatalf("%+v", c)
		}
	}
	if primary.callCount() != 5 || backup.callCount() != 0 {
		t.Errorf("primary called %d, backup %d; want 5 and 0", primary.callCount(), backup.callCount())
	}
}

func TestRouteNames(t *testing.T) {
	a, b := NewConsole(nil), &switchProvider{name: "webhook"}
	routes := []Route{{Provider: b}, {Provider: a}, {Provider: b}, {Provider: b}}
	var got []string
	for i := range routes {
		got = append(got, routeName(routes, i))
	}
	if want := []string{"webhook", "console", "webhook#2", "webhook#3"}; !slices.Equal(got, want) {
		t.Errorf("names = %v, want %v", got, want)
	}
}
