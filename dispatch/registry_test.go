package dispatch

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// TestRegistryKinds: each channel lists the kinds that can send on it, in
// the order they were registered; a kind is registered once, with a name,
// a channel and a constructor.
func TestRegistryKinds(t *testing.T) {
	r := NewRegistry()
	for ch, want := range map[schemas.Channel][]string{
		schemas.ChannelEmail:    {"console", "webhook", "smtp"},
		schemas.ChannelSMS:      {"console", "webhook", "twilio"},
		schemas.ChannelWhatsApp: {"console", "webhook", "meta"},
		"fax":                   nil,
	} {
		if got := r.Kinds(ch); !slices.Equal(got, want) {
			t.Errorf("Kinds(%s) = %q, want %q", ch, got, want)
		}
	}
	newConsole := func(ProviderConfig, Env) (Provider, error) { return NewConsole(io.Discard), nil }
	for _, k := range []Kind{
		{Name: "twilio", Channels: []schemas.Channel{schemas.ChannelSMS}, New: newConsole},
		{Name: "", Channels: []schemas.Channel{schemas.ChannelSMS}, New: newConsole},
		{Name: "pigeon", New: newConsole},
		{Name: "pigeon", Channels: []schemas.Channel{schemas.ChannelSMS}},
	} {
		if err := r.Register(k); err == nil {
			t.Errorf("Register(%+v) accepted", k)
		}
	}
	if err := r.Register(Kind{Name: "pigeon", Channels: []schemas.Channel{schemas.ChannelSMS}, New: newConsole}); err != nil {
		t.Fatal(err)
	}
	if got := r.Kinds(schemas.ChannelSMS); !slices.Equal(got, []string{"console", "webhook", "twilio", "pigeon"}) {
		t.Errorf("after Register: %q", got)
	}
	route, err := r.Build(ProviderConfig{Kind: "pigeon"}, Env{})
	if err != nil || route.Provider.Name() != "console" {
		t.Errorf("Build(pigeon) = %v, %v", route, err)
	}
}

// TestRegistryValidate: the kind is checked against the channel, then the
// kind's own block; errors start with the key below providers.<channel>.
func TestRegistryValidate(t *testing.T) {
	r := NewRegistry()
	for _, tc := range []struct {
		ch   schemas.Channel
		p    ProviderConfig
		want string // error prefix; "" valid
	}{
		{schemas.ChannelSMS, ProviderConfig{}, "kind: is required (console, webhook, twilio)"},
		{schemas.ChannelSMS, ProviderConfig{Kind: "meta"}, `kind: "meta" is not a provider for sms (want console, webhook, twilio)`},
		{schemas.ChannelSMS, ProviderConfig{Kind: "console"}, ""},
		{schemas.ChannelSMS, ProviderConfig{Kind: "twilio"}, "twilio.account_sid: required"},
		{schemas.ChannelSMS, ProviderConfig{Kind: "twilio", Twilio: TwilioConfig{AccountSID: "AC1", AuthToken: "t", From: "+1555"}}, ""},
		{schemas.ChannelEmail, ProviderConfig{Kind: "smtp"}, "smtp."},
		{schemas.ChannelEmail, ProviderConfig{Kind: "webhook"}, "webhook.url: must be an http or https URL"},
		{schemas.ChannelWhatsApp, ProviderConfig{Kind: "meta"}, "meta.phone_number_id: required"},
	} {
		err := r.Validate(tc.ch, tc.p)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %+v: %v", tc.ch, tc.p.Kind, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%s %s: %v, want %q", tc.ch, tc.p.Kind, err, tc.want)
		}
	}
	if _, err := r.Build(ProviderConfig{Kind: "fax"}, Env{}); err == nil || err.Error() != `kind: unknown kind "fax"` {
		t.Errorf("Build(fax): %v", err)
	}
	if _, err := r.Build(ProviderConfig{Kind: "twilio"}, Env{}); err == nil {
		t.Error("Build of an invalid block accepted")
	}
}

// TestRegistryBuild: a route carries its block's policies; a twilio
// provider without status_callback asks for its status callbacks at the
// public URL's /callbacks/twilio, one with its own keeps it.
func TestRegistryBuild(t *testing.T) {
	var callbacks []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		callbacks = append(callbacks, r.PostForm.Get("StatusCallback"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"sid":"SM1","status":"queued"}`)
	}))
	defer srv.Close()
	r := NewRegistry()
	block := ProviderConfig{Kind: "twilio", Twilio: TwilioConfig{BaseURL: srv.URL, AccountSID: "AC1", AuthToken: "t", From: "+1555"},
		Retry: RetryPolicy{MaxAttempts: 2}, RateLimit: RateLimit{PerSecond: 3}, CircuitBreaker: BreakerPolicy{FailureRatio: 0.25}}
	own := block
	own.Twilio.StatusCallback = "https://elsewhere.example/cb"
	for _, tc := range []struct {
		block  ProviderConfig
		public string
	}{{block, "https://notify.example/"}, {block, ""}, {own, "https://notify.example/"}} {
		route, err := r.Build(tc.block, Env{PublicURL: tc.public})
		if err != nil {
			t.Fatal(err)
		}
		if route.Retry != tc.block.Retry || route.RateLimit != block.RateLimit || route.Breaker != block.CircuitBreaker {
			t.Errorf("route %+v lost its policies", route)
		}
		if _, err := route.Provider.Send(t.Context(), Message{Channel: schemas.ChannelSMS, To: "+96555001234", Text: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"https://notify.example/callbacks/twilio", "", "https://elsewhere.example/cb"}; !slices.Equal(callbacks, want) {
		t.Errorf("StatusCallback %q, want %q", callbacks, want)
	}
	// The first kind registered is built as any other.
	if route, err := r.Build(ProviderConfig{Kind: "console"}, Env{Console: io.Discard}); err != nil || route.Provider.Name() != "console" {
		t.Errorf("Build(console) = %+v, %v", route, err)
	}
}

// TestRegistryReceipts: a verifier per kind whose configured providers
// have a secret, each secret with the accounts of the providers that have
// it; none for a kind without.
func TestRegistryReceipts(t *testing.T) {
	r := NewRegistry()
	got := r.Receipts([]ProviderConfig{
		{Kind: "console"},
		{Kind: "twilio", Twilio: TwilioConfig{AccountSID: "AC1", AuthToken: "t1"}},
		{Kind: "twilio", Twilio: TwilioConfig{AccountSID: "AC2", AuthToken: "t2"}},
		{Kind: "meta", Meta: MetaConfig{PhoneNumberID: "1", AppSecret: "a"}},
		{Kind: "meta", Meta: MetaConfig{PhoneNumberID: "2", AppSecret: "a", VerifyToken: "v"}},
		{Kind: "meta", Meta: MetaConfig{PhoneNumberID: "3", AppSecret: "b"}},
		{Kind: "meta", Meta: MetaConfig{PhoneNumberID: "4"}},
		{Kind: "webhook", Webhook: WebhookConfig{URL: "https://a.example/x", ReceiptSecret: "s"}},
		{Kind: "webhook", Webhook: WebhookConfig{URL: "https://B.example/y", ReceiptSecret: "s"}},
		{Kind: "webhook", Webhook: WebhookConfig{URL: "https://c.example/y"}},
	})
	want := map[string]ReceiptVerifier{
		"twilio":  TwilioReceipts{AuthTokens: map[string]string{"AC1": "t1", "AC2": "t2"}},
		"meta":    MetaReceipts{Apps: []MetaApp{{AppSecret: "a", PhoneNumberIDs: []string{"1", "2"}}, {AppSecret: "b", PhoneNumberIDs: []string{"3"}}}, VerifyToken: "v"},
		"webhook": WebhookReceipts{Secrets: []WebhookSecret{{Secret: "s", Accounts: []string{"a.example", "b.example"}}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Receipts =\n%+v\nwant\n%+v", got, want)
	}
	none := r.Receipts([]ProviderConfig{{Kind: "meta", Meta: MetaConfig{PhoneNumberID: "4"}}, {Kind: "webhook", Webhook: WebhookConfig{URL: "https://c.example"}}})
	if len(none) != 0 {
		t.Errorf("verifiers without secrets: %+v", none)
	}
	if v := r.Receipts([]ProviderConfig{{Kind: "meta", Meta: MetaConfig{VerifyToken: "v"}}}); !reflect.DeepEqual(v, map[string]ReceiptVerifier{"meta": MetaReceipts{VerifyToken: "v"}}) {
		t.Errorf("a verify token alone: %+v", v)
	}
}

// TestTwilioSignatureVector is Twilio's documented example of
// X-Twilio-Signature.
func TestTwilioSignatureVector(t *testing.T) {
	params := url.Values{"CallSid": {"CA1234567890ABCDE"}, "Caller": {"+12349013030"}, "Digits": {"1234"},
		"From": {"+12349013030"}, "To": {"+18005551212"}}
	if got := TwilioSignature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params); got != "0/KCTR6DLpKmkAf8muzZqo1nDgQ=" {
		t.Errorf("TwilioSignature = %q", got)
	}
}

// TestTwilioReceiptsVerify: a callback is verified with the auth token of
// the AccountSid it names, over the URL Twilio called; its receipt carries
// what Twilio said, the channel its To implies and that account.
func TestTwilioReceiptsVerify(t *testing.T) {
	v := TwilioReceipts{AuthTokens: map[string]string{"AC1": "token-1", "AC2": "token-2"}}
	const called = "https://notify.example/callbacks/twilio"
	received := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	request := func(token string, params url.Values) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/callbacks/twilio", strings.NewReader(params.Encode()))
		if token != "" {
			r.Header.Set("X-Twilio-Signature", TwilioSignature(token, called, params))
		}
		return r
	}
	form := url.Values{"AccountSid": {"AC2"}, "MessageSid": {"SM9"}, "MessageStatus": {"undelivered"}, "To": {"whatsapp:+96555001234"},
		"ErrorCode": {"30003"}, "ErrorMessage": {"Unreachable"}}
	r := request("token-2", form)
	got, err := v.Verify(r, called, []byte(form.Encode()), received)
	want := []VerifiedReceipt{{Event: schemas.DeliveryEvent{Provider: "twilio", Channel: schemas.ChannelWhatsApp, ProviderMessageID: "SM9",
		Status: schemas.DeliveryUndelivered, ProviderStatus: "undelivered", ErrorCode: "30003", ErrorDetail: "Unreachable",
		OccurredAt: received, ReceivedAt: received}, Recipient: "+96555001234", Accounts: []string{"AC2"}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Verify = %+v, %v\nwant %+v", got, err, want)
	}
	sms := url.Values{"AccountSid": {"AC1"}, "SmsSid": {"SM8"}, "SmsStatus": {"queued"}, "To": {"+96555001234"}}
	got, err = v.Verify(request("token-1", sms), called, []byte(sms.Encode()), received)
	if err != nil || len(got) != 1 || got[0].Event.ProviderMessageID != "SM8" || got[0].Event.Status != "" ||
		got[0].Event.ProviderStatus != "queued" || got[0].Event.Channel != schemas.ChannelSMS {
		t.Errorf("an SmsSid callback of an untracked status: %+v, %v", got, err)
	}
	for name, tc := range map[string]struct {
		r    *http.Request
		body url.Values
		bad  bool
	}{
		"unsigned":             {request("", form), form, true},
		"another account's":    {request("token-1", form), form, true},
		"unknown account":      {request("token-2", url.Values{"AccountSid": {"AC3"}, "MessageSid": {"SM9"}}), url.Values{"AccountSid": {"AC3"}, "MessageSid": {"SM9"}}, true},
		"tampered":             {request("token-2", form), url.Values{"AccountSid": {"AC2"}, "MessageSid": {"SM10"}, "MessageStatus": {"delivered"}}, true},
		"without a MessageSid": {request("token-1", url.Values{"AccountSid": {"AC1"}}), url.Values{"AccountSid": {"AC1"}}, false},
	} {
		_, err := v.Verify(tc.r, called, []byte(tc.body.Encode()), received)
		var bad BadSignature
		if err == nil || errors.As(err, &bad) != tc.bad {
			t.Errorf("%s: %v (bad signature %v)", name, err, tc.bad)
		}
	}
	if _, err := v.Verify(request("token-2", form), "https://elsewhere.example/callbacks/twilio", []byte(form.Encode()), received); err == nil {
		t.Error("a signature over another URL verified")
	}
}

// TestMetaReceiptsVerify: a notification is verified with any app's
// secret; a status is for the phone number its change names, which must
// be one of the signing app's (else it has no accounts); errors and
// timestamps are read; the handshake needs the verify token.
func TestMetaReceiptsVerify(t *testing.T) {
	v := MetaReceipts{Apps: []MetaApp{{AppSecret: "app-a", PhoneNumberIDs: []string{"111"}}, {AppSecret: "app-b", PhoneNumberIDs: []string{"222", "333"}}},
		VerifyToken: "verify-me"}
	received := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	body := `{"entry":[{"changes":[
	  {"value":{"metadata":{"phone_number_id":"222"},"statuses":[{"id":"wamid.1","status":"read","timestamp":"1764842400","recipient_id":"96555001234"}]}},
	  {"value":{"metadata":{"phone_number_id":"111"},"statuses":[{"id":"wamid.2","status":"failed","timestamp":"x",
	     "errors":[{"code":131026,"title":"Message undeliverable","message":"Message undeliverable","error_data":{"details":"not on WhatsApp"}}]}]}},
	  {"value":{"statuses":[{"id":"wamid.3","status":"deleted","timestamp":"0"}]}}]}]}`
	signed := func(secret, body string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/callbacks/meta", strings.NewReader(body))
		if secret != "" {
			r.Header.Set("X-Hub-Signature-256", MetaSignature(secret, []byte(body)))
		}
		return r
	}
	got, err := v.Verify(signed("app-b", body), "", []byte(body), received)
	if err != nil || len(got) != 3 {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
	read := VerifiedReceipt{Event: schemas.DeliveryEvent{Provider: "meta", Channel: schemas.ChannelWhatsApp, ProviderMessageID: "wamid.1",
		Status: schemas.DeliveryRead, ProviderStatus: "read", OccurredAt: time.Unix(1764842400, 0).UTC(), ReceivedAt: received},
		Recipient: "+96555001234", Accounts: []string{"222"}}
	if !reflect.DeepEqual(got[0], read) {
		t.Errorf("read: %+v\nwant %+v", got[0], read)
	}
	failed := got[1]
	if failed.Event.Status != schemas.DeliveryFailed || failed.Event.ErrorCode != "131026" ||
		failed.Event.ErrorDetail != "Message undeliverable: not on WhatsApp" || !failed.Event.OccurredAt.Equal(received) || failed.Accounts != nil {
		t.Errorf("failed, for a number app-b does not have: %+v", failed)
	}
	if got[2].Event.Status != "" || !slices.Equal(got[2].Accounts, []string{"222", "333"}) || got[2].Recipient != "" ||
		!got[2].Event.OccurredAt.Equal(received) {
		t.Errorf("a status without metadata, timestamp 0 (not a time: received): %+v", got[2])
	}
	for name, r := range map[string]*http.Request{"unsigned": signed("", body), "another secret": signed("app-c", body)} {
		var bad BadSignature
		if _, err := v.Verify(r, "", []byte(body), received); !errors.As(err, &bad) {
			t.Errorf("%s: %v, want a bad signature", name, err)
		}
	}
	for _, b := range []string{`not json`, `{"entry":[{"changes":[{"value":{"statuses":[{"status":"read"}]}}]}]}`} {
		var bad BadSignature
		if _, err := v.Verify(signed("app-a", b), "", []byte(b), received); err == nil || errors.As(err, &bad) {
			t.Errorf("%s: %v, want a verified request refused", b, err)
		}
	}
	for q, want := range map[string]bool{
		"hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=42": true,
		"hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=42":     false,
		"hub.mode=unsubscribe&hub.verify_token=verify-me":                false,
	} {
		values, _ := url.ParseQuery(q)
		challenge, ok := v.Handshake(values)
		if ok != want || (ok && challenge != "42") {
			t.Errorf("Handshake(%s) = %q, %v", q, challenge, ok)
		}
	}
	if _, ok := (MetaReceipts{}).Handshake(url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {""}}); ok {
		t.Error("a handshake without a configured token succeeded")
	}
}

// TestWebhookReceiptsVerify: a receipt signed with a secret within
// WebhookSignatureTolerance of now is for the accounts of every secret
// that verifies it; an old or future signature is a replay; the body must
// be a receipt.
func TestWebhookReceiptsVerify(t *testing.T) {
	v := WebhookReceipts{Secrets: []WebhookSecret{{Secret: "s1", Accounts: []string{"a.example"}}, {Secret: "s2", Accounts: []string{"b.example"}}}}
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	signed := func(secret string, at time.Time, body string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/callbacks/webhook", strings.NewReader(body))
		if secret != "" {
			r.Header.Set(WebhookSignatureHeader, WebhookSignature(secret, at, []byte(body)))
		}
		return r
	}
	body := `{"id":"hook-1","status":"delivered","channel":"email","to":"layla@example.com","timestamp":"2026-12-07T08:59:00+03:00"}`
	got, err := v.Verify(signed("s2", now.Add(-WebhookSignatureTolerance), body), "", []byte(body), now)
	want := []VerifiedReceipt{{Event: schemas.DeliveryEvent{Provider: "webhook", Channel: schemas.ChannelEmail, ProviderMessageID: "hook-1",
		Status: schemas.DeliveryDelivered, ProviderStatus: "delivered", OccurredAt: time.Date(2026, 12, 7, 5, 59, 0, 0, time.UTC), ReceivedAt: now},
		Recipient: "layla@example.com", Accounts: []string{"b.example"}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Verify = %+v, %v\nwant %+v", got, err, want)
	}
	plain := `{"id":"hook-2","status":"failed","provider_status":"bounced","error_code":"550"}`
	got, err = v.Verify(signed("s1", now.Add(WebhookSignatureTolerance), plain), "", []byte(plain), now)
	if err != nil || len(got) != 1 || got[0].Event.ProviderStatus != "bounced" || got[0].Event.ErrorCode != "550" ||
		!got[0].Event.OccurredAt.Equal(now) || !slices.Equal(got[0].Accounts, []string{"a.example"}) {
		t.Errorf("a receipt without timestamp: %+v, %v", got, err)
	}
	for name, tc := range map[string]struct {
		r    *http.Request
		body string
		bad  bool
	}{
		"unsigned":        {signed("", now, body), body, true},
		"another secret":  {signed("s3", now, body), body, true},
		"too old":         {signed("s1", now.Add(-WebhookSignatureTolerance-time.Second), body), body, true},
		"from the future": {signed("s1", now.Add(WebhookSignatureTolerance+time.Second), body), body, true},
		"not json":        {signed("s1", now, "nope"), "nope", false},
		"no id":           {signed("s1", now, `{"status":"sent"}`), `{"status":"sent"}`, false},
		"unknown status":  {signed("s1", now, `{"id":"x","status":"lost"}`), `{"id":"x","status":"lost"}`, false},
		"unknown channel": {signed("s1", now, `{"id":"x","status":"sent","channel":"fax"}`), `{"id":"x","status":"sent","channel":"fax"}`, false},
	} {
		_, err := v.Verify(tc.r, "", []byte(tc.body), now)
		var bad BadSignature
		if err == nil || errors.As(err, &bad) != tc.bad {
			t.Errorf("%s: %v (bad signature %v)", name, err, tc.bad)
		}
	}
	r := signed("s1", now, body)
	r.Header.Set(WebhookSignatureHeader, "t="+strconv.FormatInt(now.Unix(), 10))
	if _, err := v.Verify(r, "", []byte(body), now); err == nil {
		t.Error("a signature without v1 verified")
	}
}

// TestUserAgent: every HTTP kind built with an Env's UserAgent sends it;
// without one, Go's default.
func TestUserAgent(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("User-Agent"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"sid":"SM1","status":"queued","messages":[{"id":"wamid.1"}],"id":"w1"}`)
	}))
	defer srv.Close()
	blocks := []struct {
		block ProviderConfig
		msg   Message
	}{
		{ProviderConfig{Kind: "twilio", Twilio: TwilioConfig{BaseURL: srv.URL, AccountSID: "AC1", AuthToken: "t", From: "+1555"}},
			Message{Channel: schemas.ChannelSMS, To: "+96555001234", Text: "hi"}},
		{ProviderConfig{Kind: "meta", Meta: MetaConfig{BaseURL: srv.URL, PhoneNumberID: "1", AccessToken: "t"}}, waMessage()},
		{ProviderConfig{Kind: "webhook", Webhook: WebhookConfig{URL: srv.URL}}, Message{Channel: schemas.ChannelSMS, To: "+96555001234", Text: "hi"}},
	}
	for _, ua := range []string{"notifyd/v9.9.9", ""} {
		for _, b := range blocks {
			route, err := NewRegistry().Build(b.block, Env{UserAgent: ua})
			if err != nil {
				t.Fatal(err)
			}
			got = nil
			if _, err := route.Provider.Send(t.Context(), b.msg); err != nil {
				t.Fatalf("%s: %v", b.block.Kind, err)
			}
			want := ua
			if ua == "" {
				want = "Go-http-client/1.1"
			}
			mu.Lock()
			if len(got) != 1 || got[0] != want {
				t.Errorf("%s with UserAgent %q sent User-Agent %q, want %q", b.block.Kind, ua, got, want)
			}
			mu.Unlock()
		}
	}
}
