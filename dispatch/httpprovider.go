package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/notifyd/notifyd/schemas"
)

// This file holds what the HTTP providers (webhook, Twilio, Meta) share:
// the client that never follows redirects, one call and its answer
// (doHTTP), the one retry classification of an HTTP status (retryable:
// 429 and 5xx), the one URL scrubber (withoutURL), Retry-After, and the
// start of an answer for details.

// maxAnswerBytes bounds how much of a provider's answer is read.
const maxAnswerBytes = 64 << 10

// providerClient returns the client an HTTP provider sends with: client (a
// copy of it) or, when nil, a client without its own timeout (each attempt
// is bounded by the retry policy's attempt_timeout); in both, redirects are
// never followed. A provider is called at the address configured, never at
// one its answer names: following a 3xx would send the message (the
// customer's contact, the text) and the credential headers to another
// address. The 3xx is the answer: see httpAccountStatus.
func providerClient(client *http.Client) *http.Client {
	c := &http.Client{}
	if client != nil {
		*c = *client
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return errRedirect }
	return c
}

// errRedirect is what providerClient's CheckRedirect returns: the client
// then hands back the 3xx answer itself (http.ErrUseLastResponse), body
// unread, rather than an error.
var errRedirect = http.ErrUseLastResponse

// httpAnswer is a provider's HTTP answer: its status, the Retry-After it
// asked for (0 when none) and the start of its body.
type httpAnswer struct {
	status     int
	retryAfter time.Duration
	body       []byte
}

// success reports whether the answer has a 2xx status.
func (a httpAnswer) success() bool { return a.status >= 200 && a.status < 300 }

// retryable reports whether the status alone calls for a retry: 429 and
// 5xx.
func (a httpAnswer) retryable() bool {
	return a.status == http.StatusTooManyRequests || a.status >= 500
}

// doHTTP sends req with client and reads at most maxAnswerBytes of the
// answer. Failing to get an answer at all (connection refused, DNS, TLS, the
// attempt's ctx ending) is a transient *ProviderError whose detail names
// provider; neither it nor the wrapped error holds the request URL or its
// headers. A body that cannot be read to the end is kept as far as it was
// read: callers must treat it like any other unparseable answer.
func doHTTP(client *http.Client, req *http.Request, provider string) (httpAnswer, error) {
	resp, err := client.Do(req)
	if err != nil {
		what := provider + " unreachable"
		var ne net.Error
		switch {
		case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
			what = provider + " did not answer in time"
		case errors.Is(err, context.Canceled):
			what = provider + " request canceled"
		}
		return httpAnswer{}, Transient(what, 0, withoutURL(err))
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	return httpAnswer{
		status:     resp.StatusCode,
		retryAfter: parseRetryAfter(resp.Header.Get("Retry-After")),
		body:       raw,
	}, nil
}

// withoutURL drops the request URL from a *url.Error (it may hold a
// credential in its query), keeping the cause in the chain (so
// errors.Is(err, context.DeadlineExceeded) still holds).
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// redactFor prepares text a provider sent back for a ProviderError detail:
// r hides the provider's secrets and the recipient to (a contact of channel
// ch) in every form it knows, and only then is the text cut to bodyStart's
// length on one line, so a contact or secret straddling the cut cannot
// leave a readable prefix.
func redactFor(r *Redactor, ch schemas.Channel, text []byte, to string) string {
	return bodyStart([]byte(r.Text(ch, to, string(text))))
}

// isHTTPURL reports whether s is an absolute http or https URL with a
// host.
func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// bodyStart returns the first 200 bytes of a body as one line of text.
func bodyStart(b []byte) string {
	const n = 200
	if len(b) > n {
		b = b[:n]
		for len(b) > 0 && !utf8.Valid(b) {
			b = b[:len(b)-1]
		}
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// parseRetryAfter reads a Retry-After header in seconds or as an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && s > 0 {
		if s > math.MaxInt64/int64(time.Second) {
			return math.MaxInt64 // "never": the retry budget gives up
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}
