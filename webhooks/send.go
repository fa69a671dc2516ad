package webhooks

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Outcome is what an attempt came to.
type Outcome string

const (
	// Delivered: the endpoint answered 2xx.
	Delivered Outcome = "delivered"
	// Retry: 408, 429, 5xx, a time-out or a connection that failed; the
	// schedule says when (or that it is spent).
	Retry Outcome = "retry"
	// Final: any other answer (4xx, 3xx, 1xx), an endpoint that is not
	// public, or a URL that is not one: this message is not tried again.
	Final Outcome = "final"
)

// Attempt is the outcome of one attempt.
type Attempt struct {
	Outcome Outcome
	// Status is the endpoint's HTTP status (0: no answer).
	Status int
	// RetryAfter is the endpoint's Retry-After (0: none).
	RetryAfter time.Duration
	// Detail says why it was not delivered, without the URL or a secret.
	Detail string
}

// Options configure a Sender; zero members take their defaults.
type Options struct {
	// AllowPrivate allows http URLs and addresses that are not public
	// (webhooks.allow_private).
	AllowPrivate bool
	// Timeout bounds an attempt: connecting, sending and the answer's
	// headers and first 4 KiB (default 15 s).
	Timeout time.Duration
	// UserAgent is the requests' User-Agent (default "notifyd").
	UserAgent string
}

func (o *Options) setDefaults() {
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	if o.UserAgent == "" {
		o.UserAgent = "notifyd"
	}
}

// maxAnswer is how much of an answer is read (its status is what counts).
const maxAnswer = 4 << 10

// Sender makes attempts. It is safe for concurrent use.
type Sender struct {
	opts   Options
	client *http.Client
}

// NewSender returns a Sender with its own transport (no proxy: a proxy
// would make the address check moot).
func NewSender(opts Options) *Sender {
	opts.setDefaults()
	d := guardedDialer(opts.AllowPrivate, opts.Timeout)
	tr := &http.Transport{
		DialContext:           d.DialContext, // a refusal wraps ErrNotPublic
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   opts.Timeout,
		ResponseHeaderTimeout: opts.Timeout,
	}
	return &Sender{opts: opts, client: &http.Client{
		Transport: tr,
		Timeout:   opts.Timeout,
		// A redirect is not followed: the answer is the 3xx.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Close closes the Sender's idle connections.
func (s *Sender) Close() { s.client.CloseIdleConnections() }

// Send makes one attempt of m at endpoint, signed with key at now.
func (s *Sender) Send(ctx context.Context, endpoint string, key Key, m Message, now time.Time) Attempt {
	u, err := checkURL(endpoint, s.opts.AllowPrivate)
	if err != nil {
		return Attempt{Outcome: Final, Detail: err.Error()}
	}
	body, err := m.Body()
	if err != nil {
		return Attempt{Outcome: Final, Detail: err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return Attempt{Outcome: Final, Detail: "webhook url is not a URL"}
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", s.opts.UserAgent)
	h.Set("webhook-id", m.ID)
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("webhook-signature", key.Sign(m.ID, now, body))
	resp, err := s.client.Do(req)
	if err != nil {
		return failed(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	a := Attempt{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), now)}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		a.Outcome = Delivered
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		a.Outcome, a.Detail = Retry, "HTTP "+strconv.Itoa(c)
	default:
		a.Outcome, a.Detail = Final, "HTTP "+strconv.Itoa(c)
	}
	return a
}

// failed is the attempt that got no answer: final when the address is not
// public, else a retry.
func failed(err error) Attempt {
	var ne net.Error
	switch {
	case errors.Is(err, ErrNotPublic):
		return Attempt{Outcome: Final, Detail: ErrNotPublic.Error() + " (webhooks.allow_private allows it)"}
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return Attempt{Outcome: Retry, Detail: "no answer in time"}
	case errors.Is(err, context.Canceled):
		return Attempt{Outcome: Retry, Detail: "canceled"}
	}
	detail := "unreachable"
	if strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "x509:") {
		detail = "TLS handshake failed"
	}
	return Attempt{Outcome: Retry, Detail: detail}
}

// retryAfter reads a Retry-After in seconds or as an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 1 {
			return 0
		}
		if s > math.MaxInt64/int64(time.Second) {
			return math.MaxInt64
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Schedule is the wait before each retry, after the attempt before it:
// Schedule[0] before the first attempt, Schedule[n] before attempt n+1.
type Schedule []time.Duration

// DefaultSchedule is Svix's: immediately, 5 s, 5 min, 30 min, 2 h, 5 h,
// 10 h, 10 h (eight attempts over about 27 h 35 min).
func DefaultSchedule() Schedule {
	return Schedule{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
}

// Next is the wait before the next attempt after attempts attempts, the
// last answered with retryAfter; ok is false when the schedule is spent.
// A Retry-After longer than the schedule's wait is honoured up to the
// schedule's longest wait.
func (s Schedule) Next(attempts int, retryAfter time.Duration) (wait time.Duration, ok bool) {
	if attempts < 0 || attempts >= len(s) {
		return 0, false
	}
	return max(s[attempts], min(retryAfter, s.longest())), true
}

func (s Schedule) longest() time.Duration {
	var l time.Duration
	for _, d := range s {
		l = max(l, d)
	}
	return l
}
