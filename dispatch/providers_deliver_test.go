package dispatch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"net/mail"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/notifyd/notifyd/schemas"
)

// These tests run Dispatcher.Deliver for a one-channel command against each
// real provider (SMTP, Twilio, Meta) talking to an in-process peer, and
// assert the delivery result together with what the peer received. They
// reuse the peers of smtp_test.go (smtpBackend, startSMTPServer) and
// twilio_test.go (fakeServer, answer, received).

// Retry policies of the delivery tests.
var (
	// deliveryPolicy is the default: three attempts, short backoffs, a
	// budget no case reaches. Used with the fake clock, so backoffs and
	// Retry-After waits are recorded, not slept.
	deliveryPolicy = RetryPolicy{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		MaxElapsed: 10 * time.Second, AttemptTimeout: 300 * time.Millisecond}
	// slowPolicy cuts each attempt after 100ms of real time, against peers
	// that take a second or more.
	slowPolicy = RetryPolicy{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		MaxElapsed: 10 * time.Second, AttemptTimeout: 100 * time.Millisecond}
	// budgetPolicy (real clock) allows five attempts of 100ms but only
	// 150ms in all: the first attempt times out at ~100ms, the wait before
	// the second is at most 10ms, the second is cut to what is left of the
	// budget (~40ms) and ends at the budget's end, so the next wait cannot
	// fit: two attempts, the budget named in the detail.
	budgetPolicy = RetryPolicy{MaxAttempts: 5, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		MaxElapsed: 150 * time.Millisecond, AttemptTimeout: 100 * time.Millisecond}
)

// What the default templates render for paidTxn in en.
const (
	deliverySubject = "Payment received for order ORD-1"
	deliveryText    = "We have received your payment of 12.500 KWD for order ORD-1. Thank you."
)

// deliveryRun says how a case runs the dispatcher.
type deliveryRun struct {
	// policy is the channel's retry policy; zero means deliveryPolicy.
	policy RetryPolicy
	// realClock runs the retry budget and backoffs on the real clock
	// instead of the fake one.
	realClock bool
	// between, with the fake clock, is called after the n-th failed
	// attempt, before the wait that precedes attempt n+1: peers use it to
	// change their answer from one attempt to the next.
	between func(n int)
}

// deliveryWant is the expected channel result.
type deliveryWant struct {
	status   schemas.ChannelStatus
	reason   schemas.Reason // "" when sent
	attempts int
	detail   []string // substrings of Detail; Detail must be empty when sent
	id       string   // ProviderMessageID when sent ("" for any non-empty id)
	// minWait, when positive, is the least each recorded retry wait must
	// be (the peer's Retry-After); otherwise each wait is a plain backoff
	// within [0, MaxBackoff].
	minWait time.Duration
}

// delivery is what deliverVia observed.
type delivery struct {
	result  schemas.DeliveryResult
	channel schemas.ChannelResult
	fake    bool            // the fake clock ran the retries
	waits   []time.Duration // the waits the fake clock recorded
}

// deliverVia delivers a command for channel ch of paidTxn through p.
func deliverVia(t *testing.T, ch schemas.Channel, p Provider, run deliveryRun) delivery {
	t.Helper()
	policy := run.policy
	if policy == (RetryPolicy{}) {
		policy = deliveryPolicy
	}
	d := newTestDispatcher(t, map[schemas.Channel]Provider{ch: p}, map[schemas.Channel]RetryPolicy{ch: policy}, nil)
	var clock *fakeClock
	if !run.realClock {
		clock = useFakeClock(d)
		if run.between != nil {
			failed := 0 // one channel: sleep is only called from its goroutine
			d.sleep = func(ctx context.Context, w time.Duration) error {
				failed++
				run.between(failed)
				return clock.Sleep(ctx, w)
			}
		}
	} else if run.between != nil {
		t.Fatal("between needs the fake clock")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*slowFallback)
	defer cancel()
	r := d.Deliver(ctx, command(ch), paidTxn())
	out := delivery{result: r}
	if len(r.Channels) != 1 {
		t.Fatalf("result has %d channels, want 1: %+v", len(r.Channels), r)
	}
	out.channel = channelResult(t, r, ch)
	if clock != nil {
		out.fake, out.waits = true, clock.Waits()
	}
	return out
}

// checkDelivery checks the channel result against want: status, reason,
// attempts, detail, provider, message id, the masked recipient, the
// result's outcome, the waits the fake clock recorded, and that the detail
// holds neither the full contact nor any of secrets.
func checkDelivery(t *testing.T, got delivery, provider string, policy RetryPolicy, want deliveryWant, secrets ...string) {
	t.Helper()
	c := got.channel
	if c.Status != want.status || c.Reason != want.reason || c.Attempts != want.attempts {
		t.Errorf("got %s/%s after %d attempts, want %s/%s after %d (detail %q)",
			c.Status, c.Reason, c.Attempts, want.status, want.reason, want.attempts, c.Detail)
	}
	if c.Provider != provider {
		t.Errorf("provider %q, want %q", c.Provider, provider)
	}
	contact := testPhone
	if c.Channel == schemas.ChannelEmail {
		contact = testEmail
	}
	if wantRecip := MaskRecipient(c.Channel, contact); c.Recipient != wantRecip || wantRecip == contact {
		t.Errorf("recipient %q, want %q", c.Recipient, wantRecip)
	}
	if want.status == schemas.StatusSent {
		if c.ProviderMessageID == "" || (want.id != "" && c.ProviderMessageID != want.id) {
			t.Errorf("provider_message_id %q, want %q", c.ProviderMessageID, want.id)
		}
		if c.Detail != "" {
			t.Errorf("detail %q on a sent channel", c.Detail)
		}
		if got.result.Outcome != schemas.OutcomeNotified {
			t.Errorf("outcome %s, want notified", got.result.Outcome)
		}
	} else {
		if c.ProviderMessageID != "" {
			t.Errorf("provider_message_id %q on a failed channel", c.ProviderMessageID)
		}
		if got.result.Outcome != schemas.OutcomeNotNotified {
			t.Errorf("outcome %s, want not_notified", got.result.Outcome)
		}
	}
	for _, s := range want.detail {
		if !strings.Contains(c.Detail, s) {
			t.Errorf("detail %q does not contain %q", c.Detail, s)
		}
	}
	leaks := append([]string{testEmail, testPhone, strings.TrimPrefix(testPhone, "+")}, secrets...)
	for _, s := range leaks {
		if s == "" {
			continue
		}
		for _, text := range []string{c.Detail, got.result.Message} {
			if strings.Contains(strings.ToLower(text), strings.ToLower(s)) {
				t.Errorf("%q holds %q", text, s)
			}
		}
	}
	if !got.fake {
		return // real clock: nothing recorded
	}
	// One wait between attempts: a case never ends while waiting.
	if len(got.waits) != max(c.Attempts-1, 0) {
		t.Errorf("waits %v after %d attempts, want %d", got.waits, c.Attempts, c.Attempts-1)
	}
	for i, w := range got.waits {
		switch {
		case want.minWait > 0 && w < want.minWait:
			t.Errorf("wait %d = %v, want at least the Retry-After %v", i+1, w, want.minWait)
		case want.minWait == 0 && (w < 0 || w > policy.MaxBackoff):
			t.Errorf("wait %d = %v, want a backoff within [0, %v]", i+1, w, policy.MaxBackoff)
		}
	}
}

func policyOf(run deliveryRun) RetryPolicy {
	if run.policy == (RetryPolicy{}) {
		return deliveryPolicy
	}
	return run.policy
}

// --- Twilio -----------------------------------------------------------------

func TestTwilioDelivery(t *testing.T) {
	const sid = "SM0123456789abcdef0123456789abcdef"
	created := answer{status: 201, body: `{"sid":"` + sid + `","status":"queued","to":"` + testPhone + `"}`}
	rejected := func(code int, msg string) answer { return answer{status: 400, body: twilioErr(code, 400, msg)} }
	sent := deliveryWant{status: schemas.StatusSent, attempts: 1, id: sid}
	unavailable := func(attempts int, detail ...string) deliveryWant {
		return deliveryWant{status: schemas.StatusFailed, reason: schemas.ReasonProviderUnavailable, attempts: attempts, detail: detail}
	}
	rejectedWant := func(detail ...string) deliveryWant {
		return deliveryWant{status: schemas.StatusFailed, reason: schemas.ReasonProviderRejected, attempts: 1,
			detail: append([]string{"provider rejected the message: "}, detail...)}
	}
	cases := []struct {
		name    string
		answers []answer // in turn, the last repeated
		down    bool     // nothing listening
		token   string   // configured auth token; "" = the peer's
		run     deliveryRun
		want    deliveryWant
		reqs    int // requests the peer received
	}{
		{name: "201 created", answers: []answer{created}, want: sent, reqs: 1},
		{name: "429 with Retry-After then 201",
			answers: []answer{{status: 429, retryAfter: "2", body: twilioErr(20429, 429, "Too Many Requests")}, created},
			want:    deliveryWant{status: schemas.StatusSent, attempts: 2, id: sid, minWait: 2 * time.Second}, reqs: 2},
		{name: "429 with a Retry-After beyond the budget",
			answers: []answer{{status: 429, retryAfter: "30", body: twilioErr(20429, 429, "Too Many Requests")}, created},
			want: unavailable(1, "provider unavailable after 1 attempt (next retry in 30s would pass the retry budget of 10s)",
				"twilio 20429 (HTTP 429): Too Many Requests"), reqs: 1},
		{name: "503 always", answers: []answer{{status: 503, body: twilioErr(20503, 503, "Service Unavailable")}},
			want: unavailable(3, "provider unavailable after 3 attempts: twilio 20503 (HTTP 503): Service Unavailable"), reqs: 3},
		{name: "500 then 201", answers: []answer{{status: 500, body: twilioErr(20500, 500, "Internal Server Error")}, created},
			want: deliveryWant{status: schemas.StatusSent, attempts: 2, id: sid}, reqs: 2},
		{name: "502 garbage always", answers: []answer{{status: 502, body: "<html><body>Bad Gateway</body></html>"}},
			want: unavailable(3, "twilio (HTTP 502): <html><body>Bad Gateway</body></html>"), reqs: 3},
		{name: "21211 invalid To, number echoed",
			answers: []answer{rejected(21211, "The 'To' number "+testPhone+" is not a valid phone number.")},
			want:    rejectedWant("twilio 21211 (HTTP 400): The 'To' number +965****1234 is not a valid phone number."), reqs: 1},
		{name: "21211 number echoed with spaces",
			answers: []answer{rejected(21211, "The 'To' number +965 5000 1234 is not a valid phone number.")},
			want:    rejectedWant("twilio 21211 (HTTP 400): The 'To' number +965****1234 is not a valid phone number."), reqs: 1},
		{name: "a proxy echoing the Authorization header",
			answers: []answer{{status: 400, body: "bad request; headers: Authorization: Basic " + basicOf(twilioSID, twilioToken)}},
			want:    rejectedWant("twilio (HTTP 400): bad request; headers: Authorization: Basic ***"), reqs: 1},
		{name: "21614 not a mobile number", answers: []answer{rejected(21614, "'To' number is not a valid mobile number")},
			want: rejectedWant("twilio 21614 (HTTP 400)"), reqs: 1},
		{name: "21612 cannot route, numbers echoed",
			answers: []answer{rejected(21612, "The 'To' phone number: "+testPhone+", is not currently reachable using the 'From' phone number: "+twilioFrom+" via SMS.")},
			want:    rejectedWant("twilio 21612 (HTTP 400)", "+965****1234"), reqs: 1},
		{name: "21610 unsubscribed", answers: []answer{rejected(21610, "Attempt to send to unsubscribed recipient")},
			want: rejectedWant("twilio 21610 (HTTP 400): Attempt to send to unsubscribed recipient"), reqs: 1},
		{name: "slow peer", answers: []answer{{slow: true}}, run: deliveryRun{policy: slowPolicy},
			want: unavailable(3, "provider unavailable after 3 attempts: twilio did not answer in time"), reqs: 3},
		{name: "slow peer, budget ends first", answers: []answer{{slow: true}},
			run:  deliveryRun{policy: budgetPolicy, realClock: true},
			want: unavailable(2, "provider unavailable after 2 attempts (", "retry budget of 150ms", "twilio did not answer in time"), reqs: 2},
		{name: "200 garbage", answers: []answer{{status: 200, body: "<html>ok</html>"}},
			want: rejectedWant("twilio answer without a message sid (may have been sent): HTTP 200: <html>ok</html>"), reqs: 1},
		{name: "201 without sid, number echoed", answers: []answer{{status: 201, body: `{"status":"queued","to":"` + testPhone + `"}`}},
			want: rejectedWant("HTTP 201", "+965****1234"), reqs: 1},
		{name: "wrong auth token", answers: []answer{created}, token: "wr0ng-tw-token-0000",
			want: rejectedWant("twilio 20003 (HTTP 401): Authenticate"), reqs: 1},
		{name: "peer down", down: true,
			want: unavailable(3, "provider unavailable after 3 attempts: twilio unreachable"), reqs: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var srv *fakeServer
			base := downURL()
			if !tc.down {
				srv = twilioPeer(t, tc.answers...)
				base = srv.URL
			}
			token := tc.token
			if token == "" {
				token = twilioToken
			}
			p, err := NewTwilio(TwilioConfig{BaseURL: base, AccountSID: twilioSID, AuthToken: token, From: twilioFrom}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := deliverVia(t, schemas.ChannelSMS, p, tc.run)
			checkDelivery(t, got, "twilio", policyOf(tc.run), tc.want, twilioToken, token, basicOf(twilioSID, twilioToken), "5000 1234")

			if srv == nil {
				return
			}
			reqs := srv.all()
			if len(reqs) != tc.reqs {
				t.Fatalf("peer received %d requests, want %d", len(reqs), tc.reqs)
			}
			if got.channel.Attempts != len(reqs) {
				t.Errorf("%d attempts but %d requests", got.channel.Attempts, len(reqs))
			}
			for i, r := range reqs {
				if r.method != http.MethodPost || r.path != "/2010-04-01/Accounts/"+twilioSID+"/Messages.json" {
					t.Errorf("request %d: %s %s", i, r.method, r.path)
				}
				if u, pw, ok := (&http.Request{Header: r.header}).BasicAuth(); !ok || u != twilioSID || pw != token {
					t.Errorf("request %d: basic auth %q/%q %v, want the SID and the configured token", i, u, pw, ok)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
					t.Errorf("request %d: Content-Type %q", i, ct)
				}
				form, err := url.ParseQuery(string(r.body))
				if err != nil {
					t.Fatalf("request %d: form %q: %v", i, r.body, err)
				}
				want := url.Values{"To": {testPhone}, "From": {twilioFrom}, "Body": {deliveryText}}
				if form.Encode() != want.Encode() {
					t.Errorf("request %d: form %v, want %v", i, form, want)
				}
			}
		})
	}
}

// --- Meta -------------------------------------------------------------------

func TestMetaDelivery(t *testing.T) {
	const wamid = "wamid.HBgLOTY1NTAwMDEyMzQVAgARGBI"
	ok := answer{status: 200, body: metaOK}
	unavailable := func(attempts int, detail ...string) deliveryWant {
		return deliveryWant{status: schemas.StatusFailed, reason: schemas.ReasonProviderUnavailable, attempts: attempts, detail: detail}
	}
	rejectedWant := func(detail ...string) deliveryWant {
		return deliveryWant{status: schemas.StatusFailed, reason: schemas.ReasonProviderRejected, attempts: 1,
			detail: append([]string{"provider rejected the message: "}, detail...)}
	}
	type row struct {
		name    string
		answers []answer
		down    bool
		token   string
		run     deliveryRun
		want    deliveryWant
		reqs    int
	}
	cases := []row{
		{name: "200 with a message id", answers: []answer{ok},
			want: deliveryWant{status: schemas.StatusSent, attempts: 1, id: wamid}, reqs: 1},
		{name: "130429 with Retry-After once then 200",
			answers: []answer{{status: 400, retryAfter: "1", body: metaErr(130429, "(#130429) Rate limit hit", "")}, ok},
			want:    deliveryWant{status: schemas.StatusSent, attempts: 2, id: wamid, minWait: time.Second}, reqs: 2},
		{name: "unlisted code with 503", answers: []answer{{status: 503, body: metaErr(1, "An unknown error occurred", "")}},
			want: unavailable(3, "provider unavailable after 3 attempts: meta 1 (HTTP 503): An unknown error occurred"), reqs: 3},
		{name: "unlisted code with 400", answers: []answer{{status: 400, body: metaErr(131009, "(#131009) Parameter value is not valid", "bad value")}},
			want: rejectedWant("meta 131009 (HTTP 400): (#131009) Parameter value is not valid: bad value"), reqs: 1},
		{name: "listed permanent code decides over 500", answers: []answer{{status: 500, body: metaErr(131026, "Message undeliverable", "")}},
			want: rejectedWant("meta 131026 (HTTP 500)"), reqs: 1},
		{name: "200 garbage", answers: []answer{{status: 200, body: "<html>ok</html>"}},
			want: rejectedWant("meta answer without a message id (may have been sent): HTTP 200: <html>ok</html>"), reqs: 1},
		{name: "200 without messages, number echoed",
			answers: []answer{{status: 200, body: `{"messaging_product":"whatsapp","contacts":[{"input":"` + testPhone + `","wa_id":"96550001234"}],"messages":[]}`}},
			want:    rejectedWant("HTTP 200", "+965****1234"), reqs: 1},
		{name: "500 garbage always", answers: []answer{{status: 500, body: "<html>oops</html>"}},
			want: unavailable(3, "meta (HTTP 500): <html>oops</html>"), reqs: 3},
		{name: "slow peer", answers: []answer{{slow: true}}, run: deliveryRun{policy: slowPolicy},
			want: unavailable(3, "provider unavailable after 3 attempts: meta did not answer in time"), reqs: 3},
		{name: "wrong access token", answers: []answer{ok}, token: "EAAG-wr0ng-token-0000",
			want: rejectedWant("meta 190 (HTTP 401): Invalid OAuth access token - Cannot parse access token"), reqs: 1},
		{name: "peer down", down: true, want: unavailable(3, "provider unavailable after 3 attempts: meta unreachable")},
	}
	for _, c := range []struct {
		code   int
		status int
		msg    string
	}{
		{131026, 400, "Message undeliverable"},
		{131047, 400, "Re-engagement message"},
		{131008, 400, "Required parameter is missing"},
		{132000, 400, "Number of parameters does not match the expected number of params"},
		{132001, 404, "Template name does not exist in the translation"},
		{100, 400, "Invalid parameter"},
		{190, 401, "Error validating access token: Session has expired"},
		{368, 403, "Temporarily blocked for policies violations"},
	} {
		code := strconv.Itoa(c.code)
		cases = append(cases, row{name: "permanent code " + code,
			answers: []answer{{status: c.status, body: metaErr(c.code, c.msg, "details of "+code+" for "+testPhone)}, ok},
			want:    rejectedWant("meta " + code + " (HTTP " + strconv.Itoa(c.status) + "): " + c.msg + ": details of " + code + " for +965****1234"),
			reqs:    1})
	}
	for _, c := range []struct {
		code       int
		status     int
		retryAfter string
		minWait    time.Duration
		msg        string
	}{
		{130429, 400, "1", time.Second, "(#130429) Rate limit hit"},
		{131056, 400, "", 0, "(Business Account, Consumer Account) pair rate limit hit"},
		{131000, 500, "", 0, "Something went wrong"},
		{2, 503, "2", 2 * time.Second, "Service temporarily unavailable"},
	} {
		code := strconv.Itoa(c.code)
		w := unavailable(3, "provider unavailable after 3 attempts: meta "+code+" (HTTP "+strconv.Itoa(c.status)+"): "+c.msg)
		w.minWait = c.minWait
		cases = append(cases, row{name: "transient code " + code + " always",
			answers: []answer{{status: c.status, retryAfter: c.retryAfter, body: metaErr(c.code, c.msg, "")}},
			want:    w, reqs: 3})
	}
	wantBody := MetaRequest{
		MessagingProduct: "whatsapp", To: testPhone, Type: "template",
		Template: MetaTemplate{Name: "payment_paid", Language: MetaLanguage{Code: "en_US"},
			Components: []MetaComponent{{Type: "body", Parameters: []MetaParameter{
				{Type: "text", Text: "Lina"}, {Type: "text", Text: "ORD-1"}, {Type: "text", Text: "12.500 KWD"},
			}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var srv *fakeServer
			base := downURL()
			if !tc.down {
				srv = metaPeer(t, tc.answers...)
				base = srv.URL
			}
			token := tc.token
			if token == "" {
				token = metaToken
			}
			p, err := NewMeta(MetaConfig{BaseURL: base, PhoneNumberID: metaPhoneID, AccessToken: token}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := deliverVia(t, schemas.ChannelWhatsApp, p, tc.run)
			checkDelivery(t, got, "meta", policyOf(tc.run), tc.want, metaToken, token)

			if srv == nil {
				return
			}
			reqs := srv.all()
			if len(reqs) != tc.reqs {
				t.Fatalf("peer received %d requests, want %d", len(reqs), tc.reqs)
			}
			if got.channel.Attempts != len(reqs) {
				t.Errorf("%d attempts but %d requests", got.channel.Attempts, len(reqs))
			}
			for i, r := range reqs {
				if r.method != http.MethodPost || r.path != "/v21.0/"+metaPhoneID+"/messages" {
					t.Errorf("request %d: %s %s", i, r.method, r.path)
				}
				if a := r.header.Get("Authorization"); a != "Bearer "+token {
					t.Errorf("request %d: Authorization %q, want the configured token", i, a)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("request %d: Content-Type %q", i, ct)
				}
				var body MetaRequest
				if err := json.Unmarshal(r.body, &body); err != nil {
					t.Fatalf("request %d: body %s: %v", i, r.body, err)
				}
				if !reflect.DeepEqual(body, wantBody) {
					t.Errorf("request %d: body %s\n got %+v\nwant %+v", i, r.body, body, wantBody)
				}
			}
		})
	}
}

// --- SMTP -------------------------------------------------------------------

func TestSMTPDelivery(t *testing.T) {
	smtpErr := func(code int, enh gosmtp.EnhancedCode, msg string) *gosmtp.SMTPError {
		return &gosmtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}
	}
	tempRcpt := smtpErr(451, gosmtp.EnhancedCode{4, 3, 0}, "Mailbox temporarily unavailable, try later")
	unavailable := func(attempts int, detail ...string) deliveryWant {
		return deliveryWant{status: schemas.StatusFailed, reason: schemas.ReasonProviderUnavailable, attempts: attempts, detail: detail}
	}
	rejectedWant := func(detail ...string) deliveryWant {
		return deliveryWant{status: schemas.StatusFailed, reason: schemas.ReasonProviderRejected, attempts: 1,
			detail: append([]string{"provider rejected the message: "}, detail...)}
	}
	sent := func(attempts int) deliveryWant {
		return deliveryWant{status: schemas.StatusSent, attempts: attempts}
	}
	// Checks of the sessions the server saw.
	noData := func(t *testing.T, s []smtpSession) {
		for i, got := range s {
			if len(got.RcptTo) != 1 || got.RcptTo[0] != testEmail || got.Data != nil {
				t.Errorf("session %d: RCPT %q and %d data bytes, want one RCPT to the customer and no DATA", i, got.RcptTo, len(got.Data))
			}
		}
	}
	cases := []struct {
		name      string
		be        *smtpBackend // nil: see down and silent
		down      bool         // nothing listening
		silent    bool         // a server that accepts and never answers
		password  string       // AUTH with this password ("": no AUTH)
		healAfter int          // the server stops failing after this many failed attempts
		run       deliveryRun
		want      deliveryWant
		sessions  int // sessions (connections) the server saw
		check     func(t *testing.T, s []smtpSession)
	}{
		{name: "accepted", be: &smtpBackend{}, want: sent(1), sessions: 1},
		{name: "accepted after AUTH PLAIN", be: &smtpBackend{Mechs: []string{"PLAIN"}, RequireAuth: true}, password: smtpTestPass,
			want: sent(1), sessions: 1,
			check: func(t *testing.T, s []smtpSession) {
				if s[0].AuthMech != "PLAIN" || s[0].AuthUser != smtpTestUser || s[0].AuthPass != smtpTestPass {
					t.Errorf("AUTH %s %q/%q", s[0].AuthMech, s[0].AuthUser, s[0].AuthPass)
				}
			}},
		{name: "451 at RCPT once then accepted", be: &smtpBackend{FailRcpt: tempRcpt}, healAfter: 1,
			want: sent(2), sessions: 2,
			check: func(t *testing.T, s []smtpSession) {
				noData(t, s[:1])
				if s[1].Data == nil {
					t.Error("the second session got no message")
				}
			}},
		{name: "451 at DATA once then accepted, same Message-ID",
			be:        &smtpBackend{FailData: smtpErr(451, gosmtp.EnhancedCode{4, 3, 0}, "Local error in processing")},
			healAfter: 1, want: sent(2), sessions: 2,
			check: func(t *testing.T, s []smtpSession) {
				h0, _, _ := parseReceived(t, s[0].Data)
				h1, _, _ := parseReceived(t, s[1].Data)
				if id := h0.Get("Message-ID"); id == "" || id != h1.Get("Message-ID") {
					t.Errorf("Message-IDs %q and %q, want one for both attempts", id, h1.Get("Message-ID"))
				}
			}},
		{name: "451 at RCPT always", be: &smtpBackend{FailRcpt: tempRcpt},
			want:     unavailable(3, "provider unavailable after 3 attempts: smtp 451: 4.3.0 Mailbox temporarily unavailable, try later"),
			sessions: 3, check: noData},
		{name: "421 at MAIL always", be: &smtpBackend{FailMail: smtpErr(421, gosmtp.EnhancedCode{4, 7, 0}, "Too many connections")},
			want: unavailable(3, "provider unavailable after 3 attempts: smtp 421"), sessions: 3,
			check: func(t *testing.T, s []smtpSession) {
				for i, got := range s {
					if got.MailFrom != "receipts@shop.example" || got.RcptTo != nil {
						t.Errorf("session %d: MAIL %q RCPT %q", i, got.MailFrom, got.RcptTo)
					}
				}
			}},
		{name: "550 at RCPT, recipient echoed",
			be:   &smtpBackend{FailRcpt: smtpErr(550, gosmtp.EnhancedCode{5, 1, 1}, "<Lina.Haddad@Example.com>: mailbox unavailable")},
			want: rejectedWant("smtp 550: 5.1.1 <l***@example.com>: mailbox unavailable"), sessions: 1, check: noData},
		{name: "554 at DATA", be: &smtpBackend{FailData: smtpErr(554, gosmtp.EnhancedCode{5, 6, 0}, "Message rejected as spam")},
			want: rejectedWant("smtp 554: 5.6.0 Message rejected as spam"), sessions: 1,
			check: func(t *testing.T, s []smtpSession) {
				if !bytes.Contains(s[0].Data, []byte("Subject: "+deliverySubject)) {
					t.Errorf("server rejected a message it did not get: %q", s[0].Data)
				}
			}},
		{name: "535 wrong password", be: &smtpBackend{Mechs: []string{"PLAIN"}, RequireAuth: true}, password: "wr0ng-Pa55word",
			want: rejectedWant("smtp 535: 5.7.8 Authentication failed"), sessions: 1,
			check: func(t *testing.T, s []smtpSession) {
				if s[0].AuthPass != "wr0ng-Pa55word" || s[0].MailFrom != "" {
					t.Errorf("AUTH %q MAIL %q", s[0].AuthPass, s[0].MailFrom)
				}
			}},
		{name: "server down", down: true,
			want: unavailable(3, "provider unavailable after 3 attempts: smtp server unreachable")},
		{name: "silent server", silent: true, run: deliveryRun{policy: slowPolicy},
			want: unavailable(3, "provider unavailable after 3 attempts: smtp timed out during greeting"), sessions: 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var (
				port    int
				counted func() int
			)
			switch {
			case tc.down:
				port = downSMTPPort(t)
			case tc.silent:
				port, counted = silentSMTPPeer(t)
			default:
				port, _ = startSMTPServer(t, tc.be, SMTPTLSNone)
			}
			cfg := SMTPConfig{Port: port, TLS: SMTPTLSNone}
			if tc.password != "" {
				cfg.Username, cfg.Password = smtpTestUser, tc.password
			}
			p := newTestSMTP(t, cfg)
			run := tc.run
			if tc.healAfter > 0 {
				run.between = func(n int) {
					if n == tc.healAfter {
						tc.be.mu.Lock()
						tc.be.FailMail, tc.be.FailRcpt, tc.be.FailData = nil, nil, nil
						tc.be.mu.Unlock()
					}
				}
			}
			got := deliverVia(t, schemas.ChannelEmail, p, run)
			checkDelivery(t, got, "smtp", policyOf(tc.run), tc.want, smtpTestPass, tc.password)
			c := got.channel

			switch {
			case tc.down:
				return
			case tc.silent:
				if n := counted(); n != tc.sessions {
					t.Errorf("server accepted %d connections, want %d", n, tc.sessions)
				}
				return
			}
			s := tc.be.snapshot()
			if len(s) != tc.sessions {
				t.Fatalf("server saw %d sessions, want %d", len(s), tc.sessions)
			}
			if c.Attempts != len(s) {
				t.Errorf("%d attempts but %d sessions", c.Attempts, len(s))
			}
			if tc.check != nil {
				tc.check(t, s)
			}
			if c.Status != schemas.StatusSent {
				return
			}
			// The message the server took: the result's id is its
			// Message-ID without brackets.
			last := s[len(s)-1]
			if last.MailFrom != "receipts@shop.example" || len(last.RcptTo) != 1 || last.RcptTo[0] != testEmail {
				t.Errorf("MAIL %q RCPT %q", last.MailFrom, last.RcptTo)
			}
			if !messageIDPattern.MatchString(c.ProviderMessageID) {
				t.Errorf("provider_message_id %q, want <uuid>@shop.example without brackets", c.ProviderMessageID)
			}
			h, mediaType, parts := parseReceived(t, last.Data)
			if id := h.Get("Message-ID"); id != "<"+c.ProviderMessageID+">" {
				t.Errorf("Message-ID %q, provider_message_id %q", id, c.ProviderMessageID)
			}
			if to, err := mail.ParseAddress(h.Get("To")); err != nil || to.Address != testEmail {
				t.Errorf("To %q: %v, %v", h.Get("To"), to, err)
			}
			if subj, err := new(mime.WordDecoder).DecodeHeader(h.Get("Subject")); err != nil || subj != deliverySubject {
				t.Errorf("Subject %q (%v), want %q", subj, err, deliverySubject)
			}
			if mediaType != "multipart/alternative" || len(parts) != 2 || parts[0].ContentType != "text/plain" ||
				!strings.Contains(strings.ReplaceAll(parts[0].Body, "\r\n", "\n"), deliveryText) ||
				parts[1].ContentType != "text/html" || !strings.Contains(parts[1].Body, deliveryText) {
				t.Errorf("body %s %+v, want text and HTML with %q", mediaType, parts, deliveryText)
			}
		})
	}
}

// basicOf is what an HTTP Basic Authorization header carries for user and
// password.
func basicOf(user, password string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
}
