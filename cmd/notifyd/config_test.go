package main

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/schemas"
)

func TestParseConfig(t *testing.T) {
	t.Setenv("NOTIFYD_TEST_SECRET", "s3cret")
	cases := []struct {
		name    string
		yaml    string
		wantErr string // substring; "" means valid
		check   func(t *testing.T, c Config)
	}{
		{name: "empty file: defaults, embedded broker, no providers or templates", yaml: "",
			check: func(t *testing.T, c Config) {
				if !c.embedded() || c.EmbeddedBroker.Listen != "127.0.0.1:9092" || c.Store.Dir != "./data" {
					t.Errorf("defaults: %+v", c)
				}
				// The service's defaults are the consumer's (consumer.Config.SetDefaults).
				sc, err := c.serviceConfig()
				if err != nil {
					t.Fatal(err)
				}
				sc.SetDefaults()
				if sc.GroupID != "notifyd" || sc.CatchUpWait != 10*time.Second || sc.MaxCommandAge != 24*time.Hour || sc.Concurrency != 64 ||
					sc.ShutdownTimeout != 20*time.Second || *sc.ReadyMaxLag != 100 || sc.StoreDir != "./data" {
					t.Errorf("service defaults: %+v", sc)
				}
				if c.Kafka.Topics.PaymentEvents != "payment-events" || c.Kafka.Topics.DeadLetter != "notification-commands-dlq" {
					t.Errorf("topics: %+v", c.Kafka.Topics)
				}
				if len(c.Providers) != 0 {
					t.Errorf("a file's providers are the whole set: %+v", c.Providers)
				}
				if !reflect.DeepEqual(c.Templates, dispatch.DefaultTemplates()) {
					t.Errorf("a file without templates has the built-in ones: %+v", c.Templates)
				}
			}},
		{name: "full", yaml: `
kafka:
  brokers: [k1:9092, k2:9092]
  group_id: g
  topics: {commands: cmds}
processing: {concurrency: 8, catch_up_wait: 3s, max_command_age: 1h}
providers:
  email: {kind: console, retry: {max_attempts: 2}}
templates:
  email:
    paid:
      en: {subject: "Paid {{.OrderNo}}", text: "Hi {{.CustomerFirstName}}, ${NOTIFYD_TEST_SECRET}"}
`, check: func(t *testing.T, c Config) {
			if c.embedded() || len(c.Kafka.Brokers) != 2 || c.Kafka.Topics.Commands != "cmds" || c.Kafka.Topics.Results != "notification-results" {
				t.Errorf("kafka: %+v", c.Kafka)
			}
			if c.Processing.CatchUpWait != 3*time.Second || c.Processing.Concurrency != 8 {
				t.Errorf("processing: %+v", c.Processing)
			}
			if p := c.Providers["email"][0]; p.Retry.MaxAttempts != 2 || p.Retry.InitialBackoff != 500*time.Millisecond {
				t.Errorf("retry defaults not filled: %+v", p.Retry)
			}
			if got := c.Templates["email"]["paid"]["en"].Text; got != "Hi {{.CustomerFirstName}}, s3cret" {
				t.Errorf("env expansion: %q", got)
			}
			// The file's cell over the built-in ones, the others kept.
			def := dispatch.DefaultTemplates()
			if !reflect.DeepEqual(c.Templates["email"]["paid"]["ar"], def["email"]["paid"]["ar"]) || !reflect.DeepEqual(c.Templates["sms"]["voided"]["en"], def["sms"]["voided"]["en"]) ||
				reflect.DeepEqual(c.Templates["email"]["paid"]["en"], def["email"]["paid"]["en"]) || c.fileTemplates != 1 || countTemplates(c.Templates) != countTemplates(def) {
				t.Errorf("templates not laid over the built-in ones: %d from the file, %d in all", c.fileTemplates, countTemplates(c.Templates))
			}
		}},
		{name: "unknown key", yaml: "kafka:\n  brokerz: [a:1]\n", wantErr: "kafka.brokerz: unknown key"},
		{name: "api off by default with a file", yaml: "", check: func(t *testing.T, c Config) {
			if c.API.Enabled() || c.API.Wait != 30*time.Second || c.API.MaxInFlight != 1024 {
				t.Errorf("api: %+v", c.API)
			}
		}},
		{name: "api block", yaml: `
api:
  listen: 127.0.0.1:8000
  keys:
    - {name: shop-backend, sha256: "` + strings.Repeat("ab", 32) + `"}
  users:
    - {username: support, bcrypt: "$2a$04$abcdefghijklmnopqrstuu5Yt3bxvF7ZsHb6CQZLbDMD/4DfO4E6S", role: operator}
  wait: 5s
  rate_limit: {per_second: 10, burst: 20}
`, check: func(t *testing.T, c Config) {
			if !c.API.Enabled() || c.API.Keys[0].Name != "shop-backend" || c.API.Users[0].Role != "operator" || c.API.Wait != 5*time.Second || c.API.RateLimit.Burst != 20 {
				t.Errorf("api: %+v", c.API)
			}
		}},
		{name: "api key hash wrong", yaml: "api: {listen: 127.0.0.1:8000, keys: [{name: a, sha256: nothex}]}\n", wantErr: "api.keys[0].sha256"},
		{name: "api unknown key", yaml: "api: {listen: 127.0.0.1:8000, key: x}\n", wantErr: "api.key: unknown key"},
		{name: "api on the http listener", yaml: "api: {listen: 127.0.0.1:8080}\n", wantErr: "api.listen: \"127.0.0.1:8080\" is also http.listen"},
		{name: "group timings", yaml: "kafka: {session_timeout: 10s, rebalance_timeout: 20s, heartbeat_interval: 500ms}\n",
			check: func(t *testing.T, c Config) {
				sc, _ := c.serviceConfig()
				if sc.SessionTimeout != 10*time.Second || sc.RebalanceTimeout != 20*time.Second || sc.HeartbeatInterval != 500*time.Millisecond {
					t.Errorf("group timings: %+v", sc)
				}
			}},
		{name: "heartbeat too slow for the session", yaml: "kafka: {session_timeout: 6s, heartbeat_interval: 2s}\n",
			wantErr: "kafka.heartbeat_interval: 2s must be under a third of min(kafka.session_timeout, kafka.rebalance_timeout) (6s)"},
		{name: "heartbeat default too slow for a short session", yaml: "kafka: {rebalance_timeout: 3s}\n",
			wantErr: "kafka.heartbeat_interval: 1s must be under a third"},
		{name: "negative session timeout", yaml: "kafka: {session_timeout: -1s}\n", wantErr: "kafka.session_timeout: must not be negative"},
		{name: "unknown nested key", yaml: "providers:\n  email:\n    kind: console\n    smtp_host: x\n", wantErr: "providers.email.smtp_host: unknown key"},
		{name: "wrong type", yaml: "processing:\n  concurrency: lots\n", wantErr: "processing.concurrency:"},
		{name: "bad duration", yaml: "processing:\n  catch_up_wait: soon\n", wantErr: "processing.catch_up_wait:"},
		{name: "negative duration", yaml: "processing:\n  max_command_age: -1s\n", wantErr: "processing.max_command_age:"},
		{name: "zero concurrency is the default, negative is not", yaml: "processing:\n  concurrency: -2\n", wantErr: "processing.concurrency:"},
		{name: "bad broker", yaml: "kafka:\n  brokers: [nohostport]\n", wantErr: "kafka.brokers:"},
		{name: "same topic twice", yaml: "kafka:\n  topics: {results: x, dead_letter: x}\n", wantErr: "topic \"x\""},
		{name: "unknown channel", yaml: "providers:\n  fax: {kind: console}\n", wantErr: "providers.fax:"},
		{name: "unknown kind", yaml: "providers:\n  sms: {kind: carrier-pigeon}\n", wantErr: "providers.sms.kind:"},
		{name: "kind of another channel", yaml: "providers:\n  sms: {kind: smtp}\n", wantErr: "providers.sms.kind: \"smtp\" is not a provider for sms"},
		{name: "smtp without host", yaml: "providers:\n  email: {kind: smtp, smtp: {from: a@b.co}}\n", wantErr: "providers.email.smtp.host:"},
		{name: "twilio without sid", yaml: "providers:\n  sms: {kind: twilio, twilio: {auth_token: x, from: \"+15550001111\"}}\n", wantErr: "providers.sms.twilio.account_sid:"},
		{name: "meta without token", yaml: "providers:\n  whatsapp: {kind: meta, meta: {phone_number_id: \"123\"}}\n", wantErr: "providers.whatsapp.meta.access_token:"},
		{name: "real providers", yaml: `
providers:
  email: {kind: smtp, smtp: {host: smtp.example.com, from: "Shop <shop@example.com>", username: u, password: "${NOTIFYD_TEST_SECRET}"}}
  sms: {kind: twilio, twilio: {account_sid: AC0123456789abcdef0123456789abcdef, auth_token: "${NOTIFYD_TEST_SECRET}", from: "+15550001111"}, rate_limit: {per_second: 10}}
  whatsapp: {kind: meta, meta: {phone_number_id: "1234567890", access_token: "${NOTIFYD_TEST_SECRET}"}}
`, check: func(t *testing.T, c Config) {
			if c.Providers["email"][0].SMTP.Password != "s3cret" || c.Providers["sms"][0].Twilio.From != "+15550001111" || c.Providers["whatsapp"][0].Meta.PhoneNumberID != "1234567890" {
				t.Errorf("providers: %+v", c.Providers)
			}
			if _, err := c.routes(dispatch.NewRegistry(), nil); err != nil {
				t.Error(err)
			}
		}},
		{name: "a list of providers fails over in order", yaml: `
providers:
  sms:
    - {kind: twilio, twilio: {account_sid: AC0123456789abcdef0123456789abcdef, auth_token: "${NOTIFYD_TEST_SECRET}", from: "+15550001111"}, circuit_breaker: {failure_ratio: 0.3, cool_off: 10s}}
    - {kind: webhook, webhook: {url: "https://sms-backup.example/send"}, retry: {max_attempts: 2}}
processing: {cooldown: 10m}
`, check: func(t *testing.T, c Config) {
			sms := c.Providers["sms"]
			if len(sms) != 2 || sms[0].Kind != "twilio" || sms[1].Kind != "webhook" || sms[1].Retry.MaxAttempts != 2 {
				t.Fatalf("sms chain: %+v", sms)
			}
			if b := sms[0].CircuitBreaker; b.FailureRatio != 0.3 || b.CoolOff != 10*time.Second || b.MinCalls != 10 || b.Window != time.Minute {
				t.Errorf("circuit breaker (defaults filled in): %+v", b)
			}
			if c.Processing.Cooldown != 10*time.Minute {
				t.Errorf("cooldown = %s", c.Processing.Cooldown)
			}
			routes, err := c.routes(dispatch.NewRegistry(), nil)
			if err != nil || len(routes["sms"]) != 2 || routes["sms"][0].Provider.Name() != "twilio" || routes["sms"][1].Provider.Name() != "webhook" {
				t.Errorf("routes = %+v, %v", routes["sms"], err)
			}
		}},
		{name: "receipts: public_url, meta secrets, webhook receipt secret, the deliveries topic", yaml: `
kafka: {topics: {deliveries: my-deliveries}}
api: {public_url: "https://notify.example.com/"}
providers:
  sms:
    - {kind: twilio, twilio: {account_sid: AC0123456789abcdef0123456789abcdef, auth_token: "${NOTIFYD_TEST_SECRET}", from: "+15550001111"}}
    - {kind: twilio, twilio: {account_sid: AC2, auth_token: other-token, from: "+15550001111", status_callback: "https://elsewhere.example/cb"}}
  whatsapp: {kind: meta, meta: {phone_number_id: "1234567890", access_token: tok, app_secret: "${NOTIFYD_TEST_SECRET}", verify_token: verify-me}}
  email: {kind: webhook, webhook: {url: "https://mail.example/send", receipt_secret: hook-secret}}
`, check: func(t *testing.T, c Config) {
			if c.Kafka.Topics.Deliveries != "my-deliveries" {
				t.Errorf("kafka.topics.deliveries = %q", c.Kafka.Topics.Deliveries)
			}
			sec := dispatch.NewRegistry().Receipts(c.providerBlocks())
			if tw, _ := sec["twilio"].(dispatch.TwilioReceipts); tw.AuthTokens["AC0123456789abcdef0123456789abcdef"] != "s3cret" || tw.AuthTokens["AC2"] != "other-token" ||
				!reflect.DeepEqual(sec["meta"], dispatch.MetaReceipts{Apps: []dispatch.MetaApp{{AppSecret: "s3cret", PhoneNumberIDs: []string{"1234567890"}}}, VerifyToken: "verify-me"}) ||
				!reflect.DeepEqual(sec["webhook"], dispatch.WebhookReceipts{Secrets: []dispatch.WebhookSecret{{Secret: "hook-secret", Accounts: []string{"mail.example"}}}}) ||
				len(sec) != 3 {
				t.Errorf("callback verifiers: %+v", sec)
			}
			// The status callback is asked for at public_url unless set.
			var peer []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = r.ParseForm()
				peer = append(peer, r.PostForm.Get("StatusCallback"))
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, `{"sid":"SM1","status":"queued"}`)
			}))
			defer srv.Close()
			for i := range c.Providers["sms"] {
				c.Providers["sms"][i].Twilio.BaseURL = srv.URL
			}
			routes, err := c.routes(dispatch.NewRegistry(), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range routes["sms"] {
				if _, err := r.Provider.Send(context.Background(), dispatch.Message{Channel: schemas.ChannelSMS, To: "+96555001234", Text: "hi"}); err != nil {
					t.Fatal(err)
				}
			}
			if want := []string{"https://notify.example.com/callbacks/twilio", "https://elsewhere.example/cb"}; !slices.Equal(peer, want) {
				t.Errorf("StatusCallback sent: %q, want %q", peer, want)
			}
		}},
		{name: "bad public_url", yaml: "api: {listen: \"127.0.0.1:0\", public_url: \"notify.example.com\"}\n", wantErr: "api.public_url: must be an http(s) URL"},
		{name: "an empty provider list", yaml: "providers:\n  sms: []\n", wantErr: "providers.sms: want at least one provider"},
		{name: "a bad block in a list names its index", yaml: "providers:\n  sms:\n    - {kind: console}\n    - {kind: webhook}\n", wantErr: "providers.sms[1].webhook.url:"},
		{name: "a bad type in a list names its index", yaml: "providers:\n  sms:\n    - {kind: console}\n    - {kind: console, retry: {max_attempts: many}}\n", wantErr: "providers.sms[1].retry.max_attempts: want"},
		{name: "bad circuit breaker", yaml: "providers:\n  sms: {kind: console, circuit_breaker: {failure_ratio: 2}}\n", wantErr: "providers.sms.circuit_breaker.failure_ratio: must be in (0, 1]"},
		{name: "negative cooldown", yaml: "processing: {cooldown: -1s}\n", wantErr: "processing.cooldown: must not be negative"},
		{name: "missing kind", yaml: "providers:\n  sms: {}\n", wantErr: "providers.sms.kind:"},
		{name: "webhook without url", yaml: "providers:\n  sms: {kind: webhook}\n", wantErr: "providers.sms.webhook.url:"},
		{name: "webhook with a secret header", yaml: "providers:\n  sms: {kind: webhook, webhook: {url: \"https://gw.example.com/sms\", headers: {Authorization: \"Bearer ${NOTIFYD_TEST_SECRET}\"}}}\n",
			check: func(t *testing.T, c Config) {
				if c.Providers["sms"][0].Webhook.Headers["Authorization"] != "Bearer s3cret" {
					t.Errorf("webhook: %+v", c.Providers["sms"][0].Webhook)
				}
			}},
		{name: "bad rate limit", yaml: "providers:\n  sms: {kind: console, rate_limit: {per_second: -3}}\n", wantErr: "providers.sms.rate_limit.per_second:"},
		{name: "bad retry", yaml: "providers:\n  sms: {kind: console, retry: {max_attempts: -1}}\n", wantErr: "providers.sms.retry.max_attempts"},
		{name: "broken template", yaml: "templates:\n  sms:\n    paid:\n      en: {text: \"{{.Nope\"}\n", wantErr: "templates.sms.paid.en"},
		{name: "template for unsupported cell", yaml: "templates:\n  whatsapp:\n    refunded:\n      en: {name: x, language: en}\n", wantErr: "templates.whatsapp.refunded"},
		{name: "unset env var", yaml: "kafka:\n  client_id: ${NOTIFYD_TEST_UNSET_VAR}\n", wantErr: "NOTIFYD_TEST_UNSET_VAR"},
		{name: "bad log level", yaml: "log: {level: loud}\n", wantErr: "log.level:"},
		{name: "bad http listen", yaml: "http: {listen: nope}\n", wantErr: "http.listen:"},
		{name: "not yaml", yaml: "kafka: [\n", wantErr: "not valid YAML"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				tc.check(t, c)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error leaks a secret: %v", err)
			}
		})
	}
}

func TestDefaultConfigIsValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Providers) != 3 || c.Providers["whatsapp"][0].Kind != "console" {
		t.Errorf("providers: %+v", c.Providers)
	}
}

// TestSecretsInConfig: ${ENV} is substituted after parsing, into values
// only, so no character of a secret is read as YAML; *_file variants read
// a secret from a file; no error shows a secret or a value from the
// environment.
func TestSecretsInConfig(t *testing.T) {
	dir := t.TempDir()
	writeFile := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Block style: in flow style ({...}) an unquoted ${X} is not YAML.
	smtp := func(password string) string {
		return "providers:\n  email:\n    kind: smtp\n    smtp:\n      host: smtp.example.com\n      from: shop@example.com\n      username: u\n      " +
			strings.ReplaceAll(password, ", ", "\n      ") + "\n"
	}
	injected := "x\nkafka:\n  brokers: [evil.example:9092]"
	for _, tc := range []struct {
		name   string
		env    string // NOTIFYD_TEST_PW
		yaml   string
		want   string // the SMTP password, when loading succeeds
		err    string // error substring, when it fails
		hidden string // must not be in the error
	}{
		{name: "starts with *", env: "*an-alias-no-more", yaml: smtp("password: ${NOTIFYD_TEST_PW}"), want: "*an-alias-no-more"},
		{name: "starts with !", env: "!tag-looking", yaml: smtp("password: ${NOTIFYD_TEST_PW}"), want: "!tag-looking"},
		{name: "holds a comment sign", env: "Pw #tail", yaml: smtp("password: ${NOTIFYD_TEST_PW}"), want: "Pw #tail"},
		{name: "quoted reference", env: "'both' \"quotes\"", yaml: smtp(`password: "${NOTIFYD_TEST_PW}"`), want: `'both' "quotes"`},
		{name: "looks like null", env: "null", yaml: smtp("password: ${NOTIFYD_TEST_PW}"), want: "null"},
		{name: "looks like a number", env: "0123", yaml: smtp("password: ${NOTIFYD_TEST_PW}"), want: "0123"},
		{name: "newline cannot inject keys", env: injected, yaml: smtp("password: ${NOTIFYD_TEST_PW}"), want: injected},
		{name: "embedded in text", env: "inner", yaml: smtp("password: pre-${NOTIFYD_TEST_PW}-post"), want: "pre-inner-post"},
		{name: "from a file, final newline dropped", yaml: smtp("password_file: " + writeFile("pw", "file *secret #1\n")), want: "file *secret #1"},
		{name: "file path from the environment", env: writeFile("pw2", "from-env-path"), yaml: smtp("password_file: ${NOTIFYD_TEST_PW}"), want: "from-env-path"},
		{name: "file and value both", env: "x", yaml: smtp("password: ${NOTIFYD_TEST_PW}, password_file: /nonexistent"),
			err: "providers.email.smtp.password, providers.email.smtp.password_file: set one of them, not both"},
		{name: "missing file", yaml: smtp("password_file: " + filepath.Join(dir, "nope")), err: "providers.email.smtp.password_file: open "},
		{name: "empty file", yaml: smtp("password_file: " + writeFile("empty", "\n")), err: "providers.email.smtp.password_file: "},
		{name: "_file of a field that is no secret", yaml: smtp("password: x, host_file: /etc/hostname"), err: "providers.email.smtp.host_file: unknown key"},
		{name: "a secret in the wrong place: type error names the key, not the value", env: "hunter2-is-my-pw",
			yaml: "processing: {concurrency: \"${NOTIFYD_TEST_PW}\"}\n", err: "processing.concurrency: want a whole number", hidden: "hunter2"},
		{name: "a value from the environment into a number", env: "8", yaml: "processing:\n  concurrency: ${NOTIFYD_TEST_PW}\n"},
		{name: "quoted into a duration", env: "3s", yaml: "processing: {catch_up_wait: \"${NOTIFYD_TEST_PW}\"}\n"},
		{name: "validation error hides the value", env: "s3cret-broker-list",
			yaml: "kafka: {brokers: [\"${NOTIFYD_TEST_PW}\"]}\n", err: "kafka.brokers: \"***\" is not host:port", hidden: "s3cret"},
		{name: "secret written in the file is hidden from errors too",
			yaml: "providers:\n  email: {kind: smtp, smtp: {host: smtp.example.com, from: not-an-address, username: u, password: in-file-secret}}\n",
			err:  "providers.email.smtp.from", hidden: "in-file-secret"},
		{name: "unset variable", yaml: smtp("password: ${NOTIFYD_TEST_UNSET}"), err: "environment variables referenced but not set: NOTIFYD_TEST_UNSET"},
		{name: "flow style: the type error names the very key", env: "soon",
			yaml: "processing: {catch_up_wait: \"${NOTIFYD_TEST_PW}\", concurrency: 8}\n", err: "processing.catch_up_wait: want a duration"},
		{name: "flow style: the second key of a line", yaml: "processing: {catch_up_wait: 3s, concurrency: lots}\n", err: "processing.concurrency: want a whole number"},
		{name: "a list from the environment", env: "k1:9092, k2:9092", yaml: "kafka:\n  brokers: ${NOTIFYD_TEST_PW}\n"},
		{name: "an empty value into a number is an error, not the default", env: "", yaml: "processing:\n  concurrency: ${NOTIFYD_TEST_PW}\n",
			err: "processing.concurrency: the environment gives an empty value (want a whole number)"},
		{name: "a scalar where a mapping goes", yaml: "processing: 8\n", err: "processing: want a mapping"},
		{name: "a mapping where a number goes", yaml: "processing: {concurrency: {a: 1}}\n", err: "processing.concurrency: want a whole number"},
		{name: "merge keys", yaml: "x: &base\n  kind: smtp\n", err: "x: unknown key"},
		{name: "merge keys in a provider", env: "merged-secret",
			yaml: "providers:\n  email:\n    <<: {kind: smtp}\n    smtp:\n      host: smtp.example.com\n      from: shop@example.com\n      username: u\n      password: ${NOTIFYD_TEST_PW}\n",
			want: "merged-secret"},
		{name: "a file path from the environment stays in errors", env: filepath.Join(dir, "missing-pw"), yaml: smtp("password_file: ${NOTIFYD_TEST_PW}"),
			err: "providers.email.smtp.password_file: open " + filepath.Join(dir, "missing-pw")},
		{name: "webhook headers from a file", yaml: "providers:\n  sms:\n    kind: webhook\n    webhook:\n      url: https://gw.example/sms\n      headers_file: " +
			writeFile("headers", "# credentials\nAuthorization: Bearer from-a-file-token\nX-Version: 2\n")},
		{name: "webhook header with a line break from the environment", env: "tok\r\nX-Evil: 1",
			yaml: "providers:\n  sms:\n    kind: webhook\n    webhook:\n      url: https://gw.example/sms\n      headers:\n        Authorization: ${NOTIFYD_TEST_PW}\n",
			err:  "providers.sms.webhook.headers.Authorization: the value holds a character a header cannot carry", hidden: "X-Evil"},
		{name: "references in keys are not substituted", env: "host", yaml: smtp("${NOTIFYD_TEST_PW}: x"),
			err: "providers.email.smtp.${NOTIFYD_TEST_PW}: unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NOTIFYD_TEST_PW", tc.env)
			c, err := ParseConfig([]byte(tc.yaml))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				for _, h := range []string{tc.hidden, "hunter2", "in-file-secret"} {
					if h != "" && strings.Contains(err.Error(), h) {
						t.Errorf("error shows %q: %v", h, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if email := c.Providers["email"]; tc.want != "" && (len(email) == 0 || email[0].SMTP.Password != tc.want) {
				t.Errorf("email providers %+v, want the password %q", email, tc.want)
			}
			switch tc.name {
			case "a list from the environment":
				if !slices.Equal(c.Kafka.Brokers, []string{"k1:9092", "k2:9092"}) {
					t.Errorf("brokers %q", c.Kafka.Brokers)
				}
			case "webhook headers from a file":
				if h := c.Providers["sms"][0].Webhook.Headers; len(h) != 2 || h["Authorization"] != "Bearer from-a-file-token" || h["X-Version"] != "2" {
					t.Errorf("headers %q", h)
				}
			default:
				if len(c.Kafka.Brokers) != 0 {
					t.Errorf("brokers %v: a value injected keys", c.Kafka.Brokers)
				}
			}
		})
	}
}

// TestSecretsCollected: every secret of the configuration reaches the
// redactor, with its user where it has one.
func TestSecretsCollected(t *testing.T) {
	c, err := ParseConfig([]byte(`
kafka:
  brokers: [k:9092]
  tls: {enabled: true}
  sasl: {mechanism: scram-sha-512, username: kuser, password: kpass-1}
providers:
  email: {kind: smtp, smtp: {host: h.example, from: a@b.example, username: muser, password: mpass-2}}
  sms: {kind: twilio, twilio: {account_sid: AC1, auth_token: ttok-3, from: "+15550001111"}}
  whatsapp: {kind: webhook, webhook: {url: "https://w.example/x", headers: {Authorization: "Bearer wtok-4-long-enough"}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := dispatch.NewRedactor(c.secrets()...)
	for _, s := range []string{"kpass-1", "mpass-2", "ttok-3", "wtok-4-long-enough", "Bearer wtok-4-long-enough",
		base64.StdEncoding.EncodeToString([]byte("AC1:ttok-3")), base64.StdEncoding.EncodeToString([]byte("kuser:kpass-1"))} {
		if got := r.Secrets("x " + s + " y"); got != "x *** y" {
			t.Errorf("%q: %q", s, got)
		}
	}
}
