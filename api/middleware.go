package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"
)

// The chain every request on api.listen passes, written once (routes.go
// builds it): logRequests (the request id and the access line), then
// countRequests (the metrics), then RecoverPanics, then the mux, whose
// route does its own authentication (an API key or user, a console
// session, a provider's signature). The panic guard sits inside the other
// two so that the access line and the metrics record the 500 it answers.

// access is what the access line of one request says beyond method, path,
// status and duration: the handlers add to it (note) as they learn it.
type access struct {
	status int
	attrs  []any
}

type accessKey struct{}

// note adds attributes (key, value, ...) to the request's access line:
// who asked (key or user), the command_id, replayed, the provider and
// result of a receipt. Credentials and contacts are never noted.
func note(r *http.Request, attrs ...any) {
	if a, ok := r.Context().Value(accessKey{}).(*access); ok {
		a.attrs = append(a.attrs, attrs...)
	}
}

// statusWriter records the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	a *access
}

func (w statusWriter) WriteHeader(code int) {
	if w.a.status == 0 {
		w.a.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w statusWriter) Write(b []byte) (int, error) {
	if w.a.status == 0 {
		w.a.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// RecoverPanics answers a handler's panic 500 (when nothing was answered
// yet) and logs it, on every route: a panic never closes the connection
// without an answer or kills the process. http.ErrAbortHandler is let
// through: it is how a handler aborts on purpose.
func RecoverPanics(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler {
				panic(p)
			}
			log.Error("api handler panicked", "panic", fmt.Sprint(p), "path", r.URL.Path)
			if a, _ := r.Context().Value(accessKey{}).(*access); a == nil || a.status == 0 {
				writeJSON(w, http.StatusInternalServerError, detail{"Internal error."})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// logRequests writes one access line per request ("api request": method,
// path, status, duration, request_id, and what the handler noted). The
// request id is the client's X-Request-ID or X-Correlation-ID when it is
// short and printable, else a new one.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := correlationID(r)
		if id == "" {
			id = uuid.NewString()
		}
		a := &access{}
		defer func() {
			attrs := []any{"method", r.Method, "path", r.URL.Path, "status", a.status,
				"duration_ms", time.Since(start).Milliseconds(), "request_id", id}
			log.Info("api request", append(attrs, a.attrs...)...)
		}()
		next.ServeHTTP(statusWriter{w, a}, r.WithContext(context.WithValue(r.Context(), accessKey{}, a)))
	})
}

// countRequests records every answered request in
// notifyd_api_requests_total{code} and its duration.
func countRequests(m *metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		defer func() {
			status := 0
			if a, ok := r.Context().Value(accessKey{}).(*access); ok {
				status = a.status
			}
			m.observe(status, time.Since(start))
		}()
		next.ServeHTTP(w, r)
	})
}

// writeJSON answers status with body as JSON, never cached.
func writeJSON(w http.ResponseWriter, status int, body any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
