package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/testkit"
)

// memJournal is a Journal in memory, as the store will keep it.
type memJournal struct {
	mu       sync.Mutex
	pending  map[string]Delivery // endpoint \x00 message id
	finished map[string]Attempt
	states   map[string]EndpointState
	fail     atomic.Bool // every write fails
	writes   atomic.Int32
}

func newMemJournal() *memJournal {
	return &memJournal{pending: map[string]Delivery{}, finished: map[string]Attempt{}, states: map[string]EndpointState{}}
}

func jkey(d Delivery) string { return d.EndpointID + "\x00" + d.Message.ID }

var errDiskFull = errors.New("disk full")

func (j *memJournal) Add(d Delivery) (bool, error) {
	if j.fail.Load() {
		return false, errDiskFull
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	k := jkey(d)
	if _, ok := j.pending[k]; ok {
		return false, nil
	}
	if _, ok := j.finished[k]; ok {
		return false, nil
	}
	j.pending[k] = d
	j.writes.Add(1)
	return true, nil
}

func (j *memJournal) Save(d Delivery) error {
	if j.fail.Load() {
		return errDiskFull
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.pending[jkey(d)] = d
	j.writes.Add(1)
	return nil
}

func (j *memJournal) Finish(d Delivery, a Attempt) error {
	if j.fail.Load() {
		return errDiskFull
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.pending, jkey(d))
	d2 := a
	j.finished[jkey(d)] = d2
	j.writes.Add(1)
	return nil
}

func (j *memJournal) Pending(endpointID string, limit int, skip func(string) bool) ([]Delivery, error) {
	j.mu.Lock()
	var out []Delivery
	for _, d := range j.pending {
		if d.EndpointID == endpointID {
			out = append(out, d)
		}
	}
	j.mu.Unlock()
	sort.Slice(out, func(a, b int) bool { return out[a].Due.Before(out[b].Due) })
	out = slices.DeleteFunc(out, func(d Delivery) bool { return skip(d.Message.ID) })
	return out[:min(limit, len(out))], nil
}

func (j *memJournal) SaveState(s EndpointState) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.states[s.EndpointID] = s
	return nil
}

func (j *memJournal) counts() (pending, finished int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.pending), len(j.finished)
}

// endpointServer verifies every request's signature (the specification's
// steps, written here) and answers with answer(n), n counting the
// requests of each message from 1.
type endpointServer struct {
	t      testing.TB
	key    []byte
	mu     sync.Mutex
	seen   map[string]int // message id -> requests
	answer func(id string, n int) int
	srv    *httptest.Server
}

func newEndpointServer(t testing.TB, secret string, answer func(id string, n int) int) *endpointServer {
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	e := &endpointServer{t: t, key: raw, seen: map[string]int{}, answer: answer}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get("webhook-id")
		e.mu.Lock()
		key, answer := e.key, e.answer
		e.mu.Unlock()
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + r.Header.Get("webhook-timestamp") + "." + string(body)))
		if r.Header.Get("webhook-signature") != "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			t.Errorf("message %s: bad signature", id)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		e.mu.Lock()
		e.seen[id]++
		n := e.seen[id]
		e.mu.Unlock()
		w.WriteHeader(answer(id, n))
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *endpointServer) requests(id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[id]
}

func msg(i int) Message {
	return Message{ID: fmt.Sprintf("m-%03d", i), Type: TypeResult, Timestamp: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC),
		Data: json.RawMessage(fmt.Sprintf(`{"result_id":"m-%03d"}`, i))}
}

func endpoint(t testing.TB, id, url, secret string) Endpoint {
	k, err := ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	return Endpoint{ID: id, MerchantID: "acme", URL: url, Key: k, Events: []string{TypeResult}}
}

func newTestEngine(t testing.TB, j Journal, mutate func(*Config)) *Engine {
	cfg := Config{Sender: NewSender(Options{AllowPrivate: true, Timeout: 2 * time.Second}), Journal: j,
		Schedule: Schedule{0, 10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond}}
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// Every message is delivered: a 5xx or 429 is retried on the schedule
// until a 2xx, a 4xx ends it, a schedule spent ends it; each message's
// attempts are the ones its answers call for, no more; the journal ends
// with nothing pending and each outcome recorded.
func TestEngineOutcomes(t *testing.T) {
	secret, _ := NewSecret()
	answers := map[string][]int{ // by message: the answer to each request
		"m-000": {200},
		"m-001": {503, 429, 200},
		"m-002": {500, 404},
		"m-003": {503, 503, 503, 503}, // the schedule's four attempts
		"m-004": {410},
	}
	srv := newEndpointServer(t, secret, func(id string, n int) int { return answers[id][n-1] })
	j := newMemJournal()
	var observed atomic.Int32
	e := newTestEngine(t, j, func(c *Config) { c.Observe = func(Endpoint, Attempt, time.Duration) { observed.Add(1) } })
	ep := endpoint(t, "acme/0", srv.srv.URL, secret)
	for i := range len(answers) {
		if err := e.Submit(ep, msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, "every message finished", 10*time.Second, func() bool {
		p, f := j.counts()
		return p == 0 && f == len(answers)
	})
	want := map[string]Outcome{"m-000": Delivered, "m-001": Delivered, "m-002": Final, "m-003": Retry, "m-004": Final}
	total := 0
	for id, as := range answers {
		if got := srv.requests(id); got != len(as) {
			t.Errorf("%s: %d requests, want %d", id, got, len(as))
		}
		total += len(as)
		j.mu.Lock()
		a := j.finished["acme/0\x00"+id]
		j.mu.Unlock()
		if a.Outcome != want[id] || a.Status != as[len(as)-1] {
			t.Errorf("%s finished %+v, want %s with %d", id, a, want[id], as[len(as)-1])
		}
	}
	if int(observed.Load()) != total {
		t.Errorf("observed %d attempts, want %d", observed.Load(), total)
	}
	// The same message again (a record read twice) is not sent again.
	if err := e.Submit(ep, msg(0)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if got := srv.requests("m-000"); got != 1 {
		t.Errorf("a message submitted twice was sent %d times", got)
	}
	if st, ok := e.State("acme/0"); !ok || st.LastAt.IsZero() {
		t.Errorf("state %+v %v", st, ok)
	}
}

// A restart resumes a schedule where it was: the attempt after a restart
// is the next one of the schedule, at its time, not the first again.
func TestEngineResumes(t *testing.T) {
	secret, _ := NewSecret()
	var down atomic.Bool
	down.Store(true)
	srv := newEndpointServer(t, secret, func(string, int) int {
		if down.Load() {
			return 503
		}
		return 204
	})
	j := newMemJournal()
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	hourly := func(c *Config) { c.Schedule, c.Now = Schedule{0, time.Hour, time.Hour, time.Hour}, now }
	e1 := newTestEngine(t, j, hourly)
	ep := endpoint(t, "acme/0", srv.srv.URL, secret)
	if err := e1.Submit(ep, msg(1)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the first attempt recorded", 5*time.Second, func() bool {
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.pending["acme/0\x00m-001"].Attempts == 1
	})
	e1.Close()
	if got := srv.requests("m-001"); got != 1 {
		t.Fatalf("%d requests before the restart", got)
	}
	j.mu.Lock()
	saved := j.pending["acme/0\x00m-001"]
	state := j.states["acme/0"]
	j.mu.Unlock()
	if !saved.Due.Equal(now().Add(time.Hour)) || state.FailingSince.IsZero() {
		t.Fatalf("saved %+v, state %+v", saved, state)
	}

	// A new engine on the journal: nothing before the due time.
	down.Store(false)
	e2 := newTestEngine(t, j, hourly)
	if err := e2.Resume(ep, state); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := srv.requests("m-001"); got != 1 {
		t.Fatalf("the schedule restarted: %d requests before the due time", got)
	}
	if st, _ := e2.State("acme/0"); !st.FailingSince.Equal(state.FailingSince) {
		t.Errorf("the state was not resumed: %+v", st)
	}
	clock.Add(int64(time.Hour))
	testkit.Eventually(t, "delivered at its due time", 5*time.Second, func() bool {
		p, f := j.counts()
		return p == 0 && f == 1
	})
	j.mu.Lock()
	a := j.finished["acme/0\x00m-001"]
	j.mu.Unlock()
	if srv.requests("m-001") != 2 || a.Outcome != Delivered {
		t.Errorf("after the restart: %d requests, %+v", srv.requests("m-001"), a)
	}
	if st, _ := e2.State("acme/0"); !st.FailingSince.IsZero() {
		t.Errorf("healthy again: %+v", st)
	}
}

// An endpoint failing for disable_after is disabled: its pending
// deliveries and new ones are finished without an attempt; new settings
// (another URL or secret) enable it again.
func TestEngineDisables(t *testing.T) {
	secret, _ := NewSecret()
	srv := newEndpointServer(t, secret, func(string, int) int { return 500 })
	j := newMemJournal()
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	e := newTestEngine(t, j, func(c *Config) {
		// Disabled at the first failure 2 h after the first one: the
		// third attempt, exactly 2 h later.
		c.Schedule, c.Now, c.DisableAfter = Schedule{0, time.Hour, time.Hour, time.Hour, time.Hour}, now, 2*time.Hour
		c.PerEndpoint = 1 // one attempt at a time: the first failure past 90 min disables it before the next
	})
	ep := endpoint(t, "acme/0", srv.srv.URL, secret)
	for i := range 3 {
		if err := e.Submit(ep, msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitRequests := func(n int) {
		testkit.Eventually(t, fmt.Sprintf("%d requests each", n), 5*time.Second, func() bool {
			for i := range 3 {
				if srv.requests(msg(i).ID) < n {
					return false
				}
			}
			return true
		})
	}
	waitRequests(1)
	clock.Add(int64(time.Hour))
	waitRequests(2)
	if st, _ := e.State("acme/0"); !st.Disabled.IsZero() || st.FailingSince.IsZero() {
		t.Fatalf("after an hour failing: %+v", st)
	}
	clock.Add(int64(time.Hour)) // failing for 2 h: disabled at the next failure
	testkit.Eventually(t, "every delivery finished", 5*time.Second, func() bool {
		p, f := j.counts()
		return p == 0 && f == 3
	})
	st, _ := e.State("acme/0")
	if st.Disabled.IsZero() {
		t.Fatalf("not disabled: %+v", st)
	}
	before := 0
	for i := range 3 {
		before += srv.requests(msg(i).ID)
	}
	if before != 7 { // two each, then one third attempt: it disabled the endpoint
		t.Errorf("%d requests, want 7", before)
	}
	j.mu.Lock()
	disabled := 0
	for _, a := range j.finished {
		if a.Detail == "endpoint disabled" {
			disabled++
		}
	}
	j.mu.Unlock()
	if disabled != 2 {
		t.Errorf("%d deliveries finished as disabled, want the 2 not attempted", disabled)
	}
	j.mu.Lock()
	last := 0
	for _, a := range j.finished {
		if a.Detail == "HTTP 500; endpoint disabled" && a.Status == 500 {
			last++
		}
	}
	j.mu.Unlock()
	if last != 1 {
		t.Errorf("%d deliveries finished with the attempt that disabled the endpoint, want 1", last)
	}
	// A new message to the disabled endpoint: finished, no request.
	if err := e.Submit(ep, msg(7)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the new one finished", 5*time.Second, func() bool {
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.finished["acme/0\x00m-007"].Detail == "endpoint disabled"
	})
	if srv.requests("m-007") != 0 {
		t.Error("a disabled endpoint was sent to")
	}
	// A new secret: enabled again.
	secret2, _ := NewSecret()
	srv.mu.Lock()
	srv.key, _ = base64.StdEncoding.DecodeString(strings.TrimPrefix(secret2, SecretPrefix))
	srv.answer = func(string, int) int { return 200 }
	srv.mu.Unlock()
	if err := e.Submit(endpoint(t, "acme/0", srv.srv.URL, secret2), msg(8)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "delivered after new settings", 5*time.Second, func() bool { return srv.requests("m-008") == 1 })
}

// A journal that fails: Submit says so and queues nothing; an attempt's
// outcome not recorded is made again once it can be, so nothing is lost.
func TestEngineJournalFails(t *testing.T) {
	secret, _ := NewSecret()
	srv := newEndpointServer(t, secret, func(string, int) int { return 200 })
	j := newMemJournal()
	e := newTestEngine(t, j, func(c *Config) { c.JournalRetry = 20 * time.Millisecond })
	ep := endpoint(t, "acme/0", srv.srv.URL, secret)
	j.fail.Store(true)
	if err := e.Submit(ep, msg(1)); !errors.Is(err, errDiskFull) {
		t.Fatalf("Submit on a failing journal: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if srv.requests("m-001") != 0 {
		t.Fatal("sent a delivery the journal did not record")
	}
	j.fail.Store(false)
	if err := e.Submit(ep, msg(2)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "sent", 5*time.Second, func() bool { return srv.requests("m-002") == 1 })
	// The answer came while the journal failed: the delivery is made
	// again once it works.
	j.fail.Store(true)
	if _, err := j.Add(Delivery{}); err == nil {
		t.Fatal("the journal does not fail")
	}
	j.fail.Store(false)
	var once atomic.Bool
	srv.mu.Lock()
	srv.answer = func(id string, n int) int {
		if id == "m-003" && once.CompareAndSwap(false, true) {
			j.fail.Store(true)
			time.AfterFunc(60*time.Millisecond, func() { j.fail.Store(false) })
		}
		return 200
	}
	srv.mu.Unlock()
	if err := e.Submit(ep, msg(3)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "recorded finished", 5*time.Second, func() bool {
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.finished["acme/0\x00m-003"].Outcome == Delivered
	})
	if n := srv.requests("m-003"); n < 2 {
		t.Errorf("an outcome the journal lost was not made again: %d requests", n)
	}
}

// The queue is bounded: beyond QueueSize, deliveries wait in the journal
// and are all sent once there is room, none twice.
func TestEngineBoundedQueue(t *testing.T) {
	secret, _ := NewSecret()
	release := make(chan struct{})
	srv := newEndpointServer(t, secret, func(string, int) int { <-release; return 200 })
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the server's Close, which waits for its handlers
	j := newMemJournal()
	e := newTestEngine(t, j, func(c *Config) {
		c.QueueSize, c.PerEndpoint = 4, 2
		// The blocked attempts stay in flight however slow the machine.
		c.Sender = NewSender(Options{AllowPrivate: true, Timeout: time.Minute})
	})
	ep := endpoint(t, "acme/0", srv.srv.URL, secret)
	const n = 30
	for i := range n {
		if err := e.Submit(ep, msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	e.mu.Lock()
	w := e.workers["acme/0"]
	e.mu.Unlock()
	// Two attempts in flight (blocked), the queue refilled to its size
	// from the journal, no more.
	testkit.Eventually(t, "the queue refilled", 5*time.Second, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.queue) == 4 && len(w.queued) == 4+2
	})
	time.Sleep(50 * time.Millisecond)
	w.mu.Lock()
	queue, held := len(w.queue), len(w.queued)
	w.mu.Unlock()
	if queue != 4 || held != 6 {
		t.Errorf("%d queued, %d in memory; want the queue's 4 and the 2 in flight", queue, held)
	}
	unblock()
	testkit.Eventually(t, "every delivery finished", 10*time.Second, func() bool {
		p, f := j.counts()
		return p == 0 && f == n
	})
	for i := range n {
		if got := srv.requests(msg(i).ID); got != 1 {
			t.Errorf("%s: %d requests", msg(i).ID, got)
		}
	}
}

func TestEngineConfig(t *testing.T) {
	s := NewSender(Options{})
	for name, c := range map[string]Config{
		"no sender":      {Journal: newMemJournal()},
		"no journal":     {Sender: s},
		"empty schedule": {Sender: s, Journal: newMemJournal(), Schedule: Schedule{}},
		"negative":       {Sender: s, Journal: newMemJournal(), DisableAfter: -time.Second},
		"negative queue": {Sender: s, Journal: newMemJournal(), QueueSize: -1},
		"negative slots": {Sender: s, Journal: newMemJournal(), PerEndpoint: -1},
		"negative retry": {Sender: s, Journal: newMemJournal(), JournalRetry: -1},
	} {
		if _, err := NewEngine(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	e, err := NewEngine(Config{Sender: s, Journal: newMemJournal()})
	if err != nil {
		t.Fatal(err)
	}
	if e.cfg.DisableAfter != 5*24*time.Hour || e.cfg.QueueSize != 1000 || e.cfg.PerEndpoint != 4 || len(e.cfg.Schedule) != 8 {
		t.Errorf("defaults %+v", e.cfg)
	}
	e.Close()
	if err := e.Submit(Endpoint{ID: "x"}, msg(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close: %v", err)
	}
	if err := e.Resume(Endpoint{ID: "x"}, EndpointState{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Resume after Close: %v", err)
	}
	if _, ok := e.State("nobody"); ok {
		t.Error("state of an endpoint never seen")
	}
}
