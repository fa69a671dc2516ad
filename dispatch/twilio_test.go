package dispatch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

// outcome is what a Send should return.
type outcome struct {
	id        string        // success with this message id
	permanent bool          // else: the error's classification
	account   bool          // a permanent error that blames the account (fails over)
	retry     time.Duration // the error's RetryAfter
	detail    []string      // substrings of the error's detail
}

// checkOutcome checks Send's result against want, and that the detail
// holds none of the secrets nor the full number (with or without "+").
func checkOutcome(t *testing.T, rec Receipt, err error, want outcome, secret string) {
	t.Helper()
	if want.id != "" {
		if err != nil || rec.MessageID != want.id {
			t.Fatalf("Send = %+v, %v; want message id %q", rec, err, want.id)
		}
		return
	}
	if err == nil {
		t.Fatalf("Send = %+v, nil; want an error", rec)
	}
	var pe *ProviderError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v is not a *ProviderError", err)
	}
	if IsPermanent(err) != want.permanent {
		t.Errorf("permanent = %v, want %v (%v)", IsPermanent(err), want.permanent, err)
	}
	if IsAccountFault(err) != want.account {
		t.Errorf("account fault = %v, want %v (%v)", IsAccountFault(err), want.account, err)
	}
	if retryAfter(err) != want.retry {
		t.Errorf("RetryAfter = %s, want %s", retryAfter(err), want.retry)
	}
	d := errorDetail(err)
	for _, s := range want.detail {
		if !strings.Contains(d, s) {
			t.Errorf("detail %q does not contain %q", d, s)
		}
	}
	for _, s := range []string{secret, testPhone, strings.TrimPrefix(testPhone, "+")} {
		if strings.Contains(d, s) || strings.Contains(err.Error(), s) {
			t.Errorf("error %q holds %q", err.Error(), s)
		}
	}
}

const (
	twilioSID   = "AC0123456789abcdef0123456789abcdef"
	twilioToken = "tw-s3cret-token-9f8e7d6c5b4a"
	twilioFrom  = "+15005550006"
	// smsText has Arabic and characters that need form encoding.
	smsText = "تم استلام دفعتك للطلب ORD-1 بمبلغ 12.500 KWD. شكراً & أهلاً = 100% +"
)

func twilioErr(code, status int, msg string) string {
	return `{"code":` + strconv.Itoa(code) + `,"message":"` + msg + `","more_info":"https://www.twilio.com/docs/errors/` + strconv.Itoa(code) + `","status":` + strconv.Itoa(status) + `}`
}

func smsMessage() Message {
	return Message{Channel: schemas.ChannelSMS, To: testPhone, CommandID: "cmd-1", Text: smsText}
}

func TestTwilioSend(t *testing.T) {
	cases := []struct {
		name string
		ans  answer
		want outcome
	}{
		{"created", answer{status: 201, body: `{"sid":"SM0123456789abcdef","status":"queued","to":"` + testPhone + `"}`},
			outcome{id: "SM0123456789abcdef"}},
		{"200 with sid", answer{status: 200, body: `{"sid":"SMabc"}`}, outcome{id: "SMabc"}},

		// Transient: 429 and 5xx.
		{"rate limited with Retry-After", answer{status: 429, retryAfter: "7", body: twilioErr(20429, 429, "Too Many Requests")},
			outcome{retry: 7 * time.Second, detail: []string{"twilio 20429 (HTTP 429): Too Many Requests"}}},
		{"rate limited without Retry-After", answer{status: 429, body: twilioErr(20429, 429, "Too Many Requests")},
			outcome{detail: []string{"twilio 20429 (HTTP 429)"}}},
		{"code 20429 decides even on 400", answer{status: 400, body: twilioErr(20429, 400, "Too Many Requests")},
			outcome{detail: []string{"twilio 20429 (HTTP 400)"}}},
		{"internal error", answer{status: 500, body: twilioErr(20500, 500, "Internal Server Error")},
			outcome{detail: []string{"twilio 20500 (HTTP 500): Internal Server Error"}}},
		{"service unavailable with Retry-After", answer{status: 503, retryAfter: "2", body: twilioErr(20503, 503, "Service Unavailable")},
			outcome{retry: 2 * time.Second, detail: []string{"twilio 20503 (HTTP 503)"}}},

		// Permanent: other 4xx; the number Twilio echoes is masked.
		{"21211 invalid To", answer{status: 400, body: twilioErr(21211, 400, "The 'To' number "+testPhone+" is not a valid phone number.")},
			outcome{permanent: true, detail: []string{"twilio 21211 (HTTP 400): The 'To' number +965****1234 is not a valid phone number."}}},
		{"21614 not a mobile number", answer{status: 400, body: twilioErr(21614, 400, "'To' number is not a valid mobile number")},
			outcome{permanent: true, detail: []string{"twilio 21614 (HTTP 400): 'To' number is not a valid mobile number"}}},
		{"21612 cannot route", answer{status: 400, body: twilioErr(21612, 400, "The 'To' phone number: "+testPhone+", is not currently reachable using the 'From' phone number: "+twilioFrom+" via SMS.")},
			outcome{permanent: true, detail: []string{"twilio 21612 (HTTP 400)", "+965****1234"}}},
		{"21610 unsubscribed", answer{status: 400, body: twilioErr(21610, 400, "Attempt to send to unsubscribed recipient")},
			outcome{permanent: true, detail: []string{"twilio 21610 (HTTP 400): Attempt to send to unsubscribed recipient"}}},
		{"20003 bad credentials, token echoed", answer{status: 401, body: twilioErr(20003, 401, "Authenticate: bad token "+twilioToken)},
			outcome{permanent: true, account: true, detail: []string{"twilio 20003 (HTTP 401)", "bad token ***"}}},
		{"21606 From cannot send (account)", answer{status: 400, body: twilioErr(21606, 400, "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination/account")},
			outcome{permanent: true, account: true, detail: []string{"twilio 21606 (HTTP 400)"}}},
		{"30002 account suspended", answer{status: 400, body: twilioErr(30002, 400, "Account suspended")},
			outcome{permanent: true, account: true, detail: []string{"twilio 30002 (HTTP 400)"}}},
		{"403 without a code (account)", answer{status: 403, body: "forbidden"},
			outcome{permanent: true, account: true, detail: []string{"twilio (HTTP 403)"}}},
		{"a code without a message decides", answer{status: 400, body: `{"code":30002}`},
			outcome{permanent: true, account: true, detail: []string{"twilio 30002 (HTTP 400)"}}},
		{"a message without a code", answer{status: 400, body: `{"message":"Bad request"}`},
			outcome{permanent: true, detail: []string{"twilio (HTTP 400): Bad request"}}},
		{"number echoed without +", answer{status: 400, body: twilioErr(21211, 400, "Invalid To 96550001234")},
			outcome{permanent: true, detail: []string{"Invalid To +965****1234"}}},

		// Answers that are not Twilio's JSON.
		{"500 not JSON", answer{status: 500, body: "<html>Internal Server Error</html>"},
			outcome{detail: []string{"twilio (HTTP 500): <html>Internal Server Error</html>"}}},
		{"502 empty", answer{status: 502}, outcome{detail: []string{"twilio (HTTP 502)"}}},
		{"400 not JSON", answer{status: 400, body: "bad request"},
			outcome{permanent: true, detail: []string{"twilio (HTTP 400): bad request"}}},
		{"400 JSON of another shape", answer{status: 400, body: `["x"]`},
			outcome{permanent: true, detail: []string{"twilio (HTTP 400)"}}},
		{"201 not JSON", answer{status: 201, body: "<html>ok</html>"},
			outcome{permanent: true, detail: []string{"may have been sent", "HTTP 201", "<html>ok</html>"}}},
		{"201 without sid, number echoed", answer{status: 201, body: `{"status":"queued","to":"` + testPhone + `"}`},
			outcome{permanent: true, detail: []string{"HTTP 201", "+965****1234"}}},
		{"200 empty", answer{status: 200}, outcome{permanent: true, detail: []string{"HTTP 200"}}},
		{"200 empty sid", answer{status: 200, body: `{"sid":""}`}, outcome{permanent: true, detail: []string{"HTTP 200"}}},
		{"unexpected 3xx", answer{status: 304}, outcome{permanent: true, detail: []string{"HTTP 304"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, tc.ans)
			tw, err := NewTwilio(TwilioConfig{
				BaseURL: srv.URL, AccountSID: twilioSID, AuthToken: twilioToken,
				From: twilioFrom, StatusCallback: "https://notifyd.example.com/twilio/status",
			}, srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			rec, err := tw.Send(context.Background(), smsMessage())
			checkOutcome(t, rec, err, tc.want, twilioToken)

			r := srv.only(t)
			if r.method != http.MethodPost || r.path != "/2010-04-01/Accounts/"+twilioSID+"/Messages.json" {
				t.Errorf("request %s %s", r.method, r.path)
			}
			req := &http.Request{Header: r.header}
			if u, p, ok := req.BasicAuth(); !ok || u != twilioSID || p != twilioToken {
				t.Errorf("basic auth = %q, %q, %v", u, p, ok)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
				t.Errorf("Content-Type %q", ct)
			}
			form, err := url.ParseQuery(string(r.body))
			if err != nil {
				t.Fatalf("form %q: %v", r.body, err)
			}
			want := url.Values{
				"To": {testPhone}, "From": {twilioFrom}, "Body": {smsText},
				"StatusCallback": {"https://notifyd.example.com/twilio/status"},
			}
			if form.Encode() != want.Encode() {
				t.Errorf("form = %v, want %v", form, want)
			}
		})
	}
}

func TestTwilioMessagingServiceAndBasePath(t *testing.T) {
	srv := newFakeServer(t, answer{status: 201, body: `{"sid":"SMx"}`})
	tw, err := NewTwilio(TwilioConfig{
		BaseURL: srv.URL + "/proxy/", AccountSID: twilioSID, AuthToken: twilioToken,
		MessagingServiceSID: "MG0123456789abcdef0123456789abcdef",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Send(context.Background(), smsMessage()); err != nil {
		t.Fatal(err)
	}
	r := srv.only(t)
	if r.path != "/proxy/2010-04-01/Accounts/"+twilioSID+"/Messages.json" {
		t.Errorf("path %q", r.path)
	}
	form, _ := url.ParseQuery(string(r.body))
	want := url.Values{"To": {testPhone}, "MessagingServiceSid": {"MG0123456789abcdef0123456789abcdef"}, "Body": {smsText}}
	if form.Encode() != want.Encode() {
		t.Errorf("form = %v, want %v", form, want)
	}
}

func TestTwilioSlowAnswerIsTransient(t *testing.T) {
	srv := newFakeServer(t, answer{slow: true})
	tw, err := NewTwilio(TwilioConfig{BaseURL: srv.URL, AccountSID: twilioSID, AuthToken: twilioToken, From: twilioFrom}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = tw.Send(ctx, smsMessage())
	checkOutcome(t, Receipt{}, err, outcome{detail: []string{"twilio did not answer in time"}}, twilioToken)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
}

func TestTwilioConnectionRefusedIsTransient(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close()
	tw, err := NewTwilio(TwilioConfig{BaseURL: base, AccountSID: twilioSID, AuthToken: twilioToken, From: twilioFrom}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tw.Send(context.Background(), smsMessage())
	checkOutcome(t, Receipt{}, err, outcome{detail: []string{"twilio unreachable"}}, twilioToken)
	if strings.Contains(err.Error(), twilioSID) {
		t.Errorf("error %q names the request URL", err)
	}
}

func TestNewTwilioDefaults(t *testing.T) {
	tw, err := NewTwilio(TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken, From: twilioFrom}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://api.twilio.com/2010-04-01/Accounts/" + twilioSID + "/Messages.json"; tw.endpoint != want {
		t.Errorf("endpoint %q, want %q", tw.endpoint, want)
	}
	if tw.Name() != "twilio" || tw.client == nil {
		t.Errorf("Name %q, client %v", tw.Name(), tw.client)
	}
	if _, err := NewTwilio(TwilioConfig{AccountSID: twilioSID, From: twilioFrom}, nil); err == nil {
		t.Error("NewTwilio accepted a config without auth_token")
	}
}

func TestTwilioConfigValidate(t *testing.T) {
	ok := TwilioConfig{AccountSID: twilioSID, AuthToken: twilioToken, From: twilioFrom}
	cases := []struct {
		name   string
		edit   func(c *TwilioConfig)
		prefix string // "" means valid
	}{
		{"minimal", func(c *TwilioConfig) {}, ""},
		{"all fields", func(c *TwilioConfig) {
			c.BaseURL = "http://127.0.0.1:8080/twilio"
			c.StatusCallback = "https://notifyd.example.com/status"
		}, ""},
		{"messaging service instead of from", func(c *TwilioConfig) {
			c.From = ""
			c.MessagingServiceSID = "MG0123456789abcdef0123456789abcdef"
		}, ""},
		{"base_url not a URL", func(c *TwilioConfig) { c.BaseURL = "api.twilio.com" }, "base_url:"},
		{"base_url ftp", func(c *TwilioConfig) { c.BaseURL = "ftp://api.twilio.com" }, "base_url:"},
		{"base_url without host", func(c *TwilioConfig) { c.BaseURL = "https://" }, "base_url:"},
		{"no account_sid", func(c *TwilioConfig) { c.AccountSID = "" }, "account_sid:"},
		{"account_sid not AC", func(c *TwilioConfig) { c.AccountSID = "SK0123" }, "account_sid:"},
		{"account_sid with a slash", func(c *TwilioConfig) { c.AccountSID = "AC01/../x" }, "account_sid:"},
		{"no auth_token", func(c *TwilioConfig) { c.AuthToken = "" }, "auth_token:"},
		{"neither from nor messaging service", func(c *TwilioConfig) { c.From = "" }, "from:"},
		{"both from and messaging service", func(c *TwilioConfig) { c.MessagingServiceSID = "MG01" }, "from:"},
		{"status_callback not a URL", func(c *TwilioConfig) { c.StatusCallback = "/status" }, "status_callback:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			if tc.prefix == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.prefix) {
				t.Fatalf("Validate = %v, want %q...", err, tc.prefix)
			}
			if strings.Contains(err.Error(), twilioToken) {
				t.Errorf("error %q holds the token", err)
			}
		})
	}
}
