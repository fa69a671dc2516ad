package dispatch

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/schemas"
)

// TestRedactor: every form a secret or a contact takes in a peer's echo is
// hidden, and text around it is kept.
func TestRedactor(t *testing.T) {
	const (
		sid   = "AC0123456789abcdef0123456789abcdef"
		token = "tok/en+with=odd&chars"
		pass  = "Pw #tail"
		phone = "+96550009876"
		email = "layla+news@example.com"
	)
	r := NewRedactor(Secret{Value: token, User: sid}, Secret{Value: pass, User: "mailer"})
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name, ch, contact, in string
		gone                  []string // must not be in the output
		want                  string   // when set, the whole output
	}{
		{name: "raw secret", in: "bad token " + token + " given", want: "bad token *** given"},
		{name: "Authorization header echoed", in: "Authorization: Basic " + b64(sid+":"+token), want: "Authorization: Basic ***"},
		{name: "base64 without padding, URL alphabet", in: "x=" + base64.RawURLEncoding.EncodeToString([]byte(sid+":"+token)), want: "x=***"},
		{name: "URL-encoded", in: "?auth=" + url.QueryEscape(token), want: "?auth=***"},
		{name: "URL-encoded in lower case", in: "?auth=" + strings.ToLower(url.QueryEscape(token)), want: "?auth=***"},
		{name: "JSON-escaped", in: `{"token":"tok\/en+with=odd\u0026chars"}`, gone: []string{"odd"}},
		{name: "SMTP AUTH PLAIN echoed", in: "535 " + b64("\x00mailer\x00"+pass), want: "535 ***"},
		{name: "password with a hash sign", in: "login " + pass + " refused", want: "login *** refused"},
		{name: "phone as given", ch: "sms", contact: phone, in: "to " + phone + " failed", want: "to +965****9876 failed"},
		{name: "phone with spaces", ch: "sms", contact: phone, in: "'To' +965 5000 9876 is invalid", want: "'To' +965****9876 is invalid"},
		{name: "phone with punctuation", ch: "whatsapp", contact: phone, in: "recipient (965) 5000-9876.", want: "recipient +965****9876."},
		{name: "phone with 00 prefix", ch: "sms", contact: phone, in: "0096550009876 unreachable", want: "+965****9876 unreachable"},
		{name: "phone without +", ch: "sms", contact: phone, in: "wa_id 96550009876", want: "wa_id +965****9876"},
		{name: "phone with no-break spaces", ch: "sms", contact: phone, in: "+965\u00a05000\u00a09876", want: "+965****9876"},
		{name: "phone twice", ch: "whatsapp", contact: phone, in: "Recipient 96550009876 (+96550009876) cannot be reached",
			want: "Recipient +965****9876 (+965****9876) cannot be reached"},
		{name: "phone then other digits", ch: "sms", contact: phone, in: "+965 5000 9876 123", want: "+965****9876 123"},
		{name: "other numbers kept", ch: "sms", contact: phone, in: "error 21211 at 2026-11-02", want: "error 21211 at 2026-11-02"},
		{name: "email in another case", ch: "email", contact: email, in: "550 <Layla+News@Example.com>: no such user layla+news@example.com",
			want: "550 <l***@example.com>: no such user l***@example.com"},
		{name: "email URL-encoded", ch: "email", contact: email, in: "to=layla%2Bnews%40example.com", want: "to=l***@example.com"},
		{name: "email with only @ encoded", ch: "email", contact: email, in: "to=layla+news%40example.com", want: "to=l***@example.com"},
		{name: "email with only + encoded", ch: "email", contact: email, in: "to=layla%2bnews@example.com", want: "to=l***@example.com"},
		{name: "email JSON-escaped", ch: "email", contact: email, in: `{"to":"layla\u002bnews@example.com"}`, want: `{"to":"l***@example.com"}`},
	} {
		got := r.Text(schemas.Channel(tc.ch), tc.contact, tc.in)
		if tc.want != "" && got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
		for _, g := range append(tc.gone, token, pass) {
			if strings.Contains(got, g) {
				t.Errorf("%s: %q still holds %q", tc.name, got, g)
			}
		}
	}
	// Short values are no secrets worth garbling every text for.
	short := NewRedactor(Secret{Value: "2"}, Secret{Value: "img"}, Secret{Value: "abcde"})
	if in := "2026-11-02 img mgmt abcdef"; short.Secrets(in) != in {
		t.Errorf("short secrets masked text: %q", short.Secrets(in))
	}
	// base64 is matched exactly: a text differing in case is no echo.
	if got := r.Secrets(strings.ToUpper(b64(sid + ":" + token))); strings.Contains(got, "***") {
		t.Errorf("base64 matched ignoring case: %q", got)
	}
	var none *Redactor
	if got := none.Text(schemas.ChannelSMS, phone, "to +965 5000 9876 with "+token); got != "to +965****9876 with "+token {
		t.Errorf("nil redactor: %q", got)
	}
}
