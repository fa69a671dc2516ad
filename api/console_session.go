package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

// A console session is a cookie holding the user's name and when the
// session ends, signed with HMAC-SHA256 under api.console.session_key:
//
//	notifyd_console=<base64url(payload)>.<base64url(HMAC(payload))>
//
// The role is not in the cookie: it is read from api.users at every
// request, so removing a user or changing their role takes effect at once;
// the cookie holds a fingerprint of the password's hash, so changing the
// password ends the sessions opened with the old one. Signing out clears
// the browser's cookie only: a copied cookie stays valid until it expires
// (api.console.session_ttl), as there is no server-side session store.
// The cookie is HttpOnly, SameSite=Lax, Secure when the API serves TLS, and
// scoped to /console/.

// sessionCookie is the cookie's name.
const sessionCookie = "notifyd_console"

type sessionPayload struct {
	User string `json:"u"`
	// Password is a fingerprint of the user's bcrypt hash: changing the
	// password ends the sessions opened with the old one.
	Password string `json:"p"`
	Expires  int64  `json:"e"` // unix seconds
}

// sessions signs and verifies console session cookies.
type sessions struct {
	key    []byte
	ttl    time.Duration
	secure bool
	now    func() time.Time
}

// issue returns the cookie of a new session of user, opened with the
// password whose fingerprint is given.
func (s *sessions) issue(user, password string) *http.Cookie {
	exp := s.now().Add(s.ttl)
	payload, _ := json.Marshal(sessionPayload{User: user, Password: password, Expires: exp.Unix()})
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

// user returns the user of the request's session and the fingerprint of
// the password it was opened with, if its cookie is signed with the key and
// not expired. The signature is compared in constant time.
func (s *sessions) user(r *http.Request) (user, password string, err error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", "", errNoSession
	}
	p, sig, ok := strings.Cut(c.Value, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(s.sign(p))) {
		return "", "", errNoSession
	}
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return "", "", errNoSession
	}
	var payload sessionPayload
	if json.Unmarshal(raw, &payload) != nil || payload.User == "" || s.now().Unix() >= payload.Expires {
		return "", "", errNoSession
	}
	return payload.User, payload.Password, nil
}
