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
	"slices"
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

// commands are the subcommands, in the order help lists them, each with
// what it does in one line.
var commands = []struct {
	name, summary string
	run           func(context.Context, []string, io.Reader, io.Writer, io.Writer) error
}{
	{"serve", "run notifyd (the default command): consume payment events and resend commands, publish results, serve the API and console", serve},
	{"check-config", "check a configuration without connecting to anything, and say what each channel sends", checkConfig},
	{"publish", "publish JSON documents from standard input to a topic, each checked against the topic's schema", publish},
	{"resend", "publish a resend command and print its delivery result", resend},
	{"tail", "print delivery results as they are published", tail},
	{"recover", "resend the channels that failed in a time window (a provider's outage)", recoverCmd},
	{"merchant", "put, get, list, delete or reseal merchants' settings", merchantCmd},
	{"api-key", "make an HTTP API key and print the api.keys line holding its hash", apiKey},
	{"schema", "print one of the JSON Schemas of the contract", schema},
	{"version", "print notifyd's version, revision and build time", versionCmd},
	{"help", "describe the commands, or one command's flags", nil},
}

// run executes one subcommand and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	name := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, args = args[0], args[1:]
	} else if len(args) > 0 && isHelpFlag(args[0]) {
		name, args = "help", nil
	}
	if name == "help" {
		return help(ctx, args, stdout, stderr)
	}
	i := slices.IndexFunc(commands, func(c struct {
		name, summary string
		run           func(context.Context, []string, io.Reader, io.Writer, io.Writer) error
	}) bool {
		return c.name == name
	})
	if i < 0 {
		fmt.Fprintf(stderr, "notifyd: unknown command %q (notifyd help lists them)\n", name)
		return 2
	}
	err := commands[i].run(ctx, args, stdin, stdout, stderr)
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0 // -h: the flags were printed, as asked
	case errors.As(err, &exit):
		return int(exit)
	case errors.Is(err, errUsage):
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

func isHelpFlag(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// helpAsked is flag.ErrHelp when args are just a help flag, else nil.
func helpAsked(args []string) error {
	if len(args) == 1 && isHelpFlag(args[0]) {
		return flag.ErrHelp
	}
	return nil
}

// usageErr is a subcommand's answer to bad flags: flag.ErrHelp when help
// was asked (exit 0, the usage printed), else errUsage (exit 2).
func usageErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return flag.ErrHelp
	}
	return errUsage
}

// help is `notifyd help [COMMAND]`: the commands, or one command's flags
// (what COMMAND -h prints).
func help(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stdout, "usage: notifyd [COMMAND] [FLAGS]\n\nCommands:")
		for _, c := range commands {
			fmt.Fprintf(stdout, "  %-13s %s\n", c.name, c.summary)
		}
		fmt.Fprintln(stdout, "\nnotifyd help COMMAND (or notifyd COMMAND -h) prints a command's flags. The README has the rest.")
		return 0
	}
	if len(args) > 1 || args[0] == "help" || isHelpFlag(args[0]) {
		fmt.Fprintln(stderr, "usage: notifyd help [COMMAND]")
		return 2
	}
	return run(ctx, []string{args[0], "-h"}, nil, stdout, stdout)
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
