package api

import (
	"fmt"
	"net/http"
	"strings"
)

// routes is the table of api.listen: every route by method and pattern
// (net/http's patterns), behind the chain of middleware.go. A new
// endpoint is one line here and one handler.
//
// The merchant API's routes answer a method they do not take after the
// same checks as the ones they take (authentication, permission and rate
// limit come before the 405: the gateway's order), so each is registered
// twice by apiRoute. A path that matches no route is answered 404 with the
// API's JSON detail.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathOpenAPI, s.openAPI)
	mux.HandleFunc(PathOpenAPI, methodNotAllowed("GET, HEAD"))
	s.apiRoute(mux, http.MethodPost, PathNotifications+"{$}", s.notify)
	s.apiRoute(mux, http.MethodPost, strings.TrimSuffix(PathNotifications, "/"), s.notify)
	s.apiRoute(mux, http.MethodGet, PathNotifications+"{command_id}/{$}", s.status)
	s.apiRoute(mux, http.MethodGet, PathNotifications+"{command_id}", s.status)
	if s.console != nil {
		s.console.routes(mux)
	}
	if s.deps.Receipts != nil {
		s.callbackRoutes(mux)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, detail{"Not found."})
	})
	return mux
}

// Handler returns api.listen's handler: the route table behind the chain
// of middleware.go, for tests and for Start.
func (s *Server) Handler() http.Handler {
	return logRequests(s.log, countRequests(s.m, RecoverPanics(s.log, literalPaths(s.routes()))))
}

// apiRoute registers a merchant API route: h answers method on pattern
// once admit let the request through; any other method passes the same
// checks and is answered 405.
func (s *Server) apiRoute(mux *http.ServeMux, method, pattern string, h func(*exchange)) {
	mux.HandleFunc(method+" "+pattern, func(w http.ResponseWriter, r *http.Request) {
		if e := (&exchange{w: w, r: r}); s.admit(e, method) {
			h(e)
		}
	})
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		s.admit(&exchange{w: w, r: r}, method) // the method differs: 405 after the checks before it
	})
}

// methodNotAllowed answers 405 with the methods allowed.
func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeJSON(w, http.StatusMethodNotAllowed, detail{fmt.Sprintf("Method %q not allowed.", r.Method)})
	}
}

// openAPI serves the API's OpenAPI document.
func (s *Server) openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDocument)
}

// literalPaths keeps the routes literal, as the gateway's are: a path
// segment "." or ".." is a command_id, not a step up (net/http's mux
// would redirect to the cleaned path), and a path with an empty segment
// names nothing (404).
func literalPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.EscapedPath()
		if strings.Contains(p, "//") {
			writeJSON(w, http.StatusNotFound, detail{"Not found."})
			return
		}
		if !strings.Contains(p, "/.") {
			next.ServeHTTP(w, r)
			return
		}
		segs := strings.Split(p, "/")
		for i, seg := range segs {
			switch seg {
			case ".":
				segs[i] = "%2E"
			case "..":
				segs[i] = "%2E%2E"
			}
		}
		u := *r.URL
		u.RawPath = strings.Join(segs, "/")
		r2 := *r
		r2.URL = &u
		next.ServeHTTP(w, &r2)
	})
}
