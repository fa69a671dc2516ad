package main

import (
	"strings"
	"testing"
	"time"
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
				if !c.embedded() || c.EmbeddedBroker.Listen != "127.0.0.1:9092" || c.Store.Dir != "./data" || c.Kafka.GroupID != "notifyd" {
					t.Errorf("defaults: %+v", c)
				}
				if c.Processing.CatchUpWait != 10*time.Second || c.Processing.MaxCommandAge != 24*time.Hour || c.Processing.Concurrency != 64 {
					t.Errorf("processing defaults: %+v", c.Processing)
				}
				if c.Kafka.Topics.PaymentEvents != "payment-events" || c.Kafka.Topics.DeadLetter != "notification-commands-dlq" {
					t.Errorf("topics: %+v", c.Kafka.Topics)
				}
				if len(c.Providers) != 0 || len(c.Templates) != 0 {
					t.Errorf("a file's providers and templates are the whole set: %+v", c.Providers)
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
			if p := c.Providers["email"]; p.Retry.MaxAttempts != 2 || p.Retry.InitialBackoff != 500*time.Millisecond {
				t.Errorf("retry defaults not filled: %+v", p.Retry)
			}
			if got := c.Templates["email"]["paid"]["en"].Text; got != "Hi {{.CustomerFirstName}}, s3cret" {
				t.Errorf("env expansion: %q", got)
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
				sc := c.serviceConfig()
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
			if c.Providers["email"].SMTP.Password != "s3cret" || c.Providers["sms"].Twilio.From != "+15550001111" || c.Providers["whatsapp"].Meta.PhoneNumberID != "1234567890" {
				t.Errorf("providers: %+v", c.Providers)
			}
			for name, p := range c.Providers {
				if _, err := p.provider(nil); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
		}},
		{name: "missing kind", yaml: "providers:\n  sms: {}\n", wantErr: "providers.sms.kind:"},
		{name: "webhook without url", yaml: "providers:\n  sms: {kind: webhook}\n", wantErr: "providers.sms.webhook.url:"},
		{name: "webhook with a secret header", yaml: "providers:\n  sms: {kind: webhook, webhook: {url: \"https://gw.example.com/sms\", headers: {Authorization: \"Bearer ${NOTIFYD_TEST_SECRET}\"}}}\n",
			check: func(t *testing.T, c Config) {
				if c.Providers["sms"].Webhook.Headers["Authorization"] != "Bearer s3cret" {
					t.Errorf("webhook: %+v", c.Providers["sms"].Webhook)
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
	if len(c.Providers) != 3 || c.Providers["whatsapp"].Kind != "console" {
		t.Errorf("providers: %+v", c.Providers)
	}
}
