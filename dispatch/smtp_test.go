package dispatch

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	mailsmtp "github.com/wneessen/go-mail/smtp"

	"github.com/notifyd/notifyd/internal/testkit"
	"github.com/notifyd/notifyd/schemas"
)

const (
	smtpTestUser = "notifyd"
	smtpTestPass = "s3cret-Pa55word"
	smtpTestFrom = "متجر نوفا <receipts@shop.example>"
)

// smtpSession is what the test server saw on one connection.
type smtpSession struct {
	TLS                          bool
	Helo                         string
	AuthMech, AuthUser, AuthPass string
	MailFrom                     string
	RcptTo                       []string
	Data                         []byte
}

// smtpBackend is an in-process SMTP server backend (emersion/go-smtp) that
// records each session and can be told to answer an error at MAIL, RCPT or
// DATA.
type smtpBackend struct {
	// Mechs are the AUTH mechanisms offered ("PLAIN", "LOGIN").
	Mechs []string
	// RequireAuth answers 530 at MAIL FROM before a successful AUTH.
	RequireAuth bool
	// FailMail, FailRcpt and FailData are answered at those commands.
	FailMail, FailRcpt, FailData *gosmtp.SMTPError

	// transcript is the server's side of every connection: what it read
	// and wrote (go-smtp's Server.Debug).
	transcript testkit.SyncBuffer

	mu       sync.Mutex
	sessions []*smtpSession
}

func (b *smtpBackend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	rec := &smtpSession{TLS: isTLS, Helo: c.Hostname()}
	b.mu.Lock()
	b.sessions = append(b.sessions, rec)
	b.mu.Unlock()
	return &smtpTestSession{b: b, rec: rec}, nil
}

// snapshot returns copies of the sessions seen so far.
func (b *smtpBackend) snapshot() []smtpSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]smtpSession, len(b.sessions))
	for i, s := range b.sessions {
		out[i] = *s
		out[i].RcptTo = append([]string(nil), s.RcptTo...)
		out[i].Data = append([]byte(nil), s.Data...)
	}
	return out
}

// only returns the one session the server saw.
func (b *smtpBackend) only(t *testing.T) smtpSession {
	t.Helper()
	s := b.snapshot()
	if len(s) != 1 {
		t.Fatalf("server saw %d sessions, want 1", len(s))
	}
	return s[0]
}

type smtpTestSession struct {
	b      *smtpBackend
	rec    *smtpSession
	authed bool
}

func (s *smtpTestSession) AuthMechanisms() []string { return s.b.Mechs }

func (s *smtpTestSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		s.b.mu.Lock()
		s.rec.AuthMech, s.rec.AuthUser, s.rec.AuthPass = mech, user, pass
		s.b.mu.Unlock()
		if user != smtpTestUser || pass != smtpTestPass {
			return gosmtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &smtpLoginServer{check: check}, nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

func (s *smtpTestSession) Mail(from string, _ *gosmtp.MailOptions) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.rec.MailFrom = from
	if s.b.RequireAuth && !s.authed {
		return gosmtp.ErrAuthRequired
	}
	if s.b.FailMail != nil {
		return s.b.FailMail
	}
	return nil
}

func (s *smtpTestSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.rec.RcptTo = append(s.rec.RcptTo, to)
	if s.b.FailRcpt != nil {
		return s.b.FailRcpt
	}
	return nil
}

func (s *smtpTestSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.rec.Data = data
	if s.b.FailData != nil {
		return s.b.FailData
	}
	return nil
}

func (s *smtpTestSession) Reset()        {}
func (s *smtpTestSession) Logout() error { return nil }

// smtpLoginServer is the server side of AUTH LOGIN, which go-sasl lacks.
type smtpLoginServer struct {
	step  int
	user  string
	check func(user, pass string) error
}

func (l *smtpLoginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if resp == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

// smtpTestCert returns a self-signed certificate for 127.0.0.1 and
// localhost, and a pool that trusts it.
func smtpTestCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "notifyd test smtp"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// startSMTPServer serves be on 127.0.0.1 in the given TLS mode (none,
// starttls or implicit) and returns its port and a TLS client configuration
// trusting it.
func startSMTPServer(t *testing.T, be *smtpBackend, mode string) (int, *tls.Config) {
	t.Helper()
	cert, pool := smtpTestCert(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv := gosmtp.NewServer(be)
	srv.Domain = "mx.test"
	srv.ReadTimeout = 5 * time.Second
	srv.WriteTimeout = 5 * time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.Debug = &be.transcript
	var (
		l   net.Listener
		err error
	)
	switch mode {
	case SMTPTLSImplicit:
		l, err = tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	case SMTPTLSStartTLS:
		srv.TLSConfig = serverTLS
		l, err = net.Listen("tcp", "127.0.0.1:0")
	default:
		srv.AllowInsecureAuth = true // AUTH without TLS: tls none
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port, &tls.Config{RootCAs: pool}
}

func newTestSMTP(t *testing.T, cfg SMTPConfig, opts ...SMTPOption) *SMTP {
	t.Helper()
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.From == "" {
		cfg.From = smtpTestFrom
	}
	s, err := NewSMTP(cfg, opts...)
	if err != nil {
		t.Fatalf("NewSMTP: %v", err)
	}
	return s
}

func emailMessage(subject, text, html string) Message {
	return Message{Channel: schemas.ChannelEmail, To: testEmail, CommandID: "cmd-1", Subject: subject, Text: text, HTML: html}
}

// smtpPart is one decoded body part of a received message.
type smtpPart struct {
	ContentType, Charset, Encoding, Body string
}

// parseReceived parses a received message: its header and its body parts
// (one, or those of a multipart/alternative body), decoded.
func parseReceived(t *testing.T, data []byte) (mail.Header, string, []smtpPart) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("received message does not parse: %v\n%s", err, data)
	}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	if !strings.HasPrefix(mediaType, "multipart/") {
		raw, err := io.ReadAll(msg.Body)
		if err != nil {
			t.Fatal(err)
		}
		// The CRLF that ends the DATA is not part of the encoded body.
		raw = bytes.TrimSuffix(raw, []byte("\r\n"))
		return msg.Header, mediaType, []smtpPart{decodePart(t, msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), bytes.NewReader(raw))}
	}
	var parts []smtpPart
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart() // NextPart would hide the Content-Transfer-Encoding
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		parts = append(parts, decodePart(t, p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p))
	}
	return msg.Header, mediaType, parts
}

func decodePart(t *testing.T, contentType, cte string, r io.Reader) smtpPart {
	t.Helper()
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		t.Fatalf("part Content-Type %q: %v", contentType, err)
	}
	switch strings.ToLower(cte) {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	default:
		t.Errorf("part %s: Content-Transfer-Encoding %q, want base64 or quoted-printable", mt, cte)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("part %s: decoding %s: %v", mt, cte, err)
	}
	return smtpPart{ContentType: mt, Charset: params["charset"], Encoding: strings.ToLower(cte), Body: string(body)}
}

var messageIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}@shop\.example$`)

func TestSMTPSend(t *testing.T) {
	const (
		arSubject = "تم استلام دفعتك — طلب رقم ١٢٣٤"
		arText    = "مرحباً لينا،\nتم استلام دفعتك بمبلغ ١٢٫٥٠٠ د.ك.\nشكراً لتسوقك معنا."
		arHTML    = "<p dir=\"rtl\">مرحباً لينا،<br>تم استلام دفعتك بمبلغ <b>١٢٫٥٠٠ د.ك.</b></p>"
		enText    = "Hello Lina,\nwe received your payment of 12.500 KWD.\nA line that is long enough to need a soft line break in quoted-printable, surely more than 76 characters."
		enHTML    = `<p>Hello Lina,<br>we received your payment of <b>12.500 KWD</b>.</p>`
	)
	cases := []struct {
		name     string
		mode     string // server and client TLS mode
		mechs    []string
		auth     bool
		msg      Message
		wantType string
		want     []smtpPart // ContentType, Encoding and Body; Charset is always utf-8
	}{
		{
			name: "tls none, no auth, text only", mode: SMTPTLSNone,
			msg:      emailMessage("Payment received", enText, ""),
			wantType: "text/plain",
			want:     []smtpPart{{ContentType: "text/plain", Encoding: "quoted-printable", Body: enText}},
		},
		{
			name: "tls none, AUTH PLAIN, text and HTML", mode: SMTPTLSNone, mechs: []string{"PLAIN", "LOGIN"}, auth: true,
			msg:      emailMessage("Payment received", enText, enHTML),
			wantType: "multipart/alternative",
			want: []smtpPart{
				{ContentType: "text/plain", Encoding: "quoted-printable", Body: enText},
				{ContentType: "text/html", Encoding: "quoted-printable", Body: enHTML},
			},
		},
		{
			name: "tls none, AUTH LOGIN when PLAIN is not offered, HTML only", mode: SMTPTLSNone, mechs: []string{"LOGIN"}, auth: true,
			msg:      emailMessage("Payment received", "", enHTML),
			wantType: "text/html",
			want:     []smtpPart{{ContentType: "text/html", Encoding: "quoted-printable", Body: enHTML}},
		},
		{
			name: "Arabic subject and bodies round-trip", mode: SMTPTLSNone,
			msg:      emailMessage(arSubject, arText, arHTML),
			wantType: "multipart/alternative",
			want: []smtpPart{
				{ContentType: "text/plain", Encoding: "base64", Body: arText},
				{ContentType: "text/html", Encoding: "base64", Body: arHTML},
			},
		},
		{
			// A 900-letter first name: one word go-mail cannot fold at a
			// space; it is sent as short encoded-words instead of a header
			// line over RFC 5322's 998 characters, which servers refuse.
			name: "a subject with a 900-character word is folded", mode: SMTPTLSNone,
			msg:      emailMessage("Payment received, "+strings.Repeat("L", 900)+", thank you", enText, ""),
			wantType: "text/plain",
			want:     []smtpPart{{ContentType: "text/plain", Encoding: "quoted-printable", Body: enText}},
		},
		{
			name: "starttls with AUTH PLAIN", mode: SMTPTLSStartTLS, mechs: []string{"PLAIN"}, auth: true,
			msg:      emailMessage(arSubject, arText, ""),
			wantType: "text/plain",
			want:     []smtpPart{{ContentType: "text/plain", Encoding: "base64", Body: arText}},
		},
		{
			name: "implicit TLS with AUTH PLAIN", mode: SMTPTLSImplicit, mechs: []string{"PLAIN"}, auth: true,
			msg:      emailMessage("Payment received", enText, enHTML),
			wantType: "multipart/alternative",
			want: []smtpPart{
				{ContentType: "text/plain", Encoding: "quoted-printable", Body: enText},
				{ContentType: "text/html", Encoding: "quoted-printable", Body: enHTML},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := &smtpBackend{Mechs: tc.mechs, RequireAuth: tc.auth}
			port, clientTLS := startSMTPServer(t, be, tc.mode)
			cfg := SMTPConfig{Port: port, TLS: tc.mode}
			if tc.auth {
				cfg.Username, cfg.Password = smtpTestUser, smtpTestPass
			}
			s := newTestSMTP(t, cfg, WithSMTPTLSConfig(clientTLS))

			before := time.Now()
			rec, err := s.Send(context.Background(), tc.msg)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if !messageIDPattern.MatchString(rec.MessageID) {
				t.Errorf("MessageID = %q, want <uuid>@shop.example without brackets", rec.MessageID)
			}

			sessions := be.snapshot()
			if tc.mode == SMTPTLSStartTLS {
				// go-smtp starts a new session after STARTTLS: the first
				// one, in clear text, must have seen nothing.
				if len(sessions) != 2 || sessions[0].TLS || sessions[0].AuthMech != "" || sessions[0].MailFrom != "" {
					t.Fatalf("sessions %+v, want a clear-text one that saw nothing, then a TLS one", sessions)
				}
				sessions = sessions[1:]
			}
			if len(sessions) != 1 {
				t.Fatalf("server saw %d sessions, want 1", len(sessions))
			}
			got := sessions[0]
			if got.TLS != (tc.mode != SMTPTLSNone) {
				t.Errorf("session in TLS = %v", got.TLS)
			}
			if tc.auth {
				wantMech := tc.mechs[0]
				if got.AuthMech != wantMech || got.AuthUser != smtpTestUser || got.AuthPass != smtpTestPass {
					t.Errorf("server saw AUTH %s %q/%q, want %s %q and the password", got.AuthMech, got.AuthUser, got.AuthPass, wantMech, smtpTestUser)
				}
			} else if got.AuthMech != "" {
				t.Errorf("server saw AUTH %s, want none", got.AuthMech)
			}
			if got.MailFrom != "receipts@shop.example" {
				t.Errorf("MAIL FROM %q", got.MailFrom)
			}
			if len(got.RcptTo) != 1 || got.RcptTo[0] != testEmail {
				t.Errorf("RCPT TO %q, want [%s]", got.RcptTo, testEmail)
			}

			head, _, _ := strings.Cut(string(got.Data), "\r\n\r\n")
			for _, line := range strings.Split(head, "\r\n") {
				if len(line) > 78 {
					t.Errorf("header line of %d characters (RFC 5322: at most 998, should be 78): %.90q...", len(line), line)
				}
			}
			h, mediaType, parts := parseReceived(t, got.Data)
			if from, err := mail.ParseAddress(h.Get("From")); err != nil || from.Name != "متجر نوفا" || from.Address != "receipts@shop.example" {
				t.Errorf("From %q = %v, %v", h.Get("From"), from, err)
			}
			if to, err := mail.ParseAddress(h.Get("To")); err != nil || to.Address != testEmail {
				t.Errorf("To %q = %v, %v", h.Get("To"), to, err)
			}
			rawSubject := h.Get("Subject")
			subject, err := new(mime.WordDecoder).DecodeHeader(rawSubject)
			if err != nil || subject != tc.msg.Subject {
				t.Errorf("Subject %q decodes to %q (%v), want %q", rawSubject, subject, err, tc.msg.Subject)
			}
			if !isASCII(rawSubject) {
				t.Errorf("raw Subject %q is not RFC 2047 encoded", rawSubject)
			}
			if d, err := h.Date(); err != nil || d.Before(before.Add(-time.Second)) || d.After(time.Now().Add(time.Second)) {
				t.Errorf("Date %q = %v, %v", h.Get("Date"), d, err)
			}
			if id := h.Get("Message-ID"); id != "<"+rec.MessageID+">" {
				t.Errorf("Message-ID %q, receipt %q", id, rec.MessageID)
			}
			if v := h.Get("MIME-Version"); v != "1.0" {
				t.Errorf("MIME-Version %q", v)
			}
			if v := h.Get("Auto-Submitted"); v != "auto-generated" {
				t.Errorf("Auto-Submitted %q", v)
			}
			if mediaType != tc.wantType {
				t.Errorf("Content-Type %s, want %s", mediaType, tc.wantType)
			}
			if len(parts) != len(tc.want) {
				t.Fatalf("%d parts, want %d: %+v", len(parts), len(tc.want), parts)
			}
			for i, p := range parts {
				w := tc.want[i]
				if p.ContentType != w.ContentType || !strings.EqualFold(p.Charset, "utf-8") || p.Encoding != w.Encoding {
					t.Errorf("part %d is %s charset=%s %s, want %s charset=UTF-8 %s", i, p.ContentType, p.Charset, p.Encoding, w.ContentType, w.Encoding)
				}
				body := p.Body
				if p.Encoding == "quoted-printable" {
					// Quoted-printable text has CRLF line breaks (canonical form).
					body = strings.ReplaceAll(body, "\r\n", "\n")
				}
				if body != w.Body {
					t.Errorf("part %d body\n got %q\nwant %q", i, body, w.Body)
				}
			}
		})
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func TestSMTPSendFailures(t *testing.T) {
	cases := []struct {
		name      string
		be        *smtpBackend
		password  string
		permanent bool
		account   bool // a permanent error that blames the account (fails over)
		detail    string
		check     func(t *testing.T, got smtpSession)
	}{
		{
			name:   "4xx at RCPT is transient",
			be:     &smtpBackend{FailRcpt: &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Mailbox temporarily unavailable, try later"}},
			detail: "smtp 451: 4.3.0 Mailbox temporarily unavailable, try later",
			check: func(t *testing.T, got smtpSession) {
				if len(got.RcptTo) != 1 || got.Data != nil {
					t.Errorf("server saw RCPT %q and %d data bytes, want one RCPT and no DATA", got.RcptTo, len(got.Data))
				}
			},
		},
		{
			name:      "5xx at RCPT is permanent, the echoed recipient is masked",
			be:        &smtpBackend{FailRcpt: &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "<Lina.Haddad@Example.com>: mailbox unavailable"}},
			permanent: true,
			detail:    "smtp 550: 5.1.1 <l***@example.com>: mailbox unavailable",
			check: func(t *testing.T, got smtpSession) {
				if len(got.RcptTo) != 1 || got.RcptTo[0] != testEmail || got.Data != nil {
					t.Errorf("server saw RCPT %q and %d data bytes", got.RcptTo, len(got.Data))
				}
			},
		},
		{
			name:      "5xx at DATA is permanent",
			be:        &smtpBackend{FailData: &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 6, 0}, Message: "Message rejected as spam"}},
			permanent: true,
			detail:    "smtp 554: 5.6.0 Message rejected as spam",
			check: func(t *testing.T, got smtpSession) {
				if !bytes.Contains(got.Data, []byte("Subject: Payment received")) {
					t.Errorf("server got no message before rejecting it: %q", got.Data)
				}
			},
		},
		{
			name:      "500, the first 5xx, is permanent",
			be:        &smtpBackend{FailRcpt: &gosmtp.SMTPError{Code: 500, EnhancedCode: gosmtp.EnhancedCode{5, 5, 2}, Message: "Syntax error"}},
			permanent: true,
			detail:    "smtp 500: 5.5.2 Syntax error",
			check:     func(*testing.T, smtpSession) {},
		},
		{
			name:   "400, the first 4xx, is transient",
			be:     &smtpBackend{FailMail: &gosmtp.SMTPError{Code: 400, EnhancedCode: gosmtp.EnhancedCode{4, 0, 0}, Message: "Try again"}},
			detail: "smtp 400: 4.0.0 Try again",
			check:  func(*testing.T, smtpSession) {},
		},
		{
			name:   "4xx at MAIL is transient",
			be:     &smtpBackend{FailMail: &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: "Too many connections,\nslow down"}},
			detail: "smtp 421: Too many connections, 4.7.0 slow down", // go-smtp puts the enhanced code on the last line
			check: func(t *testing.T, got smtpSession) {
				if got.MailFrom != "receipts@shop.example" || got.RcptTo != nil {
					t.Errorf("server saw MAIL %q RCPT %q", got.MailFrom, got.RcptTo)
				}
			},
		},
		{
			name:      "535 authentication failure is permanent",
			be:        &smtpBackend{Mechs: []string{"PLAIN"}, RequireAuth: true},
			password:  "wr0ng-Pa55word",
			permanent: true,
			account:   true,
			detail:    "smtp 535: 5.7.8 Authentication failed",
			check: func(t *testing.T, got smtpSession) {
				if got.AuthUser != smtpTestUser || got.AuthPass != "wr0ng-Pa55word" || got.MailFrom != "" {
					t.Errorf("server saw AUTH %q/%q MAIL %q", got.AuthUser, got.AuthPass, got.MailFrom)
				}
			},
		},
		{
			name:      "no AUTH PLAIN nor LOGIN offered is permanent",
			be:        &smtpBackend{},
			password:  smtpTestPass,
			permanent: true,
			account:   true,
			detail:    "smtp server offers neither AUTH PLAIN nor AUTH LOGIN",
			check: func(t *testing.T, got smtpSession) {
				if got.AuthMech != "" || got.MailFrom != "" {
					t.Errorf("server saw AUTH %q MAIL %q", got.AuthMech, got.MailFrom)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := tc.be
			port, _ := startSMTPServer(t, be, SMTPTLSNone)
			cfg := SMTPConfig{Port: port, TLS: SMTPTLSNone}
			if tc.password != "" {
				cfg.Username, cfg.Password = smtpTestUser, tc.password
			}
			s := newTestSMTP(t, cfg)
			rec, err := s.Send(context.Background(), emailMessage("Payment received", "Hello", ""))
			if err == nil {
				t.Fatalf("Send succeeded (%+v), want an error", rec)
			}
			if rec != (Receipt{}) {
				t.Errorf("receipt %+v with an error", rec)
			}
			if IsAccountFault(err) != tc.account {
				t.Errorf("account fault = %v, want %v: %v", IsAccountFault(err), tc.account, err)
			}
			if IsPermanent(err) != tc.permanent {
				t.Errorf("IsPermanent = %v, want %v: %v", IsPermanent(err), tc.permanent, err)
			}
			if d := errorDetail(err); d != tc.detail {
				t.Errorf("detail %q, want %q", d, tc.detail)
			}
			// The server is still talking after each of these: notifyd
			// takes leave with QUIT.
			if !strings.Contains(be.transcript.String(), "\r\nQUIT\r\n") {
				t.Errorf("no QUIT:\n%s", be.transcript.String())
			}
			for _, secret := range []string{tc.password, smtpTestPass, testEmail, strings.ToLower("Lina.Haddad@Example.com")} {
				if secret != "" && strings.Contains(strings.ToLower(err.Error()), strings.ToLower(secret)) {
					t.Errorf("error %q holds %q", err, secret)
				}
			}
			tc.check(t, be.only(t))
		})
	}
}

func TestSMTPTLSFailures(t *testing.T) {
	cases := []struct {
		name      string
		server    string // server TLS mode
		client    string // client TLS mode
		trust     bool
		permanent bool
		detail    string
	}{
		{name: "starttls required but not offered", server: SMTPTLSNone, client: SMTPTLSStartTLS, trust: true, permanent: true, detail: "smtp server does not offer STARTTLS"},
		{name: "starttls with an untrusted certificate", server: SMTPTLSStartTLS, client: SMTPTLSStartTLS, detail: "smtp tls handshake failed"},
		{name: "implicit TLS with an untrusted certificate", server: SMTPTLSImplicit, client: SMTPTLSImplicit, detail: "smtp tls handshake failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := &smtpBackend{Mechs: []string{"PLAIN"}}
			port, clientTLS := startSMTPServer(t, be, tc.server)
			var opts []SMTPOption
			if tc.trust {
				opts = append(opts, WithSMTPTLSConfig(clientTLS))
			}
			s := newTestSMTP(t, SMTPConfig{Port: port, TLS: tc.client, Username: smtpTestUser, Password: smtpTestPass}, opts...)
			_, err := s.Send(context.Background(), emailMessage("Payment received", "Hello", ""))
			if err == nil {
				t.Fatal("Send succeeded, want an error")
			}
			if IsPermanent(err) != tc.permanent || errorDetail(err) != tc.detail {
				t.Errorf("got permanent=%v detail %q, want %v %q (%v)", IsPermanent(err), errorDetail(err), tc.permanent, tc.detail, err)
			}
			if strings.Contains(err.Error(), smtpTestPass) {
				t.Errorf("error holds the password: %v", err)
			}
			for _, got := range be.snapshot() {
				if got.AuthPass != "" || got.MailFrom != "" {
					t.Errorf("server saw AUTH %q / MAIL %q without TLS", got.AuthUser, got.MailFrom)
				}
			}
		})
	}
}

func TestSMTPServerDownIsTransient(t *testing.T) {
	s := newTestSMTP(t, SMTPConfig{Port: downSMTPPort(t), TLS: SMTPTLSNone})
	_, err := s.Send(context.Background(), emailMessage("Payment received", "Hello", ""))
	if err == nil || IsPermanent(err) || errorDetail(err) != "smtp server unreachable" {
		t.Fatalf("got %v (detail %q), want transient smtp server unreachable", err, errorDetail(err))
	}
}

func TestSMTPSilentServerTimesOut(t *testing.T) {
	port, _ := silentSMTPPeer(t)
	for _, mode := range []string{SMTPTLSNone, SMTPTLSImplicit} {
		t.Run(mode, func(t *testing.T) {
			s := newTestSMTP(t, SMTPConfig{Port: port, TLS: mode})
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err := s.Send(ctx, emailMessage("Payment received", "Hello", ""))
			if err == nil || IsPermanent(err) || !strings.HasPrefix(errorDetail(err), "smtp timed out during ") {
				t.Fatalf("got %v (detail %q), want transient smtp timed out", err, errorDetail(err))
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
			}
		})
	}
}

func TestSMTPCanceledContextIsTransient(t *testing.T) {
	be := &smtpBackend{}
	port, _ := startSMTPServer(t, be, SMTPTLSNone)
	s := newTestSMTP(t, SMTPConfig{Port: port, TLS: SMTPTLSNone})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Send(ctx, emailMessage("Payment received", "Hello", ""))
	if err == nil || IsPermanent(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want transient wrapping context.Canceled", err)
	}
	if n := len(be.snapshot()); n != 0 {
		t.Errorf("server saw %d sessions", n)
	}
}

func TestSMTPBadMessagesArePermanent(t *testing.T) {
	be := &smtpBackend{}
	port, _ := startSMTPServer(t, be, SMTPTLSNone)
	s := newTestSMTP(t, SMTPConfig{Port: port, TLS: SMTPTLSNone})
	for name, m := range map[string]Message{
		"no body":           emailMessage("Payment received", "", ""),
		"invalid recipient": {Channel: schemas.ChannelEmail, To: "lina.haddad@", Subject: "s", Text: "t"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := s.Send(context.Background(), m)
			if !IsPermanent(err) {
				t.Fatalf("got %v, want a permanent error", err)
			}
		})
	}
	if n := len(be.snapshot()); n != 0 {
		t.Errorf("server saw %d sessions", n)
	}
}

func TestSMTPMessageIDPerCommand(t *testing.T) {
	be := &smtpBackend{}
	port, _ := startSMTPServer(t, be, SMTPTLSNone)
	s := newTestSMTP(t, SMTPConfig{Port: port, TLS: SMTPTLSNone})
	send := func(commandID string) string {
		t.Helper()
		m := emailMessage("Payment received", "Hello", "")
		m.CommandID = commandID
		rec, err := s.Send(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		if !messageIDPattern.MatchString(rec.MessageID) {
			t.Errorf("MessageID %q", rec.MessageID)
		}
		return rec.MessageID
	}
	a1, a2, b := send("cmd-a"), send("cmd-a"), send("cmd-b")
	r1, r2 := send(""), send("")
	if a1 != a2 {
		t.Errorf("attempts at one command got Message-IDs %q and %q, want one", a1, a2)
	}
	if a1 == b || r1 == r2 || r1 == a1 {
		t.Errorf("Message-IDs not distinct: %q %q %q %q", a1, b, r1, r2)
	}
	for i, got := range be.snapshot() {
		h, _, _ := parseReceived(t, got.Data)
		want := []string{a1, a2, b, r1, r2}[i]
		if h.Get("Message-ID") != "<"+want+">" {
			t.Errorf("message %d Message-ID %q, want <%s>", i, h.Get("Message-ID"), want)
		}
	}
}

func TestSMTPAuthRefusesClearText(t *testing.T) {
	for _, tc := range []struct {
		host string
		tls  bool
		want error
	}{
		{host: "mail.example", tls: false, want: errSMTPClearTextAuth},
		{host: "mail.example", tls: true},
		{host: "127.0.0.1", tls: false},
		{host: "localhost", tls: false},
	} {
		a := &plainOrLoginAuth{user: "u", pass: "p", host: tc.host}
		mech, _, err := a.Start(&mailsmtp.ServerInfo{Name: tc.host, TLS: tc.tls, Auth: []string{"LOGIN", "PLAIN"}})
		if !errors.Is(err, tc.want) || (tc.want == nil && mech != "PLAIN") {
			t.Errorf("host %s tls %v: mech %q err %v, want PLAIN, %v", tc.host, tc.tls, mech, err, tc.want)
		}
	}
}

func TestNewSMTPDefaults(t *testing.T) {
	for _, tc := range []struct {
		tls  string
		port int
		want int
	}{
		{tls: "", want: 587},
		{tls: SMTPTLSStartTLS, want: 587},
		{tls: SMTPTLSImplicit, want: 465},
		{tls: SMTPTLSNone, want: 25},
		{tls: SMTPTLSImplicit, port: 2465, want: 2465},
	} {
		s, err := NewSMTP(SMTPConfig{Host: "smtp.example", From: "receipts@shop.example", TLS: tc.tls, Port: tc.port})
		if err != nil {
			t.Fatal(err)
		}
		if s.port != tc.want || s.Name() != "smtp" {
			t.Errorf("tls %q port %d: got port %d name %q, want %d smtp", tc.tls, tc.port, s.port, s.Name(), tc.want)
		}
		if s.tlsConfig.ServerName != "smtp.example" || s.tlsConfig.MinVersion < tls.VersionTLS12 || s.tlsConfig.InsecureSkipVerify {
			t.Errorf("tls config %+v", s.tlsConfig)
		}
	}
	// EHLO names this host, as RFC 5321 asks, when its name can stand in
	// the command; else localhost.
	want := "localhost"
	if h, err := os.Hostname(); err == nil && h != "" && !strings.ContainsAny(h, "\r\n ") {
		want = h
	}
	be := &smtpBackend{}
	port, _ := startSMTPServer(t, be, SMTPTLSNone)
	if _, err := newTestSMTP(t, SMTPConfig{Port: port, TLS: SMTPTLSNone}).Send(context.Background(), emailMessage("Payment received", "Hello", "")); err != nil {
		t.Fatal(err)
	}
	if got := be.only(t).Helo; got != want {
		t.Errorf("EHLO %q, want %q", got, want)
	}
	if _, err := NewSMTP(SMTPConfig{From: "receipts@shop.example"}); err == nil || err.Error() != "host: is required" {
		t.Errorf("NewSMTP without host: %v", err)
	}
}

func TestSMTPConfigValidate(t *testing.T) {
	ok := SMTPConfig{Host: "smtp.example", From: "Nova <receipts@shop.example>"}
	cases := []struct {
		name   string
		mutate func(*SMTPConfig)
		want   string // "" for valid; else the error's start
	}{
		{name: "minimal", mutate: func(*SMTPConfig) {}},
		{name: "all set", mutate: func(c *SMTPConfig) {
			c.Port, c.Username, c.Password, c.TLS = 2525, "u", "p", SMTPTLSImplicit
		}},
		{name: "bare from", mutate: func(c *SMTPConfig) { c.From = "receipts@shop.example" }},
		{name: "Arabic display name", mutate: func(c *SMTPConfig) { c.From = smtpTestFrom }},
		{name: "IPv6 host", mutate: func(c *SMTPConfig) { c.Host = "2001:db8::25" }},
		{name: "tls none with auth to loopback", mutate: func(c *SMTPConfig) {
			c.Host, c.TLS, c.Username, c.Password = "127.0.0.1", SMTPTLSNone, "u", "p"
		}},
		{name: "tls none without auth", mutate: func(c *SMTPConfig) { c.TLS = SMTPTLSNone }},
		{name: "no host", mutate: func(c *SMTPConfig) { c.Host = "" }, want: "host: is required"},
		{name: "blank host", mutate: func(c *SMTPConfig) { c.Host = "  " }, want: "host: is required"},
		{name: "host with port", mutate: func(c *SMTPConfig) { c.Host = "smtp.example:587" }, want: "host: must be a host name or IP address"},
		{name: "host URL", mutate: func(c *SMTPConfig) { c.Host = "smtp://smtp.example" }, want: "host: must be a host name or IP address"},
		{name: "negative port", mutate: func(c *SMTPConfig) { c.Port = -1 }, want: "port: must be between 1 and 65535"},
		{name: "port too big", mutate: func(c *SMTPConfig) { c.Port = 70000 }, want: "port: must be between 1 and 65535"},
		{name: "unknown tls", mutate: func(c *SMTPConfig) { c.TLS = "ssl" }, want: `tls: unknown mode "ssl" (want starttls, implicit or none)`},
		{name: "password without username", mutate: func(c *SMTPConfig) { c.Password = "p" }, want: "password: "},
		{name: "clear-text credentials", mutate: func(c *SMTPConfig) {
			c.TLS, c.Username, c.Password = SMTPTLSNone, "u", "p"
		}, want: "username: "},
		{name: "no from", mutate: func(c *SMTPConfig) { c.From = "" }, want: "from: is required"},
		{name: "bad from", mutate: func(c *SMTPConfig) { c.From = "receipts" }, want: "from: must be an email address"},
		{name: "two froms", mutate: func(c *SMTPConfig) { c.From = "a@shop.example, b@shop.example" }, want: "from: must be an email address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Errorf("Validate: %v, want %q...", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "smtp.") {
				t.Errorf("error %q has a prefix; the caller adds it", err)
			}
		})
	}
}
