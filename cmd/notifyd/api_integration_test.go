//go:build integration

package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/crypto/bcrypt"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/schemas"

	"github.com/notifyd/notifyd/internal/testkit"
)

// The HTTP API suite: a real HTTP client against notifyd processes (two
// instances of one group, so a request is often decided by the other
// instance and answered through the results topic), on the embedded
// broker and on Apache Kafka. Every answer is validated against the
// OpenAPI document.

// apiClient calls one instance's API and checks every answer against the
// OpenAPI document.
type apiClient struct {
	t    *testing.T
	base string
	http *http.Client
	doc  *openAPIDoc
}

type apiAnswer struct {
	status int
	header http.Header
	body   []byte
}

// json returns the body re-encoded compactly, for comparing.
func (a apiAnswer) json() string {
	var v any
	if json.Unmarshal(a.body, &v) != nil {
		return string(a.body)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func (c *apiClient) do(ctx context.Context, method, path, contentType string, body []byte, headers map[string]string) (apiAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return apiAnswer{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return apiAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return apiAnswer{}, err
	}
	a := apiAnswer{status: resp.StatusCode, header: resp.Header, body: b}
	if err := c.doc.check(method, req.URL.EscapedPath(), a); err != nil {
		c.t.Errorf("%s %s answered outside the OpenAPI document: %v\n%d %s", method, path, err, a.status, b)
	}
	return a, nil
}

// call is do that fails the test on a transport error.
func (c *apiClient) call(method, path, contentType string, body []byte, headers map[string]string) apiAnswer {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := c.do(ctx, method, path, contentType, body, headers)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return a
}

func (c *apiClient) postJSON(body string, headers map[string]string) apiAnswer {
	c.t.Helper()
	return c.call(http.MethodPost, api.PathNotifications, "application/json", []byte(body), headers)
}

// openAPIDoc validates answers against api/openapi.json.
type openAPIDoc struct {
	raw   map[string]any
	comp  *jsonschemaCompiler
	paths map[string]*regexp.Regexp
}

func loadOpenAPI(t *testing.T) *openAPIDoc {
	t.Helper()
	d := &openAPIDoc{paths: map[string]*regexp.Regexp{}}
	if err := json.Unmarshal(api.OpenAPI(), &d.raw); err != nil {
		t.Fatal(err)
	}
	comp, err := newJSONSchemaCompiler(api.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	d.comp = comp
	for p := range d.raw["paths"].(map[string]any) {
		re := "^" + regexp.MustCompile(`\\\{[^}]+\\\}`).ReplaceAllString(regexp.QuoteMeta(p), `[^/]+`) + "$"
		d.paths[p] = regexp.MustCompile(re)
	}
	return d
}

// check finds the operation of method and path, then the answer's status
// among its responses, and validates the JSON body with its schema.
func (d *openAPIDoc) check(method, path string, a apiAnswer) error {
	if path == strings.TrimSuffix(api.PathNotifications, "/") {
		path = api.PathNotifications // also served without the slash
	}
	if path == api.PathOpenAPI {
		return nil
	}
	for template, re := range d.paths {
		if !re.MatchString(path) {
			continue
		}
		ops := d.raw["paths"].(map[string]any)[template].(map[string]any)
		op, ok := ops[strings.ToLower(method)].(map[string]any)
		if !ok {
			// Another method of a documented path: the answer must be
			// the documented 405 of the path's operation.
			for m := range ops {
				op, method = ops[m].(map[string]any), m
			}
			if a.status != http.StatusMethodNotAllowed {
				return fmt.Errorf("undocumented method answered %d", a.status)
			}
		}
		code := fmt.Sprint(a.status)
		if _, ok := op["responses"].(map[string]any)[code]; !ok {
			return fmt.Errorf("status %s is not documented for %s %s", code, method, template)
		}
		if ct := a.header.Get("Content-Type"); ct != "application/json" {
			return fmt.Errorf("content type %q", ct)
		}
		ptr := "#/paths/" + pointerEscape(template) + "/" + strings.ToLower(method) + "/responses/" + code + "/content/application~1json/schema"
		return d.comp.validate(ptr, a.body)
	}
	if a.status == http.StatusNotFound {
		return nil // an undocumented path: 404 Not found
	}
	return fmt.Errorf("path %s is not in the document", path)
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// apiFixture is the suite's cluster: two instances of one group with the
// API on, a second key, and a Basic user.
type apiFixture struct {
	c       *cluster
	a, b, r *proc
	// shop, peer and slow call instances a, b and r.
	shop, peer, slow *apiClient
	shopKey          string
	otherKey         string
}

const apiCatchUpWait = 5 * time.Second

func newAPIFixture(t *testing.T) *apiFixture {
	c := newCluster(t, 0)
	f := &apiFixture{c: c}
	apiA, apiB, apiR := freePort(t), freePort(t), freePort(t)
	var shopSum, otherSum string
	f.shopKey, shopSum, _ = api.NewKey()
	f.otherKey, otherSum, _ = api.NewKey()
	hash, err := bcrypt.GenerateFromPassword([]byte("support pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	block := func(addr, extra string) string {
		return fmt.Sprintf(`{listen: %q, keys: [{name: shop, sha256: %q}, {name: other, sha256: %q}], users: [{username: support, bcrypt: %q, role: operator}]%s}`,
			addr, shopSum, otherSum, hash, extra)
	}
	// a and b take the load subtest's 500 requests of one key at once: a
	// rate limit for that, as a merchant with that much traffic would set.
	f.a = c.start(procOpts{catchUpWait: apiCatchUpWait, api: block(apiA, ", wait: 20s, rate_limit: {per_second: 1000, burst: 1000}"), waitForReady: true})
	f.b = c.start(procOpts{catchUpWait: apiCatchUpWait, api: block(apiB, ", wait: 20s, rate_limit: {per_second: 1000, burst: 1000}"), waitForReady: true})
	// r answers 202 after 2 s, lets 2 requests wait at once, and limits
	// each client to 1 request/s.
	f.r = c.start(procOpts{catchUpWait: apiCatchUpWait, api: block(apiR, ", wait: 2s, max_in_flight: 2, rate_limit: {per_second: 1, burst: 2}"), waitForReady: true})
	doc := loadOpenAPI(t)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 600, MaxConnsPerHost: 600}}
	t.Cleanup(hc.CloseIdleConnections)
	f.shop = &apiClient{t: t, base: "http://" + apiA, http: hc, doc: doc}
	f.peer = &apiClient{t: t, base: "http://" + apiB, http: hc, doc: doc}
	f.slow = &apiClient{t: t, base: "http://" + apiR, http: hc, doc: doc}
	return f
}

func (f *apiFixture) auth(key string) map[string]string {
	return map[string]string{"Authorization": "Api-Key " + key}
}

// results returns the results published for a command_id.
func (f *apiFixture) results(id string) []schemas.DeliveryResult {
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	var out []schemas.DeliveryResult
	for _, m := range f.c.results[id] {
		var r schemas.DeliveryResult
		_ = json.Unmarshal(m.Value, &r)
		out = append(out, r)
	}
	return out
}

// sends returns how many provider calls command id made on channel ch.
func (f *apiFixture) sends(id, ch string) int {
	f.c.calls.mu.Lock()
	defer f.c.calls.mu.Unlock()
	return len(f.c.calls.counts[id+"/"+ch])
}

func withKey(h map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for hk, hv := range h {
		out[hk] = hv
	}
	return out
}

// TestAPI drives the endpoint as a merchant's client would: every body
// encoding, every error shape, authentication, idempotent replay, 202 and
// GET, a client that leaves, 500 requests at once.
func TestAPI(t *testing.T) {
	f := newAPIFixture(t)
	c := f.c
	c.events([]string{"s-ok", "s-two"}, "paid", 1)
	shop := f.auth(f.shopKey)

	t.Run("encodings", func(t *testing.T) {
		var mp bytes.Buffer
		w := multipart.NewWriter(&mp)
		_ = w.WriteField("order_no", "o-s-ok")
		_ = w.WriteField("channels", "sms")
		_ = w.WriteField("channels", "email")
		_ = w.Close()
		for _, tc := range []struct{ id, contentType, body string }{
			{"enc-json", "application/json", `{"session_id":"s-ok","channels":["sms","email"],"unknown":true}`},
			{"enc-form", "application/x-www-form-urlencoded", "session_id=s-ok&channels=sms&channels=email"},
			{"enc-multipart", w.FormDataContentType(), mp.String()},
		} {
			a := f.shop.call(http.MethodPost, api.PathNotifications, tc.contentType, []byte(tc.body), withKey(shop, "Idempotency-Key", tc.id))
			if a.status != 200 || a.json() != `{"message":"Customer notified."}` {
				t.Errorf("%s: %d %s", tc.id, a.status, a.body)
			}
			for _, ch := range []string{"sms", "email"} {
				if n := f.sends(tc.id, ch); n != 1 {
					t.Errorf("%s: %s sent %d times, want 1", tc.id, ch, n)
				}
			}
			c.waitAnswered([]string{tc.id}, 10*time.Second)
			if rs := f.results(tc.id); len(rs) != 1 || rs[0].RequestedBy != "shop" {
				t.Errorf("%s: results %+v, want one requested_by shop", tc.id, rs)
			}
		}
		// Without the trailing slash, and by the Basic user.
		req := withKey(map[string]string{"Idempotency-Key": "enc-basic"}, "Authorization", basicAuth("support", "support pass"))
		a := f.shop.call(http.MethodPost, strings.TrimSuffix(api.PathNotifications, "/"), "application/json", []byte(`{"order_no":"o-s-ok","channels":["email"]}`), req)
		if a.status != 200 {
			t.Errorf("basic, no slash: %d %s", a.status, a.body)
		}
		c.waitAnswered([]string{"enc-basic"}, 10*time.Second)
		if rs := f.results("enc-basic"); len(rs) != 1 || rs[0].RequestedBy != "support" {
			t.Errorf("basic: results %+v, want requested_by support", rs)
		}
	})

	t.Run("errors", func(t *testing.T) {
		big := `{"session_id":"s-ok","channels":["sms"],"pad":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}`
		for _, tc := range []struct {
			name, method, path, contentType, body string
			headers                               map[string]string
			status                                int
			want                                  string
			header                                [2]string
		}{
			{"no credentials", "POST", api.PathNotifications, "application/json", `{}`, nil, 401, `{"detail":"Authentication credentials were not provided."}`, [2]string{"WWW-Authenticate", "Api-Key"}},
			{"wrong key", "POST", api.PathNotifications, "application/json", `{}`, f.auth("nfy_wrong"), 401, `{"detail":"Invalid API key."}`, [2]string{"WWW-Authenticate", "Basic"}},
			{"the hash is not a key", "POST", api.PathNotifications, "application/json", `{}`, f.auth(api.HashKey(f.shopKey)), 401, `{"detail":"Invalid API key."}`, [2]string{}},
			{"wrong password", "POST", api.PathNotifications, "application/json", `{}`, map[string]string{"Authorization": basicAuth("support", "nope")}, 401, `{"detail":"Invalid username/password."}`, [2]string{}},
			{"GET", "GET", api.PathNotifications, "", ``, shop, 405, `{"detail":"Method \"GET\" not allowed."}`, [2]string{"Allow", "POST"}},
			{"DELETE a result", "DELETE", api.PathNotifications + "x/", "", ``, shop, 405, `{"detail":"Method \"DELETE\" not allowed."}`, [2]string{"Allow", "GET"}},
			{"text/plain", "POST", api.PathNotifications, "text/plain", `session_id=s-ok`, shop, 415, `{"detail":"Unsupported media type \"text/plain\" in request."}`, [2]string{}},
			{"too large", "POST", api.PathNotifications, "application/json", big, shop, 413, `{"detail":"Request body exceeds 65536 bytes."}`, [2]string{}},
			{"channels missing", "POST", api.PathNotifications, "application/json", `{"session_id":"s-ok"}`, shop, 400, `{"channels":["This field is required."]}`, [2]string{}},
			{"fax", "POST", api.PathNotifications, "application/json", `{"session_id":"s-ok","channels":["fax"]}`, shop, 400, `{"channels":["\"fax\" is not a valid choice."]}`, [2]string{}},
			{"duplicate channel", "POST", api.PathNotifications, "application/x-www-form-urlencoded", `session_id=s-ok&channels=sms&channels=sms`, shop, 400, `{"channels":["\"sms\" is listed more than once."]}`, [2]string{}},
			{"session_id too long", "POST", api.PathNotifications, "application/json", `{"session_id":"` + strings.Repeat("s", 129) + `","channels":["sms"]}`, shop, 400, `{"session_id":["Ensure this field has no more than 128 characters."]}`, [2]string{}},
			{"no identifier", "POST", api.PathNotifications, "application/json", `{"channels":["sms"]}`, shop, 400, `{"non_field_errors":["Provide session_id or order_no."]}`, [2]string{}},
			{"malformed JSON", "POST", api.PathNotifications, "application/json", `{"channels":`, shop, 400, ``, [2]string{}},
			{"Idempotency-Key too long", "POST", api.PathNotifications, "application/json", `{"session_id":"s-ok","channels":["sms"]}`, withKey(shop, "Idempotency-Key", strings.Repeat("k", 129)), 400, ``, [2]string{}},
			{"unknown path", "GET", "/b/pbl/v2/other/", "", ``, shop, 404, `{"detail":"Not found."}`, [2]string{}},
		} {
			a := f.shop.call(tc.method, tc.path, tc.contentType, []byte(tc.body), tc.headers)
			if a.status != tc.status || (tc.want != "" && a.json() != tc.want) {
				t.Errorf("%s: %d %s, want %d %s", tc.name, a.status, a.body, tc.status, tc.want)
			}
			if tc.header[0] != "" && !strings.Contains(a.header.Get(tc.header[0]), tc.header[1]) {
				t.Errorf("%s: %s = %q, want it to contain %q", tc.name, tc.header[0], a.header.Get(tc.header[0]), tc.header[1])
			}
		}
		if n := c.calls.total(); n > 0 {
			// Only the encodings subtest may have sent anything so far.
			for _, call := range c.calls.snapshot() {
				if !strings.HasPrefix(call.key, "enc-") {
					t.Errorf("a rejected request reached a provider: %s", call.key)
				}
			}
		}
	})

	t.Run("answers from results", func(t *testing.T) {
		// A channel not sent: the gateway's failure shape, with the result.
		a := f.shop.postJSON(`{"order_no":"o-s-ok","channels":["email","whatsapp"]}`, shop)
		var failed struct {
			OrderNo        string                 `json:"order_no"`
			SessionID      *string                `json:"session_id"`
			Channels       string                 `json:"channels"`
			Result         string                 `json:"result"`
			Detail         string                 `json:"detail"`
			DeliveryResult schemas.DeliveryResult `json:"delivery_result"`
		}
		_ = json.Unmarshal(a.body, &failed)
		if a.status != 400 || failed.OrderNo != "o-s-ok" || failed.SessionID != nil || failed.Channels != "whatsapp" || failed.Result != "failed" ||
			failed.DeliveryResult.Outcome != schemas.OutcomePartiallyNotified || failed.Detail != failed.DeliveryResult.Message {
			t.Errorf("partially notified: %d %s", a.status, a.body)
		}
		if id := failed.DeliveryResult.CommandID; f.sends(id, "email") != 1 {
			t.Errorf("email of %s sent %d times", id, f.sends(id, "email"))
		}
		// Unknown transaction, after processing.catch_up_wait.
		a = f.shop.postJSON(`{"session_id":"s-nope","channels":["sms"]}`, shop)
		if a.status != 400 || a.json() != `{"session_id":["No transaction with this session_id."]}` {
			t.Errorf("unknown session_id: %d %s", a.status, a.body)
		}
		a = f.shop.postJSON(`{"order_no":"o-nope","channels":["sms"]}`, shop)
		if a.status != 400 || a.json() != `{"order_no":["No transaction with this order_no."]}` {
			t.Errorf("unknown order_no: %d %s", a.status, a.body)
		}
		// session_id and order_no of different transactions.
		a = f.shop.postJSON(`{"session_id":"s-ok","order_no":"o-s-two","channels":["sms"]}`, shop)
		var mismatch map[string][]string
		_ = json.Unmarshal(a.body, &mismatch)
		if a.status != 400 || len(mismatch["non_field_errors"]) != 1 || len(mismatch) != 1 {
			t.Errorf("identifier mismatch: %d %s", a.status, a.body)
		}
	})

	t.Run("idempotency", func(t *testing.T) {
		req := withKey(shop, "Idempotency-Key", "idem-1")
		first := f.shop.postJSON(`{"session_id":"s-ok","channels":["sms"]}`, req)
		if first.status != 200 || first.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("first: %d %s %v", first.status, first.body, first.header)
		}
		// The retry, on either instance, even naming the transaction by
		// its order_no: the same answer, replayed, nothing sent again.
		for _, cl := range []*apiClient{f.shop, f.peer} {
			again := cl.postJSON(`{"order_no":"o-s-ok","channels":["sms"]}`, req)
			if again.status != 200 || again.json() != first.json() || again.header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("retry on %s: %d %s replayed=%q", cl.base, again.status, again.body, again.header.Get("Idempotent-Replayed"))
			}
		}
		if n := f.sends("idem-1", "sms"); n != 1 {
			t.Errorf("idem-1 sms sent %d times, want 1", n)
		}
		// The same key for another request, or by another client: 422.
		for name, tc := range map[string]struct {
			body    string
			headers map[string]string
		}{
			"other channels":    {`{"session_id":"s-ok","channels":["email"]}`, req},
			"other transaction": {`{"session_id":"s-two","channels":["sms"]}`, req},
			"other client":      {`{"session_id":"s-ok","channels":["sms"]}`, withKey(f.auth(f.otherKey), "Idempotency-Key", "idem-1")},
		} {
			a := f.shop.postJSON(tc.body, tc.headers)
			if a.status != 422 || a.json() != `{"detail":"Idempotency-Key was already used for a different request."}` {
				t.Errorf("%s: %d %s", name, a.status, a.body)
			}
		}
		if n := f.sends("idem-1", "email"); n != 0 {
			t.Errorf("idem-1 email sent %d times, want 0", n)
		}
		if rs := f.results("idem-1"); len(rs) < 1 || len(rs[0].Channels) == 0 || rs[0].Channels[0].Channel != "sms" {
			t.Errorf("idem-1 results %+v", rs)
		}
	})

	t.Run("pending then GET", func(t *testing.T) {
		// s-late is not known yet: the command waits for it (catch_up_wait
		// 5 s); instance r answers 202 after its api.wait of 2 s.
		a := f.slow.postJSON(`{"session_id":"s-late","channels":["email"]}`, withKey(shop, "Idempotency-Key", "late/1"))
		if a.status != 202 || a.json() != `{"command_id":"late/1","status":"pending"}` {
			t.Fatalf("late: %d %s", a.status, a.body)
		}
		loc := a.header.Get("Location")
		if loc != api.PathNotifications+"late%2F1/" {
			t.Fatalf("Location = %q", loc)
		}
		// The other instance does not have a result yet either.
		if g := f.shop.call(http.MethodGet, loc, "", nil, shop); g.status != 404 {
			t.Errorf("GET before the result: %d %s", g.status, g.body)
		}
		c.events([]string{"s-late"}, "paid", 1)
		testkit.Until(t, 30*time.Second, func() error {
			g := f.shop.call(http.MethodGet, loc, "", nil, shop)
			switch g.status {
			case 200:
				if g.json() != `{"message":"Customer notified."}` {
					t.Errorf("GET: %s", g.body)
				}
				return nil
			case 404:
				return fmt.Errorf("GET %s: still 404", loc)
			}
			t.Fatalf("GET %s: %d %s", loc, g.status, g.body)
			return nil
		})
		// Another key does not see it; a Basic user (support staff) does.
		if g := f.shop.call(http.MethodGet, loc, "", nil, f.auth(f.otherKey)); g.status != 404 {
			t.Errorf("GET by another key: %d %s", g.status, g.body)
		}
		if g := f.shop.call(http.MethodGet, loc, "", nil, map[string]string{"Authorization": basicAuth("support", "support pass")}); g.status != 200 {
			t.Errorf("GET by support: %d %s", g.status, g.body)
		}
		if n := f.sends("late/1", "email"); n != 1 {
			t.Errorf("late/1 sent %d times", n)
		}
	})

	t.Run("client leaves", func(t *testing.T) {
		// The command waits catch_up_wait for s-gone; the client gives up
		// after 300 ms. Its waiter must be released at once.
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := f.shop.do(ctx, http.MethodPost, api.PathNotifications, "application/json",
			[]byte(`{"session_id":"s-gone","channels":["email"]}`), withKey(shop, "Idempotency-Key", "gone-1"))
		cancel()
		if err == nil {
			t.Fatal("the request was answered within 300 ms")
		}
		testkit.Eventually(t, "notifyd_api_waiting back to 0 after the client left", 10*time.Second, func() bool {
			return metricValue(t, f.a, "notifyd_api_waiting", nil) == 0
		})
		if lines := c.logLines(`"api client left before its result"`); len(lines) == 0 {
			t.Error("no log line for the client that left")
		}
		// The command is still answered (unknown_transaction), once.
		c.waitAnswered([]string{"gone-1"}, 30*time.Second)
		if rs := f.results("gone-1"); rs[0].Reason != schemas.ReasonUnknownTransaction {
			t.Errorf("gone-1: %+v", rs[0])
		}
	})

	t.Run("max in flight", func(t *testing.T) {
		// r lets 2 requests wait for a result; a third is answered 503 at
		// once. Three clients, so that no rate limit is in the way.
		var wg sync.WaitGroup
		waiting := []map[string]string{shop, {"Authorization": basicAuth("support", "support pass")}}
		for i, h := range waiting {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := f.slow.postJSON(fmt.Sprintf(`{"session_id":"s-wait-%d","channels":["email"]}`, i), h)
				if a.status != 202 {
					t.Errorf("waiting request %d: %d %s", i, a.status, a.body)
				}
			}()
		}
		testkit.Eventually(t, "two requests waiting", 10*time.Second, func() bool { return metricValue(t, f.r, "notifyd_api_waiting", nil) >= 2 })
		a := f.slow.postJSON(`{"session_id":"s-wait-3","channels":["email"]}`, f.auth(f.otherKey))
		if a.status != 503 || a.header.Get("Retry-After") == "" || a.json() != `{"detail":"Service unavailable: too many requests waiting for a result."}` {
			t.Errorf("third request: %d %s", a.status, a.body)
		}
		wg.Wait()
	})

	t.Run("rate limit", func(t *testing.T) {
		// r allows 1 request/s with bursts of 2 per client: of requests made
		// one after another, each answered at once, one is throttled within
		// a few (the bucket's arithmetic is golang.org/x/time/rate's).
		for i := 1; ; i++ {
			a := f.slow.call(http.MethodGet, api.PathNotifications+"rl/", "", nil, f.auth(f.otherKey))
			if a.status == 429 {
				if a.header.Get("Retry-After") != "1" || !strings.HasPrefix(a.json(), `{"detail":"Request was throttled.`) {
					t.Errorf("429: %v %s", a.header, a.body)
				}
				t.Logf("request %d throttled", i)
				break
			}
			if a.status != 404 {
				t.Errorf("request %d: %d %s", i, a.status, a.body)
			}
			if i == 50 {
				t.Fatal("50 requests one after another, none throttled")
			}
		}
	})

	t.Run("500 at once", func(t *testing.T) {
		const n = 500
		sessions := make([]string, n)
		for i := range sessions {
			sessions[i] = fmt.Sprintf("s-par-%d", i)
		}
		c.events(sessions, "paid", 1)
		var wg sync.WaitGroup
		answers := make([]apiAnswer, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := []*apiClient{f.shop, f.peer}[i%2]
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				a, err := cl.do(ctx, http.MethodPost, api.PathNotifications, "application/json",
					[]byte(fmt.Sprintf(`{"session_id":"s-par-%d","channels":["email","sms"]}`, i)),
					withKey(shop, "Idempotency-Key", fmt.Sprintf("par-%d", i)))
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					return
				}
				answers[i] = a
			}()
		}
		wg.Wait()
		ids := make([]string, n)
		for i, a := range answers {
			ids[i] = fmt.Sprintf("par-%d", i)
			if a.status != 200 || a.json() != `{"message":"Customer notified."}` {
				t.Errorf("request %d: %d %s", i, a.status, a.body)
			}
		}
		// Every command sent once per channel, decided once.
		c.waitAnswered(ids, time.Minute)
		for _, id := range ids {
			for _, ch := range []string{"email", "sms"} {
				if k := f.sends(id, ch); k != 1 {
					t.Errorf("%s %s sent %d times, want 1", id, ch, k)
				}
			}
		}
		if replayed := c.checkResults(ids); replayed > 0 {
			t.Errorf("%d commands have more than one result", replayed)
		}
	})

	t.Run("openapi document served", func(t *testing.T) {
		a := f.shop.call(http.MethodGet, api.PathOpenAPI, "", nil, nil)
		if a.status != 200 || !bytes.Equal(a.body, api.OpenAPI()) {
			t.Errorf("GET %s: %d, %d bytes", api.PathOpenAPI, a.status, len(a.body))
		}
	})

	// The access log names the key and the command, never the key itself.
	for _, path := range c.logs {
		b, _ := os.ReadFile(path)
		for _, secret := range []string{f.shopKey, f.otherKey, "support pass"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("log %s contains a credential", filepath.Base(path))
			}
		}
	}
	if lines := c.logLines(`"api request"`); len(lines) == 0 || !strings.Contains(strings.Join(lines, "\n"), `"key":"shop","command_id":"enc-json"`) {
		t.Errorf("no access log line naming key shop and command enc-json")
	}
}

func basicAuth(user, pass string) string {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}

// metricValue reads the sample of name with exactly these labels (none:
// nil) from the process's /metrics.
func metricValue(t *testing.T, p *proc, name string, labels map[string]string) float64 {
	t.Helper()
	code, body := p.get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	v, ok := testkit.ScrapedMetric(t, body, name, labels)
	if !ok {
		t.Fatalf("%s%v not in /metrics", name, labels)
	}
	return v
}

// TestAPITLS: with api.tls the API speaks HTTPS and HTTP/2, with a
// certificate made here; plain HTTP to it is refused.
func TestAPITLS(t *testing.T) {
	c := newCluster(t, 0)
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	key, sum, _ := api.NewKey()
	addr := freePort(t)
	c.start(procOpts{api: fmt.Sprintf(`{listen: %q, keys: [{name: shop, sha256: %q}], tls: {cert_file: %q, key_file: %q}}`, addr, sum, certFile, keyFile), waitForReady: true})
	c.events([]string{"s-tls"}, "paid", 1)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, "https://"+addr+api.PathNotifications, strings.NewReader(`{"session_id":"s-tls","channels":["sms"]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Api-Key "+key)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Errorf("HTTPS: %s %d %s, want HTTP/2 200", resp.Proto, resp.StatusCode, body)
	}
	resp, err = http.Post("http://"+addr+api.PathNotifications, "application/json", strings.NewReader(`{}`))
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS port: %d %s", resp.StatusCode, b)
		}
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a
// pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "notifyd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// jsonschemaCompiler compiles schemas of the OpenAPI document by JSON
// pointer (OpenAPI 3.1 schemas are JSON Schema 2020-12).
type jsonschemaCompiler struct {
	c     *jsonschema.Compiler
	mu    sync.Mutex
	cache map[string]*jsonschema.Schema
}

const openAPIURL = "https://notifyd.dev/openapi.json"

func newJSONSchemaCompiler(doc []byte) (*jsonschemaCompiler, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(openAPIURL, v); err != nil {
		return nil, err
	}
	return &jsonschemaCompiler{c: c, cache: map[string]*jsonschema.Schema{}}, nil
}

func (j *jsonschemaCompiler) validate(pointer string, body []byte) error {
	j.mu.Lock()
	s, ok := j.cache[pointer]
	if !ok {
		var err error
		if s, err = j.c.Compile(openAPIURL + pointer); err != nil {
			j.mu.Unlock()
			return fmt.Errorf("compile %s: %w", pointer, err)
		}
		j.cache[pointer] = s
	}
	j.mu.Unlock()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	return s.Validate(v)
}

// TestAPIKafkaDown: with the brokers stopped the API answers 503 (Kafka
// unreachable) instead of hanging, and answers again once they are back.
// Apache Kafka only (the test stops and starts it with scripts/kafka-local).
func TestAPIKafkaDown(t *testing.T) {
	ctl := kafkaLocal(t)
	c := newCluster(t, 0)
	key, sum, _ := api.NewKey()
	addr := freePort(t)
	c.start(procOpts{api: fmt.Sprintf(`{listen: %q, keys: [{name: shop, sha256: %q}], wait: 5s}`, addr, sum), waitForReady: true})
	c.events([]string{"s-down"}, "paid", 1)
	cl := &apiClient{t: t, base: "http://" + addr, http: &http.Client{Timeout: 30 * time.Second}, doc: loadOpenAPI(t)}
	auth := map[string]string{"Authorization": "Api-Key " + key}
	if a := cl.postJSON(`{"session_id":"s-down","channels":["sms"]}`, auth); a.status != 200 {
		t.Fatalf("before: %d %s", a.status, a.body)
	}
	if out, err := exec.Command(ctl, "stop").CombinedOutput(); err != nil {
		t.Fatalf("kafka-local stop: %v\n%s", err, out)
	}
	stopped := time.Now()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = exec.Command(ctl, "start").Run()
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		a := cl.postJSON(`{"session_id":"s-down","channels":["sms"]}`, auth)
		if a.status == 503 && a.json() == `{"detail":"Service unavailable: kafka unreachable."}` {
			if a.header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			t.Logf("503 kafka unreachable %s after Kafka stopped", time.Since(stopped).Round(100*time.Millisecond))
			break
		}
		if a.status != 503 && a.status != 202 {
			t.Fatalf("with Kafka down: %d %s", a.status, a.body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("still no 503 kafka unreachable 60 s after stopping Kafka: %d %s", a.status, a.body)
		}
		time.Sleep(500 * time.Millisecond) // each try is a request that waits for its result: no faster
	}
	if out, err := exec.Command(ctl, "start").CombinedOutput(); err != nil {
		t.Fatalf("kafka-local start: %v\n%s", err, out)
	}
	restarted = true
	started := time.Now()
	t.Logf("Kafka started again in %s", time.Since(stopped).Round(100*time.Millisecond))
	testkit.Until(t, 2*time.Minute, func() error {
		if a := cl.postJSON(`{"session_id":"s-down","channels":["sms"]}`, auth); a.status != 200 {
			return fmt.Errorf("no 200 since Kafka came back: %d %s", a.status, a.body)
		}
		return nil
	})
	t.Logf("200 again %s after Kafka started", time.Since(started).Round(100*time.Millisecond))
}
