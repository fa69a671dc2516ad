package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/schemas"
)

// merchantUsage is `notifyd merchant`'s usage.
const merchantUsage = `usage: notifyd merchant put [-config FILE] -file MERCHANT.yaml
       notifyd merchant get [-config FILE] MERCHANT_ID
       notifyd merchant list [-config FILE]
       notifyd merchant delete [-config FILE] MERCHANT_ID
       notifyd merchant reseal [-config FILE]`

// merchantCmd manages merchants' settings on the merchant-settings topic.
func merchantCmd(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelpFlag(args[0]) {
		fmt.Fprintln(stderr, merchantUsage)
		return usageErr(helpAsked(args))
	}
	sub, args := args[0], args[1:]
	fs := newFlags("merchant "+sub, stderr)
	load := configFlag(fs)
	file := ""
	if sub == "put" {
		fs.StringVar(&file, "file", "", "the merchant's settings, YAML (required)")
	}
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	wantArgs := map[string]int{"put": 0, "get": 1, "list": 0, "delete": 1, "reseal": 0}
	n, ok := wantArgs[sub]
	if !ok || fs.NArg() != n || (sub == "put" && file == "") {
		fmt.Fprintln(stderr, merchantUsage)
		return errUsage
	}
	cfg, conn, err := cliConn(load)
	if err != nil {
		return err
	}
	topic := cfg.Kafka.Topics.WithDefaults().MerchantSettings
	switch sub {
	case "put":
		return merchantPut(ctx, cfg, conn, topic, file, stderr)
	case "get", "list", "reseal":
		all, err := settingsInForce(ctx, cfg, conn, topic)
		if err != nil {
			return err
		}
		switch sub {
		case "get":
			return merchantGet(all, topic, fs.Arg(0), stdout)
		case "list":
			return merchantList(all, stdout)
		}
		return merchantReseal(ctx, cfg, conn, topic, all, stderr)
	default:
		return merchantDelete(ctx, conn, topic, fs.Arg(0), stderr)
	}
}

// merchantPut reads a merchant file, checks it as every instance will
// (templates rendered, providers built, nothing connected), seals its
// secrets and publishes it.
func merchantPut(ctx context.Context, cfg Config, conn consumer.Conn, topic, file string, stderr io.Writer) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	keys, err := cfg.sealingKeys()
	if err != nil {
		return err
	}
	check, err := settingsChecker(cfg)
	if err != nil {
		return err
	}
	id, value, err := merchantRecord(data, keys, check)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := writeSettings(ctx, conn, topic, id, value); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "notifyd merchant put: %s published to %s (secrets sealed with key %s); every instance applies it to the commands it decides after reading it\n",
		id, topic, keys.CurrentID())
	return nil
}

// checkingDispatcher is a dispatcher of cfg's platform that only checks
// merchants' settings (CheckMerchant): it decides nothing.
func checkingDispatcher(cfg Config) (*dispatch.Dispatcher, error) {
	templates, err := dispatch.ParseTemplates(cfg.Templates)
	if err != nil {
		return nil, err
	}
	return dispatch.New(dispatch.Config{Templates: templates, Merchants: cfg.merchantConfig(dispatch.NewRegistry(), io.Discard)},
		noTransactions{}, slog.New(slog.DiscardHandler))
}

// noTransactions is the store of a dispatcher that decides nothing.
type noTransactions struct{}

func (noTransactions) Transaction(string) (schemas.PaymentEvent, bool, error) {
	return schemas.PaymentEvent{}, false, nil
}
func (noTransactions) SessionForOrder(string, string) (string, bool, error) { return "", false, nil }
func (noTransactions) LastSent(string, schemas.Channel, schemas.State) (time.Time, bool, error) {
	return time.Time{}, false, nil
}

// writeSettings publishes a merchant's record (value nil: removed).
func writeSettings(ctx context.Context, conn consumer.Conn, topic, id string, value []byte) error {
	w := conn.Writer(topic)
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Topic: topic, Key: []byte(id), Value: value}); err != nil {
		return fmt.Errorf("publish to %s (is notifyd serve running? it creates the topics): %w", topic, err)
	}
	return nil
}

// readSettings reads the topic to its end and returns each merchant's
// settings in force: its last record that check accepts since it was last
// removed (an instance refuses a record that does not check, keeping the
// one before).
func readSettings(ctx context.Context, conn consumer.Conn, topic string, check func(id string, value []byte) error) (map[string][]byte, error) {
	history := map[string][][]byte{}
	err := consumer.ReadAll(ctx, conn, topic, func(_ int, batch []kafka.Message) error {
		for _, m := range batch {
			if m.Value == nil {
				delete(history, string(m.Key))
			} else {
				history[string(m.Key)] = append(history[string(m.Key)], m.Value)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s (is notifyd serve running? it creates the topics): %w", topic, err)
	}
	out := map[string][]byte{}
	for id, values := range history {
		for i := len(values) - 1; i >= 0; i-- {
			if check(id, values[i]) == nil {
				out[id] = values[i]
				break
			}
		}
	}
	return out, nil
}

// settingsInForce reads each merchant's settings in force (readSettings),
// checked as every instance of cfg checks them.
func settingsInForce(ctx context.Context, cfg Config, conn consumer.Conn, topic string) (map[string][]byte, error) {
	check, err := settingsChecker(cfg)
	if err != nil {
		return nil, err
	}
	return readSettings(ctx, conn, topic, check)
}

// settingsChecker checks records as every instance of cfg does.
func settingsChecker(cfg Config) (func(id string, value []byte) error, error) {
	keys, err := cfg.sealingKeys()
	if err != nil {
		return nil, err
	}
	d, err := checkingDispatcher(cfg)
	if err != nil {
		return nil, err
	}
	compile := cfg.merchantCompiler(keys)
	return func(id string, value []byte) error { return consumer.CheckMerchantSettings(id, value, compile, d) }, nil
}

// merchantGet prints a merchant's settings as published, secrets shown
// as sealed.
func merchantGet(all map[string][]byte, topic, id string, stdout io.Writer) error {
	value, ok := all[id]
	if !ok {
		return fmt.Errorf("no merchant %q on %s", id, topic)
	}
	shown, err := shownSettings(value)
	if err != nil {
		return fmt.Errorf("merchant %q: %w", id, err)
	}
	_, err = stdout.Write(shown)
	return err
}

// merchantList prints one line per merchant.
func merchantList(all map[string][]byte, stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MERCHANT_ID\tDISPLAY_NAME\tKEYS\tUSERS\tPROVIDERS\tTEMPLATES")
	for _, id := range slices.Sorted(maps.Keys(all)) {
		s, err := schemas.DecodeMerchantSettings(all[id])
		if err != nil {
			fmt.Fprintf(tw, "%s\t(not valid: %v)\t\t\t\t\n", id, err)
			continue
		}
		keys, users := 0, 0
		if s.API != nil {
			keys, users = len(s.API.Keys), len(s.API.Users)
		}
		var channels []string
		for ch := range s.Providers {
			channels = append(channels, string(ch))
		}
		slices.Sort(channels)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%v\n", id, s.DisplayName, keys, users, strings.Join(channels, ","), len(s.Templates) > 0)
	}
	return tw.Flush()
}

// merchantDelete removes a merchant: its keys and users end on every
// instance; its transactions keep their merchant_id.
func merchantDelete(ctx context.Context, conn consumer.Conn, topic, id string, stderr io.Writer) error {
	if !schemas.ValidMerchantID(id) {
		return fmt.Errorf("%q is not a merchant_id", id)
	}
	if err := writeSettings(ctx, conn, topic, id, nil); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "notifyd merchant delete: %s removed; its keys and users end on every instance as it reads %s\n", id, topic)
	return nil
}

// merchantReseal seals every merchant's secrets again with the current
// sealing key, after a rotation (the old key among
// merchants.previous_sealing_keys); the old key can go once it is done.
func merchantReseal(ctx context.Context, cfg Config, conn consumer.Conn, topic string, all map[string][]byte, stderr io.Writer) error {
	keys, err := cfg.sealingKeys()
	if err != nil {
		return err
	}
	var failed []error
	count := 0
	for _, id := range slices.Sorted(maps.Keys(all)) {
		value, changed, err := resealed(id, all[id], keys)
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", id, err))
			continue
		}
		if !changed {
			continue
		}
		if err := writeSettings(ctx, conn, topic, id, value); err != nil {
			return err
		}
		count++
	}
	fmt.Fprintf(stderr, "notifyd merchant reseal: %d of %d merchants sealed again with key %s\n", count, len(all), keys.CurrentID())
	return errors.Join(failed...)
}
