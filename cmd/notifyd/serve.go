package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/consumer/embedded"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"
)

func serve(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	load := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	cfg, fromFile, err := load()
	if err != nil {
		return err
	}
	redactor := dispatch.NewRedactor(cfg.secrets()...)
	log := newLogger(cfg.Log, stderr, redactor)
	defer restrictUmask()()
	if err := prepareStoreDir(cfg.Store.Dir, log); err != nil {
		return err
	}
	if !fromFile {
		log.Info("no configuration file: using the embedded default (embedded Kafka-protocol broker, console providers, built-in en/ar templates)")
	}
	templates, err := dispatch.ParseTemplates(cfg.Templates)
	if err != nil {
		return err
	}
	kinds := dispatch.NewRegistry()
	routes, err := cfg.routes(kinds, stdout)
	if err != nil {
		return err
	}
	dcfg := dispatch.Config{Routes: routes, Templates: templates, Redactor: redactor, Cooldown: cfg.Processing.Cooldown}

	reg := newRegistry()
	dcfg.Metrics = dispatch.NewMetrics(reg)
	scfg, err := cfg.serviceConfig()
	if err != nil {
		return err
	}
	scfg.Registerer = reg
	var broker *embedded.Broker
	if cfg.embedded() {
		dir := filepath.Join(cfg.Store.Dir, "embedded-broker")
		broker, err = embedded.Start(embedded.Config{Listen: cfg.EmbeddedBroker.Listen, DataDir: dir, Logger: log})
		if err != nil {
			return fmt.Errorf("embedded_broker.listen: %w", err)
		}
		defer broker.Close()
		scfg.Brokers = []string{broker.Addr()}
		log.Info("embedded Kafka-protocol broker started (development only: one node, no replication)", "addr", broker.Addr(), "data_dir", dir)
	}
	svc, err := consumer.New(scfg, dcfg, log)
	if err != nil {
		return err
	}
	ready := readiness(svc, broker)
	if cfg.HTTP.Listen != "off" {
		stopHTTP, err := serveHTTP(cfg.HTTP.Listen, ready, reg, log)
		if err != nil {
			return err
		}
		defer stopHTTP()
	}
	var apiServer *api.Server
	if cfg.API.Enabled() {
		if apiServer, err = startAPI(cfg, kinds, svc, ready, reg, stdout, log); err != nil {
			return err
		}
	}
	returned := make(chan struct{})
	defer close(returned)
	go func() {
		select {
		case <-ctx.Done():
			log.Info("stop requested (SIGTERM or interrupt)")
		case <-returned: // stopped on its own (an error): nobody asked
		}
	}()
	// The API stops first: requests still waiting are answered 202 (their
	// commands are published; any instance answers them later), then the
	// service hands its partitions over and stops.
	svcCtx, stopService := context.WithCancel(context.WithoutCancel(ctx))
	defer stopService()
	done := make(chan error, 1)
	go func() { done <- svc.Run(svcCtx) }()
	select {
	case err = <-done:
	case <-ctx.Done():
	}
	if apiServer != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := apiServer.Shutdown(sctx); err != nil {
			log.Warn("api shutdown", "error", err)
		}
		cancel()
	}
	stopService()
	if ctx.Err() != nil {
		err = <-done
	}
	if errors.Is(err, projection.ErrStoreFailed) {
		log.Error("exiting with status 75: the local store failed and cannot be written again in this process; start notifyd again once store.dir has room",
			"error", err, "exit_status", ExitStoreFailed)
	}
	return err
}

// readiness is the instance's readiness: the service's, and the embedded
// broker's (nil: none) when its log cannot be written.
func readiness(svc *consumer.Service, broker *embedded.Broker) func() consumer.Readiness {
	return func() consumer.Readiness {
		r := svc.Readiness()
		if broker != nil {
			if err := broker.Err(); err != nil {
				r.Ready, r.Serving, r.Reason = false, false, err.Error()
			}
		}
		return r
	}
}

// startAPI starts the merchant HTTP API. With no keys and no users
// configured it uses the key kept in <store.dir>/api-key, made (and printed
// once, on standard output) at the first start.
func startAPI(cfg Config, kinds *dispatch.Registry, svc *consumer.Service, ready func() consumer.Readiness, reg *prometheus.Registry, stdout io.Writer, log *slog.Logger) (*api.Server, error) {
	acfg := cfg.API
	if len(acfg.Keys) == 0 && len(acfg.Users) == 0 {
		if err := os.MkdirAll(cfg.Store.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("store.dir: %w", err)
		}
		path := filepath.Join(cfg.Store.Dir, "api-key")
		key, created, err := api.LocalKey(path)
		if err != nil {
			return nil, fmt.Errorf("api.keys: none configured, and %w", err)
		}
		acfg.Keys = []api.Key{{Name: localKeyName, SHA256: api.HashKey(key)}}
		if created {
			fmt.Fprintf(stdout, "notifyd: HTTP API key (made now, shown once, kept in %s): %s\n", path, key)
		}
		log.Info("api: no keys or users configured: the API accepts the key kept in the store directory", "file", path, "key_name", localKeyName)
	}
	var console api.ConsoleBackend
	if acfg.Console.On() {
		console = svc
		if acfg.Console.SessionKey == "" {
			key, err := api.LocalSecret(filepath.Join(cfg.Store.Dir, "console-session-key"))
			if err != nil {
				return nil, fmt.Errorf("api.console.session_key: none configured, and %w", err)
			}
			acfg.Console.SessionKey = key
		}
		if len(acfg.Users) == 0 {
			path := filepath.Join(cfg.Store.Dir, "console-user")
			u, password, created, err := api.LocalUser(path, localUserName)
			if err != nil {
				return nil, fmt.Errorf("api.users: none configured, and %w", err)
			}
			acfg.Users = []api.User{u}
			if created {
				fmt.Fprintf(stdout, "notifyd: console user %s (made now, password shown once, its bcrypt hash kept in %s): %s\n", u.Username, path, password)
			}
			log.Info("api: no users configured: the console accepts the operator kept in the store directory", "file", path, "user", u.Username)
		}
		log.Info("console listening", "url", consoleURL(acfg))
	}
	srv, err := api.New(acfg, api.Deps{
		Commands: svc, Results: svc, Registerer: reg, Console: console, SignOuts: svc,
		Receipts: svc, Callbacks: cfg.callbackVerifiers(kinds),
		// 503 while starting or while Kafka is unreachable; not while the
		// projection catches up (answers wait for it instead). The reason
		// stops before its details (broker addresses, errors).
		Ready: func() (bool, string) {
			r := ready()
			reason, _, _ := strings.Cut(r.Reason, ":")
			return r.Serving, reason
		},
	}, log)
	if err != nil {
		return nil, err
	}
	return srv, srv.Start()
}

// localUserName is the console user notifyd makes when api.users is empty.
const localUserName = "admin"

// consoleURL is where the console is served.
func consoleURL(c api.Config) string {
	scheme := "http"
	if c.TLS.Enabled() {
		scheme = "https"
	}
	return scheme + "://" + c.Listen + "/console/"
}

// localKeyName is the name (and requested_by) of the key notifyd makes
// when none is configured.
const localKeyName = "local"

// version is the release, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

// newRegistry returns the Prometheus registry of the process with the Go
// and process collectors and notifyd_build_info.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	revision, goVersion := "unknown", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				revision = s.Value
			}
		}
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "notifyd_build_info",
		Help:        "Build of the running notifyd: version, revision and Go version, value 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "go_version": goVersion},
	})
	info.Set(1)
	reg.MustRegister(info, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
