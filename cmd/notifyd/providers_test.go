package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/notifyd/notifyd/schemas"
)

// smtpSink is a real SMTP server that records the messages it accepts.
type smtpSink struct {
	mu   sync.Mutex
	msgs []sinkMessage
}

type sinkMessage struct {
	from string
	to   []string
	data []byte
}

func (s *smtpSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{sink: s}, nil }

type sinkSession struct {
	sink *smtpSink
	msg  sinkMessage
}

func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error { s.msg.from = from; return nil }
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.msg.to = append(s.msg.to, to)
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.msg.data = b
	s.sink.mu.Lock()
	s.sink.msgs = append(s.sink.msgs, s.msg)
	s.sink.mu.Unlock()
	return nil
}
func (s *sinkSession) Reset()        { s.msg = sinkMessage{} }
func (s *sinkSession) Logout() error { return nil }

func (s *smtpSink) messages() []sinkMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkMessage(nil), s.msgs...)
}

// TestProvidersFanOut: one command over Kafka fans out to the three real
// providers, configured as a user would: email to an SMTP server, sms to a
// server speaking Twilio's API, whatsapp to one speaking Meta's, which
// rejects the message permanently. The result is partially_notified with
// one correct entry per channel, and each server got what its API expects.
func TestProvidersFanOut(t *testing.T) {
	sink := &smtpSink{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	smtpSrv := smtp.NewServer(sink)
	smtpSrv.Domain = "localhost"
	go func() { _ = smtpSrv.Serve(ln) }()
	defer smtpSrv.Close()
	smtpHost, smtpPort, _ := net.SplitHostPort(ln.Addr().String())

	const sid, token = "AC0123456789abcdef0123456789abcdef", "tw-s3cret"
	var twilioForm struct {
		sync.Mutex
		body, to, from string
		auth           bool
	}
	twilio := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if r.Method != http.MethodPost || r.URL.Path != "/2010-04-01/Accounts/"+sid+"/Messages.json" || !ok || user != sid || pass != token {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"code":20003,"message":"Authenticate","status":401}`)
			return
		}
		_ = r.ParseForm()
		twilioForm.Lock()
		twilioForm.body, twilioForm.to, twilioForm.from, twilioForm.auth = r.PostForm.Get("Body"), r.PostForm.Get("To"), r.PostForm.Get("From"), true
		twilioForm.Unlock()
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}`)
	}))
	defer twilio.Close()

	var metaCalls struct {
		sync.Mutex
		n    int
		body map[string]any
	}
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		metaCalls.Lock()
		metaCalls.n++
		_ = json.NewDecoder(r.Body).Decode(&metaCalls.body)
		metaCalls.Unlock()
		if r.URL.Path != "/v21.0/1234567890/messages" || r.Header.Get("Authorization") != "Bearer wa-s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"message":"(#131026) Message undeliverable","type":"OAuthException","code":131026,"error_data":{"details":"Message could not be delivered"},"fbtrace_id":"Axyz"}}`)
	}))
	defer meta.Close()

	dir := t.TempDir()
	broker, httpAddr := freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "notifyd.yaml")
	t.Setenv("TEST_TWILIO_TOKEN", token)
	cfg := fmt.Sprintf(`
embedded_broker: {listen: %q}
store: {dir: %q}
http: {listen: %q}
log: {format: json, level: info}
providers:
  email:
    kind: smtp
    smtp: {host: %q, port: %s, tls: none, from: "Nova Shop <receipts@nova.example>"}
  sms:
    kind: twilio
    twilio: {base_url: %q, account_sid: %s, auth_token: "${TEST_TWILIO_TOKEN}", from: "+15550001111"}
  whatsapp:
    kind: meta
    meta: {base_url: %q, phone_number_id: "1234567890", access_token: wa-s3cret}
    retry: {max_attempts: 3, initial_backoff: 10ms}
templates:
  email:
    paid:
      en: {subject: "Payment received for {{.OrderNo}}", text: "Thank you {{.CustomerFirstName}}.", html: "<p>Thank you {{.CustomerFirstName}}.</p>"}
  sms:
    paid:
      ar: {text: "شكرا {{.CustomerFirstName}}، تم الدفع"}
  whatsapp:
    paid:
      en: {name: payment_paid, language: en_US, params: ["{{.CustomerFirstName}}", "{{.Amount}} {{.CurrencyCode}}"]}
`, broker, filepath.Join(dir, "data"), httpAddr, smtpHost, smtpPort, twilio.URL, sid, meta.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	serveOut, serveErr := serveForTest(t, httpAddr, "serve", "-config", cfgPath)
	ctx := t.Context()

	event := `{"event_id":"e-1","session_id":"sess-9","order_no":"order-9","state":"paid","timestamp_utc":"2026-11-02T09:00:07Z","amount":"7.250","currency_code":"KWD","customer_email":"Layla.Haddad@example.com","customer_phone":"+96550009876","customer_first_name":"Layla","language":"ar","notifications":{"email":[],"sms":[],"whatsapp":[]}}`
	var out, errOut bytes.Buffer
	if code := run(ctx, []string{"publish", "-config", cfgPath, "-topic", "payment-events"}, strings.NewReader(event), &out, &errOut); code != 0 {
		t.Fatalf("publish: %s", errOut.String())
	}
	out.Reset()
	code := run(ctx, []string{"resend", "-config", cfgPath, "-session-id", "sess-9", "-channels", "email,sms,whatsapp", "-wait", "30s"}, nil, &out, &errOut)
	var r schemas.DeliveryResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("resend exited %d: %q %s", code, out.String(), errOut.String())
	}
	if code != 1 || r.Outcome != schemas.OutcomePartiallyNotified || len(r.Channels) != 3 {
		t.Fatalf("exit %d, result %s", code, out.String())
	}
	email, sms, wa := r.Channels[0], r.Channels[1], r.Channels[2]
	if email.Channel != "email" || email.Status != schemas.StatusSent || email.Provider != "smtp" || email.Attempts != 1 || email.Recipient != "L***@example.com" || email.ProviderMessageID == "" {
		t.Errorf("email: %+v", email)
	}
	if sms.Status != schemas.StatusSent || sms.Provider != "twilio" || sms.ProviderMessageID != "SM0123456789abcdef0123456789abcdef" || sms.Recipient != "+965****9876" {
		t.Errorf("sms: %+v", sms)
	}
	if wa.Status != schemas.StatusFailed || wa.Reason != schemas.ReasonProviderRejected || wa.Provider != "meta" || wa.Attempts != 1 || !strings.Contains(wa.Detail, "131026") {
		t.Errorf("whatsapp: %+v", wa)
	}

	// What each far end received.
	msgs := sink.messages()
	if len(msgs) != 1 || len(msgs[0].to) != 1 || msgs[0].to[0] != "Layla.Haddad@example.com" || msgs[0].from != "receipts@nova.example" {
		t.Fatalf("smtp received %+v", msgs)
	}
	m, err := mail.ReadMessage(bytes.NewReader(msgs[0].data))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get("Message-Id"); strings.Trim(got, "<>") != email.ProviderMessageID {
		t.Errorf("Message-ID %q, provider_message_id %q", got, email.ProviderMessageID)
	}
	if subj, _ := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject")); subj != "تم استلام الدفعة - الطلب رقم order-9" {
		t.Errorf("subject %q (the file gives an en email only: the built-in ar one is laid under it)", subj)
	}
	if !strings.HasPrefix(m.Header.Get("Content-Type"), "multipart/alternative") {
		t.Errorf("content type %q", m.Header.Get("Content-Type"))
	}
	twilioForm.Lock()
	if !twilioForm.auth || twilioForm.to != "+96550009876" || twilioForm.from != "+15550001111" || twilioForm.body != "شكرا Layla، تم الدفع" {
		t.Errorf("twilio received To %q From %q Body %q (auth %v)", twilioForm.to, twilioForm.from, twilioForm.body, twilioForm.auth)
	}
	twilioForm.Unlock()
	metaCalls.Lock()
	tpl, _ := metaCalls.body["template"].(map[string]any)
	if metaCalls.n != 1 || tpl["name"] != "payment_paid" {
		t.Errorf("meta received %d calls: %v", metaCalls.n, metaCalls.body)
	}
	metaCalls.Unlock()
	logs := serveErr.String()
	for _, secret := range []string{token, "wa-s3cret", "Layla.Haddad@example.com", "+96550009876"} {
		if strings.Contains(logs+serveOut.String(), secret) {
			t.Errorf("logs contain %q", secret)
		}
	}
}
