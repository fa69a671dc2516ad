package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/schemas"
)

// Receipts takes providers' verified receipts: the callbacks' only way
// into Kafka.
type Receipts interface {
	// RecordReceipt turns a receipt into a delivery event and returns once
	// it is published (acknowledged by the brokers) or known to change
	// nothing; an error means the provider should be answered so that it
	// tries again. ev holds what the provider said (provider,
	// provider_message_id, status, provider_status, error_code,
	// error_detail, occurred_at, received_at, and the channel the provider
	// implies); recipient, when the provider gave it, is masked in the
	// detail; accounts are the accounts of ev.Provider's kind the receipt
	// was verified for (see dispatch.Accounter): a message another account
	// sent is left as it is, with dispatch.ErrForeignReceipt.
	RecordReceipt(ctx context.Context, ev schemas.DeliveryEvent, recipient string, accounts []string) error
}

// CallbackSecrets are what receipts are verified with; cmd fills them from
// the providers' configuration. An endpoint without its secret answers 404.
type CallbackSecrets struct {
	// TwilioAuthTokens are the auth tokens of the twilio providers, by
	// account SID (a receipt names its AccountSid; it is the account).
	TwilioAuthTokens map[string]string
	// MetaApps are the apps of the meta providers: a receipt signed with
	// an app's secret applies to the messages of that app's phone numbers.
	MetaApps []MetaApp
	// MetaVerifyToken answers Meta's subscription handshake
	// (providers.whatsapp.meta.verify_token).
	MetaVerifyToken string
	// Webhooks are the receipt secrets of the webhook providers, each with
	// the accounts of the providers that have it.
	Webhooks []WebhookReceipts
}

// MetaApp is a Meta app of the meta providers: its secret
// (providers.whatsapp.meta.app_secret) and the phone number ids of the
// providers configured with it.
type MetaApp struct {
	AppSecret      string
	PhoneNumberIDs []string
}

// WebhookReceipts is a receipt_secret of webhook providers and their
// accounts (dispatch.WebhookConfig.Account).
type WebhookReceipts struct {
	Secret   string
	Accounts []string
}

// Paths of the receipt callbacks.
const (
	PathCallbackTwilio  = "/callbacks/twilio"
	PathCallbackMeta    = "/callbacks/meta"
	PathCallbackWebhook = "/callbacks/webhook"
)

// Callback limits.
const (
	// WebhookSignatureHeader carries a webhook receipt's signature:
	// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the
	// receipt_secret>".
	WebhookSignatureHeader = "X-Notifyd-Signature"
	// WebhookSignatureTolerance is how far a webhook receipt's t may be
	// from now: an older signature is a replay.
	WebhookSignatureTolerance = 5 * time.Minute
)

// Results of a callback (notifyd_callbacks_total{provider,result}).
const (
	callbackAccepted     = "accepted"      // verified, recorded (published or nothing to change)
	callbackIgnored      = "ignored"       // verified, a status notifyd does not track (queued, ...)
	callbackBadSignature = "bad_signature" // 401: missing or wrong signature, nothing published
	callbackInvalid      = "invalid"       // 400: verified but not a receipt
	callbackFailed       = "failed"        // 503: could not be recorded; the provider tries again
	// callbackForeign: verified, about a message another provider account
	// sent (200, nothing changed).
	callbackForeign = "foreign_message"
)

// callbackResults are the results of callbacks, as counted.
var callbackResults = []string{callbackAccepted, callbackIgnored, callbackForeign, callbackBadSignature, callbackInvalid, callbackFailed}

// twilioStatuses maps Twilio's MessageStatus to a delivery status; the
// others (accepted, scheduled, queued, sending, receiving, received) come
// before the message leaves Twilio and are ignored.
var twilioStatuses = map[string]schemas.DeliveryStatus{
	"sent": schemas.DeliverySent, "delivered": schemas.DeliveryDelivered, "read": schemas.DeliveryRead,
	"undelivered": schemas.DeliveryUndelivered, "failed": schemas.DeliveryFailed, "canceled": schemas.DeliveryFailed,
	"partially_delivered": schemas.DeliveryDelivered,
}

// metaStatuses maps a Cloud API status to a delivery status; others
// (deleted, warning) are ignored.
var metaStatuses = map[string]schemas.DeliveryStatus{
	"sent": schemas.DeliverySent, "delivered": schemas.DeliveryDelivered, "read": schemas.DeliveryRead,
	"failed": schemas.DeliveryFailed,
}

// verifier verifies a provider's receipt request (its headers and raw
// body) and reads its receipts; a badSignature error is answered 401,
// another 400.
type verifier func(r *http.Request, body []byte, received time.Time) ([]receipt, error)

// callbackRoutes adds the receipt callbacks of the providers configured
// with their secret; an endpoint without its secret is not routed (404).
func (s *Server) callbackRoutes(mux *http.ServeMux) {
	sec := s.deps.Callbacks
	if len(sec.TwilioAuthTokens) > 0 {
		s.callbackRoute(mux, PathCallbackTwilio, "twilio", s.twilioReceipts)
	}
	if len(sec.MetaApps) > 0 || sec.MetaVerifyToken != "" {
		mux.HandleFunc("GET "+PathCallbackMeta, func(w http.ResponseWriter, r *http.Request) {
			s.metaHandshake(r, s.callbackReply(w, r, "meta"))
		})
		s.callbackRoute(mux, PathCallbackMeta, "meta", func(r *http.Request, body []byte, received time.Time) ([]receipt, error) {
			return metaReceipts(sec.MetaApps, r.Header.Get("X-Hub-Signature-256"), body, received)
		})
	}
	if len(sec.Webhooks) > 0 {
		s.callbackRoute(mux, PathCallbackWebhook, "webhook", func(r *http.Request, body []byte, received time.Time) ([]receipt, error) {
			return webhookReceipts(sec.Webhooks, r.Header.Get(WebhookSignatureHeader), body, received)
		})
	}
}

// callbackRoute routes a provider's receipts (POST) to receive; another
// method is answered 405.
func (s *Server) callbackRoute(mux *http.ServeMux, path, provider string, verify verifier) {
	mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
		s.receive(w, r, provider, verify)
	})
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "POST")
		s.callbackReply(w, r, provider)(http.StatusMethodNotAllowed, callbackInvalid, "method not allowed")
	})
}

// replyFunc answers a callback: its status, its result (counted in
// notifyd_callbacks_total and noted on the access line) and a plain-text
// message (none: an empty body).
type replyFunc func(code int, result, msg string)

func (s *Server) callbackReply(w http.ResponseWriter, r *http.Request, provider string) replyFunc {
	return func(code int, result, msg string) {
		s.m.callback(provider, result)
		note(r, "provider", provider, "result", result)
		w.Header().Set("Cache-Control", "no-store")
		if msg == "" {
			w.WriteHeader(code)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, msg+"\n")
	}
}

// receive answers a provider's receipts. Verification comes first:
// nothing of an unverified request is parsed beyond what the signature
// covers, or published.
func (s *Server) receive(w http.ResponseWriter, r *http.Request, provider string, verify verifier) {
	reply := s.callbackReply(w, r, provider)
	body, err := readBody(w, r, maxCallbackBody)
	switch {
	case errors.Is(err, errBodyTooLarge):
		reply(http.StatusRequestEntityTooLarge, callbackInvalid, "body too large")
		return
	case err != nil:
		reply(http.StatusBadRequest, callbackInvalid, "could not read the body")
		return
	}
	receipts, err := verify(r, body, time.Now().UTC())
	var bad badSignature
	switch {
	case errors.As(err, &bad):
		s.log.Warn("callback refused: "+bad.Error(), "provider", provider)
		reply(http.StatusUnauthorized, callbackBadSignature, "invalid signature")
		return
	case err != nil:
		reply(http.StatusBadRequest, callbackInvalid, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Wait)
	defer cancel()
	switch recorded, foreign, failed := s.record(ctx, provider, receipts); {
	case failed:
		reply(http.StatusServiceUnavailable, callbackFailed, "not recorded, try again")
	case recorded:
		reply(http.StatusOK, callbackAccepted, "")
	case foreign:
		s.log.Warn("callback: receipts about messages another provider account sent, ignored", "provider", provider)
		reply(http.StatusOK, callbackForeign, "")
	default: // every status one notifyd does not track
		reply(http.StatusOK, callbackIgnored, "")
	}
}

// record records the receipts of one request before it is answered: the
// provider is answered 200 only for what is published. They are recorded
// at once (Meta batches them), so that several waiting for their results
// cost one wait, not one each. recorded: one was published or changed
// nothing; foreign: one names a message of another account; failed: one
// could not be recorded (the provider sends the request again).
func (s *Server) record(ctx context.Context, provider string, receipts []receipt) (recorded, foreign, failed bool) {
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		panicked any
	)
	for _, rc := range receipts {
		if !rc.ev.Status.Valid() {
			continue
		}
		if len(rc.accounts) == 0 {
			mu.Lock()
			foreign = true // verified, but for none of the accounts it names
			mu.Unlock()
			continue
		}
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil { // answered 500 by the handler's guard, after the others
					mu.Lock()
					panicked = p
					mu.Unlock()
				}
			}()
			err := s.deps.Receipts.RecordReceipt(ctx, rc.ev, rc.recipient, rc.accounts)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, dispatch.ErrForeignReceipt):
				foreign = true
			case err != nil:
				failed = true
				s.log.Error("callback: receipt not recorded; the provider will send it again", "provider", provider,
					"provider_message_id", rc.ev.ProviderMessageID, "error", err)
			default:
				recorded = true
			}
		})
	}
	wg.Wait()
	if panicked != nil {
		panic(panicked)
	}
	return recorded, foreign, failed
}

// receipt is one receipt of a callback, verified.
type receipt struct {
	ev        schemas.DeliveryEvent
	recipient string
	// accounts are the accounts of ev.Provider's kind the receipt was
	// verified for; none: it names an account its signer does not have
	// (a foreign message).
	accounts []string
}

// badSignature is a request whose signature is missing or wrong.
type badSignature struct{ why string }

func (b badSignature) Error() string { return b.why }

// callbackURL is the address a provider called: api.public_url plus path,
// else the request's own (scheme from TLS, host from the Host header).
func (s *Server) callbackURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimSuffix(s.cfg.PublicURL, "/") + r.URL.RequestURI()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.RequestURI()
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

// twilioReceipts verifies a Twilio status callback and reads its receipt.
func (s *Server) twilioReceipts(r *http.Request, body []byte, received time.Time) ([]receipt, error) {
	sig := r.Header.Get("X-Twilio-Signature")
	if sig == "" {
		return nil, badSignature{"no X-Twilio-Signature"}
	}
	params, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, badSignature{"body is not a form"} // unsigned as far as we can tell
	}
	token, ok := s.deps.Callbacks.TwilioAuthTokens[params.Get("AccountSid")]
	if !ok {
		return nil, badSignature{"AccountSid is not a configured twilio account"}
	}
	want := TwilioSignature(token, s.callbackURL(r), params)
	if subtle.ConstantTimeCompare([]byte(sig), []byte(want)) != 1 {
		return nil, badSignature{"X-Twilio-Signature does not match"}
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
	return []receipt{{ev: ev, recipient: to, accounts: []string{params.Get("AccountSid")}}}, nil
}

// MetaSignature is X-Hub-Signature-256 for body: "sha256=" and the hex
// HMAC-SHA256 of the raw body keyed with the app secret.
func MetaSignature(appSecret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(appSecret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// metaHandshake answers Meta's subscription check: hub.mode=subscribe with
// the configured hub.verify_token is answered with hub.challenge.
func (s *Server) metaHandshake(r *http.Request, reply replyFunc) {
	q := r.URL.Query()
	want := s.deps.Callbacks.MetaVerifyToken
	if want == "" || q.Get("hub.mode") != "subscribe" ||
		subtle.ConstantTimeCompare([]byte(q.Get("hub.verify_token")), []byte(want)) != 1 {
		reply(http.StatusForbidden, callbackBadSignature, "verification failed")
		return
	}
	reply(http.StatusOK, callbackAccepted, q.Get("hub.challenge"))
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

// metaReceipts verifies a Cloud API notification, signed over its raw
// bytes with the secret of any of apps, and reads its statuses (messages
// and other fields of the notification are not receipts: none). A status
// is for the phone number its change's metadata names, which must be one
// of the signing app's (else it has no accounts: a foreign message); a
// change without metadata may be for any of them.
func metaReceipts(apps []MetaApp, sig string, body []byte, received time.Time) ([]receipt, error) {
	if sig == "" {
		return nil, badSignature{"no X-Hub-Signature-256"}
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
		return nil, badSignature{"X-Hub-Signature-256 does not match"}
	}
	var n metaNotification
	if err := json.Unmarshal(body, &n); err != nil {
		return nil, errors.New("body is not a notification")
	}
	var out []receipt
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
				out = append(out, receipt{ev: ev, recipient: recipient, accounts: accounts})
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

// webhookReceipts verifies a webhook receipt: its signature with any of
// the hooks' secrets, made within WebhookSignatureTolerance of received.
// It is for the accounts of the secrets that verify it.
func webhookReceipts(hooks []WebhookReceipts, header string, body []byte, received time.Time) ([]receipt, error) {
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
		return nil, badSignature{"no " + WebhookSignatureHeader + " of the form t=<unix seconds>,v1=<hex>"}
	}
	signed := time.Unix(sec, 0)
	if d := received.Sub(signed); d > WebhookSignatureTolerance || d < -WebhookSignatureTolerance {
		return nil, badSignature{fmt.Sprintf("%s is %s away from now (more than %s: a replay?)", WebhookSignatureHeader, d.Round(time.Second), WebhookSignatureTolerance)}
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
		return nil, badSignature{WebhookSignatureHeader + " does not match"}
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
	return []receipt{{ev: ev, recipient: w.To, accounts: accounts}}, nil
}
