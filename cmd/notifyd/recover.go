package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/projection"
	"github.com/notifyd/notifyd/schemas"
)

// recoverCmd is `notifyd recover`: the console's bulk recovery from the
// command line. It reads the results topic into a store of its own (the
// history index every instance builds), lists the channels that need
// attention under the filter, plans one command per transaction with the
// console's command_ids (projection.PlanRecovery: the same filter gives
// the same command_ids, wherever it is confirmed), prints the plan, and,
// unless -dry-run, publishes the commands.
func recoverCmd(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("recover", stderr)
	load := configFlag(fs)
	channel := fs.String("channel", "", "email, sms or whatsapp (default: any)")
	provider := fs.String("provider", "", "the provider of the failed attempt (default: any)")
	reason := fs.String("reason", "", "provider_unavailable or provider_rejected (default: both)")
	since := fs.String("since", "", "failures processed at or after this time (RFC 3339, or 2006-01-02T15:04 in UTC)")
	until := fs.String("until", "", "failures processed before this time (default: now)")
	dryRun := fs.Bool("dry-run", false, "print the plan, publish nothing")
	by := fs.String("requested-by", "notifyd-cli", "the requested_by of the commands")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usageErr(err)
	}
	f, err := recoveryFilter(*channel, *provider, *reason, *since, *until, stderr)
	if err != nil {
		return err
	}
	cfg, conn, err := cliConn(load)
	if err != nil {
		return err
	}
	items, read, err := attentionFromResults(ctx, cfg, conn, f)
	if err != nil {
		return err
	}
	plan := projection.PlanRecovery(f, items, *by, time.Now())
	fmt.Fprintf(stderr, "notifyd recover: %d results read; %s\n", read, plan)
	enc := json.NewEncoder(stdout)
	for _, cmd := range plan.Commands {
		if err := enc.Encode(cmd); err != nil {
			return err
		}
	}
	if *dryRun || len(plan.Commands) == 0 {
		return nil
	}
	if err := publishRecovery(ctx, cfg, conn, plan); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "notifyd recover: published %d command(s) of batch %s\n", len(plan.Commands), plan.BatchID)
	return nil
}

// recoveryFilter reads recover's filter flags; a bad one is explained on
// stderr and is errUsage. The window is closed (until: now when not
// given), so that the batch id means the same thing on a rerun.
func recoveryFilter(channel, provider, reason, since, until string, stderr io.Writer) (projection.AttentionFilter, error) {
	f := projection.AttentionFilter{Channel: schemas.Channel(channel), Provider: provider, Reason: schemas.Reason(reason)}
	if f.Channel != "" && !f.Channel.Valid() {
		fmt.Fprintf(stderr, "notifyd recover: -channel %q (want email, sms or whatsapp)\n", channel)
		return f, errUsage
	}
	if f.Reason != "" && f.Reason != schemas.ReasonProviderUnavailable && f.Reason != schemas.ReasonProviderRejected {
		fmt.Fprintf(stderr, "notifyd recover: -reason %q (want provider_unavailable or provider_rejected)\n", reason)
		return f, errUsage
	}
	for _, t := range []struct {
		flag, value string
		dst         *time.Time
	}{{"since", since, &f.Since}, {"until", until, &f.Until}} {
		if t.value == "" {
			continue
		}
		v, err := projection.ParseTime(t.value)
		if err != nil {
			fmt.Fprintf(stderr, "notifyd recover: -%s %q: want RFC 3339 or 2006-01-02T15:04 (UTC)\n", t.flag, t.value)
			return f, errUsage
		}
		*t.dst = v
	}
	if f.Until.IsZero() {
		f.Until = time.Now().UTC().Truncate(time.Second)
	}
	if !f.Since.IsZero() && !f.Since.Before(f.Until) {
		fmt.Fprintln(stderr, "notifyd recover: -since must be before -until")
		return f, errUsage
	}
	return f, nil
}

// attentionFromResults reads the results topic into a store of its own
// (a temporary directory) and lists what f selects; read is how many
// results were read.
func attentionFromResults(ctx context.Context, cfg Config, conn consumer.Conn, f projection.AttentionFilter) (items []projection.AttentionItem, read int, err error) {
	dir, err := os.MkdirTemp("", "notifyd-recover-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	store, err := projection.Open(dir, projection.Options{EventsTopic: cfg.Kafka.Topics.PaymentEvents, ResultsTopic: cfg.Kafka.Topics.Results})
	if err != nil {
		return nil, 0, err
	}
	defer store.Close()
	err = consumer.ReadAll(ctx, conn, cfg.Kafka.Topics.Results, func(p int, batch []kafka.Message) error {
		recs := make([]projection.Record, len(batch))
		for i, m := range batch {
			recs[i] = projection.Record{Offset: m.Offset, Key: m.Key, Value: m.Value}
		}
		read += len(batch)
		_, err := store.ApplyResults(p, recs)
		return err
	})
	if err != nil {
		return nil, read, fmt.Errorf("read %s: %w", cfg.Kafka.Topics.Results, err)
	}
	items, _, err = store.Attention(f)
	return items, read, err
}

// publishRecovery publishes a plan's commands, checked as the contract
// says, with the batch's correlation_id, 500 at a time.
func publishRecovery(ctx context.Context, cfg Config, conn consumer.Conn, plan projection.RecoveryPlan) error {
	w := conn.Writer(cfg.Kafka.Topics.Commands)
	defer w.Close()
	msgs := make([]kafka.Message, 0, len(plan.Commands))
	for _, cmd := range plan.Commands {
		value, err := json.Marshal(cmd)
		if err != nil {
			return err
		}
		if _, err := schemas.DecodeCommand(value); err != nil {
			return fmt.Errorf("recovery command for %q: %w (-requested-by?)", cmd.SessionID, err)
		}
		msgs = append(msgs, kafka.Message{Topic: cfg.Kafka.Topics.Commands, Key: []byte(cmd.Key()), Value: value,
			Headers: []kafka.Header{{Key: "correlation_id", Value: []byte("recover-" + plan.BatchID)}}})
	}
	for len(msgs) > 0 {
		n := min(len(msgs), 500)
		if err := w.WriteMessages(ctx, msgs[:n]...); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		msgs = msgs[n:]
	}
	return nil
}
