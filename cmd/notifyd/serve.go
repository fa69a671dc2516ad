package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
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
		return usageErr(err)
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
	unlock, err := lockStoreDir(cfg.Store.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	if !fromFile {
		log.Info("no configuration file: using the embedded default (embedded Kafka-protocol broker, console providers, built-in en/ar templates)")
	}
	// What the configuration sends, and what it leaves off, said at
	// start as check-config says it.
	for _, line := range cfg.channelSummary() {
		if strings.Contains(line, "NO PROVIDER") {
			log.Warn("channel: "+line, "config", "providers, templates")
		} else {
			log.Info("channel: " + line)
		}
	}
	if !cfg.API.Enabled() {
		if cfg.apiUnset {
			log.Warn("api: " + cfg.apiOff())
		} else {
			log.Info("api: " + cfg.apiOff())
		}
	}
	kinds, reg := dispatch.NewRegistry(), newRegistry()
	dcfg, scfg, err := cfg.packageConfigs(kinds, redactor, reg, stdout)
	if err != nil {
		return err
	}
	a := newApp(log)
	var (
		broker *embedded.Broker
		svc    atomic.Pointer[consumer.Service] // set by the service's step, read by /readyz meanwhile
	)
	if cfg.embedded() {
		a.add(embeddedStep(cfg, &scfg, &broker, log))
	}
	// Ready also needs the API listening when there is one: it starts
	// after the service (and stops before it).
	var apiUp atomic.Bool
	ready := readiness(&svc, &broker, func() bool { return !cfg.API.Enabled() || apiUp.Load() })
	if cfg.HTTP.Listen != "off" {
		ops := &opsHTTP{addr: cfg.HTTP.Listen, ready: ready, reg: reg, log: log}
		a.add(step{name: "http.listen", start: ops.Start, stop: ops.Stop, budget: 2 * time.Second})
	}
	// The service's Run error after a requested stop (a store that failed
	// meanwhile) decides the exit status too.
	var runErr error
	a.add(serviceStep(a, scfg, dcfg, &svc, &runErr, log))
	if cfg.API.Enabled() {
		// Stopped first: requests still waiting are answered 202 (their
		// commands are published; any instance answers them later), then
		// the service hands its partitions over and stops.
		var srv *api.Server
		a.add(step{name: "api", budget: 5 * time.Second,
			start: func(ctx context.Context) (err error) {
				files := &localFiles{dir: cfg.Store.Dir}
				defer files.discard()
				if srv, err = newAPI(cfg, kinds, svc.Load(), ready, reg, files, log); err != nil {
					return err
				}
				if err = srv.Start(ctx); err != nil {
					return err
				}
				// Listening: the credentials made now are kept and shown.
				if err := files.keep(stdout); err != nil {
					return errors.Join(err, srv.Stop(ctx))
				}
				if cfg.API.Console.On() {
					log.Info("console listening", "url", consoleURL(cfg.API))
				}
				apiUp.Store(true)
				return nil
			},
			stop: func(ctx context.Context) error { return srv.Stop(ctx) },
		})
	}
	err = errors.Join(a.run(ctx), runErr)
	if errors.Is(err, projection.ErrStoreFailed) {
		log.Error("exiting with status 75: the local store failed and cannot be written again in this process; start notifyd again once store.dir has room",
			"error", err, "exit_status", ExitStoreFailed)
	}
	return err
}

// packageConfigs maps the configuration onto the dispatcher's and the
// service's: templates parsed, providers built from kinds (console
// providers print to stdout), metrics registered on reg.
func (c *Config) packageConfigs(kinds *dispatch.Registry, redactor *dispatch.Redactor, reg *prometheus.Registry, stdout io.Writer) (
	dispatch.Config, consumer.Config, error) {
	templates, err := dispatch.ParseTemplates(c.Templates)
	if err != nil {
		return dispatch.Config{}, consumer.Config{}, err
	}
	routes, err := c.routes(kinds, stdout)
	if err != nil {
		return dispatch.Config{}, consumer.Config{}, err
	}
	dcfg := dispatch.Config{Routes: routes, Templates: templates, Redactor: redactor, Cooldown: c.Processing.Cooldown,
		Metrics: dispatch.NewMetrics(reg), Merchants: c.merchantConfig(kinds, stdout)}
	scfg, err := c.serviceConfig()
	if err != nil {
		return dispatch.Config{}, consumer.Config{}, err
	}
	keys, err := c.sealingKeys()
	if err != nil {
		return dispatch.Config{}, consumer.Config{}, err
	}
	scfg.Registerer = reg
	scfg.CompileMerchant = c.merchantCompiler(keys)
	return dcfg, scfg, nil
}

// embeddedStep is the embedded broker's step: started first (the service
// reaches it at its address), stopped last.
func embeddedStep(cfg Config, scfg *consumer.Config, broker **embedded.Broker, log *slog.Logger) step {
	dir := filepath.Join(cfg.Store.Dir, "embedded-broker")
	return step{name: "embedded broker", budget: 5 * time.Second,
		start: func(context.Context) error {
			b, err := embedded.Start(embedded.Config{Listen: cfg.EmbeddedBroker.Listen, DataDir: dir, Logger: log})
			if err != nil {
				return fmt.Errorf("embedded_broker.listen: %w", err)
			}
			*broker = b
			scfg.Brokers = []string{b.Addr()}
			log.Info("embedded Kafka-protocol broker started (development only: one node, no replication)", "addr", b.Addr(), "data_dir", dir)
			return nil
		},
		stop: func(context.Context) error { (*broker).Close(); return nil },
	}
}

// serviceStep is the consumer service's step: start makes the service and
// runs it in the background (a Run that ends on its own stops the app);
// stop ends its Run, which hands the partitions over, and waits for it
// within the shutdown time-out and a margin. The Run's error after a
// requested stop is kept in runErr.
func serviceStep(a *app, scfg consumer.Config, dcfg dispatch.Config, svc *atomic.Pointer[consumer.Service], runErr *error, log *slog.Logger) step {
	done := make(chan error, 1)
	var stopRun context.CancelFunc
	defaulted := scfg
	defaulted.SetDefaults()
	return step{name: "service", budget: defaulted.ShutdownTimeout + 30*time.Second,
		start: func(ctx context.Context) error {
			s, err := consumer.New(scfg, dcfg, log)
			if err != nil {
				return err
			}
			svc.Store(s)
			runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			stopRun = cancel
			go func() {
				err := s.Run(runCtx)
				if runCtx.Err() == nil { // ended on its own (an error): nobody asked
					a.exit(err)
					err = nil
				}
				done <- err
			}()
			return nil
		},
		stop: func(ctx context.Context) error {
			stopRun()
			select {
			case *runErr = <-done:
				return nil
			case <-ctx.Done():
				return fmt.Errorf("the service did not stop in time: %w", ctx.Err())
			}
		},
	}
}

// readiness is the instance's readiness: the service's, the embedded
// broker's (nil: none) when its log cannot be written, and not before
// listening says the API listens.
func readiness(svc *atomic.Pointer[consumer.Service], broker **embedded.Broker, listening func() bool) func() consumer.Readiness {
	return func() consumer.Readiness {
		s := svc.Load()
		if s == nil {
			return consumer.Readiness{Reason: "starting: service not started yet"}
		}
		r := s.Readiness()
		if r.Ready && !listening() {
			r.Ready, r.Reason = false, "starting: the API is not listening yet"
		}
		if b := *broker; b != nil {
			if err := b.Err(); err != nil {
				r.Ready, r.Serving, r.Reason = false, false, err.Error()
			}
		}
		return r
	}
}

// newAPI makes the merchant HTTP API. With no keys and no users
// configured it uses the key kept in <store.dir>/api-key, and the console
// the operator kept in <store.dir>/console-user; what does not exist yet
// is made in files, kept and shown once the API listens.
func newAPI(cfg Config, kinds *dispatch.Registry, svc *consumer.Service, ready func() consumer.Readiness, reg *prometheus.Registry, files *localFiles, log *slog.Logger) (*api.Server, error) {
	acfg := cfg.API
	if len(acfg.Keys) == 0 && len(acfg.Users) == 0 {
		path, err := files.path("api-key")
		if err != nil {
			return nil, fmt.Errorf("api.keys: none configured, and %w", err)
		}
		key, created, err := api.LocalKey(path)
		if err != nil {
			return nil, fmt.Errorf("api.keys: none configured, and %w", err)
		}
		acfg.Keys = []api.Key{{Name: localKeyName, SHA256: api.HashKey(key)}}
		if created {
			files.made("api-key", func(path string) string {
				return fmt.Sprintf("notifyd: HTTP API key (made now, shown once, kept in %s): %s", path, key)
			})
		}
		log.Info("api: no keys or users configured: the API accepts the key kept in the store directory", "file", files.final("api-key"), "key_name", localKeyName)
	}
	var console api.ConsoleBackend
	if acfg.Console.On() {
		console = svc
		if acfg.Console.SessionKey == "" {
			path, err := files.path("console-session-key")
			if err == nil {
				acfg.Console.SessionKey, err = api.LocalSecret(path)
			}
			if err != nil {
				return nil, fmt.Errorf("api.console.session_key: none configured, and %w", err)
			}
			files.made("console-session-key", nil)
		}
		if len(acfg.Users) == 0 {
			path, err := files.path("console-user")
			if err != nil {
				return nil, fmt.Errorf("api.users: none configured, and %w", err)
			}
			u, password, created, err := api.LocalUser(path, localUserName)
			if err != nil {
				return nil, fmt.Errorf("api.users: none configured, and %w", err)
			}
			acfg.Users = []api.User{u}
			if created {
				files.made("console-user", func(path string) string {
					return fmt.Sprintf("notifyd: console user %s (made now, password shown once, its bcrypt hash kept in %s): %s", u.Username, path, password)
				})
			}
			log.Info("api: no users configured: the console accepts the operator kept in the store directory", "file", files.final("console-user"), "user", u.Username)
		}
	}
	srv, err := api.New(acfg, api.Deps{
		Commands: svc, Results: svc, Registerer: reg, Console: console, SignOuts: svc,
		Receipts: svc, Callbacks: cfg.callbackVerifiers(kinds, svc.MerchantsToken, svc.MerchantProviders), Merchants: merchantDirectory{svc.Merchants()},
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
	return srv, nil
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

// newRegistry returns the Prometheus registry of the process with the Go
// and process collectors and notifyd_build_info (the build that `notifyd
// version` prints).
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	b := currentBuild()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "notifyd_build_info",
		Help:        "Build of the running notifyd: version, revision and Go version, value 1.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "go_version": b.GoVersion},
	})
	info.Set(1)
	reg.MustRegister(info, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
