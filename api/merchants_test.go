package api

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/schemas"
)

// TestMerchantScope: a merchant's key publishes commands limited to its
// merchant, under command_ids scoped to it (two merchants' equal
// Idempotency-Keys are two commands), may not name another merchant (403,
// nothing published), and reads only its merchant's results (another's is
// 404 as one that does not exist); a platform key names the merchant or
// none, and its command_id is the key itself.
func TestMerchantScope(t *testing.T) {
	acme, acmeSum, _ := NewKey()
	globex, globexSum, _ := NewKey()
	platform, platformSum, _ := NewKey()
	cfg := Config{Listen: DefaultListen, Wait: 50 * time.Millisecond, Keys: []Key{
		{Name: "backend", SHA256: acmeSum, Merchant: "acme"},
		{Name: "backend2", SHA256: globexSum, Merchant: "globex"},
		{Name: "ops", SHA256: platformSum},
	}}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	k := newMemoryKafka()
	s, err := New(cfg, Deps{Commands: k, Results: k}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	long := strings.Repeat("k", 128)
	for _, c := range []struct {
		name, key, idem, body string
		status                int
		command, merchant     string // the command published ("" none)
	}{
		{"merchant key", acme, "k-1", `{"order_no":"1001","channels":["sms"]}`, 202, "acme:k-1", "acme"},
		{"another merchant, the same key", globex, "k-1", `{"order_no":"1001","channels":["sms"]}`, 202, "globex:k-1", "globex"},
		{"naming its own merchant", acme, "k-2", `{"order_no":"1001","merchant_id":"acme","channels":["sms"]}`, 202, "acme:k-2", "acme"},
		{"naming another merchant", acme, "k-3", `{"order_no":"1001","merchant_id":"globex","channels":["sms"]}`, 403, "", ""},
		{"a merchant_id that is not one", acme, "k-4", `{"order_no":"1001","merchant_id":"a/b","channels":["sms"]}`, 400, "", ""},
		{"a merchant_id not a string", platform, "k-4", `{"order_no":"1001","merchant_id":7,"channels":["sms"]}`, 400, "", ""},
		{"platform key naming none", platform, "k-1", `{"order_no":"1001","channels":["sms"]}`, 202, "k-1", ""},
		{"platform key naming a merchant", platform, "p-1", `{"order_no":"1001","merchant_id":"globex","channels":["sms"]}`, 202, "globex:p-1", "globex"},
		{"an empty merchant_id is none", platform, "p-2", `{"order_no":"1001","merchant_id":"","channels":["sms"]}`, 202, "p-2", ""},
		{"a key too long to scope", acme, long, `{"order_no":"1001","channels":["sms"]}`, 202,
			"acme:sha256:" + HashKey(long)[:52], "acme"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := k.publishedCount()
			a := post(h, c.key, c.idem, c.body)
			if a.status != c.status {
				t.Fatalf("%d %s, want %d", a.status, a.body, c.status)
			}
			if c.command == "" {
				if k.publishedCount() != before {
					t.Error("a command was published")
				}
				return
			}
			cmd := <-k.onPublish
			if cmd.CommandID != c.command || cmd.MerchantID != c.merchant {
				t.Errorf("published %q for merchant %q, want %q for %q", cmd.CommandID, cmd.MerchantID, c.command, c.merchant)
			}
			if len(cmd.CommandID) > schemas.MaxIDLength {
				t.Errorf("command_id of %d characters", len(cmd.CommandID))
			}
		})
	}

	// Results: each merchant reads its own, by its own Idempotency-Key or
	// the scoped command_id; another merchant's is 404 like a missing one.
	k.decide(t, schemas.DeliveryResult{ResultID: "r1", CommandID: "acme:k-1", MerchantID: "acme", OrderNo: "1001",
		Outcome: schemas.OutcomeNotified, Message: schemas.MessageNotified, RequestedBy: "backend",
		Channels: []schemas.ChannelResult{{Channel: schemas.ChannelSMS, Status: schemas.StatusSent}}})
	k.decide(t, schemas.DeliveryResult{ResultID: "r2", CommandID: "globex:k-1", MerchantID: "globex", OrderNo: "1001",
		Outcome: schemas.OutcomeNotified, Message: schemas.MessageNotified, RequestedBy: "backend2",
		Channels: []schemas.ChannelResult{{Channel: schemas.ChannelSMS, Status: schemas.StatusSent}}})
	k.decide(t, schemas.DeliveryResult{ResultID: "r3", CommandID: "k-9", MerchantID: "globex", OrderNo: "1001",
		Outcome: schemas.OutcomeNotified, Message: schemas.MessageNotified, RequestedBy: "backend",
		Channels: []schemas.ChannelResult{{Channel: schemas.ChannelSMS, Status: schemas.StatusSent}}})
	// A platform key's command without a merchant, whose Idempotency-Key
	// looks scoped, about another merchant's transaction.
	k.decide(t, schemas.DeliveryResult{ResultID: "r4", CommandID: "acme:zzz", MerchantID: "globex", OrderNo: "1001",
		Outcome: schemas.OutcomeNotified, Message: schemas.MessageNotified, RequestedBy: "backend",
		Channels: []schemas.ChannelResult{{Channel: schemas.ChannelSMS, Status: schemas.StatusSent}}})
	get := func(key, id string) (int, string) {
		r := httptest.NewRequest(http.MethodGet, PathNotifications+id+"/", nil)
		r.Header.Set("Authorization", "Api-Key "+key)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		b, _ := io.ReadAll(w.Result().Body)
		return w.Code, string(b)
	}
	for _, c := range []struct {
		name, key, id string
		status        int
	}{
		{"its own by its key", acme, "k-1", 200},
		{"its own by the command_id", acme, "acme:k-1", 200},
		{"the other merchant's own", globex, "k-1", 200},
		{"another merchant's by its command_id", acme, "globex:k-1", 404},
		{"a result of another merchant under a bare id", acme, "k-9", 404},
		{"a missing one", acme, "k-404", 404},
		{"another merchant's under an id in its own scope", acme, "acme:zzz", 404},
	} {
		t.Run("GET "+c.name, func(t *testing.T) {
			status, body := get(c.key, c.id)
			if status != c.status {
				t.Errorf("%d %s, want %d", status, body, c.status)
			}
			if status == 404 && body != `{"detail":"Not found."}`+"\n" && strings.TrimSpace(body) != `{"detail":"Not found."}` {
				t.Errorf("404 body %q differs from a missing result's", body)
			}
		})
	}
}

// tableMerchants is a merchants' directory as cmd/notifyd gives the API
// (consumer.Merchants): a table replaced as settings change.
type tableMerchants struct {
	mu    sync.Mutex
	keys  map[string][2]string // sha256 -> name, merchant
	users map[string]User
	rates map[string]*dispatch.RateLimit
}

func (m *tableMerchants) Key(sum string) (string, string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[sum]
	return k[0], k[1], ok
}

func (m *tableMerchants) User(name string) (User, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[name]
	return u, ok
}

func (m *tableMerchants) RateLimit(merchant string) *dispatch.RateLimit {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rates[merchant]
}

// TestMerchantPrincipals: keys and users of merchants' settings
// authenticate as their merchant's, as the settings are now: a password
// changed in the settings is checked again at once (not taken from the
// cache of accepted pairs); a merchant's keys share its rate limit; a
// platform key reads a merchant's result.
func TestMerchantPrincipals(t *testing.T) {
	key1, sum1, _ := NewKey()
	key2, sum2, _ := NewKey()
	platformKey, platformSum, _ := NewKey()
	hash := func(p string) string {
		h, _ := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		return string(h)
	}
	m := &tableMerchants{
		keys:  map[string][2]string{sum1: {"backend", "acme"}, sum2: {"backend-2", "acme"}},
		users: map[string]User{"acme-ops": {Username: "acme-ops", Bcrypt: hash("first"), Role: RoleOperator, Merchant: "acme"}},
		rates: map[string]*dispatch.RateLimit{"acme": {PerSecond: 0.001, Burst: 1}},
	}
	cfg := Config{Listen: DefaultListen, Wait: 50 * time.Millisecond, Keys: []Key{{Name: "ops", SHA256: platformSum}}, RateLimit: rateLimit(1000, 1000)}
	cfg.SetDefaults()
	k := newMemoryKafka()
	s, err := New(cfg, Deps{Commands: k, Results: k, Merchants: m}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	auth := func(header string) (Principal, *authFailure) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", header)
		return s.auth.authenticate(r)
	}
	if p, f := auth("Api-Key " + key1); f != nil || p != (Principal{Name: "backend", Key: true, Merchant: "acme"}) {
		t.Errorf("a merchant's key: %+v %v", p, f)
	}
	if p, f := auth("Api-Key " + platformKey); f != nil || p != (Principal{Name: "ops", Key: true}) {
		t.Errorf("the platform's key: %+v %v", p, f)
	}
	if p, f := auth(basic("acme-ops", "first")); f != nil || p != (Principal{Name: "acme-ops", Role: RoleOperator, Merchant: "acme"}) {
		t.Errorf("a merchant's user: %+v %v", p, f)
	}
	m.mu.Lock()
	m.users["acme-ops"] = User{Username: "acme-ops", Bcrypt: hash("second"), Role: RoleOperator, Merchant: "acme"}
	m.mu.Unlock()
	if _, f := auth(basic("acme-ops", "first")); f == nil || f.status != http.StatusUnauthorized {
		t.Errorf("the old password after the settings changed it: %v", f)
	}
	if _, f := auth(basic("acme-ops", "second")); f != nil {
		t.Errorf("the new password: %v", f)
	}
	// acme's two keys share acme's bucket (burst 1): the second is 429;
	// the platform's key has its own.
	if a := post(h, key1, "r-1", `{"order_no":"1","channels":["sms"]}`); a.status != http.StatusAccepted {
		t.Errorf("acme's first request: %d %s", a.status, a.body)
	}
	if a := post(h, key2, "r-2", `{"order_no":"1","channels":["sms"]}`); a.status != http.StatusTooManyRequests {
		t.Errorf("acme's other key at once: %d %s, want 429", a.status, a.body)
	}
	if a := post(h, platformKey, "r-3", `{"order_no":"1","channels":["sms"]}`); a.status != http.StatusAccepted {
		t.Errorf("the platform's key: %d %s", a.status, a.body)
	}
	k.drain()
	// The platform's key reads a result of acme's that it asked for.
	k.decide(t, schemas.DeliveryResult{ResultID: "r", CommandID: "acme:p", MerchantID: "acme", Outcome: schemas.OutcomeNotified,
		Message: schemas.MessageNotified, RequestedBy: "ops", Channels: []schemas.ChannelResult{{Channel: schemas.ChannelSMS, Status: schemas.StatusSent}}})
	r := httptest.NewRequest(http.MethodGet, PathNotifications+"acme:p/", nil)
	r.Header.Set("Authorization", "Api-Key "+platformKey)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Errorf("the platform reading acme's result: %d %s", w.Code, w.Body)
	}
}
