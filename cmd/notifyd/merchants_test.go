package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/internal/seal"
	"github.com/notifyd/notifyd/schemas"
)

// TestMerchantRecord: a merchant file becomes a record with every secret
// sealed (from *_file and ${ENV} too), that the instances' compiler opens;
// what a record holds is read literally (no *_file, no ${ENV}); a secret
// sealed for another merchant or with another key does not open;
// reseal moves every secret to the current key; get shows them sealed.
func TestMerchantRecord(t *testing.T) {
	dir := t.TempDir()
	token := "twilio-token-" + strings.Repeat("t", 20)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFYD_TEST_HOOK_SECRET", "hook-secret-"+strings.Repeat("h", 20))
	cfg := DefaultConfig()
	cfg.Store.Dir = dir
	keys, err := cfg.sealingKeys()
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, localSealingKey)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("sealing key file: %v %v", st, err)
	}
	check, err := settingsChecker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := `merchant_id: acme
display_name: ACME
cooldown: 10m
api:
  rate_limit: {per_second: 5, burst: 10}
  keys: [{name: acme-backend, sha256: "` + strings.Repeat("AB", 32) + `"}]
providers:
  sms: {kind: twilio, twilio: {account_sid: AC0123456789abcdef0123456789abcdef, auth_token_file: "` + tokenFile + `", from: "${NOTIFYD_TEST_UNSET_FROM}"}}
  email: {kind: webhook, webhook: {url: "https://mail.acme.example/send", receipt_secret: "${NOTIFYD_TEST_HOOK_SECRET}"}}
templates:
  sms:
    paid: {en: {text: "ACME {{.OrderNo}}"}}
`
	_, _, err = merchantRecord([]byte(file), keys, check)
	if err == nil || !strings.Contains(err.Error(), "NOTIFYD_TEST_UNSET_FROM") {
		t.Fatalf("an unset variable: %v", err)
	}
	file = strings.Replace(file, "${NOTIFYD_TEST_UNSET_FROM}", "ACME", 1)
	id, value, err := merchantRecord([]byte(file), keys, check)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{token, os.Getenv("NOTIFYD_TEST_HOOK_SECRET")} {
		if strings.Contains(string(value), secret) {
			t.Errorf("the record holds a secret in clear: %s", value)
		}
	}
	s, err := schemas.DecodeMerchantSettings(value)
	if err != nil || id != "acme" || s.API.Keys[0].SHA256 != strings.Repeat("ab", 32) || s.CooldownText != "10m0s" {
		t.Fatalf("record %s: %+v %v", value, s, err)
	}
	p, err := cfg.merchantCompiler(keys)(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Providers[schemas.ChannelSMS][0].Twilio.AuthToken; got != token {
		t.Errorf("auth_token opened as %q", got)
	}
	if got := p.Providers[schemas.ChannelEmail][0].Webhook.ReceiptSecret; got != os.Getenv("NOTIFYD_TEST_HOOK_SECRET") {
		t.Errorf("receipt_secret opened as %q", got)
	}

	// A record is read literally, and its secrets open only for it.
	literal := func(providers string) error {
		_, err := cfg.merchantCompiler(keys)(schemas.MerchantSettings{MerchantID: "acme",
			Providers: map[schemas.Channel]json.RawMessage{schemas.ChannelSMS: json.RawMessage(providers)}})
		return err
	}
	if err := literal(`{"kind":"twilio","twilio":{"account_sid":"AC1","auth_token_file":"/etc/passwd","from":"X"}}`); err == nil ||
		!strings.Contains(err.Error(), "providers.sms.twilio.auth_token_file: unknown key") {
		t.Errorf("a *_file key in a record: %v", err)
	}
	sealedFor := func(merchant string, k *seal.Keys) string {
		v, _ := k.Seal(merchant, token)
		return `{"kind":"twilio","twilio":{"account_sid":"AC1","auth_token":{"sealed":"` + v + `"},"from":"${HOME}"}}`
	}
	p, err = cfg.merchantCompiler(keys)(schemas.MerchantSettings{MerchantID: "acme",
		Providers: map[schemas.Channel]json.RawMessage{schemas.ChannelSMS: json.RawMessage(sealedFor("acme", keys))}})
	if err != nil || p.Providers[schemas.ChannelSMS][0].Twilio.From != "${HOME}" {
		t.Errorf("${HOME} in a record: %+v %v, want it literal", p.Providers, err)
	}
	if err := literal(sealedFor("globex", keys)); err == nil || !strings.Contains(err.Error(), "providers.sms.twilio.auth_token") || strings.Contains(err.Error(), token) {
		t.Errorf("a secret sealed for another merchant: %v", err)
	}
	otherKey, _ := seal.NewKey()
	other, _ := seal.New(otherKey)
	if err := literal(sealedFor("acme", other)); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("a secret sealed with another key: %v", err)
	}
	if err := literal(`{"kind":"twilio","twilio":{"account_sid":"AC1","auth_token":"in-clear-token-xxxxxxxx","from":"X"}}`); err == nil {
		t.Error("a secret in clear compiled")
	}

	// Rotation: reseal opens with the previous key and seals with the new.
	newKey, _ := seal.NewKey()
	rotated, err := seal.New(newKey, mustRead(t, filepath.Join(dir, localSealingKey)))
	if err != nil {
		t.Fatal(err)
	}
	again, changed, err := resealed("acme", value, rotated)
	if err != nil || !changed || strings.Contains(string(again), `"v1:`+keys.CurrentID()) || !strings.Contains(string(again), `"v1:`+rotated.CurrentID()) {
		t.Fatalf("resealed: %v %v %s", changed, err, again)
	}
	if _, changed, _ := resealed("acme", again, rotated); changed {
		t.Error("resealed again what the current key sealed")
	}
	onlyNew, _ := seal.New(newKey)
	s2, _ := schemas.DecodeMerchantSettings(again)
	if p, err := cfg.merchantCompiler(onlyNew)(s2); err != nil || p.Providers[schemas.ChannelSMS][0].Twilio.AuthToken != token {
		t.Errorf("after reseal, the new key alone: %v", err)
	}
	shown, err := shownSettings(again)
	if err != nil || strings.Contains(string(shown), token) || !strings.Contains(string(shown), "sealed (key "+rotated.CurrentID()+")") {
		t.Errorf("get shows %s (%v)", shown, err)
	}
	if err := consumer.CheckMerchantSettings("globex", value, cfg.merchantCompiler(keys), nil); err == nil {
		t.Error("a record under another merchant's key checked")
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestMerchantReceipts: a Twilio status callback is verified with the auth
// token of the account it names, the platform's or a merchant's, as the
// merchants' settings are at the time of the callback: a merchant
// onboarded is verified for, its token changed refuses the old one, and a
// kind no provider takes receipts for any more is not served.
func TestMerchantReceipts(t *testing.T) {
	cfg := DefaultConfig()
	type merchants struct {
		token  int
		blocks []dispatch.ProviderConfig
	}
	now := &merchants{}
	verifiers := cfg.callbackVerifiers(dispatch.NewRegistry(), func() any { return now.token }, func() []dispatch.ProviderConfig { return now.blocks })
	twilio := verifiers["twilio"]
	const url = "https://notify.example.com/callbacks/twilio"
	callback := func(sid, token string) error {
		params := neturl.Values{"AccountSid": {sid}, "MessageSid": {"SM1"}, "MessageStatus": {"delivered"}}
		r := httptest.NewRequest(http.MethodPost, url, strings.NewReader(params.Encode()))
		r.Header.Set("X-Twilio-Signature", dispatch.TwilioSignature(token, url, params))
		_, err := twilio.Verify(r, url, []byte(params.Encode()), time.Now())
		return err
	}
	block := func(sid, token string) dispatch.ProviderConfig {
		return dispatch.ProviderConfig{Kind: "twilio", Twilio: dispatch.TwilioConfig{AccountSID: sid, AuthToken: token, From: "ACME"}}
	}
	if err := callback("AC-acme", "acme-token-1"); !errors.Is(err, dispatch.ErrNoReceipts) {
		t.Errorf("no twilio provider anywhere: %v, want ErrNoReceipts", err)
	}
	now.blocks, now.token = []dispatch.ProviderConfig{block("AC-acme", "acme-token-1")}, 1
	if err := callback("AC-acme", "acme-token-1"); err != nil {
		t.Errorf("acme's callback with acme's token: %v", err)
	}
	var bad dispatch.BadSignature
	if err := callback("AC-acme", "globex-token"); !errors.As(err, &bad) {
		t.Errorf("acme's callback signed with another token: %v", err)
	}
	now.blocks, now.token = []dispatch.ProviderConfig{block("AC-acme", "acme-token-2")}, 2
	if err := callback("AC-acme", "acme-token-1"); !errors.As(err, &bad) {
		t.Errorf("the old token after a change: %v", err)
	}
	if err := callback("AC-acme", "acme-token-2"); err != nil {
		t.Errorf("the new token: %v", err)
	}
	now.blocks, now.token = nil, 3
	if err := callback("AC-acme", "acme-token-2"); !errors.Is(err, dispatch.ErrNoReceipts) {
		t.Errorf("acme removed: %v, want ErrNoReceipts", err)
	}
}
