package api

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notifyd/notifyd/internal/testkit"
)

// TestChain: the access line carries the client's request id (or a new
// one), the status and what the handler noted; a handler that answered
// and then panicked keeps its answer (the guard adds nothing) while the
// panic is logged; the metrics count the status answered.
func TestChain(t *testing.T) {
	var logs testkit.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, nil)
	h := logRequests(log, countRequests(m, RecoverPanics(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		note(r, "key", "shop")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte("partial"))
		if r.URL.Path == "/panics" {
			panic("after the answer")
		}
	}))))
	lines := func() []map[string]any {
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "api request" {
				out = append(out, m)
			}
		}
		return out
	}

	r := httptest.NewRequest(http.MethodGet, "/panics", nil)
	r.Header.Set("X-Request-ID", "req-42")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusAccepted || w.Body.String() != "partial" {
		t.Errorf("a handler that answered then panicked: %d %q, want its own 202 %q", w.Code, w.Body.String(), "partial")
	}
	if !strings.Contains(logs.String(), `"msg":"api handler panicked"`) {
		t.Error("the panic was not logged")
	}
	got := lines()
	if len(got) != 1 || got[0]["request_id"] != "req-42" || got[0]["status"] != float64(202) || got[0]["key"] != "shop" {
		t.Fatalf("access line: %v", got)
	}

	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/fine", nil))
	got = lines()
	if len(got) != 2 || got[1]["request_id"] == "" || got[1]["request_id"] == "req-42" || got[1]["request_id"] == nil {
		t.Fatalf("a request without an id is given a new one: %v", got)
	}
	if n, _ := testkit.Metric(t, reg, "notifyd_api_requests_total", map[string]string{"code": "202"}); n != 2 {
		t.Errorf("notifyd_api_requests_total{code=202} = %v, want 2", n)
	}
}
