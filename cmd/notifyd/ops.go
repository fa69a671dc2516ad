package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/consumer"
)

// serveHTTP serves /metrics, /healthz (the process is alive) and /readyz (the store
// is open, Kafka answers, the projection is caught up and commands are
// consumed; the JSON body says why not).
func serveHTTP(addr string, ready func() consumer.Readiness, reg *prometheus.Registry, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http.listen: %w", err)
	}
	srv := opsServer(ready, reg, log)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "error", err)
		}
	}()
	log.Info("http listening", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// opsServer is http.listen's server: its route table (every route by
// method and pattern), behind the API's panic guard, with the time-outs of
// every listener (api.Timeouts), answers within 30 s. Its requests are not
// access-logged: Prometheus and the orchestrator's probes ask every few
// seconds.
func opsServer(ready func() consumer.Readiness, reg *prometheus.Registry, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, code int, body any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		r := ready()
		code := http.StatusOK
		if !r.Ready {
			code = http.StatusServiceUnavailable
		}
		reply(w, code, r)
	})
	return api.DefaultTimeouts(30*time.Second).Server(api.RecoverPanics(log, mux), log)
}
