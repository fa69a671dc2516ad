package dispatch

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/notifyd/notifyd/schemas"
)

// TestMetrics: one command with a sent, a failed-after-retries and a
// rejected channel is counted as such.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	down := &scriptProvider{errs: []error{Transient("down", 0, nil), Transient("down", 0, nil), Transient("down", 0, nil)}}
	d, err := New(Config{
		Providers: map[schemas.Channel]Provider{schemas.ChannelEmail: &okProvider{name: "ok"}, schemas.ChannelSMS: down},
		Retry:     map[schemas.Channel]RetryPolicy{schemas.ChannelSMS: {MaxAttempts: 3}},
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
	want := `
# HELP notifyd_channel_results_total Channel outcomes of decided commands, by channel, status (sent, rejected, failed) and reason (empty when sent).
# TYPE notifyd_channel_results_total counter
notifyd_channel_results_total{channel="email",reason="",status="sent"} 1
notifyd_channel_results_total{channel="sms",reason="provider_unavailable",status="failed"} 1
notifyd_channel_results_total{channel="whatsapp",reason="provider_not_configured",status="rejected"} 1
# HELP notifyd_provider_requests_total Provider calls, by provider, channel and result (success, transient_error, permanent_error).
# TYPE notifyd_provider_requests_total counter
notifyd_provider_requests_total{channel="email",provider="ok",result="success"} 1
notifyd_provider_requests_total{channel="sms",provider="script",result="transient_error"} 3
# HELP notifyd_provider_retries_total Provider calls that were retries of a failed call, by provider and channel.
# TYPE notifyd_provider_retries_total counter
notifyd_provider_retries_total{channel="sms",provider="script"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "notifyd_channel_results_total", "notifyd_provider_requests_total", "notifyd_provider_retries_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.providerDuration); n != 2 {
		t.Errorf("duration series = %d, want 2", n)
	}
}
