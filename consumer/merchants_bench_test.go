package consumer

import (
	"encoding/json"
	"fmt"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/schemas"
)

// benchCompile is a compiler of merchants' providers and templates for
// benchmarks: JSON straight into the dispatcher's types (cmd/notifyd's
// reads them with the configuration's rules and opens sealed secrets).
func benchCompile(s schemas.MerchantSettings) (dispatch.MerchantProfile, error) {
	var p dispatch.MerchantProfile
	if len(s.Templates) > 0 {
		if err := json.Unmarshal(s.Templates, &p.Templates); err != nil {
			return p, err
		}
	}
	for ch, raw := range s.Providers {
		var block dispatch.ProviderConfig
		if err := json.Unmarshal(raw, &block); err != nil {
			return p, err
		}
		if p.Providers == nil {
			p.Providers = map[schemas.Channel][]dispatch.ProviderConfig{}
		}
		p.Providers[ch] = []dispatch.ProviderConfig{block}
	}
	return p, nil
}

// merchantSettings is a merchant's settings as a record: a key, a user,
// its own SMS provider and template.
func merchantSettings(i int) kafka.Message {
	id := fmt.Sprintf("m-%05d", i)
	v := fmt.Sprintf(`{"merchant_id":%q,"display_name":"Merchant %d","cooldown":"10m",`+
		`"api":{"rate_limit":{"per_second":5,"burst":10},"keys":[{"name":"backend","sha256":"%064x"}],`+
		`"users":[{"username":"%s-ops","bcrypt":"$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy","role":"operator"}]},`+
		`"providers":{"sms":{"kind":"console"}},`+
		`"templates":{"sms":{"paid":{"en":{"text":"%s: {{.Amount}} {{.CurrencyCode}} for {{.OrderNo}}"}}}}}`, id, i, i+1, id, id)
	return kafka.Message{Key: []byte(id), Value: []byte(v)}
}

// BenchmarkMerchantsStart: an instance's start (store opened, topics
// followed, commands consumed) with 10,000 merchants' settings on the
// topic, beside one with none, in the same run: the time to ready and the
// heap in use after it (garbage collected). The settings are produced
// first, untimed; the instance starts with an empty store, so it reads
// and checks every record.
func BenchmarkMerchantsStart(b *testing.B) {
	for _, n := range []int{0, 10000} {
		b.Run(fmt.Sprintf("merchants=%d", n), func(b *testing.B) {
			h := newHarness(b)
			msgs := make([]kafka.Message, 0, n)
			for i := range n {
				msgs = append(msgs, merchantSettings(i))
			}
			for len(msgs) > 0 {
				k := min(len(msgs), 2000)
				h.produce(h.topics.MerchantSettings, msgs[:k]...)
				msgs = msgs[k:]
			}
			var took time.Duration
			var heap uint64
			for range b.N {
				goruntime.GC()
				var before goruntime.MemStats
				goruntime.ReadMemStats(&before)
				start := time.Now()
				in := h.start(instanceOpts{compile: benchCompile, merchantKinds: true})
				took += time.Since(start)
				if got := len(in.svc.Merchants().List()); got != n {
					b.Fatalf("%d merchants applied, want %d", got, n)
				}
				goruntime.GC()
				var after goruntime.MemStats
				goruntime.ReadMemStats(&after)
				heap += after.HeapInuse - min(after.HeapInuse, before.HeapInuse)
				in.stop(b)
			}
			b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "ms-to-ready")
			b.ReportMetric(float64(heap)/float64(b.N)/(1<<20), "MiB-heap")
		})
	}
}

// BenchmarkMerchantsDecide: commands decided per second with an instant
// provider, b.N commands (one channel, each its own transaction), spread
// over 1,000 merchants each with its own SMS provider and template, beside
// the same commands of one merchant, in the same run.
func BenchmarkMerchantsDecide(b *testing.B) {
	for _, merchants := range []int{1, 1000} {
		b.Run(fmt.Sprintf("merchants=%d", merchants), func(b *testing.B) {
			h := newHarness(b)
			var settings []kafka.Message
			for i := range merchants {
				settings = append(settings, merchantSettings(i))
			}
			h.produce(h.topics.MerchantSettings, settings...)
			h.start(instanceOpts{compile: benchCompile, merchantKinds: true})
			events := make([]kafka.Message, 0, b.N)
			cmds := make([]kafka.Message, 0, b.N)
			for i := range b.N {
				s := fmt.Sprintf("sess-%d", i)
				m := fmt.Sprintf("m-%05d", i%merchants)
				events = append(events, kafka.Message{Key: []byte(s), Value: []byte(fmt.Sprintf(
					`{"event_id":"e-%d","session_id":%q,"merchant_id":%q,"state":"paid","timestamp_utc":"2026-11-02T09:00:07Z","amount":"1.000","currency_code":"KWD","customer_phone":"+96550001234","notifications":{"sms":[]}}`, i, s, m))})
				cmds = append(cmds, kafka.Message{Key: []byte(s), Value: []byte(fmt.Sprintf(
					`{"command_id":"cmd-%d","session_id":%q,"merchant_id":%q,"channels":["sms"]}`, i, s, m))})
			}
			h.produce(h.topics.PaymentEvents, events...)
			b.ResetTimer()
			start := time.Now()
			h.produce(h.topics.Commands, cmds...)
			h.waitFor("every result", 10*time.Minute, func() bool { return len(h.results) == b.N })
			elapsed := time.Since(start)
			b.StopTimer()
			h.mu.Lock()
			for id, rs := range h.results {
				r := rs[0].result
				if r.Outcome != schemas.OutcomeNotified || r.Channels[0].Provider != "console" || !strings.HasPrefix(r.MerchantID, "m-") {
					b.Errorf("%s: %s", id, rs[0].msg.Value)
				}
			}
			h.mu.Unlock()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commands/s")
		})
	}
}
