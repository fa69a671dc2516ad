package dispatch

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

func TestWebhookSend(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		body       string
		retryAfter string
		wantID     string
		permanent  bool
		account    bool // a permanent error that blames the account (fails over)
		transient  bool
		retryWait  time.Duration
		detail     string
	}{
		{name: "sent", status: 200, body: `{"id":"m-1"}`, wantID: "m-1"},
		{name: "accepted", status: 202, body: `{"id":"m-2","extra":true}`, wantID: "m-2"},
		{name: "2xx without id may have been sent: not retried", status: 200, body: `{"ok":true}`, permanent: true, detail: "HTTP 200"},
		{name: "2xx garbage", status: 200, body: `<html>`, permanent: true, detail: "<html>"},
		{name: "rate limited", status: 429, body: `slow down`, retryAfter: "3", transient: true, retryWait: 3 * time.Second, detail: "HTTP 429: slow down"},
		{name: "server error", status: 503, body: `{"error":"maintenance"}`, transient: true, detail: "HTTP 503"},
		{name: "bad request", status: 400, body: `{"error":"invalid number"}`, permanent: true, detail: "invalid number"},
		{name: "unauthorized", status: 401, body: ``, permanent: true, account: true, detail: "HTTP 401"},
		{name: "forbidden", status: 403, body: `no`, permanent: true, account: true, detail: "HTTP 403: no"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got struct {
				sync.Mutex
				req  WebhookRequest
				hdr  http.Header
				seen bool
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got.Lock()
				_ = json.Unmarshal(b, &got.req)
				got.hdr = r.Header.Clone()
				got.seen = true
				got.Unlock()
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			wh, err := NewWebhook(WebhookConfig{URL: srv.URL + "/send", Headers: map[string]string{"Authorization": "Bearer s3cret"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := wh.Send(context.Background(), Message{Channel: schemas.ChannelSMS, To: "+96550001234", CommandID: "c-1", Text: "مرحبا"})
			got.Lock()
			defer got.Unlock()
			if !got.seen || got.req.To != "+96550001234" || got.req.Text != "مرحبا" || got.req.Channel != "sms" || got.req.CommandID != "c-1" {
				t.Errorf("server received %+v", got.req)
			}
			if got.hdr.Get("Authorization") != "Bearer s3cret" || got.hdr.Get("Idempotency-Key") != "c-1:sms" || got.hdr.Get("Content-Type") != "application/json" {
				t.Errorf("headers %v", got.hdr)
			}
			if tc.wantID != "" {
				if err != nil || rec.MessageID != tc.wantID {
					t.Fatalf("Send = %+v, %v", rec, err)
				}
				return
			}
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if IsAccountFault(err) != tc.account {
				t.Errorf("account fault = %v, want %v (%v)", IsAccountFault(err), tc.account, err)
			}
			if IsPermanent(err) != tc.permanent || (tc.transient && IsPermanent(err)) {
				t.Errorf("permanent = %v, want %v (%v)", IsPermanent(err), tc.permanent, err)
			}
			if retryAfter(err) != tc.retryWait {
				t.Errorf("retry after %s, want %s", retryAfter(err), tc.retryWait)
			}
			if d := errorDetail(err); !strings.Contains(d, tc.detail) || strings.Contains(d, "s3cret") {
				t.Errorf("detail %q, want it to contain %q and no secret", d, tc.detail)
			}
		})
	}
}

func TestWebhookUnreachableIsTransient(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	wh, err := NewWebhook(WebhookConfig{URL: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = wh.Send(context.Background(), Message{Channel: schemas.ChannelEmail, To: "a@b.co", CommandID: "c"})
	if err == nil || IsPermanent(err) {
		t.Fatalf("err = %v, want transient", err)
	}
}

func TestWebhookConfigValidate(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "not a url", "http://"} {
		if err := (WebhookConfig{URL: u}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "url:") {
			t.Errorf("URL %q: err = %v", u, err)
		}
	}
	if err := (WebhookConfig{URL: "https://gw.example.com/notify"}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestWebhookDetailRedacts: an answer that echoes the secret header, its
// token, or the contact (a phone without its '+', an email in another case
// or cut at the end of the kept text) never reaches the detail.
func TestWebhookDetailRedacts(t *testing.T) {
	cases := []struct {
		ch    schemas.Channel
		to    string
		body  string
		leaks []string
	}{
		{schemas.ChannelSMS, "+96550001234", `{"error":"bad token Bearer s3cr3t-TOKEN for 96550001234"}`, []string{"s3cr3t-TOKEN", "96550001234"}},
		{schemas.ChannelSMS, "+96550001234", `{"error":"token s3cr3t-TOKEN rejected"}`, []string{"s3cr3t-TOKEN"}},
		{schemas.ChannelEmail, "lina.haddad@example.com", `{"error":"no mailbox LINA.HADDAD@EXAMPLE.COM"}`, []string{"LINA.HADDAD", "lina.haddad"}},
		{schemas.ChannelEmail, "lina.haddad@example.com", `{"error":"` + strings.Repeat("x", 180) + ` lina.haddad@example.com"}`, []string{"lina.had"}},
	}
	for _, tc := range cases {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, tc.body)
		}))
		wh, err := NewWebhook(WebhookConfig{URL: srv.URL, Headers: map[string]string{"Authorization": "Bearer s3cr3t-TOKEN"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = wh.Send(context.Background(), Message{Channel: tc.ch, To: tc.to, CommandID: "c"})
		srv.Close()
		d := errorDetail(err)
		for _, leak := range tc.leaks {
			if strings.Contains(strings.ToLower(d), strings.ToLower(leak)) {
				t.Errorf("detail %q leaks %q", d, leak)
			}
		}
		if !strings.HasPrefix(d, "HTTP 401") {
			t.Errorf("detail %q", d)
		}
	}
}

func TestParseRetryAfterHuge(t *testing.T) {
	for _, v := range []string{"18446744074", "9223372037", "99999999999999"} {
		if got := parseRetryAfter(v); got < 24*time.Hour {
			t.Errorf("Retry-After %s = %s, want a very long wait", v, got)
		}
	}
	if got := parseRetryAfter("3"); got != 3*time.Second {
		t.Errorf("Retry-After 3 = %s", got)
	}
}
