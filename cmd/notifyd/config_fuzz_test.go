package main

import (
	"strings"
	"testing"
)

// FuzzParseConfig: no configuration file makes the loader panic, and one
// it accepts is valid and has its defaults filled.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		"",
		"kafka:\n  brokers: [a:1]\n",
		"processing: {concurrency: 3, catch_up_wait: 2s, ready_max_lag: 0}\n",
		"providers:\n  email: {kind: webhook, webhook: {url: \"https://x.example/y\"}, retry: {max_attempts: 2}}\n",
		"templates:\n  sms:\n    paid:\n      ar: {text: \"{{.Amount}}\"}\n",
		"kafka: {topic_configs: {results: {retention.ms: \"1000\"}}}\n",
		"log: {level: debug, format: text}\n",
		"kafka: [\n",
		"${NOPE}",
		"templates: {email: {paid: {en: {subject: \"{{\", text: x}}}}\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data string) {
		if strings.Contains(data, "${") {
			return // environment expansion is tested on its own
		}
		c, err := ParseConfig([]byte(data))
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted a config that does not validate: %v\n%s", err, data)
		}
		sc, err := c.serviceConfig()
		if err != nil {
			t.Fatalf("a valid config's service configuration: %v", err)
		}
		sc.SetDefaults()
		if c.Store.Dir == "" || sc.Concurrency == 0 || sc.ReadyMaxLag == nil || c.Kafka.Topics.Results == "" {
			t.Fatalf("accepted config lacks defaults: %+v", c)
		}
	})
}
