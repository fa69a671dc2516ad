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

// opsHTTP is http.listen's server as a part of the app: /metrics,
// /healthz (the process is alive) and /readyz (the store is open, Kafka
// answers, the projection is caught up and commands are consumed; the JSON
// body says why not).
type opsHTTP struct {
	addr  string
	ready func() consumer.Readiness
	reg   *prometheus.Registry
	log   *slog.Logger
	srv   *http.Server
}

// Start listens on http.listen and serves in the background.
func (o *opsHTTP) Start(context.Context) error {
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	o.srv = opsServer(o.ready, o.reg, o.log)
	go func() {
		if err := o.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.log.Error("http server", "error", err)
		}
	}()
	o.log.Info("http listening", "addr", ln.Addr().String())
	return nil
}

// Stop stops serving, waiting for the requests being answered until ctx
// ends.
func (o *opsHTTP) Stop(ctx context.Context) error { return o.srv.Shutdown(ctx) }

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
