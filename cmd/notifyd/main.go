package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/projection"
)

// errUsage marks a command-line mistake (exit status 2).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one subcommand and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	name := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	cmds := map[string]func(context.Context, []string, io.Reader, io.Writer, io.Writer) error{
		"serve":        serve,
		"resend":       resend,
		"publish":      publish,
		"tail":         tail,
		"schema":       schema,
		"api-key":      apiKey,
		"check-config": checkConfig,
		"recover":      recoverCmd,
		"merchant":     merchantCmd,
	}
	cmd, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "notifyd: unknown command %q (serve, resend, publish, tail, schema, api-key, check-config, recover, merchant)\n", name)
		return 2
	}
	err := cmd(ctx, args, stdin, stdout, stderr)
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return int(exit)
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		return 2
	case errors.Is(err, projection.ErrStoreFailed):
		// serve logged why and stopped cleanly: a distinct status for the
		// supervisor, which starts it again (it waits for room before
		// opening the store).
		return ExitStoreFailed
	default:
		fmt.Fprintf(stderr, "notifyd %s: %v\n", name, err)
		return 1
	}
}

// ExitStoreFailed is serve's exit status when its local store failed (a
// write did not complete: a full disk, an I/O error). Pebble cannot be
// written again in the process, so notifyd stops cleanly (its partitions
// handed over, its decisions published) and exits for its supervisor to
// start it again: 75 is EX_TEMPFAIL, "try again later".
const ExitStoreFailed = 75

// exitError ends a subcommand with a status and no further message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// configFlag registers -config on fs; load reads it, or NOTIFYD_CONFIG, or
// returns the built-in default configuration.
// cliConn loads the configuration of a CLI subcommand and how it reaches
// the brokers (as client notifyd-cli).
func cliConn(load func() (Config, bool, error)) (Config, consumer.Conn, error) {
	cfg, _, err := load()
	if err != nil {
		return cfg, consumer.Conn{}, err
	}
	conn, err := cfg.conn("notifyd-cli")
	return cfg, conn, err
}

func configFlag(fs *flag.FlagSet) (load func() (Config, bool, error)) {
	path := fs.String("config", "", "configuration file (default $NOTIFYD_CONFIG, else the embedded default)")
	return func() (Config, bool, error) {
		p := *path
		if p == "" {
			p = os.Getenv("NOTIFYD_CONFIG")
		}
		if p == "" {
			return DefaultConfig(), false, nil
		}
		c, err := LoadConfig(p)
		return c, true, err
	}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("notifyd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// newLogger returns the log on w: text on a terminal, else JSON, unless
// log.format says; with every secret r knows hidden.
func newLogger(c LogConfig, w io.Writer, r *dispatch.Redactor) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	format := c.Format
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			format = "text"
		}
	}
	w = redactingWriter{w, r}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
