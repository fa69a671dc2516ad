package dispatch

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/notifyd/notifyd/internal/testkit"
	"github.com/notifyd/notifyd/schemas"
)

// TestMetrics: one command with a sent, a failed-after-retries and a
// rejected channel is counted as such.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	down := &scriptProvider{errs: []error{Transient("down", 0, nil), Transient("down", 0, nil), Transient("down", 0, nil)}}
	d, err := New(Config{
		Routes: map[schemas.Channel][]Route{schemas.ChannelEmail: {{Provider: &okProvider{name: "ok"}}},
			schemas.ChannelSMS: {{Provider: down, Retry: RetryPolicy{MaxAttempts: 3}}}},
		Templates: defaultTemplates(t),
		Metrics:   m,
	}, newMemStore(paidTxn()), nil)
	if err != nil {
		t.Fatal(err)
	}
	useFakeClock(d)
	r := d.Deliver(context.Background(), command(schemas.ChannelEmail, schemas.ChannelSMS, schemas.ChannelWhatsApp), paidTxn())
	if r.Outcome != schemas.OutcomePartiallyNotified {
		t.Fatalf("result %+v", r)
	}
	// Every series exists from the start (at zero); these are the ones the
	// command moved.
	want := []string{
		`notifyd_channel_results_total{channel="email",reason="",status="sent"} 1`,
		`notifyd_channel_results_total{channel="sms",reason="provider_unavailable",status="failed"} 1`,
		`notifyd_channel_results_total{channel="whatsapp",reason="provider_not_configured",status="rejected"} 1`,
		`notifyd_provider_requests_total{channel="email",provider="ok",result="success"} 1`,
		`notifyd_provider_requests_total{channel="sms",provider="script",result="transient_error"} 3`,
		`notifyd_provider_retries_total{channel="sms",provider="script"} 2`,
	}
	if got := testkit.NonZero(t, reg, "notifyd_channel_results_total", "notifyd_provider_requests_total", "notifyd_provider_retries_total"); !slices.Equal(got, want) {
		t.Errorf("non-zero series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// 3 channels x (1 sent + each rejection and failure reason); 2
	// providers x 3 results.
	if n, want := testutil.CollectAndCount(m.channelResults), 3*(1+len(schemas.RejectionReasons())+len(schemas.FailureReasons())); n != want {
		t.Errorf("channel result series = %d, want %d", n, want)
	}
	if n := testutil.CollectAndCount(m.providerRequests); n != 2*3 {
		t.Errorf("provider request series = %d, want 6", n)
	}
	if n := testutil.CollectAndCount(m.providerDuration); n != 2 {
		t.Errorf("duration series = %d, want 2", n)
	}
}
