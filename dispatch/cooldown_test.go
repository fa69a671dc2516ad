package dispatch

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

func TestCooldown(t *testing.T) {
	const cooldown = 10 * time.Minute
	key := func(ch schemas.Channel, st schemas.State) string { return "sess-1/" + string(ch) + "/" + string(st) }
	tests := []struct {
		name      string
		cooldown  time.Duration
		sent      map[string]time.Time
		force     bool
		templates TemplateConfig // nil: defaults
		want      schemas.Reason // "" means sent
	}{
		{"never sent", cooldown, nil, false, nil, ""},
		{"sent 2m ago", cooldown, map[string]time.Time{key("sms", "paid"): fixedNow.Add(-2 * time.Minute)}, false, nil, schemas.ReasonCooldownActive},
		{"sent 2m ago, force", cooldown, map[string]time.Time{key("sms", "paid"): fixedNow.Add(-2 * time.Minute)}, true, nil, ""},
		{"sent just under the cooldown ago", cooldown, map[string]time.Time{key("sms", "paid"): fixedNow.Add(-cooldown + time.Nanosecond)}, false, nil, schemas.ReasonCooldownActive},
		{"sent exactly the cooldown ago", cooldown, map[string]time.Time{key("sms", "paid"): fixedNow.Add(-cooldown)}, false, nil, ""},
		{"sent after now (clock skew)", cooldown, map[string]time.Time{key("sms", "paid"): fixedNow.Add(time.Minute)}, false, nil, schemas.ReasonCooldownActive},
		{"cooldown off", 0, map[string]time.Time{key("sms", "paid"): fixedNow.Add(-time.Second)}, false, nil, ""},
		{"another state sent recently", cooldown, map[string]time.Time{key("sms", "created"): fixedNow.Add(-time.Minute)}, false, nil, ""},
		{"another channel sent recently", cooldown, map[string]time.Time{key("email", "paid"): fixedNow.Add(-time.Minute)}, false, nil, ""},
		{"template_not_configured before cooldown_active", cooldown, map[string]time.Time{key("sms", "paid"): fixedNow.Add(-time.Minute)}, false,
			TemplateConfig{"email": {"paid": {"en": {Subject: "s", Text: "x"}}}}, schemas.ReasonTemplateNotConfigured},
		{"message_too_long before cooldown_active", cooldown, map[string]time.Time{key("sms", "paid"): fixedNow.Add(-time.Minute)}, false,
			TemplateConfig{"sms": {"paid": {"en": {Text: "Hi {{.CustomerFirstName}}"}}}}, schemas.ReasonMessageTooLong},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := newMemStore(paidTxn())
			store.sent = tc.sent
			tplCfg := tc.templates
			if tplCfg == nil {
				tplCfg = DefaultTemplates()
			}
			tpl, err := ParseTemplates(tplCfg)
			if err != nil {
				t.Fatal(err)
			}
			p := &okProvider{name: "ok"}
			d, err := New(Config{
				Routes:    map[schemas.Channel][]Route{schemas.ChannelSMS: {{Provider: p}}},
				Templates: tpl, Cooldown: tc.cooldown, Now: func() time.Time { return fixedNow },
			}, store, nil)
			if err != nil {
				t.Fatal(err)
			}
			cmd := command(schemas.ChannelSMS)
			cmd.Force = tc.force
			txn := paidTxn()
			if tc.want == schemas.ReasonMessageTooLong {
				txn.CustomerFirstName = strings.Repeat("a", MaxSMSCharacters)
			}
			res := d.Deliver(t.Context(), cmd, txn)
			got := res.Channels[0]
			if got.Reason != tc.want {
				t.Fatalf("reason = %q (%s), want %q", got.Reason, got.Detail, tc.want)
			}
			if want := 0; tc.want == "" {
				want = 1
				if len(p.sent()) != want {
					t.Errorf("provider called %d times, want %d", len(p.sent()), want)
				}
			} else if len(p.sent()) != 0 {
				t.Errorf("provider called %d times, want none", len(p.sent()))
			}
			if tc.want == schemas.ReasonCooldownActive {
				if got.Status != schemas.StatusRejected || got.Attempts != 0 || !strings.Contains(got.Detail, "processing.cooldown (10m0s)") || !strings.Contains(got.Detail, `"force": true`) {
					t.Errorf("cooldown result = %+v", got)
				}
			}
		})
	}

	t.Run("store error lets the channel through", func(t *testing.T) {
		store := newMemStore(paidTxn())
		p := &okProvider{name: "ok"}
		d, err := New(Config{Routes: map[schemas.Channel][]Route{schemas.ChannelSMS: {{Provider: p}}}, Templates: defaultTemplates(t), Cooldown: cooldown}, store, nil)
		if err != nil {
			t.Fatal(err)
		}
		store.err = errors.New("disk gone")
		// Deliver reads only LastSent: the transaction is handed in.
		res := d.Deliver(t.Context(), command(schemas.ChannelSMS), paidTxn())
		if res.Channels[0].Status != schemas.StatusSent {
			t.Fatalf("channel = %+v, want sent", res.Channels[0])
		}
	})
}
