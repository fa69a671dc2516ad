package api

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
)

// Request bodies, in one place: every route that takes a body reads it
// through readBody (or the console's forms, parsed once by formsOnly), so
// no handler can read more than its route's limit, and a body declared
// larger is refused before a byte of it is read. Only the merchant API
// accepts multipart (the gateway's contract does), and only within its
// limit; the console takes url-encoded forms alone.
const (
	// MaxBodyBytes bounds a merchant API request; a larger one is answered
	// 413.
	MaxBodyBytes = 64 << 10
	// maxFormBytes bounds a console form (a sign-in, a resend, a recovery
	// filter: a few hundred bytes).
	maxFormBytes = 16 << 10
	// maxCallbackBody bounds a provider's receipt (a Meta batch).
	maxCallbackBody = 1 << 20
)

// errBodyTooLarge is readBody's error for a body over its limit.
var errBodyTooLarge = errors.New("request body too large")

// readBody reads r's body, at most limit bytes of it: a Content-Length
// over limit is refused without reading, and a body of unknown length is
// read through http.MaxBytesReader, which stops one byte past limit.
// errBodyTooLarge when the body is larger (answer 413), another error when
// it could not be read.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errBodyTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, errBodyTooLarge
	}
	return body, err
}

// formsOnly bounds the console's posts, in the API's order: a body over
// maxFormBytes is answered 413 (one declared larger before a byte of it is
// read, one of unknown length once maxFormBytes+1 bytes were), then one
// that is not application/x-www-form-urlencoded 415 (a multipart body is
// never parsed); the form is parsed here, so that handlers read r.PostForm.
func formsOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		body, err := readBody(w, r, maxFormBytes)
		switch {
		case errors.Is(err, errBodyTooLarge):
			http.Error(w, "The form is too large.", http.StatusRequestEntityTooLarge)
			return
		case err != nil:
			http.Error(w, "Bad form.", http.StatusBadRequest)
			return
		}
		if len(body) > 0 {
			if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
				http.Error(w, "Forms are sent as application/x-www-form-urlencoded.", http.StatusUnsupportedMediaType)
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := r.ParseForm(); err != nil {
			http.Error(w, "Bad form.", http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}
