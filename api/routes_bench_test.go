package api

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/notifyd/notifyd/dispatch"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkDoor: one merchant API request (the status of a command that
// has no result: authenticated, rate-limited, looked up, answered 404)
// through api.listen's whole door — Handler(): request id, access line,
// metrics, panic guard, literal paths, the route table — beside the same
// request to the route table alone (routes(): the baseline). The
// difference is what the one chain costs a request.
func BenchmarkDoor(b *testing.B) {
	f := newConsoleFixture(b)
	deps := f.deps
	deps.Registerer = prometheus.NewRegistry()
	cfg := f.cfg
	cfg.RateLimit = &dispatch.RateLimit{PerSecond: 1e9, Burst: 1 << 30} // measured, not refused
	s, err := New(cfg, deps, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		h    http.Handler
	}{{"routes", s.routes()}, {"door", s.Handler()}} {
		b.Run(tc.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, PathNotifications+"missing/", nil)
			r.Header.Set("Authorization", "Api-Key "+fixtureKey)
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				tc.h.ServeHTTP(w, r)
				if w.Code != http.StatusNotFound {
					b.Fatalf("answered %d", w.Code)
				}
			}
		})
	}
}
