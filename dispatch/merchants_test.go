package dispatch

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// TestMerchantProfiles: a merchant's settings change its own decisions
// only, channel by channel and template cell by cell, from the next
// decision; removing them gives it the platform's again.
func TestMerchantProfiles(t *testing.T) {
	platformSMS, platformEmail := &okProvider{name: "platform-sms"}, &okProvider{name: "platform-email"}
	acme := paidTxn()
	acme.SessionID, acme.MerchantID = "s-acme", "acme"
	globex := paidTxn()
	globex.SessionID, globex.MerchantID = "s-globex", "globex"
	store := newMemStore(acme, globex)
	store.sent = map[string]time.Time{"s-acme/email/paid": fixedNow.Add(-time.Minute), "s-globex/email/paid": fixedNow.Add(-time.Minute)}
	var console bytes.Buffer
	d, err := New(Config{
		Routes:    routes(map[schemas.Channel]Provider{schemas.ChannelSMS: platformSMS, schemas.ChannelEmail: platformEmail}, nil),
		Templates: defaultTemplates(t),
		Now:       func() time.Time { return fixedNow },
		Merchants: MerchantConfig{Kinds: NewRegistry(), Env: Env{Console: &console}, Templates: DefaultTemplates()},
	}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Hour
	settings := MerchantProfile{
		Providers: map[schemas.Channel][]ProviderConfig{schemas.ChannelSMS: {{Kind: "console"}}},
		Templates: TemplateConfig{"sms": {"paid": {"en": {Text: "ACME: {{.Amount}} {{.CurrencyCode}} for {{.OrderNo}}"}}}},
		Cooldown:  &hour,
	}
	if err := d.CheckMerchant("acme", settings); err != nil {
		t.Fatal(err)
	}
	deliver := func(txn schemas.PaymentEvent, id string) schemas.DeliveryResult {
		return d.Deliver(t.Context(), schemas.ResendCommand{CommandID: id, Channels: []schemas.Channel{schemas.ChannelSMS, schemas.ChannelEmail}}, txn)
	}
	before := deliver(acme, "before")
	d.SetMerchant("acme", settings)
	if got := d.Merchants(); len(got) != 1 || got[0] != "acme" {
		t.Errorf("Merchants() = %v", got)
	}
	during, other := deliver(acme, "acme"), deliver(globex, "globex")
	d.RemoveMerchant("acme")
	after := deliver(acme, "after")

	for _, c := range []struct {
		name           string
		res            schemas.DeliveryResult
		smsProvider    string
		emailStatus    schemas.ChannelStatus // the cooldown: 1h for acme, none for the platform
		smsText, where string
	}{
		{"before", before, "platform-sms", schemas.StatusSent, "", "platform"},
		{"acme's settings", during, "console", schemas.StatusRejected, "ACME: 12.500 KWD for ORD-1", "console"},
		{"another merchant", other, "platform-sms", schemas.StatusSent, "", "platform"},
		{"removed", after, "platform-sms", schemas.StatusSent, "", "platform"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if len(c.res.Channels) != 2 {
				t.Fatalf("%+v", c.res)
			}
			sms, email := c.res.Channels[0], c.res.Channels[1]
			if sms.Status != schemas.StatusSent || sms.Provider != c.smsProvider {
				t.Errorf("sms %s by %q, want sent by %q", sms.Status, sms.Provider, c.smsProvider)
			}
			if email.Status != c.emailStatus {
				t.Errorf("email %s %s, want %s", email.Status, email.Reason, c.emailStatus)
			}
		})
	}
	if !strings.Contains(console.String(), "ACME: 12.500 KWD for ORD-1") {
		t.Errorf("the merchant's provider printed %q, want its template", console.String())
	}
	for _, m := range platformSMS.sent() {
		if strings.HasPrefix(m.Text, "ACME") {
			t.Errorf("the platform's provider sent the merchant's template: %q", m.Text)
		}
	}
	if n := len(platformSMS.sent()); n != 3 {
		t.Errorf("the platform's sms provider sent %d, want 3", n)
	}
	// The console's grid shows what a decision would use.
	d.SetMerchant("acme", settings)
	for _, c := range d.Check(acme) {
		if c.Channel == schemas.ChannelSMS && c.Provider != "console" {
			t.Errorf("Check: sms by %q, want console", c.Provider)
		}
	}
}

// TestCheckMerchant: settings that cannot be applied are refused with the
// key at fault.
func TestCheckMerchant(t *testing.T) {
	d, err := New(Config{Templates: defaultTemplates(t), Merchants: MerchantConfig{Kinds: NewRegistry(), Env: Env{Console: &bytes.Buffer{}},
		Templates: DefaultTemplates()}}, newMemStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	minus := -time.Minute
	for _, c := range []struct {
		name string
		p    MerchantProfile
		want string
	}{
		{"unknown kind", MerchantProfile{Providers: map[schemas.Channel][]ProviderConfig{schemas.ChannelSMS: {{Kind: "carrier-pigeon"}}}}, "providers.sms.kind: "},
		{"a kind not for the channel", MerchantProfile{Providers: map[schemas.Channel][]ProviderConfig{schemas.ChannelEmail: {{Kind: "console"}, {Kind: "twilio"}}}}, "providers.email[1].kind: "},
		{"an empty chain", MerchantProfile{Providers: map[schemas.Channel][]ProviderConfig{schemas.ChannelSMS: {}}}, "providers.sms: "},
		{"a provider that cannot be built", MerchantProfile{Providers: map[schemas.Channel][]ProviderConfig{schemas.ChannelSMS: {{Kind: "webhook"}}}}, "providers.sms.webhook"},
		{"a template that does not parse", MerchantProfile{Templates: TemplateConfig{"sms": {"paid": {"en": {Text: "{{.Amount"}}}}}, "sms.paid.en"},
		{"a negative cooldown", MerchantProfile{Cooldown: &minus}, "cooldown: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := d.CheckMerchant("acme", c.p)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("CheckMerchant = %v, want an error naming %q", err, c.want)
			}
		})
	}
	if err := d.CheckMerchant("acme", MerchantProfile{}); err != nil {
		t.Errorf("empty settings: %v", err)
	}
	plain, _ := New(Config{Templates: defaultTemplates(t)}, newMemStore(), nil)
	if err := plain.CheckMerchant("acme", MerchantProfile{Providers: map[schemas.Channel][]ProviderConfig{schemas.ChannelSMS: {{Kind: "console"}}}}); err == nil {
		t.Error("providers built without a registry")
	}
}
