package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/schemas"
)

const (
	metaPhoneID = "106540352242922"
	metaToken   = "EAAG-s3cret-access-token-0123456789"
)

// metaParams are template parameters in Arabic, passed through unchanged.
var metaParams = []string{"لينا", "12.500 KWD", "الطلب رقم ORD-1 <b>&</b>"}

func waMessage() Message {
	return Message{
		Channel: schemas.ChannelWhatsApp, To: testPhone, CommandID: "cmd-1",
		WhatsApp: &WhatsAppTemplate{Name: "payment_paid", Language: "ar", Params: metaParams},
	}
}

// metaErr is a Graph API error body.
func metaErr(code int, msg, details string) string {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": msg, "type": "OAuthException", "code": code,
		"error_data": map[string]any{"messaging_product": "whatsapp", "details": details},
		"fbtrace_id": "AbCdEfGh123",
	}})
	return string(b)
}

const metaOK = `{"messaging_product":"whatsapp","contacts":[{"input":"` + testPhone + `","wa_id":"96550001234"}],"messages":[{"id":"wamid.HBgLOTY1NTAwMDEyMzQVAgARGBI","message_status":"accepted"}]}`

func TestMetaSend(t *testing.T) {
	type row struct {
		name string
		ans  answer
		want outcome
	}
	cases := []row{
		{"sent", answer{status: 200, body: metaOK}, outcome{id: "wamid.HBgLOTY1NTAwMDEyMzQVAgARGBI"}},

		// Status rules for answers without a listed code.
		{"unlisted code 400", answer{status: 400, body: metaErr(131009, "(#131009) Parameter value is not valid", "bad value")},
			outcome{permanent: true, detail: []string{"meta 131009 (HTTP 400): (#131009) Parameter value is not valid: bad value"}}},
		{"unlisted code 503", answer{status: 503, body: metaErr(1, "An unknown error occurred", "")},
			outcome{detail: []string{"meta 1 (HTTP 503): An unknown error occurred"}}},
		{"unlisted code 429 with Retry-After", answer{status: 429, retryAfter: "3", body: metaErr(80007, "Rate limit issues", "")},
			outcome{retry: 3 * time.Second, detail: []string{"meta 80007 (HTTP 429)"}}},
		{"listed permanent code decides over 500", answer{status: 500, body: metaErr(131026, "Message undeliverable", "")},
			outcome{permanent: true, detail: []string{"meta 131026 (HTTP 500)"}}},
		{"error_data as a string", answer{status: 400, body: `{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100,"error_data":"x","fbtrace_id":"A"}}`},
			outcome{permanent: true, detail: []string{"meta 100 (HTTP 400): (#100) Invalid parameter"}}},
		{"error without code", answer{status: 502, body: `{"error":{"message":"Bad gateway"}}`},
			outcome{detail: []string{"meta (HTTP 502): Bad gateway"}}},
		{"a listed code without a message decides over 500", answer{status: 500, body: `{"error":{"code":131026}}`},
			outcome{permanent: true, detail: []string{"meta 131026 (HTTP 500)"}}},

		// Echoed secrets and numbers.
		{"190 echoes the token", answer{status: 401, body: metaErr(190, "Malformed access token "+metaToken, "")},
			outcome{permanent: true, account: true, detail: []string{"meta 190 (HTTP 401): Malformed access token ***"}}},
		{"131026 echoes the number", answer{status: 400, body: metaErr(131026, "Message undeliverable", "Recipient 96550001234 ("+testPhone+") cannot be reached")},
			outcome{permanent: true, detail: []string{"meta 131026 (HTTP 400): Message undeliverable: Recipient +965****1234 (+965****1234) cannot be reached"}}},

		// Answers that are not Graph JSON.
		{"500 not JSON", answer{status: 500, body: "<html>oops</html>"},
			outcome{detail: []string{"meta (HTTP 500): <html>oops</html>"}}},
		{"500 JSON of another shape", answer{status: 500, body: `{"foo":1}`},
			outcome{detail: []string{"meta (HTTP 500)"}}},
		{"400 not JSON", answer{status: 400, body: "bad request"},
			outcome{permanent: true, detail: []string{"meta (HTTP 400): bad request"}}},
		{"200 not JSON", answer{status: 200, body: "<html>ok</html>"},
			outcome{permanent: true, detail: []string{"may have been sent", "HTTP 200", "<html>ok</html>"}}},
		{"200 without messages, number echoed", answer{status: 200, body: `{"messaging_product":"whatsapp","contacts":[{"input":"` + testPhone + `","wa_id":"96550001234"}],"messages":[]}`},
			outcome{permanent: true, detail: []string{"HTTP 200", "+965****1234"}}},
		{"200 with empty id", answer{status: 200, body: `{"messages":[{"id":""}]}`},
			outcome{permanent: true, detail: []string{"HTTP 200"}}},
		{"201 empty", answer{status: 201}, outcome{permanent: true, detail: []string{"HTTP 201"}}},
	}
	for _, c := range []struct {
		code    int
		status  int
		msg     string
		account bool
	}{
		{131026, 400, "Message undeliverable", false},
		{131047, 400, "Re-engagement message", false},
		{131008, 400, "Required parameter is missing", false},
		{132000, 400, "Number of parameters does not match the expected number of params", false},
		{132001, 404, "Template name does not exist in the translation", true},
		{100, 400, "Invalid parameter", false},
		{190, 401, "Access token has expired", true},
		{368, 403, "Temporarily blocked for policies violations", true},
		{131031, 400, "Business Account locked", true},
		{131042, 400, "Business eligibility payment issue", true},
	} {
		cases = append(cases, row{"permanent code " + strconv.Itoa(c.code),
			answer{status: c.status, body: metaErr(c.code, c.msg, "details of "+strconv.Itoa(c.code))},
			outcome{permanent: true, account: c.account, detail: []string{"meta " + strconv.Itoa(c.code) + " (HTTP " + strconv.Itoa(c.status) + "): " + c.msg + ": details of " + strconv.Itoa(c.code)}}})
	}
	for _, c := range []struct {
		code       int
		status     int
		retryAfter string
		retry      time.Duration
		msg        string
	}{
		{130429, 400, "5", 5 * time.Second, "(#130429) Rate limit hit"},
		{131056, 400, "", 0, "(Business Account, Consumer Account) pair rate limit hit"},
		{131000, 500, "", 0, "Something went wrong"},
		{2, 503, "1", time.Second, "Service temporarily unavailable"},
	} {
		cases = append(cases, row{"transient code " + strconv.Itoa(c.code),
			answer{status: c.status, retryAfter: c.retryAfter, body: metaErr(c.code, c.msg, "")},
			outcome{retry: c.retry, detail: []string{"meta " + strconv.Itoa(c.code) + " (HTTP " + strconv.Itoa(c.status) + "): " + c.msg}}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, tc.ans)
			p, err := NewMeta(MetaConfig{BaseURL: srv.URL, PhoneNumberID: metaPhoneID, AccessToken: metaToken}, srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			rec, err := p.Send(context.Background(), waMessage())
			checkOutcome(t, rec, err, tc.want, metaToken)

			r := srv.only(t)
			if r.method != http.MethodPost || r.path != "/v21.0/"+metaPhoneID+"/messages" {
				t.Errorf("request %s %s", r.method, r.path)
			}
			if a := r.header.Get("Authorization"); a != "Bearer "+metaToken {
				t.Errorf("Authorization %q", a)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var got MetaRequest
			if err := json.Unmarshal(r.body, &got); err != nil {
				t.Fatalf("body %s: %v", r.body, err)
			}
			want := MetaRequest{
				MessagingProduct: "whatsapp", To: testPhone, Type: "template",
				Template: MetaTemplate{Name: "payment_paid", Language: MetaLanguage{Code: "ar"},
					Components: []MetaComponent{{Type: "body", Parameters: []MetaParameter{
						{Type: "text", Text: metaParams[0]}, {Type: "text", Text: metaParams[1]}, {Type: "text", Text: metaParams[2]},
					}}}},
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("body %s\n got %+v\nwant %+v", r.body, got, want)
			}
		})
	}
}

func TestMetaTemplateWithoutParams(t *testing.T) {
	srv := newFakeServer(t, answer{status: 200, body: metaOK})
	p, err := NewMeta(MetaConfig{BaseURL: srv.URL + "/graph/", APIVersion: "v19.0", PhoneNumberID: metaPhoneID, AccessToken: metaToken}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := waMessage()
	m.WhatsApp = &WhatsAppTemplate{Name: "hello_world", Language: "en_US"}
	if _, err := p.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	r := srv.only(t)
	if r.path != "/graph/v19.0/"+metaPhoneID+"/messages" {
		t.Errorf("path %q", r.path)
	}
	var got map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"messaging_product": "whatsapp", "to": testPhone, "type": "template",
		"template": map[string]any{"name": "hello_world", "language": map[string]any{"code": "en_US"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body %s, want %v", r.body, want)
	}
}

func TestMetaWithoutTemplateIsPermanent(t *testing.T) {
	srv := newFakeServer(t, answer{status: 200, body: metaOK})
	p, err := NewMeta(MetaConfig{BaseURL: srv.URL, PhoneNumberID: metaPhoneID, AccessToken: metaToken}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := waMessage()
	m.WhatsApp = nil
	_, err = p.Send(context.Background(), m)
	checkOutcome(t, Receipt{}, err, outcome{permanent: true, detail: []string{"no whatsapp template"}}, metaToken)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.reqs) != 0 {
		t.Errorf("server received %d requests", len(srv.reqs))
	}
}

func TestMetaSlowAnswerIsTransient(t *testing.T) {
	srv := newFakeServer(t, answer{slow: true})
	p, err := NewMeta(MetaConfig{BaseURL: srv.URL, PhoneNumberID: metaPhoneID, AccessToken: metaToken}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = p.Send(ctx, waMessage())
	checkOutcome(t, Receipt{}, err, outcome{detail: []string{"meta did not answer in time"}}, metaToken)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
}

func TestMetaConnectionRefusedIsTransient(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close()
	p, err := NewMeta(MetaConfig{BaseURL: base, PhoneNumberID: metaPhoneID, AccessToken: metaToken}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Send(context.Background(), waMessage())
	checkOutcome(t, Receipt{}, err, outcome{detail: []string{"meta unreachable"}}, metaToken)
}

func TestNewMetaDefaults(t *testing.T) {
	p, err := NewMeta(MetaConfig{PhoneNumberID: metaPhoneID, AccessToken: metaToken}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://graph.facebook.com/v21.0/" + metaPhoneID + "/messages"; p.endpoint != want {
		t.Errorf("endpoint %q, want %q", p.endpoint, want)
	}
	if p.Name() != "meta" || p.client == nil {
		t.Errorf("Name %q, client %v", p.Name(), p.client)
	}
	if _, err := NewMeta(MetaConfig{PhoneNumberID: metaPhoneID}, nil); err == nil {
		t.Error("NewMeta accepted a config without access_token")
	}
}

func TestMetaConfigValidate(t *testing.T) {
	ok := MetaConfig{PhoneNumberID: metaPhoneID, AccessToken: metaToken}
	cases := []struct {
		name   string
		edit   func(c *MetaConfig)
		prefix string // "" means valid
	}{
		{"minimal", func(c *MetaConfig) {}, ""},
		{"all fields", func(c *MetaConfig) {
			c.BaseURL = "http://127.0.0.1:9000/graph"
			c.APIVersion = "v22.0"
		}, ""},
		{"base_url not a URL", func(c *MetaConfig) { c.BaseURL = "graph.facebook.com" }, "base_url:"},
		{"base_url ftp", func(c *MetaConfig) { c.BaseURL = "ftp://graph.facebook.com" }, "base_url:"},
		{"api_version without v", func(c *MetaConfig) { c.APIVersion = "21.0" }, "api_version:"},
		{"api_version with a path", func(c *MetaConfig) { c.APIVersion = "v21.0/x" }, "api_version:"},
		{"no phone_number_id", func(c *MetaConfig) { c.PhoneNumberID = "" }, "phone_number_id:"},
		{"phone number instead of its id", func(c *MetaConfig) { c.PhoneNumberID = testPhone }, "phone_number_id:"},
		{"phone_number_id with a slash", func(c *MetaConfig) { c.PhoneNumberID = "123/456" }, "phone_number_id:"},
		{"no access_token", func(c *MetaConfig) { c.AccessToken = "" }, "access_token:"},
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
			if strings.Contains(err.Error(), metaToken) || strings.Contains(err.Error(), testPhone) {
				t.Errorf("error %q holds the token or the number", err)
			}
		})
	}
}
