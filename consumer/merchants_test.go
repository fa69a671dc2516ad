package consumer

import (
	"strings"
	"testing"
	"time"

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
