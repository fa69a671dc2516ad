package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/notifyd/notifyd/schemas"
)

func TestResultAnswer(t *testing.T) {
	paid := schemas.StatePaid
	sent := schemas.ChannelResult{Channel: "email", Status: schemas.StatusSent}
	for _, tc := range []struct {
		name   string
		given  notification
		result schemas.DeliveryResult
		status int
		want   string // the answer without delivery_result
	}{
		{"notified", notification{OrderNo: "o1"},
			schemas.DeliveryResult{Outcome: schemas.OutcomeNotified, State: &paid, Channels: []schemas.ChannelResult{sent}},
			200, `{"message":"Customer notified."}`},
		{"partially notified: the first channel not sent", notification{OrderNo: "o1"},
			schemas.DeliveryResult{Outcome: schemas.OutcomePartiallyNotified, Message: "m", State: &paid, Channels: []schemas.ChannelResult{
				sent, {Channel: "whatsapp", Status: schemas.StatusRejected}, {Channel: "sms", Status: schemas.StatusFailed}}},
			400, `{"order_no":"o1","channels":"whatsapp","result":"failed","detail":"m"}`},
		{"not notified, identifiers as given", notification{SessionID: "s1", OrderNo: "o1"},
			schemas.DeliveryResult{Outcome: schemas.OutcomeNotNotified, Message: "m", SessionID: "s1", OrderNo: "o1", State: &paid,
				Channels: []schemas.ChannelResult{{Channel: "sms", Status: schemas.StatusFailed}}},
			400, `{"session_id":"s1","order_no":"o1","channels":"sms","result":"failed","detail":"m"}`},
		{"unknown session_id", notification{SessionID: "s1"},
			schemas.DeliveryResult{Outcome: schemas.OutcomeNotNotified, Reason: schemas.ReasonUnknownTransaction},
			400, `{"session_id":["No transaction with this session_id."]}`},
		{"unknown order_no", notification{OrderNo: "o1"},
			schemas.DeliveryResult{Outcome: schemas.OutcomeNotNotified, Reason: schemas.ReasonUnknownTransaction},
			400, `{"order_no":["No transaction with this order_no."]}`},
		{"identifier mismatch", notification{SessionID: "s1", OrderNo: "o2"},
			schemas.DeliveryResult{Outcome: schemas.OutcomeNotNotified, Reason: schemas.ReasonIdentifierMismatch, Detail: "d"},
			400, `{"non_field_errors":["d"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, _ := json.Marshal(tc.result)
			a := resultAnswer(tc.given, tc.result, raw)
			b, _ := json.Marshal(a.body)
			var m map[string]any
			_ = json.Unmarshal(b, &m)
			if dr, ok := m["delivery_result"]; ok {
				got, _ := json.Marshal(dr)
				var want any
				_ = json.Unmarshal(raw, &want)
				wantB, _ := json.Marshal(want)
				if string(got) != string(wantB) {
					t.Errorf("delivery_result = %s, want the result %s", got, wantB)
				}
				delete(m, "delivery_result")
				b, _ = json.Marshal(a.body.(failedAnswer).withoutResult())
			}
			if a.status != tc.status || string(b) != tc.want {
				t.Errorf("answer = %d %s, want %d %s", a.status, b, tc.status, tc.want)
			}
		})
	}
}

// withoutResult is the answer without the embedded result, for comparing.
func (a failedAnswer) withoutResult() any {
	type plain struct {
		SessionID string          `json:"session_id,omitempty"`
		OrderNo   string          `json:"order_no,omitempty"`
		Channels  schemas.Channel `json:"channels"`
		Result    string          `json:"result"`
		Detail    string          `json:"detail"`
	}
	return plain{a.SessionID, a.OrderNo, a.Channels, a.Result, a.Detail}
}

func TestAuthenticate(t *testing.T) {
	key, sum, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, otherSum, _ := NewKey()
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret pass"), bcrypt.MinCost)
	cfg := Config{Listen: DefaultListen, Keys: []Key{{Name: "shop", SHA256: sum}, {Name: "other", SHA256: otherSum}},
		Users: []User{{Username: "support", Bcrypt: string(hash), Role: RoleViewer}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := newAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, header string
		want         Principal
		fail         string
	}{
		{"key", "Api-Key " + key, Principal{Name: "shop", Key: true}, ""},
		{"the other key", "Api-Key " + otherKey, Principal{Name: "other", Key: true}, ""},
		{"scheme in any case", "api-key " + key, Principal{Name: "shop", Key: true}, ""},
		{"wrong key", "Api-Key " + key + "x", Principal{}, msgInvalidKey},
		{"the hash is not the key", "Api-Key " + sum, Principal{}, msgInvalidKey},
		{"empty key", "Api-Key ", Principal{}, msgInvalidKey},
		{"basic", basic("support", "s3cret pass"), Principal{Name: "support", Role: RoleViewer}, ""},
		{"basic wrong password", basic("support", "nope"), Principal{}, msgInvalidBasic},
		{"basic unknown user", basic("nobody", "s3cret pass"), Principal{}, msgInvalidBasic},
		{"basic not base64", "Basic !!!", Principal{}, msgInvalidBasic},
		{"none", "", Principal{}, msgNoCredentials},
		{"another scheme", "Bearer " + key, Principal{}, `Unsupported authorization scheme "Bearer": use Api-Key or Basic.`},
		{"a scheme alone", "Token", Principal{}, `Unsupported authorization scheme "Token": use Api-Key or Basic.`},
		{"a key without its scheme: not echoed", key, Principal{}, `Unsupported authorization scheme: use Api-Key or Basic.`},
		{"a scheme of 20 characters", strings.Repeat("a", 20) + " x", Principal{}, `Unsupported authorization scheme "` + strings.Repeat("a", 20) + `": use Api-Key or Basic.`},
		{"a scheme too long to be one", strings.Repeat("a", 21) + " x", Principal{}, `Unsupported authorization scheme: use Api-Key or Basic.`},
		{"spaces only", "   ", Principal{}, msgNoCredentials},
	} {
		r := httptest.NewRequest(http.MethodPost, PathNotifications, nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		p, fail := a.authenticate(r)
		if p != tc.want || fail.String() != tc.fail {
			t.Errorf("%s: authenticate = %+v %q, want %+v %q", tc.name, p, fail.String(), tc.want, tc.fail)
		}
	}
}

// String is the failure's detail, "" for none (tests).
func (f *authFailure) String() string {
	if f == nil {
		return ""
	}
	return f.detail
}

func basic(user, pass string) string {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}

func TestConfigValidate(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	sum := HashKey("k")
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string // a substring; "" valid
	}{
		{"off", Config{Listen: "off"}, ""},
		{"loopback", Config{Listen: "127.0.0.1:8000", Keys: []Key{{Name: "shop", SHA256: sum}}}, ""},
		{"localhost", Config{Listen: "localhost:8000"}, ""},
		{"ipv6 loopback", Config{Listen: "[::1]:8000"}, ""},
		{"all addresses without tls", Config{Listen: ":8000"}, "api.listen: \":8000\" is not a loopback address"},
		{"external without tls", Config{Listen: "10.0.0.1:8000"}, "api.tls.cert_file"},
		{"external, insecure allowed", Config{Listen: "0.0.0.0:8000", AllowInsecure: true}, ""},
		{"external with tls", Config{Listen: "0.0.0.0:8443", TLS: TLSConfig{CertFile: "c", KeyFile: "k"}}, ""},
		{"half of tls", Config{Listen: "127.0.0.1:8443", TLS: TLSConfig{CertFile: "c"}}, "api.tls: cert_file and key_file go together"},
		{"bad listen", Config{Listen: "8000"}, "api.listen:"},
		{"key without name", Config{Listen: DefaultListen, Keys: []Key{{SHA256: sum}}}, "api.keys[0].name: is required"},
		{"key hash short", Config{Listen: DefaultListen, Keys: []Key{{Name: "a", SHA256: "abc"}}}, "api.keys[0].sha256"},
		{"key names twice", Config{Listen: DefaultListen, Keys: []Key{{Name: "a", SHA256: sum}, {Name: "a", SHA256: sum}}}, "api.keys[1].name: \"a\" is used twice"},
		{"user", Config{Listen: DefaultListen, Users: []User{{Username: "u", Bcrypt: string(hash), Role: RoleOperator}}}, ""},
		{"user bad hash", Config{Listen: DefaultListen, Users: []User{{Username: "u", Bcrypt: "plain-password", Role: RoleOperator}}}, "api.users[0].bcrypt: not a bcrypt hash"},
		{"user bad role", Config{Listen: DefaultListen, Users: []User{{Username: "u", Bcrypt: string(hash), Role: "admin"}}}, "api.users[0].role"},
		{"user named like a key", Config{Listen: DefaultListen, Keys: []Key{{Name: "a", SHA256: sum}}, Users: []User{{Username: "a", Bcrypt: string(hash), Role: RoleViewer}}}, "api.users[0].username"},
		{"user with colon", Config{Listen: DefaultListen, Users: []User{{Username: "a:b", Bcrypt: string(hash), Role: RoleViewer}}}, "api.users[0].username"},
		{"rate limit", Config{Listen: DefaultListen, RateLimit: rateLimit(-1, 0)}, "api.rate_limit.per_second"},
	} {
		tc.cfg.SetDefaults()
		err := tc.cfg.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.err)
		case err != nil && strings.Contains(err.Error(), "plain-password"):
			t.Errorf("%s: the error echoes the value: %v", tc.name, err)
		}
	}
}

func TestLocalKey(t *testing.T) {
	path := t.TempDir() + "/api-key"
	key, created, err := LocalKey(path)
	if err != nil || !created || !strings.HasPrefix(key, keyPrefix) {
		t.Fatalf("LocalKey = %q %v %v", key, created, err)
	}
	again, created, err := LocalKey(path)
	if err != nil || created || again != key {
		t.Fatalf("second LocalKey = %q %v %v, want the same key", again, created, err)
	}
	if st, _ := statMode(path); st != 0o600 {
		t.Errorf("key file mode %o, want 600", st)
	}
	// A key file written by hand: the prefix and at least 32 characters.
	for _, tt := range []struct {
		key string
		ok  bool
	}{
		{keyPrefix + strings.Repeat("k", 32), true},
		{keyPrefix + strings.Repeat("k", 31), false},
		{strings.Repeat("k", 40), false},
	} {
		p := t.TempDir() + "/api-key"
		if err := os.WriteFile(p, []byte(tt.key+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, created, err := LocalKey(p)
		if ok := err == nil && got == tt.key && !created; ok != tt.ok {
			t.Errorf("key file with %d characters: %q %v %v, want accepted %v", len(tt.key), got, created, err, tt.ok)
		}
	}
}
