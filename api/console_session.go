package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// A console session is a cookie holding the user's name, when the
// session was opened and when it ends, signed with HMAC-SHA256 under
// api.console.session_key:
//
//	notifyd_console=<base64url(payload)>.<base64url(HMAC(payload))>
//
// The role is not in the cookie: it is read from api.users at every
// request; the cookie holds a fingerprint of the user's password hash and
// role, so changing either ends the sessions opened before. Signing out
// ends every session of the user opened until then, on every instance:
// the end travels on the console-sessions topic (SignOuts, wired to
// consumer.Service), which every instance follows into its store, and a
// session opened at or before the user's last end is refused, a copied
// cookie included. An instance that has not read that topic up to date
// yet (starting) refuses every session. The cookie is HttpOnly,
// SameSite=Lax, Secure when the API serves TLS, and scoped to /console/.

// SignOuts ends console sessions on every instance: the ends travel on a
// topic every instance follows (consumer.Service, wired by cmd/notifyd).
type SignOuts interface {
	// EndSessions ends every session of user opened at or before at, on
	// every instance; it returns once that is published (acknowledged by
	// the brokers) and known to this instance.
	EndSessions(ctx context.Context, user string, at time.Time) error
	// SessionsEnded returns when user's sessions last ended (the zero
	// time: never), as this instance knows it; an error when it cannot
	// tell (starting, catching up), and then no session is taken.
	SessionsEnded(user string) (time.Time, error)
}

// sessionCookie is the cookie's name.
const sessionCookie = "notifyd_console"

type sessionPayload struct {
	User string `json:"u"`
	// Password is a fingerprint of the user's bcrypt hash and role:
	// changing either ends the sessions opened before.
	Password string `json:"p"`
	Issued   int64  `json:"i"` // unix milliseconds: when the session was opened
	Expires  int64  `json:"e"` // unix seconds
}

// session is a verified session cookie.
type session struct {
	user, fingerprint string
	issued            time.Time
}

// sessions signs and verifies console session cookies.
type sessions struct {
	key    []byte
	ttl    time.Duration
	secure bool
	now    func() time.Time
}

// issue returns the cookie of a new session of user, opened at issued
// with the password and role whose fingerprint is given.
func (s *sessions) issue(user, fingerprint string, issued time.Time) *http.Cookie {
	exp := s.now().Add(s.ttl)
	payload, _ := json.Marshal(sessionPayload{User: user, Password: fingerprint, Issued: issued.UnixMilli(), Expires: exp.Unix()})
	p := base64.RawURLEncoding.EncodeToString(payload)
	return &http.Cookie{
		Name: sessionCookie, Value: p + "." + s.sign(p), Path: consolePrefix,
		Expires: exp, HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
	}
}

// clear returns the cookie that ends a session.
func (s *sessions) clear() *http.Cookie {
	return &http.Cookie{Name: sessionCookie, Value: "", Path: consolePrefix, MaxAge: -1,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode}
}

func (s *sessions) sign(payload string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

var errNoSession = errors.New("no valid console session")

// session returns the request's session, if its cookie is signed with the
// key and not expired. The signature is compared in constant time.
func (s *sessions) session(r *http.Request) (session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, errNoSession
	}
	p, sig, ok := strings.Cut(c.Value, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(s.sign(p))) {
		return session{}, errNoSession
	}
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return session{}, errNoSession
	}
	var payload sessionPayload
	if json.Unmarshal(raw, &payload) != nil || payload.User == "" || s.now().Unix() >= payload.Expires {
		return session{}, errNoSession
	}
	return session{user: payload.User, fingerprint: payload.Password, issued: time.UnixMilli(payload.Issued)}, nil
}

// The console's sign-in and sign-out pages.

func (c *console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, http.StatusOK, "login", viewer{}, map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
}

// login checks a username and password as the API checks Basic
// credentials (checkPassword: backoff after failures, bcrypt bounded, the
// same answer time for unknown users).
func (c *console) login(w http.ResponseWriter, r *http.Request) {
	user, pass, next := r.PostForm.Get("username"), r.PostForm.Get("password"), safeNext(r.PostForm.Get("next"))
	_, known := c.s.auth.user(user)
	check := c.s.auth.checkPassword(r, user, pass)
	switch {
	case check.retryAfter > 0:
		secs := retryAfterSeconds(check.retryAfter)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		c.log.Warn("console: sign-in refused unchecked: failed sign-ins are backing off", "retry_after_s", secs)
		c.render(w, http.StatusTooManyRequests, "login", viewer{}, map[string]any{
			"Error": fmt.Sprintf("Too many failed sign-ins: try again in %d second%s.", secs, plural(secs)), "Next": next})
		return
	case check.busy:
		w.Header().Set("Retry-After", "1")
		c.render(w, http.StatusServiceUnavailable, "login", viewer{}, map[string]any{"Error": "Too many sign-ins at once: try again in a moment.", "Next": next})
		return
	case !check.ok:
		if known { // an unknown name may be a password typed in the wrong field: not logged
			c.log.Info("console: sign-in refused", "user", user)
		} else {
			c.log.Info("console: sign-in refused for an unknown user")
		}
		c.render(w, http.StatusUnauthorized, "login", viewer{}, map[string]any{"Error": "Invalid username or password.", "Next": next})
		return
	}
	u := check.user
	// The session opens after the user's sessions last ended, as this
	// instance knows it, whatever its clock says.
	ended, err := c.s.deps.SignOuts.SessionsEnded(u.Username)
	if err != nil {
		c.unavailable(w, viewer{}, err)
		return
	}
	issued := c.sessions.now().Truncate(time.Millisecond)
	if !issued.After(ended) {
		issued = ended.Truncate(time.Millisecond).Add(time.Millisecond)
	}
	http.SetCookie(w, c.sessions.issue(u.Username, fingerprint(u), issued))
	note(r, "user", u.Username)
	c.log.Info("console: signed in", "user", u.Username, "role", string(u.Role))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends every session of the user opened until now (this one, and
// any copy of its cookie), on every instance, then clears the cookie. When
// the end cannot be published the session stays open and the user is told
// to try again.
func (c *console) logout(w http.ResponseWriter, r *http.Request) {
	if sess, err := c.sessions.session(r); err == nil {
		at := c.sessions.now()
		if sess.issued.After(at) { // opened by an instance whose clock is ahead
			at = sess.issued
		}
		if err := c.s.deps.SignOuts.EndSessions(r.Context(), sess.user, at); err != nil {
			c.log.Error("console: sign-out not published: the session stays open", "user", sess.user, "error", err)
			c.render(w, http.StatusServiceUnavailable, "login", viewer{}, map[string]any{
				"Error": "notifyd could not sign you out (Kafka did not answer): your session is still open; sign out again in a moment."})
			return
		}
		c.log.Info("console: signed out", "user", sess.user)
	}
	http.SetCookie(w, c.sessions.clear())
	http.Redirect(w, r, consolePrefix+"login", http.StatusSeeOther)
}

// safeNext keeps a redirect inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, consolePrefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return consolePrefix
	}
	return next
}
