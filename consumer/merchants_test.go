package consumer

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/notifyd/notifyd/schemas"
)

// TestMerchantsEndToEnd, over Kafka: two merchants with the same order_no
// each notify only their own customer; a command of one merchant naming
// the other's transaction, by session_id or order_no, is answered exactly
// as one naming a transaction that does not exist; a command without a
// merchant_id finds a session_id of any merchant and an order_no of the
// default merchant; results carry the transaction's merchant_id; an event
// moving a session to another merchant is dead-lettered
// (merchant_mismatch) and changes nothing.
func TestMerchantsEndToEnd(t *testing.T) {
	h := newHarness(t)
	in := h.start(instanceOpts{})
	h.event("s-acme", map[string]any{"merchant_id": "acme", "order_no": "1001", "customer_email": "a@acme.example"})
	h.event("s-globex", map[string]any{"merchant_id": "globex", "order_no": "1001", "customer_email": "g@globex.example"})
	h.event("s-default", map[string]any{"order_no": "1001", "customer_email": "d@default.example"})
	h.event("s-acme", map[string]any{"merchant_id": "globex", "order_no": "1001", "customer_email": "thief@globex.example"})

	cmd := func(id, merchant, session, order string) {
		c := map[string]any{"command_id": id, "channels": []string{"email"}}
		for k, v := range map[string]string{"merchant_id": merchant, "session_id": session, "order_no": order} {
			if v != "" {
				c[k] = v
			}
		}
		h.command(c)
	}
	cmd("acme-own", "acme", "", "1001")
	cmd("globex-own", "globex", "", "1001")
	cmd("default-own", "", "", "1001")
	cmd("acme-any-session", "", "s-acme", "")
	cmd("acme-reaches-globex-session", "acme", "s-globex", "")
	cmd("acme-missing-session", "acme", "s-missing", "")
	cmd("initech-reaches-order", "initech", "", "1001")
	cmd("initech-missing-order", "initech", "", "2002")

	for id, want := range map[string]struct{ to, merchant string }{
		"acme-own": {"a@acme.example", "acme"}, "globex-own": {"g@globex.example", "globex"},
		"default-own": {"d@default.example", schemas.MerchantDefault}, "acme-any-session": {"a@acme.example", "acme"},
	} {
		r := h.result(id).result
		if r.Outcome != schemas.OutcomeNotified || r.MerchantID != want.merchant {
			t.Errorf("%s: %s merchant %q, want notified for %q", id, r.Outcome, r.MerchantID, want.merchant)
		}
		if sent := in.provider.sentFor(id); len(sent) != 1 || sent[0].To != want.to {
			t.Errorf("%s: sent %+v, want one to %s", id, sent, want.to)
		}
	}
	// Another merchant's transaction: the answer of a missing one, but for
	// the identifier named.
	same := func(a, b string) {
		ra, rb := h.result(a).result, h.result(b).result
		if ra.Reason != schemas.ReasonUnknownTransaction || rb.Reason != ra.Reason || ra.State != nil || rb.State != nil ||
			ra.Message != rb.Message || len(ra.Channels)+len(rb.Channels) != 0 || ra.SessionID != "" && ra.MerchantID != rb.MerchantID {
			t.Errorf("%s and %s answered differently: %+v / %+v", a, b, ra, rb)
		}
		if in.provider.sentFor(a) != nil {
			t.Errorf("%s sent something", a)
		}
	}
	same("acme-reaches-globex-session", "acme-missing-session")
	same("initech-reaches-order", "initech-missing-order")
	if got, want := h.result("acme-reaches-globex-session").result.Detail, `no transaction with session_id "s-globex"`; got != want {
		t.Errorf("detail %q, want %q", got, want)
	}

	// The mismatched event was dead-lettered with its reason, and s-acme
	// is still acme's with acme's customer (acme-any-session above).
	h.waitFor("the merchant_mismatch dead letter", 30*time.Second, func() bool { return len(h.dlq) == 1 })
	h.mu.Lock()
	d := h.dlq[0].msg
	h.mu.Unlock()
	if v, _ := header(d, HeaderError); !strings.HasPrefix(v, "merchant_mismatch: ") || string(d.Key) != "s-acme" {
		t.Errorf("dead letter %q error %q", d.Key, v)
	}
	if v, _ := header(d, HeaderOriginalTopic); v != h.topics.PaymentEvents {
		t.Errorf("original_topic %q", v)
	}
	if !strings.Contains(string(d.Value), "thief@globex.example") {
		t.Errorf("dead letter value %s is not the event's", d.Value)
	}
	if got := testutil.ToFloat64(in.svc.metrics.deadLetters.WithLabelValues(deadLetterMerchantMismatch)); got != 1 {
		t.Errorf("notifyd_dead_letters_total{merchant_mismatch} = %v, want 1", got)
	}
}

// TestMerchantSettingsEndToEnd, over Kafka: settings published on the
// topic reach the next decision without a restart (templates and
// cooldown) and the merchant's keys; a record that cannot apply is
// dead-lettered with its reason and the previous settings stay; a null
// value removes the merchant; a restarted instance applies the stored
// settings before it consumes a command.
func TestMerchantSettingsEndToEnd(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	// The compiler of these tests takes templates only (cmd/notifyd's
	// takes providers too, with the configuration's rules).
	compile := func(s schemas.MerchantSettings) (dispatch.MerchantProfile, error) {
		var p dispatch.MerchantProfile
		if len(s.Providers) > 0 {
			return p, errors.New("providers: not in this test")
		}
		if len(s.Templates) > 0 {
			if err := json.Unmarshal(s.Templates, &p.Templates); err != nil {
				return p, fmt.Errorf("templates: %w", err)
			}
		}
		return p, nil
	}
	in := h.start(instanceOpts{dir: dir, compile: compile})
	settings := func(id, value string) {
		h.produce(h.topics.MerchantSettings, kafka.Message{Key: []byte(id), Value: []byte(value)})
	}
	keySum := strings.Repeat("ab", 32)
	settings("acme", `{"merchant_id":"acme","display_name":"ACME","api":{"keys":[{"name":"backend","sha256":"`+keySum+`"}]},`+
		`"templates":{"sms":{"paid":{"en":{"text":"ACME v1 {{.OrderNo}}"}}}}}`)
	h.poll("acme's settings", 30*time.Second, func() bool { _, ok := in.svc.Merchants().Get("acme"); return ok })
	if p, ok := in.svc.Merchants().Key(keySum); !ok || p.Merchant != "acme" || p.Name != "backend" {
		t.Errorf("Key = %+v %v", p, ok)
	}
	h.event("s1", map[string]any{"merchant_id": "acme", "order_no": "1001"})
	h.command(map[string]any{"command_id": "c1", "merchant_id": "acme", "order_no": "1001", "channels": []string{"sms"}})
	if sent := in.provider.sentFor(h.result("c1").result.CommandID); len(sent) != 1 || sent[0].Text != "ACME v1 1001" {
		t.Fatalf("sent %+v, want acme's template", sent)
	}
	// A change, then records that cannot apply: each refused, dead-lettered,
	// the change before them in force.
	settings("acme", `{"merchant_id":"acme","api":{"keys":[{"name":"backend","sha256":"`+keySum+`"}]},`+
		`"templates":{"sms":{"paid":{"en":{"text":"ACME v2 {{.OrderNo}}"}}}}}`)
	settings("acme", `{"merchant_id":"acme","templates":{"sms":{"paid":{"en":{"text":"ACME v3 {{.OrderNo"}}}}}`) // does not parse
	settings("acme", `{"merchant_id":"globex"}`)                                                                 // not its key
	settings("acme", `{"merchant_id":"acme","providers":{"sms":{"kind":"console"}}}`)                            // the compiler refuses
	settings("globex", `{"merchant_id":"globex","api":{"keys":[{"name":"k","sha256":"`+keySum+`"}]}}`)           // acme's key
	settings("initech", `not json`)
	h.waitFor("five refusals dead-lettered", 30*time.Second, func() bool { return len(h.dlq) == 5 })
	h.mu.Lock()
	for _, d := range h.dlq {
		if v, _ := header(d.msg, HeaderError); !strings.HasPrefix(v, deadLetterMerchantSettings+": ") {
			t.Errorf("dead letter %s: error %q", d.msg.Key, v)
		}
		if v, _ := header(d.msg, HeaderOriginalTopic); v != h.topics.MerchantSettings {
			t.Errorf("dead letter %s: original_topic %q", d.msg.Key, v)
		}
	}
	h.mu.Unlock()
	h.command(map[string]any{"command_id": "c2", "merchant_id": "acme", "order_no": "1001", "channels": []string{"sms"}})
	if sent := in.provider.sentFor(h.result("c2").result.CommandID); len(sent) != 1 || sent[0].Text != "ACME v2 1001" {
		t.Fatalf("sent %+v, want acme's v2 template", sent)
	}
	if got := testutil.ToFloat64(in.svc.metrics.merchantSettings.WithLabelValues(merchantRefused)); got != 5 {
		t.Errorf("refused %v, want 5", got)
	}
	// A restart applies the stored settings before the first command.
	in.stop(t)
	in = h.start(instanceOpts{dir: dir, compile: compile})
	if _, ok := in.svc.Merchants().Get("acme"); !ok {
		t.Fatal("acme's settings not applied at start")
	}
	h.command(map[string]any{"command_id": "c3", "merchant_id": "acme", "order_no": "1001", "channels": []string{"sms"}})
	if sent := in.provider.sentFor(h.result("c3").result.CommandID); len(sent) != 1 || sent[0].Text != "ACME v2 1001" {
		t.Fatalf("after a restart sent %+v, want acme's v2 template", sent)
	}
	// Removed: the platform's template again.
	h.produce(h.topics.MerchantSettings, kafka.Message{Key: []byte("acme")})
	h.poll("acme removed", 30*time.Second, func() bool { _, ok := in.svc.Merchants().Get("acme"); return !ok })
	if _, ok := in.svc.Merchants().Key(keySum); ok {
		t.Error("acme's key outlived its merchant")
	}
	h.command(map[string]any{"command_id": "c4", "merchant_id": "acme", "order_no": "1001", "channels": []string{"sms"}})
	if sent := in.provider.sentFor(h.result("c4").result.CommandID); len(sent) != 1 || strings.HasPrefix(sent[0].Text, "ACME") {
		t.Fatalf("after removal sent %+v, want the platform's template", sent)
	}
}

// TestMerchantBatchesConcurrently: the partitions' followers apply their
// batches at once; every merchant of every batch is applied (none lost to
// another batch replacing the table).
func TestMerchantBatchesConcurrently(t *testing.T) {
	store, err := projection.Open(t.TempDir(), projection.Options{EventsTopic: "e", ResultsTopic: "r", MerchantsTopic: "m"})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	tpl, _ := dispatch.ParseTemplates(dispatch.DefaultTemplates())
	d, err := dispatch.New(dispatch.Config{Templates: tpl}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &merchantChanger{merchants: newMerchants(), dispatcher: d, store: store, metrics: newMetrics(), log: slog.New(slog.DiscardHandler),
		refused: func(int, projection.Record, string, string) error { return errors.New("nothing is refused here") }}
	const partitions, perBatch = 4, 50
	var wg sync.WaitGroup
	for p := range partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for batch := range 5 {
				var records []projection.Record
				for i := range perBatch {
					id := fmt.Sprintf("m-%d-%d-%d", p, batch, i)
					records = append(records, projection.Record{Offset: int64(batch*perBatch + i), Key: []byte(id), Value: []byte(`{"merchant_id":"` + id + `"}`)})
				}
				if err := c.apply(p, records); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if got, want := len(c.merchants.List()), partitions*5*perBatch; got != want {
		t.Errorf("%d merchants applied, want %d", got, want)
	}
	if got, want := len(d.Merchants()), partitions*5*perBatch; got != want {
		t.Errorf("the dispatcher has %d merchants, want %d", got, want)
	}
}
