package dispatch

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/notifyd/notifyd/schemas"
	"golang.org/x/net/http/httpguts"
)

// WebhookConfig configures a Webhook provider (providers.<channel>.webhook).
type WebhookConfig struct {
	// URL receives one POST per message. Required; http or https.
	URL string `yaml:"url"`
	// Headers are added to every request, e.g. an Authorization header
	// written as ${TOKEN} in the configuration. Their values are secrets:
	// they never appear in logs, errors or results.
	Headers map[string]string `yaml:"headers" secret:"values"`
	// ReceiptSecret signs the delivery receipts the peer posts to
	// /callbacks/webhook (X-Notifyd-Signature, see the README). Optional;
	// unset, no receipt of this provider is accepted. A secret.
	ReceiptSecret string `yaml:"receipt_secret" secret:""`
}

// Account is the account of a webhook provider: the host (and port) of its
// URL, lowercase. Its receipts are verified with its receipt_secret alone,
// so a receipt applies to the messages of every webhook provider with that
// secret and host; the host, unlike the URL's path or query, holds no
// credential.
func (c WebhookConfig) Account() string {
	u, err := url.Parse(c.URL)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Host)
}

// Validate names the first bad field.
func (c WebhookConfig) Validate() error {
	u, err := url.Parse(c.URL)
	if c.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("url: must be an http or https URL")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		// Checked here, not at the first send: a line break arriving from
		// the environment would make every request invalid, which looks
		// like an unreachable peer and is retried. The error names the
		// header, never its value.
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("headers: %q is not a valid header name", name)
		}
		if !httpguts.ValidHeaderFieldValue(c.Headers[name]) {
			return fmt.Errorf("headers.%s: the value holds a character a header cannot carry (a line break or another control character)", name)
		}
	}
	return nil
}

// Webhook is a Provider that POSTs each message as JSON to a URL: for a
// merchant's own gateway, and for tests that record what notifyd sends
// outside its process.
//
// The request body is WebhookRequest; the header Idempotency-Key is
// "<command_id>:<channel>". A 2xx answer must carry {"id": "..."}, the
// provider_message_id. 429 and 5xx answers and network errors are
// transient (Retry-After in seconds is honoured); other 4xx answers are
// permanent. A 2xx without an id may have been sent, so it is not retried:
// it is reported as a permanent failure. Details carry the HTTP status and
// the start of the body, never the request's headers.
type Webhook struct {
	cfg    WebhookConfig
	client *http.Client
	redact *Redactor
}

// WebhookRequest is the JSON body a Webhook posts.
type WebhookRequest struct {
	Channel   string            `json:"channel"`
	To        string            `json:"to"`
	CommandID string            `json:"command_id"`
	Subject   string            `json:"subject,omitempty"`
	Text      string            `json:"text,omitempty"`
	HTML      string            `json:"html,omitempty"`
	WhatsApp  *WhatsAppTemplate `json:"whatsapp,omitempty"`
}

// NewWebhook returns a Webhook. It sends with providerClient(client): nil
// means no timeout of its own, and redirects are never followed.
func NewWebhook(cfg WebhookConfig, client *http.Client) (*Webhook, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client = providerClient(client)
	return &Webhook{cfg: cfg, client: client, redact: NewRedactor(HeaderSecrets(cfg.Headers)...)}, nil
}

// Name returns "webhook".
func (w *Webhook) Name() string { return "webhook" }

// Account returns the host the webhook posts to (WebhookConfig.Account).
func (w *Webhook) Account() string { return w.cfg.Account() }

// Send posts m and reads the provider's message id from the answer.
func (w *Webhook) Send(ctx context.Context, m Message) (Receipt, error) {
	body, err := json.Marshal(WebhookRequest{
		Channel: string(m.Channel), To: m.To, CommandID: m.CommandID,
		Subject: m.Subject, Text: m.Text, HTML: m.HTML, WhatsApp: m.WhatsApp,
	})
	if err != nil {
		return Receipt{}, Permanent("cannot encode the request", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return Receipt{}, Permanent("cannot build the request", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", m.CommandID+":"+string(m.Channel))
	for k, v := range w.cfg.Headers {
		req.Header.Set(k, v)
	}
	ans, err := doHTTP(w.client, req, "webhook")
	if err != nil {
		return Receipt{}, err
	}
	detail := fmt.Sprintf("HTTP %d: %s", ans.status, redactFor(w.redact, m.Channel, ans.body, m.To))
	switch {
	case ans.success():
		var ok struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(ans.body, &ok) != nil || ok.ID == "" {
			return Receipt{}, Permanent("answer without a message id (may have been sent): "+detail, nil)
		}
		return Receipt{MessageID: ok.ID}, nil
	case ans.retryable():
		return Receipt{}, Transient(detail, ans.retryAfter, nil)
	case httpAccountStatus(ans.status):
		return Receipt{}, AccountFault(detail, nil)
	default:
		return Receipt{}, Permanent(detail, nil)
	}
}

// HeaderSecrets are the secrets among configured headers: the values of
// the headers that carry credentials (Authorization, Proxy-Authorization,
// Cookie, and any whose name holds key, token, secret, auth, signature,
// password or session), and each long word of them (the token of "Bearer
// <token>"). Other headers (X-Version: 2) are no secrets.
func HeaderSecrets(headers map[string]string) []Secret {
	var out []Secret
	for name, v := range headers {
		if !credentialHeader(name) {
			continue
		}
		out = append(out, Secret{Value: v})
		for _, f := range strings.Fields(v) {
			if len(f) >= 8 && f != v {
				out = append(out, Secret{Value: f})
			}
		}
	}
	return out
}

// credentialHeader reports whether a header of that name carries a
// credential.
func credentialHeader(name string) bool {
	n := strings.ToLower(name)
	if n == "cookie" {
		return true
	}
	for _, w := range []string{"auth", "key", "token", "secret", "signature", "password", "session"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// webhookKind is the webhook kind: any channel, one POST per message; its
// receipts are verified with the receipt_secret of the providers that
// have one.
func webhookKind() Kind {
	return Kind{Name: "webhook", Channels: schemas.Channels,
		Validate: func(p ProviderConfig) error { return p.Webhook.Validate() },
		New:      func(p ProviderConfig, env Env) (Provider, error) { return NewWebhook(p.Webhook, env.httpClient()) },
		Receipts: func(blocks []ProviderConfig) ReceiptVerifier {
			var v WebhookReceipts
			for _, p := range blocks {
				if p.Webhook.ReceiptSecret == "" {
					continue
				}
				i := slices.IndexFunc(v.Secrets, func(w WebhookSecret) bool { return w.Secret == p.Webhook.ReceiptSecret })
				if i < 0 {
					v.Secrets = append(v.Secrets, WebhookSecret{Secret: p.Webhook.ReceiptSecret})
					i = len(v.Secrets) - 1
				}
				v.Secrets[i].Accounts = append(v.Secrets[i].Accounts, p.Webhook.Account())
			}
			if len(v.Secrets) == 0 {
				return nil
			}
			return v
		},
	}
}

// WebhookReceipts verifies webhook receipts.
type WebhookReceipts struct {
	Secrets []WebhookSecret
}

// WebhookSecret is a receipt_secret of webhook providers and their
// accounts (WebhookConfig.Account).
type WebhookSecret struct {
	Secret   string
	Accounts []string
}

// Webhook receipts' signature.
const (
	// WebhookSignatureHeader carries a webhook receipt's signature:
	// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the
	// receipt_secret>".
	WebhookSignatureHeader = "X-Notifyd-Signature"
	// WebhookSignatureTolerance is how far a webhook receipt's t may be
	// from now: an older signature is a replay.
	WebhookSignatureTolerance = 5 * time.Minute
)

// WebhookSignature is the X-Notifyd-Signature of a webhook receipt body
// signed at t.
func WebhookSignature(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// webhookReceipt is the body of a webhook receipt.
type webhookReceipt struct {
	ID             string                 `json:"id"`
	Status         schemas.DeliveryStatus `json:"status"`
	ProviderStatus string                 `json:"provider_status"`
	ErrorCode      string                 `json:"error_code"`
	ErrorDetail    string                 `json:"error_detail"`
	Timestamp      *time.Time             `json:"timestamp"`
	Channel        schemas.Channel        `json:"channel"`
	To             string                 `json:"to"`
}

// Verify verifies a webhook receipt: its signature with any of
// the hooks' secrets, made within WebhookSignatureTolerance of received.
// It is for the accounts of the secrets that verify it.
func (v WebhookReceipts) Verify(r *http.Request, _ string, body []byte, received time.Time) ([]VerifiedReceipt, error) {
	hooks, header := v.Secrets, r.Header.Get(WebhookSignatureHeader)
	var ts, v1 string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || v1 == "" {
		return nil, BadSignature{"no " + WebhookSignatureHeader + " of the form t=<unix seconds>,v1=<hex>"}
	}
	signed := time.Unix(sec, 0)
	if d := received.Sub(signed); d > WebhookSignatureTolerance || d < -WebhookSignatureTolerance {
		return nil, BadSignature{fmt.Sprintf("%s is %s away from now (more than %s: a replay?)", WebhookSignatureHeader, d.Round(time.Second), WebhookSignatureTolerance)}
	}
	ok := false
	var accounts []string
	for _, hook := range hooks {
		want := WebhookSignature(hook.Secret, signed, body)
		if hmac.Equal([]byte("t="+ts+",v1="+v1), []byte(want)) {
			ok = true
			accounts = append(accounts, hook.Accounts...)
		}
	}
	if !ok {
		return nil, BadSignature{WebhookSignatureHeader + " does not match"}
	}
	var w webhookReceipt
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, errors.New("body is not a receipt")
	}
	if w.ID == "" || !w.Status.Valid() {
		return nil, fmt.Errorf("id is required and status must be one of sent, delivered, read, undelivered, failed")
	}
	if w.Channel != "" && !w.Channel.Valid() {
		return nil, fmt.Errorf("channel: %q is not email, sms or whatsapp", w.Channel)
	}
	if w.ProviderStatus == "" {
		w.ProviderStatus = string(w.Status)
	}
	at := received
	if w.Timestamp != nil {
		at = w.Timestamp.UTC()
	}
	ev := schemas.DeliveryEvent{Provider: "webhook", Channel: w.Channel, ProviderMessageID: w.ID, Status: w.Status,
		ProviderStatus: w.ProviderStatus, ErrorCode: w.ErrorCode, ErrorDetail: w.ErrorDetail, OccurredAt: at, ReceivedAt: received}
	return []VerifiedReceipt{{Event: ev, Recipient: w.To, Accounts: accounts}}, nil
}
