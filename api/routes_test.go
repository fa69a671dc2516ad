package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/internal/testkit"
	"github.com/notifyd/notifyd/schemas"
)

// panickingResults, panickingSignOuts and panickingReceipts panic where
// the merchant API, the console and the callbacks call them.
type panickingResults struct{ *memoryKafka }

func (panickingResults) Result(string) ([]byte, bool, error) { panic("results exploded") }

type panickingSignOuts struct{ *memorySignOuts }

func (panickingSignOuts) SessionsEnded(string) (time.Time, error) { panic("sign-outs exploded") }

type panickingReceipts struct{}

func (panickingReceipts) RecordReceipt(context.Context, schemas.DeliveryEvent, string, []string) error {
	panic("receipts exploded")
}

// TestPanicAnsweredOnEveryRoute: a panic in a handler of the merchant
// API, of the console or of a callback is answered 500 with the API's
// detail, logged, written on the access line and counted as a 500.
func TestPanicAnsweredOnEveryRoute(t *testing.T) {
	f := newConsoleFixture(t)
	cookie := f.signedIn("ops", "ops pass")
	var logs testkit.SyncBuffer
	reg := prometheus.NewRegistry()
	deps := f.deps
	deps.Results = panickingResults{f.kafka}
	deps.SignOuts = panickingSignOuts{f.signOuts}
	deps.Receipts = panickingReceipts{}
	deps.Registerer = reg
	deps.Callbacks = map[string]dispatch.ReceiptVerifier{"twilio": dispatch.TwilioReceipts{AuthTokens: map[string]string{testAccountSID: testAuthToken}}}
	cfg := f.cfg
	cfg.PublicURL = testPublicURL
	s, err := New(cfg, deps, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	status := httptest.NewRequest(http.MethodGet, PathNotifications+"cmd-1/", nil)
	status.Header.Set("Authorization", "Api-Key "+fixtureKey)
	page := httptest.NewRequest(http.MethodGet, "/console/txn?session_id=s-1", nil)
	page.Header.Set("Cookie", cookie)
	for name, r := range map[string]*http.Request{
		"merchant API": status,
		"console":      page,
		"callback":     twilioCallback(testAuthToken, testPublicURL+PathCallbackTwilio, twilioParams("delivered")),
	} {
		code, body := do(h, r)
		var d detail
		if code != http.StatusInternalServerError || json.Unmarshal([]byte(body), &d) != nil || d.Detail != "Internal error." {
			t.Errorf("%s: a panic answered %d %s, want 500 Internal error.", name, code, body)
		}
	}
	if n := strings.Count(logs.String(), `"msg":"api handler panicked"`); n != 3 {
		t.Errorf("%d panics logged, want 3:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), `"msg":"api request"`); n != 3 {
		t.Errorf("%d access lines, want 3", n)
	}
	if n := strings.Count(logs.String(), `"status":500`); n != 3 {
		t.Errorf("%d access lines with status 500, want 3", n)
	}
	if got, _ := testkit.Metric(t, reg, "notifyd_api_requests_total", map[string]string{"code": "500"}); got != 3 {
		t.Errorf("notifyd_api_requests_total{code=500} = %v, want 3", got)
	}
}

// TestRoutesLiteral: the merchant API's paths are matched literally, as
// the gateway's are: a command_id "." or ".." (an Idempotency-Key may be
// one) is looked up, not a step up the path; an escaped '/' stays in the
// command_id; an empty segment names nothing; a method a route does not
// take is answered 405 after authentication.
func TestRoutesLiteral(t *testing.T) {
	f := newConsoleFixture(t)
	for _, tc := range []struct {
		method, path string
		auth         bool
		want         int
	}{
		{http.MethodGet, PathNotifications + "./", false, http.StatusUnauthorized},
		{http.MethodGet, PathNotifications + "./", true, http.StatusNotFound},
		{http.MethodGet, PathNotifications + "../", false, http.StatusUnauthorized},
		{http.MethodGet, PathNotifications + "a%2F..%2Fb/", false, http.StatusUnauthorized},
		{http.MethodGet, PathNotifications + "a/b/", false, http.StatusNotFound},
		{http.MethodGet, PathNotifications + "/", false, http.StatusNotFound},
		{http.MethodGet, "/b/pbl//v2/message-notification/", false, http.StatusNotFound},
		{http.MethodPut, PathNotifications, false, http.StatusUnauthorized},
		{http.MethodPut, PathNotifications, true, http.StatusMethodNotAllowed},
		{http.MethodPost, PathNotifications + "x/", true, http.StatusMethodNotAllowed},
		{http.MethodPost, PathOpenAPI, false, http.StatusMethodNotAllowed},
		{http.MethodHead, PathOpenAPI, false, http.StatusOK},
	} {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		if tc.auth {
			r.Header.Set("Authorization", "Api-Key "+fixtureKey)
		}
		if code, body := do(f.handler, r); code != tc.want {
			t.Errorf("%s %s (auth %v): %d %s, want %d", tc.method, tc.path, tc.auth, code, body, tc.want)
		}
	}
}
