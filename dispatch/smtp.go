package dispatch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/notifyd/notifyd/schemas"
	"github.com/wneessen/go-mail/smtp"
)

// SMTP TLS modes (SMTPConfig.TLS).
const (
	// SMTPTLSStartTLS connects in clear text and requires STARTTLS before
	// anything else is sent. The default.
	SMTPTLSStartTLS = "starttls"
	// SMTPTLSImplicit speaks TLS from the first byte (SMTPS, port 465).
	SMTPTLSImplicit = "implicit"
	// SMTPTLSNone never uses TLS. Credentials are then only sent to a
	// loopback host.
	SMTPTLSNone = "none"
)

// defaultSMTPTimeout bounds a Send whose ctx has no deadline.
const defaultSMTPTimeout = time.Minute

// SMTPConfig configures an SMTP provider (providers.email.smtp).
type SMTPConfig struct {
	// Host is the server's host name or IP address, without a port.
	// Required.
	Host string `yaml:"host"`
	// Port defaults to 587 for starttls, 465 for implicit and 25 for none.
	Port int `yaml:"port"`
	// Username, when set, makes the provider authenticate with AUTH PLAIN,
	// or AUTH LOGIN when the server offers no PLAIN.
	Username string `yaml:"username"`
	// Password goes with Username. It is a secret: it never appears in
	// logs, errors or results.
	Password string `yaml:"password" secret:"user=username"`
	// From is the sender, an address with an optional display name
	// ("Nova Shop <receipts@nova.example>"). Required. Its domain also
	// names the Message-IDs.
	From string `yaml:"from"`
	// TLS is starttls (default: STARTTLS is mandatory), implicit or none.
	TLS string `yaml:"tls"`
}

// Validate names the first bad field.
func (c SMTPConfig) Validate() error {
	switch {
	case strings.TrimSpace(c.Host) == "":
		return errors.New("host: is required")
	case !validSMTPHost(c.Host):
		return errors.New("host: must be a host name or IP address, without a port")
	case c.Port < 0 || c.Port > 65535:
		return errors.New("port: must be between 1 and 65535 (or unset for the default)")
	}
	switch c.TLS {
	case "", SMTPTLSStartTLS, SMTPTLSImplicit, SMTPTLSNone:
	default:
		return fmt.Errorf("tls: unknown mode %q (want starttls, implicit or none)", c.TLS)
	}
	if c.Username == "" && c.Password != "" {
		return errors.New("password: is set but username is empty")
	}
	if c.Username != "" && c.TLS == SMTPTLSNone && !isLoopbackHost(c.Host) {
		return errors.New("username: credentials are never sent in clear text: with tls none the host must be a loopback address (use starttls or implicit)")
	}
	if strings.TrimSpace(c.From) == "" {
		return errors.New("from: is required")
	}
	if _, err := mail.ParseAddress(c.From); err != nil {
		return errors.New("from: must be an email address, optionally with a display name")
	}
	return nil
}

// SMTPOption adjusts an SMTP provider built by NewSMTP.
type SMTPOption func(*SMTP)

// WithSMTPTLSConfig sets the TLS client configuration used for starttls and
// implicit TLS, e.g. to trust a private CA through RootCAs (tests use it to
// trust their self-signed server). The configuration is cloned; an empty
// ServerName becomes the configured host and MinVersion is at least TLS 1.2.
func WithSMTPTLSConfig(cfg *tls.Config) SMTPOption {
	return func(s *SMTP) {
		if cfg != nil {
			s.tlsConfig = cfg.Clone()
		}
	}
}

// SMTP is a Provider that sends email through an SMTP server
// (submission with STARTTLS by default, SMTPS, or plain SMTP).
//
// Each Send opens its own connection: dial, greeting, EHLO, STARTTLS when
// configured (mandatory: a server that does not offer it fails the send),
// AUTH when a username is set, then MAIL FROM, RCPT TO, DATA and QUIT. ctx
// bounds the whole exchange: when it ends the connection is closed, and a
// ctx without a deadline is bounded by one minute.
//
// Authentication uses AUTH PLAIN when the server offers it and AUTH LOGIN
// otherwise; credentials are only sent over TLS or to a loopback host.
//
// The message has From, To, Subject (RFC 2047 encoded when not ASCII),
// Date, Message-ID, MIME-Version and Auto-Submitted: auto-generated. Its
// body is multipart/alternative when the message has both text and HTML,
// otherwise a single text/plain or text/html part; parts are UTF-8, in
// base64 when mostly non-ASCII (e.g. Arabic) and quoted-printable
// otherwise. The Message-ID is <uuid@from-domain>: the uuid derives from the
// command id, so every attempt at the same command's email carries the same
// Message-ID and a copy delivered twice (an attempt that timed out after
// the server took the message) can be recognised; without a command id it
// is random. Receipt.MessageID is the Message-ID without angle brackets.
//
// Errors: a 4xx reply is transient and a 5xx reply permanent (AUTH
// failures, 535, included); the Detail is "smtp <code>: <start of the
// reply>", with the recipient masked if the server echoes it. Network
// errors, timeouts, TLS handshake failures and the end of ctx are
// transient. A server that offers no STARTTLS (with starttls) or neither
// AUTH PLAIN nor LOGIN (with a username) fails permanently. Once the server
// has accepted the message, a failing QUIT is ignored. No error carries the
// password.
type SMTP struct {
	cfg          SMTPConfig
	port         int
	from         *mail.Address
	msgIDDomain  string
	tlsConfig    *tls.Config
	helo         string
	dialer       net.Dialer
	msgIDSpace   uuid.UUID
	implicitTLS  bool
	mandatoryTLS bool
	redact       *Redactor
}

// NewSMTP validates cfg and returns an SMTP provider.
func NewSMTP(cfg SMTPConfig, opts ...SMTPOption) (*SMTP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TLS == "" {
		cfg.TLS = SMTPTLSStartTLS
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, errors.New("from: must be an email address, optionally with a display name")
	}
	s := &SMTP{
		cfg:          cfg,
		port:         cfg.Port,
		from:         from,
		msgIDDomain:  messageIDDomain(from.Address),
		implicitTLS:  cfg.TLS == SMTPTLSImplicit,
		mandatoryTLS: cfg.TLS == SMTPTLSStartTLS,
		msgIDSpace:   uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/notifyd/notifyd/dispatch/smtp")),
		redact:       NewRedactor(Secret{Value: cfg.Password, User: cfg.Username}),
	}
	if s.port == 0 {
		switch cfg.TLS {
		case SMTPTLSImplicit:
			s.port = 465
		case SMTPTLSNone:
			s.port = 25
		default:
			s.port = 587
		}
	}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	if s.tlsConfig == nil {
		s.tlsConfig = &tls.Config{}
	}
	if s.tlsConfig.ServerName == "" {
		s.tlsConfig.ServerName = cfg.Host
	}
	if s.tlsConfig.MinVersion < tls.VersionTLS12 {
		s.tlsConfig.MinVersion = tls.VersionTLS12
	}
	s.helo = "localhost"
	if h, err := os.Hostname(); err == nil && h != "" && !strings.ContainsAny(h, "\r\n ") {
		s.helo = h
	}
	return s, nil
}

// Name returns "smtp".
func (s *SMTP) Name() string { return "smtp" }

// Send delivers m to m.To over one new connection and returns its
// Message-ID (without angle brackets).
func (s *SMTP) Send(ctx context.Context, m Message) (Receipt, error) {
	rcpt, err := mail.ParseAddress(m.To)
	if err != nil {
		return Receipt{}, Permanent("invalid recipient address", nil)
	}
	id := s.messageID(m.CommandID)
	msg, err := s.compose(m, rcpt, id)
	if err != nil {
		return Receipt{}, err
	}
	if err := ctx.Err(); err != nil {
		return Receipt{}, s.fail(ctx, m, "connect", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultSMTPTimeout)
		defer cancel()
	}

	stage := "connect"
	raw, err := s.dialer.DialContext(ctx, "tcp", net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.port)))
	if err != nil {
		return Receipt{}, s.fail(ctx, m, stage, err)
	}
	// Closing the TCP connection when ctx ends unblocks any read or write,
	// TLS handshakes included; as ctx has ended by then, the failure is
	// reported as a timeout or a cancellation. (A connection deadline
	// could fire a moment before ctx reports its end.)
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer func() {
		stop()
		raw.Close()
	}()
	var c *smtp.Client
	bail := func(err error) (Receipt, error) {
		var reply *textproto.Error
		if c != nil && errors.As(err, &reply) {
			// The server is talking: leave politely (best effort).
			_ = c.Quit()
		}
		return Receipt{}, s.fail(ctx, m, stage, err)
	}
	conn := raw
	if s.implicitTLS {
		stage = "TLS"
		tc := tls.Client(raw, s.tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return bail(err)
		}
		conn = tc
	}

	stage = "greeting"
	if c, err = smtp.NewClient(conn, s.cfg.Host); err != nil {
		return bail(err)
	}
	stage = "EHLO"
	if err := c.Hello(s.helo); err != nil {
		return bail(err)
	}
	if s.mandatoryTLS {
		stage = "STARTTLS"
		if ok, _ := c.Extension("STARTTLS"); !ok {
			_ = c.Quit()
			return Receipt{}, Permanent("smtp server does not offer STARTTLS", nil)
		}
		if err := c.StartTLS(s.tlsConfig); err != nil {
			return bail(err)
		}
	}
	if s.cfg.Username != "" {
		stage = "AUTH"
		if err := c.Auth(&plainOrLoginAuth{user: s.cfg.Username, pass: s.cfg.Password, host: s.cfg.Host}); err != nil {
			return bail(err)
		}
	}
	stage = "MAIL FROM"
	if err := c.Mail(bareAddress(s.from)); err != nil {
		return bail(err)
	}
	stage = "RCPT TO"
	if err := c.Rcpt(bareAddress(rcpt)); err != nil {
		return bail(err)
	}
	stage = "DATA"
	w, err := c.Data()
	if err != nil {
		return bail(err)
	}
	stage = "message"
	if _, err := msg.WriteTo(w); err != nil {
		return bail(err)
	}
	stage = "end of DATA"
	if err := w.Close(); err != nil {
		return bail(err)
	}
	// The server has taken the message: a failed QUIT changes nothing.
	_ = c.Quit()
	return Receipt{MessageID: id}, nil
}

// fail classifies err, which happened at stage of the SMTP exchange.
func (s *SMTP) fail(ctx context.Context, m Message, stage string, err error) error {
	var reply *textproto.Error
	if errors.As(err, &reply) && reply.Code >= 400 {
		detail := fmt.Sprintf("smtp %d: %s", reply.Code, bodyStart([]byte(s.scrub(m, reply.Msg))))
		if smtpAccountCodes[reply.Code] {
			return AccountFault(detail, nil)
		}
		if reply.Code >= 500 {
			return Permanent(detail, nil)
		}
		return Transient(detail, 0, nil)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		what := "canceled"
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			what = "timed out"
		}
		return Transient(fmt.Sprintf("smtp %s during %s", what, stage), 0, ctxErr)
	}
	scrubbed := errors.New(s.scrub(m, err.Error()))
	switch {
	case errors.Is(err, errSMTPNoAuthMechanism):
		return AccountFault("smtp server offers neither AUTH PLAIN nor AUTH LOGIN", nil)
	case errors.Is(err, errSMTPClearTextAuth):
		return AccountFault("smtp credentials refused without TLS", nil)
	case errors.As(err, &reply):
		// A 1xx-3xx reply where another was expected.
		return Transient(fmt.Sprintf("smtp unexpected reply %d during %s", reply.Code, stage), 0, scrubbed)
	case stage == "connect":
		return Transient("smtp server unreachable", 0, scrubbed)
	case stage == "TLS" || stage == "STARTTLS":
		return Transient("smtp tls handshake failed", 0, scrubbed)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Transient("smtp timed out during "+stage, 0, scrubbed)
	}
	detail := "smtp connection failed during " + stage
	if stage == "end of DATA" {
		detail += " (the message may have been delivered)"
	}
	return Transient(detail, 0, scrubbed)
}

// scrub removes the password (in every form, AUTH PLAIN's base64 among
// them) and the recipient from a server's or a library's text.
func (s *SMTP) scrub(m Message, text string) string {
	return s.redact.Text(schemas.ChannelEmail, m.To, text)
}

// replaceFold replaces every case-insensitive (ASCII) occurrence of old in s.
func replaceFold(s, old, repl string) string {
	if old == "" {
		return s
	}
	lower, lowerOld := strings.ToLower(s), strings.ToLower(old)
	if len(lower) != len(s) || len(lowerOld) != len(old) {
		// Non-ASCII case folding changed lengths: exact matches only.
		return strings.ReplaceAll(s, old, repl)
	}
	var b strings.Builder
	for {
		i := strings.Index(lower, lowerOld)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteString(repl)
		s, lower = s[i+len(old):], lower[i+len(old):]
	}
}

// validSMTPHost reports whether h is a host name or an IP address without
// a port.
func validSMTPHost(h string) bool {
	if strings.ContainsAny(h, " /\\@\t\r\n[]") {
		return false
	}
	if strings.Contains(h, ":") {
		return net.ParseIP(h) != nil
	}
	return true
}

// isLoopbackHost reports whether h is "localhost" or a loopback IP address.
func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

var (
	errSMTPNoAuthMechanism = errors.New("smtp server offers neither AUTH PLAIN nor AUTH LOGIN")
	errSMTPClearTextAuth   = errors.New("smtp credentials are only sent over TLS or to a loopback host")
)

// plainOrLoginAuth authenticates with PLAIN, or LOGIN when the server does
// not offer PLAIN, and only over TLS or to a loopback host.
type plainOrLoginAuth struct {
	user, pass, host string
	inner            smtp.Auth
}

// Start picks the mechanism.
func (a *plainOrLoginAuth) Start(server *smtp.ServerInfo) (string, []byte, error) {
	if !server.TLS && !isLoopbackHost(a.host) {
		return "", nil, errSMTPClearTextAuth
	}
	offers := func(mech string) bool {
		for _, m := range server.Auth {
			if strings.EqualFold(m, mech) {
				return true
			}
		}
		return false
	}
	// The TLS and host checks are done above; go-mail's own refuse clear
	// text except to "localhost", "127.0.0.1" or "::1".
	switch {
	case offers("PLAIN"):
		a.inner = smtp.PlainAuth("", a.user, a.pass, server.Name, true)
	case offers("LOGIN"):
		a.inner = smtp.LoginAuth(a.user, a.pass, server.Name, true)
	default:
		return "", nil, errSMTPNoAuthMechanism
	}
	return a.inner.Start(server)
}

// Next continues the chosen mechanism.
func (a *plainOrLoginAuth) Next(fromServer []byte, more bool) ([]byte, error) {
	return a.inner.Next(fromServer, more)
}

// smtpKind is the smtp kind: email through an SMTP server.
func smtpKind() Kind {
	return Kind{Name: "smtp", Channels: []schemas.Channel{schemas.ChannelEmail},
		Validate: func(p ProviderConfig) error { return p.SMTP.Validate() },
		New:      func(p ProviderConfig, _ Env) (Provider, error) { return NewSMTP(p.SMTP) }}
}
