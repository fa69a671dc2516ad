package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/internal/seal"
)

// checkConfig is `notifyd check-config [-config FILE]`: everything serve
// does with its configuration before it connects to anything. The file is
// parsed with every ${ENV} and *_file resolved, validated (every template
// parsed and rendered with a sample transaction, and checked against its
// channel's size limits), kafka.tls's files read and kafka.sasl built,
// every provider built, and api.tls's certificate loaded. It prints a
// summary and exits 0, or names the key of the first problem and exits 1;
// no value of a secret is printed.
func checkConfig(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("check-config", stderr)
	load := configFlag(fs)
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usageErr(err)
	}
	cfg, fromFile, err := load()
	if err != nil {
		return err
	}
	sc, err := cfg.serviceConfig()
	if err != nil {
		return err
	}
	if _, err := cfg.routes(dispatch.NewRegistry(), io.Discard); err != nil {
		return err
	}
	if cfg.API.Enabled() {
		if _, err := api.New(cfg.API, api.Deps{}, slog.New(slog.DiscardHandler)); err != nil {
			return err
		}
	}
	source := "the embedded default"
	if fromFile {
		source = "the configuration"
	}
	kafka := "the embedded broker on " + cfg.EmbeddedBroker.Listen
	if !cfg.embedded() {
		kafka = strings.Join(cfg.Kafka.Brokers, ", ")
		if sc.TLS != nil {
			kafka += " over TLS"
		}
		if sc.SASL != nil {
			kafka += ", SASL " + sc.SASL.Name()
		}
	}
	templates := fmt.Sprintf("%d rendered (the built-in ones)", countTemplates(cfg.Templates))
	if cfg.fileTemplates > 0 {
		templates = fmt.Sprintf("%d rendered (%d of them from the file, over the built-in ones)", countTemplates(cfg.Templates), cfg.fileTemplates)
	}
	apiListen := cfg.apiOff()
	if cfg.API.Enabled() {
		apiListen = cfg.API.Listen
		if l := cfg.API.RateLimit; l != nil && l.PerSecond > 0 {
			apiListen += fmt.Sprintf(", at most %.4g requests/s per key or user, burst %d (api.rate_limit)", l.PerSecond, l.Burst)
		} else {
			apiListen += ", no rate limit per key or user (api.rate_limit)"
		}
	}
	fmt.Fprintf(stdout, "notifyd check-config: %s is valid\n  kafka: %s\n  store.dir: %s (%s)\n  channels:\n    %s\n  templates: %s\n  api: %s\n  merchants: %s\n",
		source, kafka, cfg.Store.Dir, diskGuardSummary(cfg.Store), strings.Join(cfg.channelSummary(), "\n    "), templates, apiListen, sealingSummary(cfg))
	return nil
}

// sealingSummary says which key seals merchants' secrets, without making
// one.
func sealingSummary(cfg Config) string {
	previous := ""
	if n := len(cfg.Merchants.PreviousSealingKeys); n > 0 {
		previous = fmt.Sprintf(", %d previous key(s) still open what they sealed", n)
	}
	if cfg.Merchants.SealingKey == "" {
		return "secrets sealed with the key in " + filepath.Join(cfg.Store.Dir, localSealingKey) + " (made at first need; instances of one deployment must share one: merchants.sealing_key)" + previous
	}
	keys, err := seal.New(cfg.Merchants.SealingKey)
	if err != nil {
		return "merchants.sealing_key: " + err.Error()
	}
	return "secrets sealed with key " + keys.CurrentID() + " (merchants.sealing_key)" + previous
}

// diskGuardSummary says what the free-space guard of store.dir will do.
func diskGuardSummary(c StoreConfig) string {
	if c.MinFreeBytes != nil && *c.MinFreeBytes == 0 {
		return "free-space guard OFF (store.min_free_bytes: 0): a full disk stops notifyd with exit status 75"
	}
	low := "5 % of the filesystem, at most 1 GiB"
	if c.MinFreeBytes != nil {
		low = fmt.Sprintf("%d bytes", *c.MinFreeBytes)
	}
	ballast := "1 % of the filesystem, at most 64 MiB"
	if c.BallastBytes != nil {
		ballast = fmt.Sprintf("%d bytes", *c.BallastBytes)
		if *c.BallastBytes == 0 {
			ballast = "none (store.ballast_bytes: 0)"
		}
	}
	return "pauses below " + low + " free; ballast " + ballast
}
