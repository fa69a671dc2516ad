package dispatch

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// DefaultTwilioBaseURL is the Twilio REST API used when base_url is unset.
const DefaultTwilioBaseURL = "https://api.twilio.com"

// TwilioConfig configures a Twilio provider (providers.sms.twilio).
type TwilioConfig struct {
	// BaseURL is the API's root; default DefaultTwilioBaseURL. Tests point
	// it at a local server; a path prefix (a proxy) is kept.
	BaseURL string `yaml:"base_url"`
	// AccountSID is the account's SID ("AC..."), also the Basic auth user.
	// Required.
	AccountSID string `yaml:"account_sid"`
	// AuthToken is the account's auth token, the Basic auth password.
	// Required. It is a secret: it never appears in errors, details or logs.
	AuthToken string `yaml:"auth_token" secret:"user=account_sid"`
	// From is the sender: a Twilio phone number in E.164 form, a short code
	// or an alphanumeric sender ID. Exactly one of From and
	// MessagingServiceSID is required.
	From string `yaml:"from"`
	// MessagingServiceSID ("MG...") lets Twilio pick the sender from a
	// Messaging Service's pool instead of From.
	MessagingServiceSID string `yaml:"messaging_service_sid"`
	// StatusCallback, when set, is the http(s) URL Twilio posts delivery
	// status updates to.
	StatusCallback string `yaml:"status_callback"`
}

// Validate names the first bad field by its configuration key, e.g.
// "auth_token: required". base_url may be empty (the default applies).
func (c TwilioConfig) Validate() error {
	switch {
	case c.BaseURL != "" && !isHTTPURL(c.BaseURL):
		return errors.New("base_url: must be an http or https URL")
	case c.AccountSID == "":
		return errors.New("account_sid: required")
	case !strings.HasPrefix(c.AccountSID, "AC") || !isASCIIAlnum(c.AccountSID):
		return errors.New(`account_sid: must be a Twilio account SID ("AC" and letters or digits)`)
	case c.AuthToken == "":
		return errors.New("auth_token: required")
	case c.From == "" && c.MessagingServiceSID == "":
		return errors.New("from: one of from and messaging_service_sid is required")
	case c.From != "" && c.MessagingServiceSID != "":
		return errors.New("from: set either from or messaging_service_sid, not both")
	case c.StatusCallback != "" && !isHTTPURL(c.StatusCallback):
		return errors.New("status_callback: must be an http or https URL")
	}
	return nil
}

// Twilio is a Provider that sends sms through Twilio's Programmable
// Messaging API, one request per message:
//
//	POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json
//
// form-encoded (To = Message.To, From or MessagingServiceSid, Body =
// Message.Text unchanged, StatusCallback when configured), with HTTP Basic
// auth account_sid:auth_token. The receipt's MessageID is the answer's "sid"
// ("SM...").
//
// Classification of each attempt (the dispatcher retries):
//   - a 2xx answer with a sid is a success;
//   - a 2xx answer that is not JSON or has no sid may have been sent, so it
//     is permanent (never retried), with the HTTP status and the start of
//     the body in the detail;
//   - 429 (Twilio code 20429) and 5xx answers are transient, honouring
//     Retry-After (seconds or an HTTP date); so is code 20429 whatever the
//     status;
//   - any other answer, e.g. 400 with code 21211 (invalid To), 21614 (not a
//     mobile number), 21612 (cannot route), 21610 (recipient unsubscribed)
//     or 401 (bad credentials), is permanent;
//   - network errors and the attempt's ctx ending are transient.
//
// Twilio errors are {"code","message","more_info","status"}; the detail is
// "twilio 21211 (HTTP 400): <message>", or "twilio (HTTP 500): <start of
// body>" when the body is not such an error. The auth token is never put
// into errors; where Twilio's answer echoes it, it is replaced by "***",
// and the recipient's number, with or without "+", by MaskPhone(To). Twilio has no idempotency key for this call: an attempt
// that times out after Twilio accepted it is retried and may send twice.
//
// A Twilio is safe for concurrent use.
type Twilio struct {
	cfg      TwilioConfig
	client   *http.Client
	endpoint string
	redact   *Redactor
}

// NewTwilio validates cfg and returns a Twilio; an empty base_url becomes
// DefaultTwilioBaseURL. It sends with providerClient(client): nil means no
// timeout of its own, and redirects are never followed.
func NewTwilio(cfg TwilioConfig, client *http.Client) (*Twilio, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultTwilioBaseURL
	}
	client = providerClient(client)
	endpoint := strings.TrimRight(cfg.BaseURL, "/") + "/2010-04-01/Accounts/" + url.PathEscape(cfg.AccountSID) + "/Messages.json"
	return &Twilio{cfg: cfg, client: client, endpoint: endpoint,
		redact: NewRedactor(Secret{Value: cfg.AuthToken, User: cfg.AccountSID})}, nil
}

// Name returns "twilio".
func (t *Twilio) Name() string { return "twilio" }

// Account returns the account SID: Twilio's status callbacks name it
// (AccountSid) and are signed with its auth token.
func (t *Twilio) Account() string { return t.cfg.AccountSID }

// Send creates one Twilio message for m and returns its sid. See Twilio for
// how failures are classified.
func (t *Twilio) Send(ctx context.Context, m Message) (Receipt, error) {
	form := url.Values{}
	form.Set("To", m.To)
	if t.cfg.From != "" {
		form.Set("From", t.cfg.From)
	} else {
		form.Set("MessagingServiceSid", t.cfg.MessagingServiceSID)
	}
	form.Set("Body", m.Text)
	if t.cfg.StatusCallback != "" {
		form.Set("StatusCallback", t.cfg.StatusCallback)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return Receipt{}, Permanent("twilio: cannot build the request", nil)
	}
	req.SetBasicAuth(t.cfg.AccountSID, t.cfg.AuthToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	ans, err := doHTTP(t.client, req, "twilio")
	if err != nil {
		return Receipt{}, err
	}
	return t.classify(ans, m.To)
}

// twilioCodeRateLimited is Twilio's "Too Many Requests" error code.
const twilioCodeRateLimited = 20429

// classify turns Twilio's answer into a receipt or a classified error.
func (t *Twilio) classify(ans httpAnswer, to string) (Receipt, error) {
	if ans.success() {
		var ok struct {
			SID string `json:"sid"`
		}
		if json.Unmarshal(ans.body, &ok) != nil || ok.SID == "" {
			return Receipt{}, Permanent(fmt.Sprintf("twilio answer without a message sid (may have been sent): HTTP %d: %s",
				ans.status, redactFor(t.redact, schemas.ChannelSMS, ans.body, to)), nil)
		}
		return Receipt{MessageID: ok.SID}, nil
	}
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	var detail string
	if json.Unmarshal(ans.body, &e) == nil && (e.Code != 0 || e.Message != "") {
		code := ""
		if e.Code != 0 {
			code = fmt.Sprintf(" %d", e.Code)
		}
		detail = fmt.Sprintf("twilio%s (HTTP %d): %s", code, ans.status, redactFor(t.redact, schemas.ChannelSMS, []byte(e.Message), to))
	} else {
		e.Code = 0
		detail = fmt.Sprintf("twilio (HTTP %d): %s", ans.status, redactFor(t.redact, schemas.ChannelSMS, ans.body, to))
	}
	if ans.retryable() || e.Code == twilioCodeRateLimited {
		return Receipt{}, Transient(detail, ans.retryAfter, nil)
	}
	if httpAccountStatus(ans.status) || twilioAccountCodes[e.Code] {
		return Receipt{}, AccountFault(detail, nil)
	}
	return Receipt{}, Permanent(detail, nil)
}

// isASCIIAlnum reports whether s holds only ASCII letters and digits.
func isASCIIAlnum(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// twilioKind is the twilio kind: sms through Twilio's Messages API; its
// status callbacks are verified with the auth token of the AccountSid
// they name.
func twilioKind() Kind {
	return Kind{Name: "twilio", Channels: []schemas.Channel{schemas.ChannelSMS},
		Validate: func(p ProviderConfig) error { return p.Twilio.Validate() },
		New: func(p ProviderConfig, env Env) (Provider, error) {
			if p.Twilio.StatusCallback == "" && env.PublicURL != "" {
				p.Twilio.StatusCallback = strings.TrimSuffix(env.PublicURL, "/") + CallbackPrefix + "twilio"
			}
			return NewTwilio(p.Twilio, env.httpClient())
		},
		Receipts: func(blocks []ProviderConfig) ReceiptVerifier {
			tokens := map[string]string{}
			for _, p := range blocks {
				tokens[p.Twilio.AccountSID] = p.Twilio.AuthToken
			}
			if len(tokens) == 0 {
				return nil
			}
			return TwilioReceipts{AuthTokens: tokens}
		},
	}
}

// TwilioReceipts verifies Twilio status callbacks.
type TwilioReceipts struct {
	// AuthTokens are the auth tokens of the twilio providers, by account
	// SID (a receipt names its AccountSid; it is the account).
	AuthTokens map[string]string
}

// twilioStatuses maps Twilio's MessageStatus to a delivery status; the
// others (accepted, scheduled, queued, sending, receiving, received) come
// before the message leaves Twilio and are ignored.
var twilioStatuses = map[string]schemas.DeliveryStatus{
	"sent": schemas.DeliverySent, "delivered": schemas.DeliveryDelivered, "read": schemas.DeliveryRead,
	"undelivered": schemas.DeliveryUndelivered, "failed": schemas.DeliveryFailed, "canceled": schemas.DeliveryFailed,
	"partially_delivered": schemas.DeliveryDelivered,
}

// TwilioSignature is X-Twilio-Signature for a request to fullURL with
// form params: base64 of the HMAC-SHA1, keyed with the auth token, of the
// URL followed by every parameter, sorted by name (then value), name then
// value, no separators.
func TwilioSignature(authToken, fullURL string, params url.Values) string {
	type kv struct{ k, v string }
	var all []kv
	for k, vs := range params {
		for _, v := range vs {
			all = append(all, kv{k, v})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].k != all[j].k {
			return all[i].k < all[j].k
		}
		return all[i].v < all[j].v
	})
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(fullURL))
	for _, p := range all {
		mac.Write([]byte(p.k))
		mac.Write([]byte(p.v))
	}
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Verify verifies a Twilio status callback and reads its receipt.
func (v TwilioReceipts) Verify(r *http.Request, calledURL string, body []byte, received time.Time) ([]VerifiedReceipt, error) {
	sig := r.Header.Get("X-Twilio-Signature")
	if sig == "" {
		return nil, BadSignature{"no X-Twilio-Signature"}
	}
	params, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, BadSignature{"body is not a form"} // unsigned as far as we can tell
	}
	token, ok := v.AuthTokens[params.Get("AccountSid")]
	if !ok {
		return nil, BadSignature{"AccountSid is not a configured twilio account"}
	}
	want := TwilioSignature(token, calledURL, params)
	if subtle.ConstantTimeCompare([]byte(sig), []byte(want)) != 1 {
		return nil, BadSignature{"X-Twilio-Signature does not match"}
	}
	id := params.Get("MessageSid")
	if id == "" {
		id = params.Get("SmsSid")
	}
	if id == "" {
		return nil, errors.New("no MessageSid")
	}
	providerStatus := params.Get("MessageStatus")
	if providerStatus == "" {
		providerStatus = params.Get("SmsStatus")
	}
	to := params.Get("To")
	ch := schemas.ChannelSMS
	if rest, ok := strings.CutPrefix(to, "whatsapp:"); ok {
		ch, to = schemas.ChannelWhatsApp, rest
	}
	ev := schemas.DeliveryEvent{Provider: "twilio", Channel: ch, ProviderMessageID: id, Status: twilioStatuses[providerStatus],
		ProviderStatus: providerStatus, ErrorCode: params.Get("ErrorCode"), ErrorDetail: params.Get("ErrorMessage"),
		OccurredAt: received, ReceivedAt: received}
	return []VerifiedReceipt{{Event: ev, Recipient: to, Accounts: []string{params.Get("AccountSid")}}}, nil
}
