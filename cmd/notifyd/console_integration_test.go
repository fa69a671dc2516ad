//go:build integration

package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/notifyd/notifyd/api"

	"github.com/notifyd/notifyd/internal/testkit"
)

// TestConsoleSignOutAcrossInstances runs two notifyd processes behind "one
// address" (the same session key and users): a session opened on A works
// on B; once signed out on A, a copy of its cookie is refused by B, and by
// a third instance started afterwards with an empty store, which reads the
// sign-out from the console-sessions topic before it takes any session.
func TestConsoleSignOutAcrossInstances(t *testing.T) {
	c := newCluster(t, 0)
	hash, err := bcrypt.GenerateFromPassword([]byte("ops pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	block := func(addr string) string {
		return fmt.Sprintf(`{listen: %q, users: [{username: ops, bcrypt: %q, role: operator}], console: {session_key: %q}}`,
			addr, hash, strings.Repeat("s", 32))
	}
	apiA, apiB, apiC := freePort(t), freePort(t), freePort(t)
	c.start(procOpts{api: block(apiA), waitForReady: true})
	c.start(procOpts{api: block(apiB), waitForReady: true})
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, addr, path, cookie string, form url.Values) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(form.Encode()))
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := do(http.MethodPost, apiA, "/console/login", "", url.Values{"username": {"ops"}, "password": {"ops pass"}})
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) == 0 {
		t.Fatalf("sign in on A: %d", resp.StatusCode)
	}
	cookie := resp.Cookies()[0].Name + "=" + resp.Cookies()[0].Value
	if resp := do(http.MethodGet, apiB, "/console/", cookie, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("the session on B: %d", resp.StatusCode)
	}
	if resp := do(http.MethodPost, apiA, "/console/logout", cookie, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out on A: %d", resp.StatusCode)
	}
	if resp := do(http.MethodGet, apiA, "/console/", cookie, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the signed-out cookie on A: %d, want 303 to the sign-in", resp.StatusCode)
	}
	signedOut := time.Now()
	testkit.Eventually(t, "B refusing the signed-out cookie", 30*time.Second, func() bool {
		return do(http.MethodGet, apiB, "/console/", cookie, nil).StatusCode == http.StatusSeeOther
	})
	t.Logf("B refused the cookie %s after the sign-out on A", time.Since(signedOut).Round(time.Millisecond))
	c.start(procOpts{api: block(apiC), waitForReady: true})
	for _, path := range []string{"/console/", "/console/attention"} {
		if resp := do(http.MethodGet, apiC, path, cookie, nil); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("a new instance, %s: %d, want 303 to the sign-in", path, resp.StatusCode)
		}
	}
	if resp := do(http.MethodPost, apiC, "/console/resend", cookie, url.Values{"session_id": {"s"}, "channel": {"sms"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a new instance, a resend with the signed-out cookie: %d, want 401", resp.StatusCode)
	}
}

// TestDoorsFromOutside probes a notifyd process as a client on the network
// would, with the configuration's defaults: failed sign-ins back off (the
// right password is 429 during the wait, on the API and in the console),
// an API key is not slowed meanwhile; a key has a rate limit although none
// is configured; and console recoveries count against the user's.
func TestDoorsFromOutside(t *testing.T) {
	c := newCluster(t, 0)
	hash, err := bcrypt.GenerateFromPassword([]byte("ops pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	key := "nfy_outside-key-0123456789abcdefghijklmnopqrstuv"
	sum := api.HashKey(key)
	addr := freePort(t)
	c.start(procOpts{api: fmt.Sprintf(`{listen: %q, keys: [{name: shop, sha256: %q}], users: [{username: ops, bcrypt: %q, role: operator}]}`,
		addr, sum, hash), waitForReady: true})
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(req *http.Request) *http.Response {
		t.Helper()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	basic := func(pass string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/b/pbl/v2/message-notification/c-1/", nil)
		req.SetBasicAuth("ops", pass)
		return do(req)
	}
	login := func(pass string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/console/login", strings.NewReader(url.Values{"username": {"ops"}, "password": {pass}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return do(req)
	}
	withKey := func() *http.Response {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/b/pbl/v2/message-notification/c-1/", nil)
		req.Header.Set("Authorization", "Api-Key "+key)
		return do(req)
	}
	for i := 0; i < 5; i++ {
		if resp := basic("guess"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, resp.StatusCode)
		}
	}
	if resp := basic("ops pass"); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("Basic with the right password after 5 failures: %d, Retry-After %q; want 429", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := login("ops pass"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("console sign-in after 5 failures: %d, want 429", resp.StatusCode)
	}
	if resp := withKey(); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an API key meanwhile: %d", resp.StatusCode)
	}
	// No rate_limit configured: a key still has one.
	limited := 0
	for i := 0; i < 100 && limited == 0; i++ {
		if withKey().StatusCode == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited == 0 {
		t.Error("100 requests of one key in a row, none throttled: no default rate limit")
	}
	// The console's recoveries, once signed in, under the user's limit.
	var resp *http.Response
	testkit.Eventually(t, "a sign-in once the backoff passed", time.Minute, func() bool {
		resp = login("ops pass")
		return resp.StatusCode == http.StatusSeeOther
	})
	cookie := resp.Cookies()[0].Name + "=" + resp.Cookies()[0].Value
	throttled := false
	for i := 0; i < 100 && !throttled; i++ {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/console/recover", strings.NewReader("action=preview"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Cookie", cookie)
		throttled = do(req).StatusCode == http.StatusTooManyRequests
	}
	if !throttled {
		t.Error("100 console recovery previews in a row, none throttled")
	}
}
