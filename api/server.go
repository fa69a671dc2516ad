package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/internal/idempotency"
	"github.com/notifyd/notifyd/schemas"
)

// Commands publishes resend commands: the API's only way into Kafka.
type Commands interface {
	// PublishCommand writes cmd to the commands topic (keyed as the
	// contract says) with a correlation_id header when correlationID is
	// not empty, and returns once the brokers acknowledged it, or with
	// ctx's error.
	PublishCommand(ctx context.Context, cmd schemas.ResendCommand, correlationID string) error
}

// Results answers with delivery results as read from the results topic,
// which every instance follows: any instance can answer for any command.
type Results interface {
	// Result returns the first result of commandID read from the results
	// topic (its bytes as published), if there is one yet.
	Result(commandID string) (result []byte, ok bool, err error)
	// WatchResult registers for the first result of commandID read from
	// the results topic from now on: the channel receives it once. A
	// caller registers before publishing, then checks Result (for a
	// result published before it registered), and always calls cancel.
	WatchResult(commandID string) (result <-chan []byte, cancel func())
}

// Deps is what the API needs from the rest of notifyd; cmd wires it.
type Deps struct {
	Commands Commands
	Results  Results
	// Ready reports whether the instance can answer (false: 503 with the
	// reason).
	Ready func() (ready bool, reason string)
	// Registerer receives the API's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Console backs the operator console under /console/; nil (or
	// api.console.enabled: false) serves none.
	Console ConsoleBackend
	// SignOuts ends console sessions on every instance; required with a
	// console.
	SignOuts SignOuts
	// Receipts takes the providers' receipts posted to /callbacks/*; nil
	// serves no callbacks.
	Receipts Receipts
	// Callbacks verify the receipts of each provider kind that has them,
	// by kind (dispatch.Registry.Receipts): each is served at
	// dispatch.CallbackPrefix + the kind.
	Callbacks map[string]dispatch.ReceiptVerifier
	// Merchants are merchants' keys, users and rate limits, from their
	// settings (nil: none).
	Merchants Merchants
}

// Paths of the API.
const (
	PathNotifications = "/b/pbl/v2/message-notification/"
	PathOpenAPI       = "/b/pbl/v2/openapi.json"
)

// Server is the merchant HTTP API.
type Server struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	auth *authenticator
	m    *metrics
	cert *tls.Certificate

	// slots bounds the requests waiting for a result (api.max_in_flight).
	slots chan struct{}
	// stopping is closed when the server shuts down: waiting requests are
	// answered 202 at once.
	stopping chan struct{}
	stopOnce sync.Once

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	// keysInFlight holds the Idempotency-Keys of requests this instance is
	// waiting on, with what each asked for: a second request with the same
	// key and another body is answered 422 before anything is published
	// (published, it could name another partition's key and be sent by
	// another instance before the first result exists).
	keysInFlight *idempotency.InFlight[idempotency.Request]

	srv *http.Server
	ln  net.Listener

	console *console
}

// New checks cfg (which must be defaulted) and returns the API server.
func New(cfg Config, deps Deps, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	auth, err := newAuthenticator(cfg)
	if auth != nil {
		auth.merchants = deps.Merchants
	}
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, deps: deps, log: log.With("component", "api"), auth: auth, m: newMetrics(deps.Registerer, slices.Sorted(maps.Keys(deps.Callbacks))),
		slots: make(chan struct{}, cfg.MaxInFlight), stopping: make(chan struct{}), limiters: map[string]*rate.Limiter{},
		keysInFlight: idempotency.NewInFlight[idempotency.Request](),
	}
	auth.checked = s.m.passwords
	if cfg.Console.On() && deps.Console != nil {
		if deps.SignOuts == nil {
			return nil, errors.New("api: the console needs SignOuts (sign-outs that hold on every instance)")
		}
		if s.console, err = newConsole(s, deps.Console); err != nil {
			return nil, err
		}
	}
	if cfg.TLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("api.tls.cert_file, api.tls.key_file: %w", err)
		}
		s.cert = &cert
	}
	return s, nil
}

// Start listens on api.listen and serves in the background (ctx is not
// kept: Stop stops it).
func (s *Server) Start(_ context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("api.listen: %w", err)
	}
	s.ln = ln
	s.srv = DefaultTimeouts(s.cfg.Wait+30*time.Second).Server(s.Handler(), s.log)
	serve := func() error { return s.srv.Serve(ln) }
	if s.cert != nil {
		// ServeTLS turns HTTP/2 on (ALPN h2) along with HTTP/1.1.
		s.srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*s.cert}}
		serve = func() error { return s.srv.ServeTLS(ln, "", "") }
	}
	go func() {
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("api server", "error", err)
		}
	}()
	scheme := "http"
	if s.cert != nil {
		scheme = "https"
	}
	s.log.Info("api listening", "addr", s.ln.Addr().String(), "scheme", scheme)
	return nil
}

// Addr is the address the server listens on (after Start).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stop stops accepting requests, answers the waiting ones 202 (their
// commands are published; the client can ask for the result later, of any
// instance), stops the recoveries being published, and waits for the
// handlers until ctx ends.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stopping) })
	if s.console != nil {
		s.console.recoveries.stop(ctx)
	}
	if s.srv == nil {
		return nil
	}
	return s.srv.Shutdown(ctx)
}

// exchange is one merchant API request being answered.
type exchange struct {
	w         http.ResponseWriter
	r         *http.Request
	principal Principal
	commandID string
}

func (e *exchange) reply(a answer) { writeJSON(e.w, a.status, a.body) }

func (e *exchange) detail(status int, msg string) { e.reply(answer{status, detail{msg}}) }

// named records the command_id the request is about, for its access line
// and its errors.
func (e *exchange) named(commandID string) {
	e.commandID = commandID
	note(e.r, "command_id", commandID)
}

// admit runs the checks every API request passes, in the gateway's order:
// authentication (401; for a password, 429 while its failures back off and
// 503 when too many are checked at once: signin.go), permission (403: a
// viewer may only read), the client's rate limit (429), the method (405),
// readiness (503). It reports whether the request may go on.
func (s *Server) admit(e *exchange, method string) bool {
	p, fail := s.auth.authenticate(e.r)
	if fail != nil {
		if fail.status == http.StatusUnauthorized {
			e.w.Header().Set("WWW-Authenticate", challenge)
		}
		if fail.retryAfter > 0 {
			e.w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(fail.retryAfter)))
		}
		e.detail(fail.status, fail.detail)
		return false
	}
	e.principal = p
	kind := "key"
	if !p.Key {
		kind = "user"
	}
	note(e.r, kind, p.Name)
	if !p.MaySend() && e.r.Method != http.MethodGet && e.r.Method != http.MethodHead {
		e.detail(http.StatusForbidden, msgForbidden)
		return false
	}
	if wait, ok := s.allow(p); !ok {
		e.w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(wait)))
		e.detail(http.StatusTooManyRequests, throttled(wait))
		return false
	}
	if e.r.Method != method {
		e.w.Header().Set("Allow", method)
		e.detail(http.StatusMethodNotAllowed, fmt.Sprintf("Method %q not allowed.", e.r.Method))
		return false
	}
	if s.deps.Ready != nil {
		if ok, reason := s.deps.Ready(); !ok {
			e.w.Header().Set("Retry-After", "5")
			e.detail(http.StatusServiceUnavailable, "Service unavailable: "+reason+".")
			return false
		}
	}
	return true
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// allow takes a token of the principal's bucket (bucket); when there is
// none it returns how long until there is one.
func (s *Server) allow(p Principal) (time.Duration, bool) {
	name, limit := s.bucket(p)
	s.mu.Lock()
	l, ok := s.limiters[name]
	if !ok {
		if limit != nil {
			l = limit.Limiter()
		}
		s.limiters[name] = l
	}
	s.mu.Unlock()
	if l == nil {
		return 0, true
	}
	res := l.Reserve()
	if !res.OK() {
		return time.Second, false
	}
	if d := res.Delay(); d > 0 {
		res.Cancel()
		return d, false
	}
	return 0, true
}

// msgForbidden answers (403) a principal whose role may not do what it
// asked (a viewer's POST), in the gateway's framework's words.
const msgForbidden = "You do not have permission to perform this action."

// msgKeyReused answers (422) a request whose Idempotency-Key was used for
// another one.
const msgKeyReused = "Idempotency-Key was already used for a different request."

// internal answers 500 to what retrying cannot mend (a result that cannot
// be read), and logs it.
func (s *Server) internal(e *exchange, what string, err error) {
	s.log.Error("api: "+what, "command_id", e.commandID, "error", err)
	e.detail(http.StatusInternalServerError, "Internal error.")
}

func (s *Server) unavailable(e *exchange, what string, err error) {
	s.log.Error("api: "+what, "command_id", e.commandID, "error", err)
	e.w.Header().Set("Retry-After", "5")
	e.detail(http.StatusServiceUnavailable, "Service unavailable: Kafka or the store did not answer; retry with the same Idempotency-Key.")
}

// status answers GET /b/pbl/v2/message-notification/<command_id>/: the
// result in the shapes of the POST, or 404 before it exists. A key sees
// only its own commands; users (support staff) see every command.
func (s *Server) status(e *exchange) {
	commandID := e.r.PathValue("command_id")
	if m := e.principal.Merchant; m != "" && !strings.HasPrefix(commandID, m+":") {
		commandID = scopedCommandID(m, commandID) // the Idempotency-Key the merchant gave
	}
	e.named(commandID)
	raw, found, err := s.deps.Results.Result(commandID)
	if err != nil {
		s.unavailable(e, "look up result", err)
		return
	}
	var res schemas.DeliveryResult
	if found {
		if err := json.Unmarshal(raw, &res); err != nil {
			s.internal(e, "decode result", err)
			return
		}
	}
	if !found || !e.principal.Reaches(res.MerchantID) || (e.principal.Key && res.RequestedBy != e.principal.Name) {
		e.detail(http.StatusNotFound, "Not found.")
		return
	}
	e.reply(resultAnswer(notification{SessionID: res.SessionID, OrderNo: res.OrderNo}, res, raw))
}

// validIdempotencyKey: 1 to 128 characters, none a control character (it
// becomes the command_id, echoed in headers and logs).
func validIdempotencyKey(k string) bool {
	if k == "" || !utf8.ValidString(k) || utf8.RuneCountInString(k) > schemas.MaxIDLength {
		return false
	}
	for _, r := range k {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// correlationID is the request's X-Correlation-ID (else X-Request-ID),
// copied onto the command and its result, when it is short and printable.
func correlationID(r *http.Request) string {
	for _, h := range []string{"X-Correlation-ID", "X-Request-ID"} {
		if v := r.Header.Get(h); v != "" && len(v) <= 128 && validIdempotencyKey(v) {
			return v
		}
	}
	return ""
}
