package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/notifyd/notifyd/schemas"

	"github.com/notifyd/notifyd/internal/testkit"
)

// memoryKafka stands where cmd wires the consumer: it keeps the commands
// the API published and hands results to the waiters, like the results
// follower does.
type memoryKafka struct {
	mu        sync.Mutex
	published []schemas.ResendCommand
	onPublish chan schemas.ResendCommand
	results   map[string][]byte
	watchers  map[string][]chan []byte
}

func newMemoryKafka() *memoryKafka {
	return &memoryKafka{onPublish: make(chan schemas.ResendCommand, 16), results: map[string][]byte{}, watchers: map[string][]chan []byte{}}
}

func (m *memoryKafka) PublishCommand(_ context.Context, cmd schemas.ResendCommand, _ string) error {
	m.mu.Lock()
	m.published = append(m.published, cmd)
	m.mu.Unlock()
	m.onPublish <- cmd
	return nil
}

func (m *memoryKafka) Result(id string) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.results[id]
	return r, ok, nil
}

func (m *memoryKafka) WatchResult(id string) (<-chan []byte, func()) {
	ch := make(chan []byte, 1)
	m.mu.Lock()
	m.watchers[id] = append(m.watchers[id], ch)
	m.mu.Unlock()
	return ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.watchers[id] = slices.DeleteFunc(m.watchers[id], func(c chan []byte) bool { return c == ch })
	}
}

// decide records the first result of a command and wakes its waiters.
func (m *memoryKafka) decide(t testing.TB, r schemas.DeliveryResult) {
	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.results[r.CommandID] = raw
	for _, ch := range m.watchers[r.CommandID] {
		ch <- raw
	}
	delete(m.watchers, r.CommandID)
}

func (m *memoryKafka) publishedCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.published)
}

// drain empties onPublish, for tests that do not read it.
func (m *memoryKafka) drain() {
	for {
		select {
		case <-m.onPublish:
		default:
			return
		}
	}
}

type answered struct {
	status   int
	body     string
	replayed string
}

func post(h http.Handler, key, idem, body string) answered {
	r := httptest.NewRequest(http.MethodPost, PathNotifications, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Api-Key "+key)
	r.Header.Set("Idempotency-Key", idem)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return answered{w.Code, strings.TrimSpace(string(b)), w.Header().Get("Idempotent-Replayed")}
}

// TestKeyReusedWhileInFlight: a second request with the Idempotency-Key of
// one still waiting for its result is answered 422 at once when it asks
// for something else, and publishes nothing; when it asks for the same, it
// waits for the first one's result and gets it marked replayed. One command
// is published in all.
func TestKeyReusedWhileInFlight(t *testing.T) {
	key, sum, _ := NewKey()
	otherKey, otherSum, _ := NewKey()
	cfg := Config{Listen: DefaultListen, Keys: []Key{{Name: "shop", SHA256: sum}, {Name: "other", SHA256: otherSum}}, Wait: time.Minute}
	cfg.SetDefaults()
	k := newMemoryKafka()
	s, err := New(cfg, Deps{Commands: k, Results: k}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	first := make(chan answered, 1)
	go func() { first <- post(h, key, "k-1", `{"session_id":"s1","channels":["sms"]}`) }()
	cmd := <-k.onPublish // the first request is in flight

	for name, body := range map[string]string{
		"other channels":    `{"session_id":"s1","channels":["email"]}`,
		"other transaction": `{"session_id":"s2","channels":["sms"]}`,
		"named by order_no": `{"order_no":"o1","channels":["sms"]}`,
		"a channel added":   `{"session_id":"s1","channels":["sms","email"]}`,
		"by another client": "",
	} {
		by := key
		if body == "" {
			by, body = otherKey, `{"session_id":"s1","channels":["sms"]}`
		}
		if a := post(h, by, "k-1", body); a.status != http.StatusUnprocessableEntity || a.body != `{"detail":"`+msgKeyReused+`"}` {
			t.Errorf("%s: %d %s, want 422", name, a.status, a.body)
		}
	}
	second := make(chan answered, 1)
	go func() { second <- post(h, key, "k-1", `{"session_id":"s1","channels":["sms"]}`) }()
	// The same request waits; give it time to register, then decide.
	testkit.Eventually(t, "two waiters for k-1", 10*time.Second, func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return len(k.watchers["k-1"]) == 2
	})
	k.decide(t, schemas.DeliveryResult{
		ResultID: "r1", CommandID: "k-1", SessionID: "s1", Outcome: schemas.OutcomeNotified, Message: schemas.MessageNotified,
		Channels:    []schemas.ChannelResult{{Channel: schemas.ChannelSMS, Status: schemas.StatusSent}},
		RequestedBy: "shop", RequestedAt: cmd.RequestedAt,
	})
	a, b := <-first, <-second
	if a.status != 200 || a.replayed != "" {
		t.Errorf("first: %d %s replayed=%q, want 200 not replayed", a.status, a.body, a.replayed)
	}
	if b.status != 200 || b.replayed != "true" || b.body != a.body {
		t.Errorf("second: %d %s replayed=%q, want the first's answer replayed", b.status, b.body, b.replayed)
	}
	if n := k.publishedCount(); n != 1 {
		t.Errorf("%d commands published, want 1", n)
	}
	// Once decided, a retry is answered from the results and a reuse is 422.
	if c := post(h, key, "k-1", `{"order_no":"o1","channels":["sms"]}`); c.status != 422 {
		t.Errorf("reuse after the result: %d %s", c.status, c.body)
	}
	if c := post(h, key, "k-1", `{"session_id":"s1","channels":["sms"]}`); c.status != 200 || c.replayed != "true" {
		t.Errorf("retry after the result: %d %s replayed=%q", c.status, c.body, c.replayed)
	}
	if n := k.publishedCount(); n != 1 {
		t.Errorf("%d commands published, want 1", n)
	}
}

// TestBasicVerifiedOnce: bcrypt runs once for a pair it accepted, again
// after verifiedFor, and every time for a wrong password.
func TestBasicVerifiedOnce(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("right pass"), bcrypt.MinCost)
	cfg := Config{Listen: DefaultListen, Users: []User{{Username: "support", Bcrypt: string(hash), Role: RoleOperator}}}
	a, err := newAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a.now = func() time.Time { return now }
	compared := 0
	a.compare = func(h, p []byte) error { compared++; return bcrypt.CompareHashAndPassword(h, p) }
	try := func(pass string) string {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.SetBasicAuth("support", pass)
		_, fail := a.authenticate(r)
		return fail.String()
	}
	for i, tc := range []struct {
		pass     string
		advance  time.Duration
		fail     string
		compared int
	}{
		{"right pass", 0, "", 1},
		{"right pass", time.Minute, "", 1},
		{"wrong pass", 0, msgInvalidBasic, 2},
		{"wrong pass", 0, msgInvalidBasic, 3},
		{"right pass", verifiedFor - time.Minute, "", 4}, // exactly verifiedFor after the check
		{"right pass", time.Second, "", 4},
	} {
		now = now.Add(tc.advance)
		if fail := try(tc.pass); fail != tc.fail || compared != tc.compared {
			t.Errorf("step %d (%s): fail %q after %d comparisons, want %q after %d", i, tc.pass, fail, compared, tc.fail, tc.compared)
		}
	}
}

// TestVerifiedPairsBounded: the pairs bcrypt accepted are remembered, a
// second user's beside the first's, up to maxVerified; one more forgets
// them all (the next request of each runs bcrypt again) rather than grow.
func TestVerifiedPairsBounded(t *testing.T) {
	cfg := Config{Listen: DefaultListen, Users: []User{
		{Username: "support", Bcrypt: "unused", Role: RoleOperator},
		{Username: "other", Bcrypt: "unused", Role: RoleViewer},
	}}
	a, err := newAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	a.compare = func(_, p []byte) error { // every "ok-" password is right
		compared++
		if strings.HasPrefix(string(p), "ok-") {
			return nil
		}
		return errors.New("wrong")
	}
	try := func(user, pass string) {
		t.Helper()
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.SetBasicAuth(user, pass)
		if _, fail := a.authenticate(r); fail.String() != "" {
			t.Fatalf("%s/%s: %s", user, pass, fail)
		}
	}
	step := func(name, user, pass string, want int) {
		t.Helper()
		try(user, pass)
		if compared != want {
			t.Errorf("%s: %d comparisons, want %d", name, compared, want)
		}
	}
	step("first check", "support", "ok-0", 1)
	step("remembered", "support", "ok-0", 1)
	for i := 1; i < maxVerified-1; i++ {
		try("other", fmt.Sprintf("ok-%d", i))
	}
	step("remembered beside another user's", "support", "ok-0", maxVerified-1)
	step("the last pair that fits", "other", "ok-last", maxVerified)
	step("still remembered", "support", "ok-0", maxVerified)
	step("one pair more", "other", "ok-over", maxVerified+1)
	step("forgotten", "support", "ok-0", maxVerified+2)
}

// TestDummyHashCost: the hash an unknown username is checked against costs
// what the costliest configured user's does (so the answer's time does not
// tell which names exist), bcrypt's default with no users.
func TestDummyHashCost(t *testing.T) {
	hash := func(cost int) string {
		h, err := bcrypt.GenerateFromPassword([]byte("pass"), cost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	for _, tt := range []struct {
		name  string
		users []User
		want  int
	}{
		{"users of cost 4 and 5", []User{{Username: "a", Bcrypt: hash(4)}, {Username: "b", Bcrypt: hash(5)}, {Username: "c", Bcrypt: hash(4)}}, 5},
		{"no users", nil, bcrypt.DefaultCost},
	} {
		a, err := newAuthenticator(Config{Listen: DefaultListen, Users: tt.users})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := bcrypt.Cost(a.dummy); err != nil || got != tt.want {
			t.Errorf("%s: the dummy hash costs %d (%v), want %d", tt.name, got, err, tt.want)
		}
	}
}

// TestBodyLimit: a body of exactly MaxBodyBytes is read (here: published,
// then 202 after api.wait); one byte more is 413 and publishes nothing.
func TestBodyLimit(t *testing.T) {
	key, sum, _ := NewKey()
	cfg := Config{Listen: DefaultListen, Keys: []Key{{Name: "shop", SHA256: sum}}, Wait: time.Millisecond}
	cfg.SetDefaults()
	k := newMemoryKafka()
	s, err := New(cfg, Deps{Commands: k, Results: k}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	body := func(size int) string {
		head := `{"session_id":"s1","channels":["sms"],"pad":"`
		return head + strings.Repeat("x", size-len(head)-2) + `"}`
	}
	if a := post(s.Handler(), key, "b-1", body(MaxBodyBytes)); a.status != http.StatusAccepted {
		t.Errorf("%d bytes: %d %s, want 202", MaxBodyBytes, a.status, a.body)
	}
	if a := post(s.Handler(), key, "b-2", body(MaxBodyBytes+1)); a.status != http.StatusRequestEntityTooLarge {
		t.Errorf("%d bytes: %d %s, want 413", MaxBodyBytes+1, a.status, a.body)
	}
	if n := k.publishedCount(); n != 1 {
		t.Errorf("%d commands published, want 1", n)
	}
}
