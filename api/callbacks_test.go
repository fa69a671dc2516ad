package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/internal/testkit"
	"github.com/notifyd/notifyd/schemas"
)

// receiptLog stands where cmd wires the consumer's RecordReceipt: it keeps
// what it was given, or fails when told to.
type receiptLog struct {
	mu   sync.Mutex
	got  []receipt
	fail error
	// together, when set, makes each call wait until that many calls are
	// in flight at once (failing after 10 s): receipts recorded one after
	// the other never get there.
	together int
	inFlight int
	arrived  chan struct{}
	// sentBy, when set, is the account that sent each message, as the
	// consumer's correlation knows it: a receipt not verified for it is
	// foreign.
	sentBy map[string]string
}

func (l *receiptLog) RecordReceipt(_ context.Context, ev schemas.DeliveryEvent, recipient string, accounts []string) error {
	l.mu.Lock()
	if l.together > 0 {
		if l.arrived == nil {
			l.arrived = make(chan struct{})
		}
		l.inFlight++
		if l.inFlight == l.together {
			close(l.arrived)
		}
		arrived := l.arrived
		l.mu.Unlock()
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			return errors.New("receipts of one request recorded one after the other")
		}
		l.mu.Lock()
	}
	defer l.mu.Unlock()
	if l.fail != nil {
		return l.fail
	}
	if l.sentBy != nil && !slices.Contains(accounts, l.sentBy[ev.ProviderMessageID]) {
		return dispatch.ErrForeignReceipt
	}
	l.got = append(l.got, receipt{ev, recipient, accounts})
	return nil
}

func (l *receiptLog) take() []receipt {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.got
	l.got = nil
	return out
}

const (
	testPublicURL   = "https://notify.example.com"
	testAccountSID  = "AC00000000000000000000000000000001"
	testAuthToken   = "twilio-auth-token-1"
	testAppSecret   = "meta-app-secret-1"
	testVerifyToken = "meta-verify-token"
	testHookSecret  = "webhook-receipt-secret"
	// The accounts of the providers the receipts above are for.
	testPhoneID         = "106540352242922"
	testOtherPhoneID    = "200000000000001"
	testHookHost        = "hooks.example"
	testOtherHookSecret = "another-webhook-receipt-secret"
)

func callbackServer(t *testing.T) (http.Handler, *receiptLog, *prometheus.Registry) {
	t.Helper()
	cfg := Config{Listen: DefaultListen, PublicURL: testPublicURL}
	cfg.SetDefaults()
	k := newMemoryKafka()
	log := &receiptLog{}
	reg := prometheus.NewRegistry()
	s, err := New(cfg, Deps{Commands: k, Results: k, Registerer: reg, Receipts: log, Callbacks: map[string]dispatch.ReceiptVerifier{
		"twilio": dispatch.TwilioReceipts{AuthTokens: map[string]string{testAccountSID: testAuthToken}},
		"meta": dispatch.MetaReceipts{Apps: []dispatch.MetaApp{{AppSecret: "another-app-secret", PhoneNumberIDs: []string{testOtherPhoneID}}, {AppSecret: testAppSecret, PhoneNumberIDs: []string{testPhoneID}}},
			VerifyToken: testVerifyToken},
		"webhook": dispatch.WebhookReceipts{Secrets: []dispatch.WebhookSecret{{Secret: testHookSecret, Accounts: []string{testHookHost}}, {Secret: testOtherHookSecret, Accounts: []string{"other.example"}}}},
	}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s.Handler(), log, reg
}

func do(h http.Handler, r *http.Request) (int, string) {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, strings.TrimSpace(string(b))
}

// twilioCallback is a status callback as Twilio sends it: form-encoded,
// signed over signedURL (where Twilio was told to call) with token.
func twilioCallback(token, signedURL string, params url.Values) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "http://10.0.0.7:8000"+PathCallbackTwilio, strings.NewReader(params.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		r.Header.Set("X-Twilio-Signature", dispatch.TwilioSignature(token, signedURL, params))
	}
	return r
}

func twilioParams(status string, extra ...string) url.Values {
	v := url.Values{"AccountSid": {testAccountSID}, "MessageSid": {"SM123"}, "SmsSid": {"SM123"}, "MessageStatus": {status},
		"SmsStatus": {status}, "From": {"+15550001111"}, "To": {"+96555001234"}, "ApiVersion": {"2010-04-01"}}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	return v
}

// TestTwilioCallback: a callback signed like Twilio signs it (over
// api.public_url, not the address the proxy forwarded to) is recorded and
// answered 200, again when replayed; a bad, missing or foreign signature is
// 401 and records nothing; statuses before the message leaves Twilio are
// answered 200 and ignored; a receipt that cannot be recorded is 503.
func TestTwilioCallback(t *testing.T) {
	h, log, reg := callbackServer(t)
	signed := testPublicURL + PathCallbackTwilio
	params := twilioParams("undelivered", "ErrorCode", "30003", "ErrorMessage", "Unreachable destination handset")

	for i := 0; i < 2; i++ { // the second time: replayed, as Twilio retries
		if code, body := do(h, twilioCallback(testAuthToken, signed, params)); code != http.StatusOK {
			t.Fatalf("good signature: %d %s", code, body)
		}
	}
	got := log.take()
	if len(got) != 2 {
		t.Fatalf("recorded %d receipts, want 2", len(got))
	}
	ev := got[0].ev
	if ev.Provider != "twilio" || ev.Channel != schemas.ChannelSMS || ev.ProviderMessageID != "SM123" || ev.Status != schemas.DeliveryUndelivered ||
		ev.ProviderStatus != "undelivered" || ev.ErrorCode != "30003" || ev.ErrorDetail != "Unreachable destination handset" ||
		ev.ReceivedAt.IsZero() || got[0].recipient != "+96555001234" {
		t.Errorf("receipt: %+v to %q", ev, got[0].recipient)
	}

	for name, r := range map[string]*http.Request{
		"signed over the proxied URL": twilioCallback(testAuthToken, "http://10.0.0.7:8000"+PathCallbackTwilio, params),
		"signed with another token":   twilioCallback("not-the-token", signed, params),
		"no signature":                twilioCallback("", signed, params),
		"another account":             twilioCallback(testAuthToken, signed, twilioParams("delivered", "AccountSid", "AC999")),
		"a parameter changed after it": func() *http.Request {
			r := twilioCallback(testAuthToken, signed, params)
			r.Body = io.NopCloser(strings.NewReader(twilioParams("delivered").Encode()))
			return r
		}(),
	} {
		if code, _ := do(h, r); code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", name, code)
		}
	}
	if got := log.take(); len(got) != 0 {
		t.Errorf("unverified callbacks recorded: %+v", got)
	}
	if n := callbackCount(t, reg, "twilio", callbackBadSignature); n != 5 {
		t.Errorf("notifyd_callbacks_total{twilio,bad_signature} = %v, want 5", n)
	}

	if code, _ := do(h, twilioCallback(testAuthToken, signed, twilioParams("queued"))); code != http.StatusOK {
		t.Errorf("queued: %d", code)
	}
	if got := log.take(); len(got) != 0 {
		t.Errorf("a queued status was recorded: %+v", got)
	}
	log.fail = errors.New("brokers down")
	if code, _ := do(h, twilioCallback(testAuthToken, signed, twilioParams("delivered"))); code != http.StatusServiceUnavailable {
		t.Errorf("a receipt not recorded: %d, want 503", code)
	}
}

// callbackCount is notifyd_callbacks_total{provider,result} in reg.
func callbackCount(t *testing.T, reg *prometheus.Registry, provider, result string) float64 {
	t.Helper()
	v, ok := testkit.Metric(t, reg, "notifyd_callbacks_total", map[string]string{"provider": provider, "result": result})
	if !ok {
		t.Fatalf("no notifyd_callbacks_total{%s,%s}", provider, result)
	}
	return v
}

const metaBody = `{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
 "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
 "statuses":[
  {"id":"wamid.A","status":"read","timestamp":"1764842400","recipient_id":"96555001234","pricing":{"billable":true}},
  {"id":"wamid.B","status":"failed","timestamp":"1764842460","recipient_id":"96555001234",
   "errors":[{"code":131026,"title":"Message undeliverable","message":"Message undeliverable","error_data":{"details":"Recipient +96555001234 cannot be reached"}}]},
  {"id":"wamid.C","status":"deleted","timestamp":"1764842460","recipient_id":"96555001234"}]}}]}]}`

func metaCallback(secret, body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, PathCallbackMeta, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if secret != "" {
		r.Header.Set("X-Hub-Signature-256", dispatch.MetaSignature(secret, []byte(body)))
	}
	return r
}

// TestMetaCallback: the subscription handshake echoes the challenge only
// with the verify token; a notification signed over its raw bytes with the
// app secret has each of its statuses recorded (a status notifyd does not
// track is skipped); a bad or missing signature, or a body changed by a
// single byte, is 401 and records nothing.
func TestMetaCallback(t *testing.T) {
	h, log, _ := callbackServer(t)
	hs := func(token string) (int, string) {
		q := url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {token}, "hub.challenge": {"1158201444"}}
		return do(h, httptest.NewRequest(http.MethodGet, PathCallbackMeta+"?"+q.Encode(), nil))
	}
	if code, body := hs(testVerifyToken); code != http.StatusOK || body != "1158201444" {
		t.Errorf("handshake: %d %q", code, body)
	}
	if code, body := hs("guess"); code != http.StatusForbidden || strings.Contains(body, "1158201444") {
		t.Errorf("handshake with a wrong token: %d %q", code, body)
	}

	if code, body := do(h, metaCallback(testAppSecret, metaBody)); code != http.StatusOK {
		t.Fatalf("good signature: %d %s", code, body)
	}
	got := log.take()
	if len(got) != 2 {
		t.Fatalf("recorded %d receipts, want 2: %+v", len(got), got)
	}
	if got[0].ev.ProviderMessageID == "wamid.B" { // recorded at once: any order
		got[0], got[1] = got[1], got[0]
	}
	read, failed := got[0].ev, got[1].ev
	if read.ProviderMessageID != "wamid.A" || read.Status != schemas.DeliveryRead || read.Provider != "meta" || read.Channel != schemas.ChannelWhatsApp ||
		!read.OccurredAt.Equal(time.Unix(1764842400, 0)) || got[0].recipient != "+96555001234" {
		t.Errorf("read receipt: %+v", got[0])
	}
	if failed.Status != schemas.DeliveryFailed || failed.ErrorCode != "131026" ||
		failed.ErrorDetail != "Message undeliverable: Recipient +96555001234 cannot be reached" {
		t.Errorf("failed receipt: %+v", failed)
	}

	for name, r := range map[string]*http.Request{
		"another secret": metaCallback("not-the-secret", metaBody),
		"no signature":   metaCallback("", metaBody),
		"body changed": func() *http.Request {
			r := metaCallback(testAppSecret, metaBody)
			r.Body = io.NopCloser(strings.NewReader(strings.Replace(metaBody, `"failed"`, `"sent"  `, 1)))
			return r
		}(),
	} {
		if code, _ := do(h, r); code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", name, code)
		}
	}
	if got := log.take(); len(got) != 0 {
		t.Errorf("unverified notifications recorded: %+v", got)
	}
	// The statuses of one notification are recorded at once: two that
	// each wait for their result cost one wait (a batch of unknown
	// messages must not outlast api.wait and be retried forever).
	log.together = 2
	if code, body := do(h, metaCallback(testAppSecret, metaBody)); code != http.StatusOK {
		t.Errorf("a batch recorded at once: %d %s", code, body)
	}
}

// TestWebhookCallback: a receipt signed with the receipt secret at about
// now is recorded; one signed more than WebhookSignatureTolerance ago (a
// replay), with another secret, or not at all is 401; a verified body that
// is not a receipt is 400.
func TestWebhookCallback(t *testing.T) {
	h, log, _ := callbackServer(t)
	req := func(secret string, at time.Time, body string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, PathCallbackWebhook, strings.NewReader(body))
		if secret != "" {
			r.Header.Set(dispatch.WebhookSignatureHeader, dispatch.WebhookSignature(secret, at, []byte(body)))
		}
		return r
	}
	good := `{"id":"hook-1","status":"delivered","channel":"email","timestamp":"2026-12-04T10:00:00Z"}`
	if code, body := do(h, req(testHookSecret, time.Now(), good)); code != http.StatusOK {
		t.Fatalf("good signature: %d %s", code, body)
	}
	got := log.take()
	if len(got) != 1 || got[0].ev.ProviderMessageID != "hook-1" || got[0].ev.Status != schemas.DeliveryDelivered ||
		got[0].ev.Channel != schemas.ChannelEmail || got[0].ev.Provider != "webhook" || got[0].ev.ProviderStatus != "delivered" ||
		!got[0].ev.OccurredAt.Equal(time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("webhook receipt: %+v", got)
	}
	for name, c := range map[string]struct {
		r    *http.Request
		want int
	}{
		"replayed an hour later": {req(testHookSecret, time.Now().Add(-time.Hour), good), http.StatusUnauthorized},
		"another secret":         {req("another-secret", time.Now(), good), http.StatusUnauthorized},
		"no signature":           {req("", time.Now(), good), http.StatusUnauthorized},
		"unknown status":         {req(testHookSecret, time.Now(), `{"id":"hook-1","status":"opened"}`), http.StatusBadRequest},
		"no id":                  {req(testHookSecret, time.Now(), `{"status":"delivered"}`), http.StatusBadRequest},
	} {
		if code, _ := do(h, c.r); code != c.want {
			t.Errorf("%s: %d, want %d", name, code, c.want)
		}
	}
	if got := log.take(); len(got) != 0 {
		t.Errorf("recorded: %+v", got)
	}
}

// TestCallbacksOff: without secrets for it, an endpoint is 404.
func TestCallbacksOff(t *testing.T) {
	cfg := Config{Listen: DefaultListen}
	cfg.SetDefaults()
	k := newMemoryKafka()
	s, err := New(cfg, Deps{Commands: k, Results: k, Receipts: &receiptLog{}, Callbacks: map[string]dispatch.ReceiptVerifier{"meta": dispatch.MetaReceipts{Apps: []dispatch.MetaApp{{AppSecret: testAppSecret, PhoneNumberIDs: []string{testPhoneID}}}}}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := do(s.Handler(), twilioCallback(testAuthToken, "http://example.com"+PathCallbackTwilio, twilioParams("sent"))); code != http.StatusNotFound {
		t.Errorf("twilio callback with no twilio provider: %d, want 404", code)
	}
}

// TestCallbackAccounts: a verified receipt carries the accounts its secret
// speaks for (the AccountSid, the phone number id its notification names,
// the hosts of the webhook providers with that secret); one whose
// notification names a phone number of another app, or that the consumer
// finds is about another account's message, is answered 200, changes
// nothing and is counted as foreign_message.
func TestCallbackAccounts(t *testing.T) {
	h, log, reg := callbackServer(t)
	signed := testPublicURL + PathCallbackTwilio
	hook := func(secret, body string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, PathCallbackWebhook, strings.NewReader(body))
		r.Header.Set(dispatch.WebhookSignatureHeader, dispatch.WebhookSignature(secret, time.Now(), []byte(body)))
		return r
	}
	if code, body := do(h, twilioCallback(testAuthToken, signed, twilioParams("delivered"))); code != http.StatusOK {
		t.Fatalf("twilio: %d %s", code, body)
	}
	if code, body := do(h, metaCallback(testAppSecret, metaBody)); code != http.StatusOK {
		t.Fatalf("meta: %d %s", code, body)
	}
	if code, body := do(h, hook(testHookSecret, `{"id":"hook-1","status":"delivered"}`)); code != http.StatusOK {
		t.Fatalf("webhook: %d %s", code, body)
	}
	for _, r := range log.take() {
		var want []string
		switch r.ev.Provider {
		case "twilio":
			want = []string{testAccountSID}
		case "meta":
			want = []string{testPhoneID}
		case "webhook":
			want = []string{testHookHost}
		}
		if !slices.Equal(r.accounts, want) {
			t.Errorf("%s receipt for accounts %q, want %q", r.ev.Provider, r.accounts, want)
		}
	}

	// A notification signed with one app's secret naming another app's
	// phone number: nothing recorded.
	other := strings.Replace(metaBody, testPhoneID, testOtherPhoneID, 1)
	if code, body := do(h, metaCallback(testAppSecret, other)); code != http.StatusOK {
		t.Fatalf("meta, another app's number: %d %s", code, body)
	}
	if got := log.take(); len(got) != 0 {
		t.Errorf("a receipt for another app's number was recorded: %+v", got)
	}
	if n := callbackCount(t, reg, "meta", callbackForeign); n != 1 {
		t.Errorf("notifyd_callbacks_total{meta,foreign_message} = %v, want 1", n)
	}

	// The consumer knows the message was sent from another account.
	log.sentBy = map[string]string{"SM123": "AC00000000000000000000000000000002", "hook-1": testHookHost, "hook-2": "other.example"}
	if code, body := do(h, twilioCallback(testAuthToken, signed, twilioParams("read"))); code != http.StatusOK {
		t.Fatalf("twilio, foreign: %d %s", code, body)
	}
	if code, body := do(h, hook(testOtherHookSecret, `{"id":"hook-1","status":"read"}`)); code != http.StatusOK {
		t.Fatalf("webhook, foreign: %d %s", code, body)
	}
	if code, body := do(h, hook(testOtherHookSecret, `{"id":"hook-2","status":"read"}`)); code != http.StatusOK {
		t.Fatalf("webhook, own: %d %s", code, body)
	}
	if got := log.take(); len(got) != 1 || got[0].ev.ProviderMessageID != "hook-2" {
		t.Errorf("recorded %+v, want hook-2's receipt only", got)
	}
	for provider, want := range map[string]float64{"twilio": 1, "webhook": 1} {
		if n := callbackCount(t, reg, provider, callbackForeign); n != want {
			t.Errorf("notifyd_callbacks_total{%s,foreign_message} = %v, want %v", provider, n, want)
		}
	}
}

// receipt is one receipt as RecordReceipt was given it.
type receipt struct {
	ev        schemas.DeliveryEvent
	recipient string
	accounts  []string
}
