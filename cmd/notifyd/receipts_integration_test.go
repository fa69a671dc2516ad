//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/schemas"

	"github.com/notifyd/notifyd/internal/testkit"
)

// providerPeers are a Twilio-shaped and a Meta-shaped send API: each send
// gets a new message id, and Twilio's StatusCallback is kept.
type providerPeers struct {
	srv       *httptest.Server
	n         atomic.Int64
	mu        sync.Mutex
	callbacks []string
}

func newProviderPeers(t *testing.T) *providerPeers {
	p := &providerPeers{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		n := p.n.Add(1)
		switch {
		case strings.HasSuffix(r.URL.Path, "/Messages.json"):
			_ = r.ParseForm()
			p.mu.Lock()
			p.callbacks = append(p.callbacks, r.PostForm.Get("StatusCallback"))
			p.mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"sid":"SM%032d","status":"queued"}`, n)
		case strings.HasSuffix(r.URL.Path, "/messages"):
			fmt.Fprintf(w, `{"messaging_product":"whatsapp","contacts":[{"input":"+96550001234","wa_id":"96550001234"}],"messages":[{"id":"wamid.%d"}]}`, n)
		case strings.HasSuffix(r.URL.Path, "/hook"): // a webhook provider
			fmt.Fprintf(w, `{"id":"hook-%d"}`, n)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

const (
	itAccountSID = "AC00000000000000000000000000000042"
	itAuthToken  = "it-twilio-auth-token"
	itAppSecret  = "it-meta-app-secret"
)

func (c *cluster) followDeliveries(t *testing.T) func() []schemas.DeliveryEvent {
	var mu sync.Mutex
	var evs []schemas.DeliveryEvent
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			_ = consumer.Follow(ctx, consumer.Conn{Brokers: c.brokers}, c.topics.Deliveries, false, func(m kafka.Message) bool {
				var ev schemas.DeliveryEvent
				if err := json.Unmarshal(m.Value, &ev); err != nil {
					t.Errorf("delivery event is not JSON: %q", m.Value)
				}
				mu.Lock()
				evs = append(evs, ev)
				mu.Unlock()
				return true
			})
		}
	}()
	return func() []schemas.DeliveryEvent {
		mu.Lock()
		defer mu.Unlock()
		return append([]schemas.DeliveryEvent(nil), evs...)
	}
}

// twilioStatus posts a status callback as Twilio does: to the URL it was
// given, signed over that URL with the auth token.
func twilioStatus(callbackURL, token, sid, status string) (int, error) {
	return twilioAccountStatus(callbackURL, itAccountSID, token, sid, status)
}

// twilioAccountStatus is twilioStatus from account.
func twilioAccountStatus(callbackURL, account, token, sid, status string) (int, error) {
	form := url.Values{"AccountSid": {account}, "MessageSid": {sid}, "SmsSid": {sid}, "MessageStatus": {status}, "SmsStatus": {status},
		"To": {"+96550001234"}, "From": {"+15550001111"}, "ApiVersion": {"2010-04-01"}}
	req, _ := http.NewRequest(http.MethodPost, callbackURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", dispatch.TwilioSignature(token, callbackURL, form))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// twilioStatusTraced is twilioAccountStatus from itAccountSID, calling
// written once the request is on the wire.
func twilioStatusTraced(callbackURL, token, sid, status string, written func()) (int, error) {
	form := url.Values{"AccountSid": {itAccountSID}, "MessageSid": {sid}, "SmsSid": {sid}, "MessageStatus": {status}, "SmsStatus": {status},
		"To": {"+96550001234"}, "From": {"+15550001111"}, "ApiVersion": {"2010-04-01"}}
	req, _ := http.NewRequest(http.MethodPost, callbackURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", dispatch.TwilioSignature(token, callbackURL, form))
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { written() },
	}))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// metaStatus posts a Cloud API status notification signed with secret.
func metaStatus(base, secret, wamid, status string, at time.Time) (int, error) {
	body := fmt.Sprintf(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","statuses":[{"id":%q,"status":%q,"timestamp":"%d","recipient_id":"96550001234"}]}}]}]}`,
		wamid, status, at.Unix())
	return postSigned(base+api.PathCallbackMeta, body, "X-Hub-Signature-256", dispatch.MetaSignature(secret, []byte(body)))
}

// metaPhoneStatus is a notification as Meta sends it for the phone number
// phoneID (metadata.phone_number_id), signed with secret.
func metaPhoneStatus(base, secret, phoneID, wamid, status string) (int, error) {
	body := fmt.Sprintf(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":%q},"statuses":[{"id":%q,"status":%q,"timestamp":"%d","recipient_id":"96550001234"}]}}]}]}`,
		phoneID, wamid, status, time.Now().Unix())
	return postSigned(base+api.PathCallbackMeta, body, "X-Hub-Signature-256", dispatch.MetaSignature(secret, []byte(body)))
}

// webhookStatus is a webhook provider's receipt signed with secret.
func webhookStatus(base, secret, id, status string) (int, error) {
	body := fmt.Sprintf(`{"id":%q,"status":%q}`, id, status)
	return postSigned(base+api.PathCallbackWebhook, body, dispatch.WebhookSignatureHeader, dispatch.WebhookSignature(secret, time.Now(), []byte(body)))
}

func postSigned(url, body, header, signature string) (int, error) {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(header, signature)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestReceiptsEndToEnd runs notifyd as a process with Twilio- and
// Meta-shaped providers and posts their receipts as they would, signed:
// a good receipt becomes one delivery event correlated to its command; a
// bad signature is 401 and publishes nothing; a replayed or out-of-order
// receipt publishes nothing; and receipts posted while the process is
// killed with SIGKILL are, for every one answered 200, on the topic (and
// the others too, once the provider retries them).
func TestReceiptsEndToEnd(t *testing.T) {
	c := newCluster(t, 0)
	peers := newProviderPeers(t)
	deliveries := c.followDeliveries(t)
	dir := t.TempDir()
	apiAddr := freePort(t)
	public := "http://" + apiAddr
	_, sum, err := api.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	opts := procOpts{dir: dir, waitForReady: true, catchUpWait: 3 * time.Second,
		api: fmt.Sprintf(`{listen: %q, public_url: %q, keys: [{name: shop, sha256: %q}]}`, apiAddr, public, sum),
		providers: fmt.Sprintf(`  sms: {kind: twilio, twilio: {base_url: %q, account_sid: %s, auth_token: %s, from: "+15550001111"}}
  whatsapp: {kind: meta, meta: {base_url: %q, phone_number_id: "1234567890", access_token: it-token, app_secret: %s, verify_token: it-verify}}`,
			peers.srv.URL, itAccountSID, itAuthToken, peers.srv.URL, itAppSecret)}
	p := c.start(opts)

	event := `{"event_id":"e-r","session_id":"s-r","order_no":"o-r","state":"paid","timestamp_utc":"2026-11-02T09:00:07Z","amount":"12.500","currency_code":"KWD","customer_phone":"+96550001234","language":"en","notifications":{"sms":[],"whatsapp":[]}}`
	c.produce(c.topics.PaymentEvents, kafka.Message{Key: []byte("s-r"), Value: []byte(event)})
	c.produce(c.topics.Commands, kafka.Message{Key: []byte("s-r"), Value: commandJSON("r-1", "s-r", "sms", "whatsapp")})
	c.waitAnswered([]string{"r-1"}, 60*time.Second)
	res, _ := c.firstResult("r-1")
	ids := map[schemas.Channel]string{}
	for _, ch := range res.Channels {
		ids[ch.Channel] = ch.ProviderMessageID
	}
	if res.Outcome != schemas.OutcomeNotified || ids["sms"] == "" || ids["whatsapp"] == "" {
		t.Fatalf("result: %+v", res)
	}
	peers.mu.Lock()
	callback := peers.callbacks[0]
	peers.mu.Unlock()
	if callback != public+api.PathCallbackTwilio {
		t.Fatalf("Twilio was asked to call back at %q, want %q", callback, public+api.PathCallbackTwilio)
	}

	waitEvents := func(what string, n int) []schemas.DeliveryEvent {
		t.Helper()
		var evs []schemas.DeliveryEvent
		testkit.Until(t, 60*time.Second, func() error {
			if evs = deliveries(); len(evs) < n {
				return fmt.Errorf("%s: %d delivery events, want %d: %+v", what, len(evs), n, evs)
			}
			return nil
		})
		return evs
	}
	must := func(code int, err error) int {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	if code := must(twilioStatus(callback, "not-the-token", ids["sms"], "delivered")); code != http.StatusUnauthorized {
		t.Errorf("bad Twilio signature: %d", code)
	}
	if code := must(metaStatus(public, "not-the-secret", ids["whatsapp"], "read", time.Now())); code != http.StatusUnauthorized {
		t.Errorf("bad Meta signature: %d", code)
	}
	for _, st := range []string{"delivered", "delivered", "sent"} { // replayed, then out of order
		if code := must(twilioStatus(callback, itAuthToken, ids["sms"], st)); code != http.StatusOK {
			t.Errorf("Twilio %s: %d", st, code)
		}
	}
	if code := must(metaStatus(public, itAppSecret, ids["whatsapp"], "read", time.Now())); code != http.StatusOK {
		t.Errorf("Meta read: %d", code)
	}
	if code := must(metaStatus(public, itAppSecret, ids["whatsapp"], "delivered", time.Now().Add(-time.Second))); code != http.StatusOK {
		t.Errorf("Meta delivered after read: %d", code)
	}
	evs := waitEvents("good receipts", 2)
	// A marker published after them: once it is read, nothing else came.
	if code := must(twilioStatus(callback, itAuthToken, "SM-marker", "failed")); code != http.StatusOK {
		t.Errorf("marker: %d", code)
	}
	evs = waitEvents("the marker", 3)
	byID := map[string][]schemas.DeliveryEvent{}
	for _, ev := range evs {
		byID[ev.ProviderMessageID] = append(byID[ev.ProviderMessageID], ev)
	}
	if got := byID[ids["sms"]]; len(got) != 1 || got[0].Status != schemas.DeliveryDelivered || got[0].CommandID != "r-1" || got[0].SessionID != "s-r" || got[0].Provider != "twilio" {
		t.Errorf("sms events: %+v", got)
	}
	if got := byID[ids["whatsapp"]]; len(got) != 1 || got[0].Status != schemas.DeliveryRead || got[0].Channel != schemas.ChannelWhatsApp {
		t.Errorf("whatsapp events: %+v", got)
	}
	if len(evs) != 3 {
		t.Errorf("%d events, want 3 (sms delivered, whatsapp read, the marker): %+v", len(evs), evs)
	}

	// Kill -9 while receipts of sent messages arrive: every one answered
	// 200 is on the topic.
	const n = 40
	var cmds []string
	for i := 0; i < n; i++ {
		session := fmt.Sprintf("s-k%02d", i)
		c.produce(c.topics.PaymentEvents, kafka.Message{Key: []byte(session), Value: []byte(strings.ReplaceAll(event, "s-r", session))})
		c.produce(c.topics.Commands, kafka.Message{Key: []byte(session), Value: commandJSON("k-"+session, session, "sms")})
		cmds = append(cmds, "k-"+session)
	}
	c.waitAnswered(cmds, 60*time.Second)
	var sids []string
	for _, id := range cmds {
		r, v := c.firstResult(id)
		if len(r.Channels) != 1 {
			t.Fatalf("%s: %s", id, v)
		}
		sids = append(sids, r.Channels[0].ProviderMessageID)
	}
	// The kill falls among the receipts, by construction: the first half
	// is answered 200 before it, one by one; the second half is posted at
	// once as it comes; and one receipt for a message not sent yet (which
	// notifyd holds for processing.catch_up_wait, 3 s, before answering)
	// is on the wire when it comes, so it cannot have been answered.
	var ok []string
	for _, sid := range sids[:n/2] {
		if code := must(twilioStatus(callback, itAuthToken, sid, "undelivered")); code != http.StatusOK {
			t.Fatalf("receipt %s before the kill: %d", sid, code)
		}
		ok = append(ok, sid)
	}
	var wg sync.WaitGroup
	answered := make(chan string, n)
	for _, sid := range sids[n/2:] {
		wg.Go(func() {
			if code, err := twilioStatus(callback, itAuthToken, sid, "undelivered"); err == nil && code == http.StatusOK {
				answered <- sid
			}
		})
	}
	held := make(chan struct{})
	heldAnswered := make(chan bool, 1)
	go func() {
		code, err := twilioStatusTraced(callback, itAuthToken, "SM-not-sent-yet", "undelivered", func() { close(held) })
		heldAnswered <- err == nil && code == http.StatusOK
	}()
	<-held // its request is written: notifyd is holding it
	p.kill9()
	wg.Wait()
	close(answered)
	for sid := range answered {
		ok = append(ok, sid)
	}
	if <-heldAnswered {
		t.Fatal("the receipt held for catch_up_wait was answered: the kill did not fall among the receipts")
	}
	t.Logf("%d of %d receipts answered 200 before the kill, one held receipt not", len(ok), n)
	c.start(opts) // the same store
	// Twilio retries what was not answered 200.
	answeredSet := map[string]bool{}
	for _, sid := range ok {
		answeredSet[sid] = true
	}
	for _, sid := range sids {
		if !answeredSet[sid] {
			if code := must(twilioStatus(callback, itAuthToken, sid, "undelivered")); code != http.StatusOK {
				t.Errorf("retried receipt %s: %d", sid, code)
			}
		}
	}
	testkit.Until(t, 60*time.Second, func() error {
		have := map[string]bool{}
		for _, ev := range deliveries() {
			have[ev.ProviderMessageID] = true
		}
		var missing []string
		for _, sid := range sids {
			if !have[sid] {
				missing = append(missing, sid)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("receipts with no delivery event: %v (answered 200 before the kill: %v)", missing, ok)
		}
		return nil
	})
}

// TestReceiptsBelongToTheirSender runs notifyd with two accounts of each
// provider kind that has receipts (two Twilio accounts, two Meta apps with
// a phone number each, two webhook providers with their own receipt
// secrets) and sends one message through the first of each. Then every
// one of the six posts a verified receipt about each of the three
// messages: only the sender's own receipt becomes a delivery event; the
// fifteen others are answered 200, change nothing, and are counted as
// notifyd_callbacks_total{result="foreign_message"}.
func TestReceiptsBelongToTheirSender(t *testing.T) {
	c := newCluster(t, 0)
	peers := newProviderPeers(t)
	deliveries := c.followDeliveries(t)
	apiAddr := freePort(t)
	public := "http://" + apiAddr
	_, sum, err := api.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	const (
		accountB = "AC00000000000000000000000000000043"
		tokenB   = "it-twilio-auth-token-b"
		phoneA   = "1234567890"
		phoneB   = "2234567890"
		secretB  = "it-meta-app-secret-b"
		hookA    = "it-webhook-receipt-secret-a"
		hookB    = "it-webhook-receipt-secret-b"
	)
	// The two webhook providers are told apart by host: one is called by
	// address, the other by name.
	hostA := peers.srv.URL + "/a/hook"
	hostB := strings.Replace(peers.srv.URL, "127.0.0.1", "localhost", 1) + "/b/hook"
	opts := procOpts{waitForReady: true, catchUpWait: 2 * time.Second,
		api: fmt.Sprintf(`{listen: %q, public_url: %q, keys: [{name: shop, sha256: %q}]}`, apiAddr, public, sum),
		providers: fmt.Sprintf(`  sms:
    - {kind: twilio, twilio: {base_url: %[1]q, account_sid: %[2]s, auth_token: %[3]s, from: "+15550001111"}}
    - {kind: twilio, twilio: {base_url: %[1]q, account_sid: %[4]s, auth_token: %[5]s, from: "+15550001111"}}
  whatsapp:
    - {kind: meta, meta: {base_url: %[1]q, phone_number_id: %[6]q, access_token: it-token, app_secret: %[7]s}}
    - {kind: meta, meta: {base_url: %[1]q, phone_number_id: %[8]q, access_token: it-token, app_secret: %[9]s}}
  email:
    - {kind: webhook, webhook: {url: %[10]q, receipt_secret: %[11]s}}
    - {kind: webhook, webhook: {url: %[12]q, receipt_secret: %[13]s}}`,
			peers.srv.URL, itAccountSID, itAuthToken, accountB, tokenB, phoneA, itAppSecret, phoneB, secretB, hostA, hookA, hostB, hookB)}
	p := c.start(opts)

	event := `{"event_id":"e-o","session_id":"s-o","order_no":"o-o","state":"paid","timestamp_utc":"2026-11-02T09:00:07Z","amount":"12.500","currency_code":"KWD","customer_phone":"+96550001234","customer_email":"layla@example.com","language":"en","notifications":{"sms":[],"whatsapp":[],"email":[]}}`
	c.produce(c.topics.PaymentEvents, kafka.Message{Key: []byte("s-o"), Value: []byte(event)})
	c.produce(c.topics.Commands, kafka.Message{Key: []byte("s-o"), Value: commandJSON("o-1", "s-o", "sms", "whatsapp", "email")})
	c.waitAnswered([]string{"o-1"}, 60*time.Second)
	res, _ := c.firstResult("o-1")
	ids := map[schemas.Channel]string{}
	for _, ch := range res.Channels {
		ids[ch.Channel] = ch.ProviderMessageID
	}
	wantAccount := map[schemas.Channel]string{schemas.ChannelSMS: itAccountSID, schemas.ChannelWhatsApp: phoneA,
		schemas.ChannelEmail: strings.TrimPrefix(peers.srv.URL, "http://")}
	for _, ch := range res.Channels {
		if ch.Status != schemas.StatusSent || ch.ProviderAccount != wantAccount[ch.Channel] {
			t.Fatalf("result channel %s: %+v, want sent from %s", ch.Channel, ch, wantAccount[ch.Channel])
		}
	}

	// The six senders of receipts, each posting about a message; the
	// first of each kind sent one.
	senders := []struct {
		name string
		sent schemas.Channel // the channel it sent, if any
		post func(id, status string) (int, error)
	}{
		{"twilio " + itAccountSID, schemas.ChannelSMS, func(id, st string) (int, error) {
			return twilioAccountStatus(public+api.PathCallbackTwilio, itAccountSID, itAuthToken, id, st)
		}},
		{"twilio " + accountB, "", func(id, st string) (int, error) {
			return twilioAccountStatus(public+api.PathCallbackTwilio, accountB, tokenB, id, st)
		}},
		{"meta " + phoneA, schemas.ChannelWhatsApp, func(id, st string) (int, error) { return metaPhoneStatus(public, itAppSecret, phoneA, id, st) }},
		{"meta " + phoneB, "", func(id, st string) (int, error) { return metaPhoneStatus(public, secretB, phoneB, id, st) }},
		{"webhook a", schemas.ChannelEmail, func(id, st string) (int, error) { return webhookStatus(public, hookA, id, st) }},
		{"webhook b", "", func(id, st string) (int, error) { return webhookStatus(public, hookB, id, st) }},
	}
	// Every other sender first, with the furthest status: had any been
	// taken, the sender's own "delivered" below would move nothing.
	for _, s := range senders {
		for ch, id := range ids {
			if ch == s.sent {
				continue
			}
			if code, err := s.post(id, "read"); err != nil || code != http.StatusOK {
				t.Errorf("%s about the %s message: %d %v, want 200", s.name, ch, code, err)
			}
		}
	}
	for _, s := range senders {
		if s.sent == "" {
			continue
		}
		if code, err := s.post(ids[s.sent], "delivered"); err != nil || code != http.StatusOK {
			t.Errorf("%s about its own message: %d %v", s.name, code, err)
		}
	}
	// A marker after them: once it is read, nothing else came.
	if code, err := twilioStatus(public+api.PathCallbackTwilio, itAuthToken, "SM-marker", "failed"); err != nil || code != http.StatusOK {
		t.Fatalf("marker: %d %v", code, err)
	}
	var evs []schemas.DeliveryEvent
	testkit.Eventually(t, "the marker's delivery event", 60*time.Second, func() bool {
		evs = deliveries()
		return slices.ContainsFunc(evs, func(ev schemas.DeliveryEvent) bool { return ev.ProviderMessageID == "SM-marker" })
	})
	for ch, id := range ids {
		var got []schemas.DeliveryEvent
		for _, ev := range evs {
			if ev.ProviderMessageID == id {
				got = append(got, ev)
			}
		}
		if len(got) != 1 || got[0].Status != schemas.DeliveryDelivered || got[0].ProviderAccount != wantAccount[ch] || got[0].CommandID != "o-1" {
			t.Errorf("%s message %s: events %+v, want one: delivered, from %s", ch, id, got, wantAccount[ch])
		}
	}
	if len(evs) != 4 {
		t.Errorf("%d delivery events, want 4 (three messages, the marker): %+v", len(evs), evs)
	}
	for _, kind := range []string{"twilio", "meta", "webhook"} {
		if n := metricValue(t, p, "notifyd_callbacks_total", map[string]string{"provider": kind, "result": "foreign_message"}); n != 5 {
			t.Errorf("notifyd_callbacks_total{provider=%q,result=\"foreign_message\"} = %v, want 5", kind, n)
		}
	}
}
