package dispatch

import (
	"bytes"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
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
		Merchants: MerchantConfig{Kinds: NewRegistry(), Env: Env{Console: &console}},
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
	// A cell the merchant does not set is the platform's.
	forced := d.Deliver(t.Context(), schemas.ResendCommand{CommandID: "forced", Channels: []schemas.Channel{schemas.ChannelEmail}, Force: true}, acme)
	if sent := platformEmail.sent(); forced.Channels[0].Status != schemas.StatusSent || len(sent) == 0 || sent[len(sent)-1].CommandID != "forced" ||
		sent[len(sent)-1].Subject == "" {
		t.Errorf("acme's email with the platform's template: %+v", forced.Channels)
	}
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
	d, err := New(Config{Templates: defaultTemplates(t), Merchants: MerchantConfig{Kinds: NewRegistry(), Env: Env{Console: &bytes.Buffer{}}}},
		newMemStore(), nil)
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
	zero := time.Duration(0)
	if err := d.CheckMerchant("acme", MerchantProfile{Cooldown: &zero}); err != nil {
		t.Errorf("empty settings, cooldown 0: %v", err)
	}
	plain, _ := New(Config{Templates: defaultTemplates(t)}, newMemStore(), nil)
	if err := plain.CheckMerchant("acme", MerchantProfile{Providers: map[schemas.Channel][]ProviderConfig{schemas.ChannelSMS: {{Kind: "console"}}}}); err == nil {
		t.Error("providers built without a registry")
	}
}

// TestMerchantBuildFails: settings given without CheckMerchant whose
// provider cannot be built leave the merchant's decisions to the
// platform's providers, and say so in the log.
func TestMerchantBuildFails(t *testing.T) {
	platformSMS := &okProvider{name: "platform-sms"}
	txn := paidTxn()
	txn.MerchantID = "acme"
	var logs bytes.Buffer
	d, err := New(Config{Routes: routes(map[schemas.Channel]Provider{schemas.ChannelSMS: platformSMS}, nil), Templates: defaultTemplates(t),
		Merchants: MerchantConfig{Kinds: NewRegistry(), Env: Env{Console: &bytes.Buffer{}}}},
		newMemStore(txn), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	d.SetMerchant("acme", MerchantProfile{Providers: map[schemas.Channel][]ProviderConfig{schemas.ChannelSMS: {{Kind: "webhook"}}}})
	res := d.Deliver(t.Context(), schemas.ResendCommand{CommandID: "c", Channels: []schemas.Channel{schemas.ChannelSMS}}, txn)
	if res.Channels[0].Provider != "platform-sms" || res.Channels[0].Status != schemas.StatusSent {
		t.Errorf("sms %+v, want sent by the platform's provider", res.Channels[0])
	}
	if !strings.Contains(logs.String(), "merchant's providers could not be built") || !strings.Contains(logs.String(), "merchant_id=acme") {
		t.Errorf("log: %s", logs.String())
	}
	_, blocks := d.MerchantProviders()
	if len(blocks) != 1 || blocks[0].Kind != "webhook" {
		t.Errorf("MerchantProviders = %+v", blocks)
	}
	before := d.MerchantsToken()
	d.RemoveMerchant("acme")
	if d.MerchantsToken() == before {
		t.Error("the token did not change with the merchants")
	}
	if _, blocks := d.MerchantProviders(); len(blocks) != 0 {
		t.Errorf("MerchantProviders after removal = %+v", blocks)
	}
}

// TestLiveReceipts: every kind with receipts gets a live verifier (meta's
// a Handshaker) that verifies with the blocks of its kind as they are when
// the token changes, and only then reads them again.
func TestLiveReceipts(t *testing.T) {
	token, reads := 1, 0
	var blocks []ProviderConfig
	live := NewRegistry().LiveReceipts(func() any { return token }, func() []ProviderConfig { reads++; return blocks })
	if got := slices.Sorted(maps.Keys(live)); !slices.Equal(got, []string{"meta", "twilio", "webhook"}) {
		t.Fatalf("kinds %v", got)
	}
	if _, ok := live["twilio"].(Handshaker); ok {
		t.Error("twilio's verifier answers handshakes")
	}
	meta, ok := live["meta"].(Handshaker)
	if !ok {
		t.Fatal("meta's verifier answers no handshake")
	}
	hook := func(secret string) error {
		body := []byte(`{"id":"m1","status":"delivered"}`)
		r := httptest.NewRequest(http.MethodPost, "/callbacks/webhook", bytes.NewReader(body))
		r.Header.Set(WebhookSignatureHeader, WebhookSignature(secret, time.Now(), body))
		_, err := live["webhook"].Verify(r, "", body, time.Now())
		return err
	}
	q := url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {"verify-me"}, "hub.challenge": {"42"}}
	if err := hook("s1"); !errors.Is(err, ErrNoReceipts) {
		t.Errorf("no blocks: %v, want ErrNoReceipts", err)
	}
	if _, ok := meta.Handshake(q); ok {
		t.Error("a handshake answered with no meta provider")
	}
	blocks = []ProviderConfig{
		{Kind: "webhook", Webhook: WebhookConfig{URL: "https://a.example/send", ReceiptSecret: "s1"}},
		{Kind: "meta", Meta: MetaConfig{PhoneNumberID: "1", AccessToken: "t", AppSecret: "a", VerifyToken: "verify-me"}},
	}
	if err := hook("s1"); !errors.Is(err, ErrNoReceipts) {
		t.Errorf("the token unchanged: %v, want the blocks read before", err)
	}
	token = 2
	if err := hook("s1"); err != nil {
		t.Errorf("a webhook receipt with its secret: %v", err)
	}
	if c, ok := meta.Handshake(q); !ok || c != "42" {
		t.Errorf("handshake = %q %v", c, ok)
	}
	if _, err := live["twilio"].Verify(httptest.NewRequest(http.MethodPost, "/", nil), "", nil, time.Now()); !errors.Is(err, ErrNoReceipts) {
		t.Errorf("twilio, given only other kinds' blocks: %v", err)
	}
	readsAt2 := reads
	_ = hook("s1")
	if reads != readsAt2 {
		t.Errorf("blocks read again with the token unchanged (%d, then %d)", readsAt2, reads)
	}
}
