package dispatch

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// Defaults for MetaConfig.
const (
	DefaultMetaBaseURL    = "https://graph.facebook.com"
	DefaultMetaAPIVersion = "v21.0"
)

// MetaConfig configures a Meta provider (providers.whatsapp.meta).
type MetaConfig struct {
	// BaseURL is the Graph API's root; default DefaultMetaBaseURL. Tests
	// point it at a local server; a path prefix (a proxy) is kept.
	BaseURL string `yaml:"base_url"`
	// APIVersion is the Graph API version, "v" major "." minor; default
	// DefaultMetaAPIVersion.
	APIVersion string `yaml:"api_version"`
	// PhoneNumberID is the numeric id of the business phone number that
	// sends (not the phone number itself). Required.
	PhoneNumberID string `yaml:"phone_number_id"`
	// AccessToken is a system user access token with the
	// whatsapp_business_messaging permission, sent as a Bearer token.
	// Required. It is a secret: it never appears in errors, details or logs.
	AccessToken string `yaml:"access_token" secret:""`
	// AppSecret is the Meta app's secret: delivery receipts posted to
	// /callbacks/meta must be signed with it (X-Hub-Signature-256).
	// Optional; unset, no receipt is accepted. A secret.
	AppSecret string `yaml:"app_secret" secret:""`
	// VerifyToken is what Meta's subscription handshake must present
	// (hub.verify_token) on GET /callbacks/meta. Optional. A secret.
	VerifyToken string `yaml:"verify_token" secret:""`
}

var metaAPIVersion = regexp.MustCompile(`^v[0-9]+\.[0-9]+$`)

// Validate names the first bad field by its configuration key, e.g.
// "phone_number_id: required". base_url and api_version may be empty (the
// defaults apply).
func (c MetaConfig) Validate() error {
	switch {
	case c.BaseURL != "" && !isHTTPURL(c.BaseURL):
		return errors.New("base_url: must be an http or https URL")
	case c.APIVersion != "" && !metaAPIVersion.MatchString(c.APIVersion):
		return errors.New(`api_version: must look like "v21.0"`)
	case c.PhoneNumberID == "":
		return errors.New("phone_number_id: required")
	case strings.Trim(c.PhoneNumberID, "0123456789") != "":
		return errors.New("phone_number_id: must be the numeric id of the business phone number, not the number")
	case c.AccessToken == "":
		return errors.New("access_token: required")
	}
	return nil
}

// Meta is a Provider that sends whatsapp template messages through Meta's
// WhatsApp Cloud API, one request per message:
//
//	POST {base_url}/{api_version}/{phone_number_id}/messages
//
// with a JSON MetaRequest built from Message.WhatsApp (its parameters pass
// unchanged, as one "body" component, omitted when there are none) and the
// access token as a Bearer token. The receipt's MessageID is the answer's
// messages[0].id ("wamid...").
//
// The recipient ("to") is Message.To unchanged, i.e. E.164 with its leading
// "+". The Cloud API accepts numbers with or without "+", but Meta's
// documentation recommends the "+" and country calling code: a number
// without "+" may be read as national to the business number's country.
//
// Classification of each attempt (the dispatcher retries):
//   - a 2xx answer with messages[0].id is a success;
//   - a 2xx answer that is not JSON or has no message id may have been
//     sent, so it is permanent (never retried), with the HTTP status and the
//     start of the body in the detail;
//   - an error answer {"error":{"code",...}} with a listed code is decided
//     by the code whatever the HTTP status: 130429 (throughput limit),
//     131056 (pair rate limit), 131000 (something went wrong) and 2
//     (service unavailable) are transient; 131026 (undeliverable), 131047
//     (re-engagement window), 131008 (required parameter missing), 132000
//     (template parameter count), 132001 (template does not exist), 100
//     (invalid parameter), 190 (access token expired or invalid) and 368
//     (blocked for policy violations) are permanent;
//   - any other answer (an unlisted code, or a body that is not a Graph
//     error) is decided by the HTTP status: 429 and 5xx transient, anything
//     else permanent;
//   - transient answers honour Retry-After (seconds or an HTTP date);
//   - network errors and the attempt's ctx ending are transient.
//
// The detail is "meta 131026 (HTTP 400): <message>: <error_data.details>",
// or "meta (HTTP 500): <start of body>" when the body is not a Graph error.
// The access token is never put into errors; where Meta's answer echoes it,
// it is replaced by "***", and the recipient's number, where Meta echoes it
// with or without "+", by MaskPhone(To).
//
// A Meta is safe for concurrent use.
type Meta struct {
	cfg      MetaConfig
	client   *http.Client
	endpoint string
	redact   *Redactor
}

// MetaRequest is the JSON body of a Cloud API template message.
type MetaRequest struct {
	MessagingProduct string       `json:"messaging_product"` // always "whatsapp"
	To               string       `json:"to"`
	Type             string       `json:"type"` // always "template"
	Template         MetaTemplate `json:"template"`
}

// MetaTemplate is a template message's template object.
type MetaTemplate struct {
	Name     string       `json:"name"`
	Language MetaLanguage `json:"language"`
	// Components holds one "body" component with the parameters; it is
	// omitted when the template has none.
	Components []MetaComponent `json:"components,omitempty"`
}

// MetaLanguage is a template message's language, e.g. {"code": "en_US"}.
type MetaLanguage struct {
	Code string `json:"code"`
}

// MetaComponent is one component of a template message.
type MetaComponent struct {
	Type       string          `json:"type"`
	Parameters []MetaParameter `json:"parameters"`
}

// MetaParameter is one text parameter of a template component.
type MetaParameter struct {
	Type string `json:"type"` // always "text"
	Text string `json:"text"`
}

// NewMeta validates cfg and returns a Meta; empty base_url and api_version
// take the defaults. It sends with providerClient(client): nil means no
// timeout of its own, and redirects are never followed.
func NewMeta(cfg MetaConfig, client *http.Client) (*Meta, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultMetaBaseURL
	}
	if cfg.APIVersion == "" {
		cfg.APIVersion = DefaultMetaAPIVersion
	}
	client = providerClient(client)
	endpoint := strings.TrimRight(cfg.BaseURL, "/") + "/" + cfg.APIVersion + "/" + url.PathEscape(cfg.PhoneNumberID) + "/messages"
	return &Meta{cfg: cfg, client: client, endpoint: endpoint, redact: NewRedactor(Secret{Value: cfg.AccessToken})}, nil
}

// Name returns "meta".
func (p *Meta) Name() string { return "meta" }

// Account returns the phone number id that sends: Meta's status
// notifications name it (metadata.phone_number_id) and are signed with the
// secret of the app it belongs to.
func (p *Meta) Account() string { return p.cfg.PhoneNumberID }

// Send sends m.WhatsApp as a template message to m.To and returns the
// message id. A message without a WhatsApp template is a permanent error.
// See Meta for how failures are classified.
func (p *Meta) Send(ctx context.Context, m Message) (Receipt, error) {
	wa := m.WhatsApp
	if wa == nil || wa.Name == "" || wa.Language == "" {
		return Receipt{}, Permanent("meta: the message has no whatsapp template name and language", nil)
	}
	body := MetaRequest{MessagingProduct: "whatsapp", To: m.To, Type: "template"}
	body.Template.Name = wa.Name
	body.Template.Language.Code = wa.Language
	if len(wa.Params) > 0 {
		c := MetaComponent{Type: "body", Parameters: make([]MetaParameter, len(wa.Params))}
		for i, s := range wa.Params {
			c.Parameters[i] = MetaParameter{Type: "text", Text: s}
		}
		body.Template.Components = []MetaComponent{c}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return Receipt{}, Permanent("meta: cannot encode the request", nil)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.endpoint, bytes.NewReader(raw))
	if err != nil {
		return Receipt{}, Permanent("meta: cannot build the request", nil)
	}
	req.Header.Set("Authorization", "Bearer "+p.cfg.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	ans, err := doHTTP(p.client, req, "meta")
	if err != nil {
		return Receipt{}, err
	}
	return p.classify(ans, m.To)
}

// metaCodePermanent maps the Cloud API error codes that decide the
// classification on their own to whether they are permanent.
var metaCodePermanent = map[int]bool{
	130429: false, // rate limit hit (throughput)
	131056: false, // (business, consumer) pair rate limit hit
	131000: false, // something went wrong
	2:      false, // API service: temporary downtime or overload
	131026: true,  // message undeliverable
	131047: true,  // re-engagement message: outside the 24-hour window
	131008: true,  // required parameter is missing
	132000: true,  // template parameter count mismatch
	132001: true,  // template does not exist
	100:    true,  // invalid parameter
	190:    true,  // access token expired or invalid
	368:    true,  // temporarily blocked for policy violations
}

// classify turns Meta's answer into a receipt or a classified error.
func (p *Meta) classify(ans httpAnswer, to string) (Receipt, error) {
	redact := func(b []byte) string { return redactFor(p.redact, schemas.ChannelWhatsApp, b, to) }
	if ans.success() {
		var ok struct {
			Messages []struct {
				ID string `json:"id"`
			} `json:"messages"`
		}
		if json.Unmarshal(ans.body, &ok) != nil || len(ok.Messages) == 0 || ok.Messages[0].ID == "" {
			return Receipt{}, Permanent(fmt.Sprintf("meta answer without a message id (may have been sent): HTTP %d: %s",
				ans.status, redact(ans.body)), nil)
		}
		return Receipt{MessageID: ok.Messages[0].ID}, nil
	}
	var e struct {
		Error *struct {
			Message   string          `json:"message"`
			Code      int             `json:"code"`
			ErrorData json.RawMessage `json:"error_data"`
		} `json:"error"`
	}
	var detail string
	var code int
	coded := false
	if json.Unmarshal(ans.body, &e) == nil && e.Error != nil && (e.Error.Code != 0 || e.Error.Message != "") {
		code, coded = e.Error.Code, true
		// error_data is an object with details in the Cloud API, but other
		// Graph errors may carry a string or nothing.
		var data struct {
			Details string `json:"details"`
		}
		_ = json.Unmarshal(e.Error.ErrorData, &data)
		text := redact([]byte(e.Error.Message))
		if d := redact([]byte(data.Details)); d != "" && d != text {
			if text != "" {
				text += ": "
			}
			text += d
		}
		c := ""
		if code != 0 {
			c = fmt.Sprintf(" %d", code)
		}
		detail = fmt.Sprintf("meta%s (HTTP %d): %s", c, ans.status, text)
	} else {
		detail = fmt.Sprintf("meta (HTTP %d): %s", ans.status, redact(ans.body))
	}
	permanent, listed := metaCodePermanent[code]
	if !listed {
		permanent = !ans.retryable()
	}
	switch {
	case permanent && (httpAccountStatus(ans.status) || coded && metaAccountCodes[code]):
		return Receipt{}, AccountFault(detail, nil)
	case permanent:
		return Receipt{}, Permanent(detail, nil)
	}
	return Receipt{}, Transient(detail, ans.retryAfter, nil)
}

// metaKind is the meta kind: whatsapp through the WhatsApp Cloud API; its
// webhook notifications are verified with the app secret of the phone
// numbers they name.
func metaKind() Kind {
	return Kind{Name: "meta", Channels: []schemas.Channel{schemas.ChannelWhatsApp}, Handshakes: true,
		Validate: func(p ProviderConfig) error { return p.Meta.Validate() },
		New:      func(p ProviderConfig, env Env) (Provider, error) { return NewMeta(p.Meta, env.httpClient()) },
		Receipts: func(blocks []ProviderConfig) ReceiptVerifier {
			var v MetaReceipts
			for _, p := range blocks {
				if p.Meta.VerifyToken != "" {
					v.VerifyToken = p.Meta.VerifyToken
				}
				if p.Meta.AppSecret == "" {
					continue
				}
				i := slices.IndexFunc(v.Apps, func(a MetaApp) bool { return a.AppSecret == p.Meta.AppSecret })
				if i < 0 {
					v.Apps = append(v.Apps, MetaApp{AppSecret: p.Meta.AppSecret})
					i = len(v.Apps) - 1
				}
				v.Apps[i].PhoneNumberIDs = append(v.Apps[i].PhoneNumberIDs, p.Meta.PhoneNumberID)
			}
			if len(v.Apps) == 0 && v.VerifyToken == "" {
				return nil
			}
			return v
		},
	}
}

// MetaReceipts verifies Cloud API webhook notifications and answers the
// subscription handshake.
type MetaReceipts struct {
	// Apps are the apps of the meta providers: a notification signed with
	// an app's secret applies to the messages of that app's phone numbers.
	Apps []MetaApp
	// VerifyToken answers Meta's subscription handshake
	// (providers.whatsapp.meta.verify_token).
	VerifyToken string
}

// MetaApp is a Meta app of the meta providers: its secret
// (providers.whatsapp.meta.app_secret) and the phone number ids of the
// providers configured with it.
type MetaApp struct {
	AppSecret      string
	PhoneNumberIDs []string
}

// metaStatuses maps a Cloud API status to a delivery status; others
// (deleted, warning) are ignored.
var metaStatuses = map[string]schemas.DeliveryStatus{
	"sent": schemas.DeliverySent, "delivered": schemas.DeliveryDelivered, "read": schemas.DeliveryRead,
	"failed": schemas.DeliveryFailed,
}

// MetaSignature is X-Hub-Signature-256 for body: "sha256=" and the hex
// HMAC-SHA256 of the raw body keyed with the app secret.
func MetaSignature(appSecret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(appSecret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Handshake answers Meta's subscription check: hub.mode=subscribe with
// the configured hub.verify_token is answered with hub.challenge.
func (v MetaReceipts) Handshake(q url.Values) (string, bool) {
	if v.VerifyToken == "" || q.Get("hub.mode") != "subscribe" ||
		subtle.ConstantTimeCompare([]byte(q.Get("hub.verify_token")), []byte(v.VerifyToken)) != 1 {
		return "", false
	}
	return q.Get("hub.challenge"), true
}

// metaNotification is the part of a Cloud API webhook notification that
// carries message statuses.
type metaNotification struct {
	Entry []struct {
		Changes []struct {
			Value struct {
				Metadata struct {
					PhoneNumberID string `json:"phone_number_id"`
				} `json:"metadata"`
				Statuses []struct {
					ID          string `json:"id"`
					Status      string `json:"status"`
					Timestamp   string `json:"timestamp"`
					RecipientID string `json:"recipient_id"`
					Errors      []struct {
						Code      int    `json:"code"`
						Title     string `json:"title"`
						Message   string `json:"message"`
						ErrorData struct {
							Details string `json:"details"`
						} `json:"error_data"`
					} `json:"errors"`
				} `json:"statuses"`
			} `json:"value"`
		} `json:"changes"`
	} `json:"entry"`
}

// Verify verifies a Cloud API notification, signed over its raw
// bytes with the secret of any of apps, and reads its statuses (messages
// and other fields of the notification are not receipts: none). A status
// is for the phone number its change's metadata names, which must be one
// of the signing app's (else it has no accounts: a foreign message); a
// change without metadata may be for any of them.
func (v MetaReceipts) Verify(r *http.Request, _ string, body []byte, received time.Time) ([]VerifiedReceipt, error) {
	apps, sig := v.Apps, r.Header.Get("X-Hub-Signature-256")
	if sig == "" {
		return nil, BadSignature{"no X-Hub-Signature-256"}
	}
	var phones []string
	ok := false
	for _, app := range apps {
		if hmac.Equal([]byte(sig), []byte(MetaSignature(app.AppSecret, body))) {
			ok = true
			phones = append(phones, app.PhoneNumberIDs...)
		}
	}
	if !ok {
		return nil, BadSignature{"X-Hub-Signature-256 does not match"}
	}
	var n metaNotification
	if err := json.Unmarshal(body, &n); err != nil {
		return nil, errors.New("body is not a notification")
	}
	var out []VerifiedReceipt
	for _, e := range n.Entry {
		for _, c := range e.Changes {
			accounts := phones
			if id := c.Value.Metadata.PhoneNumberID; id != "" {
				accounts = nil
				if slices.Contains(phones, id) {
					accounts = []string{id}
				}
			}
			for _, st := range c.Value.Statuses {
				if st.ID == "" {
					return nil, errors.New("a status without id")
				}
				at := received
				if sec, err := strconv.ParseInt(st.Timestamp, 10, 64); err == nil && sec > 0 {
					at = time.Unix(sec, 0).UTC()
				}
				ev := schemas.DeliveryEvent{Provider: "meta", Channel: schemas.ChannelWhatsApp, ProviderMessageID: st.ID,
					Status: metaStatuses[st.Status], ProviderStatus: st.Status, OccurredAt: at, ReceivedAt: received}
				if len(st.Errors) > 0 {
					e := st.Errors[0]
					ev.ErrorCode = strconv.Itoa(e.Code)
					ev.ErrorDetail = strings.TrimSpace(strings.Join(nonEmpty(e.Title, e.Message, e.ErrorData.Details), ": "))
				}
				recipient := ""
				if st.RecipientID != "" {
					recipient = "+" + st.RecipientID
				}
				out = append(out, VerifiedReceipt{Event: ev, Recipient: recipient, Accounts: accounts})
			}
		}
	}
	return out, nil
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" && (len(out) == 0 || out[len(out)-1] != s) {
			out = append(out, s)
		}
	}
	return out
}
