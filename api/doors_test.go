package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// flood is a multipart form of size bytes whose one file part fills it:
// what an attacker posts to make a server parse 40 MB into memory. It
// counts the bytes handed out.
type flood struct {
	size, read int64
	head       string
}

const floodBoundary = "notifyd-flood"

func newFlood(size int64) *flood {
	return &flood{size: size, head: "--" + floodBoundary + "\r\nContent-Disposition: form-data; name=\"username\"; filename=\"a\"\r\n" +
		"Content-Type: application/octet-stream\r\n\r\n"}
}

func (f *flood) Read(p []byte) (int, error) {
	if f.read >= f.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && f.read < f.size {
		if f.read < int64(len(f.head)) {
			p[n] = f.head[f.read]
		} else {
			p[n] = 'A'
		}
		n++
		f.read++
	}
	return n, nil
}

// signedIn returns the Cookie header of a console session of user, signed
// in through the fixture's server.
func (f *consoleFixture) signedIn(user, pass string) string {
	f.t.Helper()
	return signIn(f.t.(*testing.T), f.handler, user, pass)
}

// TestBodiesBounded: a 40 MB multipart body posted to every route that
// takes a body is answered 413, and the handler read no more than the
// route's limit from it (one byte more, to tell it is larger, when the
// length is not declared; nothing when it is): nobody, signed in or not,
// can make notifyd hold a large body in memory.
func TestBodiesBounded(t *testing.T) {
	f := newConsoleFixture(t, event("s-1", "o-1", "paid", nil))
	operator := f.signedIn("ops", "ops pass")
	callbacks, _, _ := callbackServer(t)
	routes := []struct {
		handler http.Handler
		path    string
		limit   int64
		header  map[string]string
	}{
		{f.handler, PathNotifications, MaxBodyBytes, map[string]string{"Authorization": "Api-Key " + fixtureKey}},
		{f.handler, "/console/login", maxFormBytes, nil},
		{f.handler, "/console/logout", maxFormBytes, map[string]string{"Cookie": operator}},
		{f.handler, "/console/resend", maxFormBytes, map[string]string{"Cookie": operator}},
		{f.handler, "/console/recover", maxFormBytes, map[string]string{"Cookie": operator}},
		{callbacks, PathCallbackTwilio, maxCallbackBody, nil},
		{callbacks, PathCallbackMeta, maxCallbackBody, nil},
		{callbacks, PathCallbackWebhook, maxCallbackBody, nil},
	}
	const size = 40 << 20
	for _, rt := range routes {
		for _, declared := range []bool{true, false} {
			body := newFlood(size)
			r := httptest.NewRequest(http.MethodPost, rt.path, nil)
			r.Body = io.NopCloser(body)
			r.ContentLength = -1
			if declared {
				r.ContentLength = size
			}
			r.Header.Set("Content-Type", "multipart/form-data; boundary="+floodBoundary)
			for k, v := range rt.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			rt.handler.ServeHTTP(w, r)
			if w.Code != http.StatusRequestEntityTooLarge {
				t.Errorf("%s (length declared: %v): %d, want 413", rt.path, declared, w.Code)
			}
			if max := rt.limit + 1; body.read > max || declared && body.read > 0 {
				t.Errorf("%s (length declared: %v): %d bytes read from the body, limit %d", rt.path, declared, body.read, rt.limit)
			}
		}
	}
	if n := f.kafka.publishedCount(); n != 0 {
		t.Errorf("%d commands published", n)
	}
}

// TestConsoleFormsOnly: the console takes url-encoded forms; a multipart
// or JSON post within the limit is 415 and changes nothing.
func TestConsoleFormsOnly(t *testing.T) {
	f := newConsoleFixture(t, event("s-1", "o-1", "paid", nil))
	for _, ct := range []string{"multipart/form-data; boundary=x", "application/json", "text/plain"} {
		r := httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader("--x\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nops\r\n--x--\r\n"))
		r.Header.Set("Content-Type", ct)
		w := httptest.NewRecorder()
		f.handler.ServeHTTP(w, r)
		if w.Code != http.StatusUnsupportedMediaType || len(w.Result().Cookies()) != 0 {
			t.Errorf("sign-in as %s: %d", ct, w.Code)
		}
	}
}

// TestRolesOnEveryDoor: every route, for every kind of caller: nobody, an
// API key, a viewer and an operator (Basic on the API, a session in the
// console). A viewer may read (console pages, the GET of a result) and
// never cause a send: the API answers its POST 403 in the gateway's words,
// the console refuses its resend and recovery; and nothing any of them
// was refused publishes a command.
func TestRolesOnEveryDoor(t *testing.T) {
	f := newConsoleFixture(t, event("s-1", "o-1", "paid", nil))
	type caller struct {
		name   string
		header map[string]string
	}
	callers := []caller{
		{"nobody", nil},
		{"key", map[string]string{"Authorization": "Api-Key " + fixtureKey}},
		{"viewer", map[string]string{"Authorization": basicHeader("look", "look pass"), "Cookie": f.signedIn("look", "look pass")}},
		{"operator", map[string]string{"Authorization": basicHeader("ops", "ops pass"), "Cookie": f.signedIn("ops", "ops pass")}},
	}
	const (
		ok       = 200
		redirect = 303
		// allowed: past every door (the answer depends on the request).
		allowed = -1
	)
	resend := `{"session_id":"s-1","channels":["sms"],"force":true}`
	form := url.Values{"session_id": {"s-1"}, "channel": {"sms"}, "command_id": {"0193a6a0-7c1e-7000-8000-000000000001"}}.Encode()
	routes := []struct {
		method, path, body string
		// want is the status per caller: nobody, key, viewer, operator.
		want [4]int
		// sends: an allowed caller publishes a command.
		sends bool
	}{
		{"POST", PathNotifications, resend, [4]int{401, allowed, 403, allowed}, true},
		{"GET", PathNotifications + "c-1/", "", [4]int{401, 404, 404, 404}, false},
		{"GET", PathOpenAPI, "", [4]int{ok, ok, ok, ok}, false},
		{"GET", "/console/", "", [4]int{redirect, redirect, ok, ok}, false},
		{"GET", "/console/txn?session_id=s-1", "", [4]int{redirect, redirect, ok, ok}, false},
		{"GET", "/console/attention", "", [4]int{redirect, redirect, ok, ok}, false},
		{"GET", "/console/recover/b-1", "", [4]int{redirect, redirect, 404, 404}, false},
		{"GET", "/console/static/console.css", "", [4]int{ok, ok, ok, ok}, false},
		{"POST", "/console/resend", form, [4]int{401, 401, 403, allowed}, true},
		{"POST", "/console/recover", "action=preview", [4]int{401, 401, 403, ok}, false},
	}
	for _, rt := range routes {
		for i, c := range callers {
			before := f.kafka.publishedCount()
			r := httptest.NewRequest(rt.method, rt.path, strings.NewReader(rt.body))
			if rt.body != "" {
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				if strings.HasPrefix(rt.body, "{") {
					r.Header.Set("Content-Type", "application/json")
				}
			}
			for k, v := range c.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			f.handler.ServeHTTP(w, r)
			want := rt.want[i]
			published := f.kafka.publishedCount() - before
			switch {
			case want == allowed && (w.Code == 401 || w.Code == 403 || w.Code >= 500):
				t.Errorf("%s %s as %s: %d, want it let through", rt.method, rt.path, c.name, w.Code)
			case want != allowed && w.Code != want:
				t.Errorf("%s %s as %s: %d, want %d", rt.method, rt.path, c.name, w.Code, want)
			}
			if want == 403 && strings.HasPrefix(rt.path, PathNotifications) &&
				strings.TrimSpace(w.Body.String()) != `{"detail":"You do not have permission to perform this action."}` {
				t.Errorf("%s %s as %s: body %s", rt.method, rt.path, c.name, w.Body)
			}
			if wantSends := rt.sends && want == allowed; (published > 0) != wantSends {
				t.Errorf("%s %s as %s: %d commands published, want a send: %v", rt.method, rt.path, c.name, published, wantSends)
			}
			f.kafka.drain()
		}
	}
}

func basicHeader(user, pass string) string {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}
