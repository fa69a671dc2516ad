package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/schemas"
)

// resend publishes one resend command and prints its delivery result. Exit
// status: 0 notified, 1 anything else, 3 no result within -wait.
func resend(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("resend", stderr)
	load := configFlag(fs)
	sessionID := fs.String("session-id", "", "the transaction's session_id")
	orderNo := fs.String("order-no", "", "the transaction's order_no")
	channels := fs.String("channels", "", "comma-separated channels: email, sms, whatsapp")
	commandID := fs.String("command-id", "", "idempotency key (default: a new UUID)")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the result")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if (*sessionID == "" && *orderNo == "") || *channels == "" {
		fmt.Fprintln(stderr, "notifyd resend: -session-id or -order-no, and -channels, are required")
		return errUsage
	}
	cfg, conn, err := cliConn(load)
	if err != nil {
		return err
	}
	cmd := map[string]any{
		"command_id":   *commandID,
		"channels":     strings.Split(*channels, ","),
		"requested_by": "notifyd-cli",
		"requested_at": time.Now().UTC().Format(time.RFC3339),
	}
	if *commandID == "" {
		cmd["command_id"] = uuid.NewString()
	}
	if *sessionID != "" {
		cmd["session_id"] = *sessionID
	}
	if *orderNo != "" {
		cmd["order_no"] = *orderNo
	}
	value, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	key := *sessionID
	if key == "" {
		key = *orderNo
	}
	result, outcome, err := publishAndWait(ctx, cfg, conn, cmd["command_id"].(string), key, value)
	if result == nil {
		if errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintf(stderr, "notifyd resend: no result for command %s within %s\n", cmd["command_id"], *wait)
			return exitError(3)
		}
		return err
	}
	fmt.Fprintln(stdout, string(result))
	if outcome != schemas.OutcomeNotified {
		return exitError(1)
	}
	return nil
}

// publishAndWait publishes a command (value, keyed key) and waits for the
// first result of commandID on the results topic, within ctx. The
// results' end offsets are taken before publishing, so the result cannot
// be missed however fast it comes; result is nil when none came.
func publishAndWait(ctx context.Context, cfg Config, conn consumer.Conn, commandID, key string, value []byte) (result []byte, outcome schemas.Outcome, err error) {
	transport := conn.Transport(cfg.Kafka.Topics.Results)
	defer transport.CloseIdleConnections()
	offs, err := consumer.ListOffsets(ctx, conn.Client(transport), cfg.Kafka.Topics.Results)
	if err != nil {
		return nil, "", err
	}
	w := conn.Writer(cfg.Kafka.Topics.Commands)
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Topic: cfg.Kafka.Topics.Commands, Key: []byte(key), Value: value}); err != nil {
		return nil, "", fmt.Errorf("publish command: %w", err)
	}
	err = consumer.FollowFrom(ctx, conn, cfg.Kafka.Topics.Results, offs[cfg.Kafka.Topics.Results], true, func(m kafka.Message) bool {
		var r schemas.DeliveryResult
		if json.Unmarshal(m.Value, &r) != nil || r.CommandID != commandID {
			return true
		}
		result, outcome = m.Value, r.Outcome
		return false
	})
	return result, outcome, err
}

// publish produces one record per JSON line of stdin, keyed as the
// contract says: payment events by session_id, commands by session_id or
// order_no, results by session_id, order_no or command_id.
func publish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("publish", stderr)
	load := configFlag(fs)
	topic := fs.String("topic", "", "topic to produce to (required)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *topic == "" {
		fmt.Fprintln(stderr, "notifyd publish: -topic is required")
		return errUsage
	}
	_, conn, err := cliConn(load)
	if err != nil {
		return err
	}
	w := conn.Writer(*topic)
	defer w.Close()
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	n := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var ids struct {
			SessionID string `json:"session_id"`
			OrderNo   string `json:"order_no"`
			CommandID string `json:"command_id"`
		}
		_ = json.Unmarshal([]byte(line), &ids)
		key := ids.SessionID
		if key == "" {
			key = ids.OrderNo
		}
		if key == "" {
			key = ids.CommandID
		}
		if err := w.WriteMessages(ctx, kafka.Message{Topic: *topic, Key: []byte(key), Value: []byte(line)}); err != nil {
			return fmt.Errorf("publish line %d: %w", n+1, err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	fmt.Fprintf(stderr, "published %d records to %s\n", n, *topic)
	return nil
}

// tail prints every delivery result as it is published (with -from-beginning,
// the ones already there first), one JSON document per line.
func tail(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("tail", stderr)
	load := configFlag(fs)
	fromBeginning := fs.Bool("from-beginning", false, "print the results already on the topic first")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	cfg, conn, err := cliConn(load)
	if err != nil {
		return err
	}
	err = consumer.Follow(ctx, conn, cfg.Kafka.Topics.Results, !*fromBeginning, func(m kafka.Message) bool {
		fmt.Fprintln(stdout, string(m.Value))
		return true
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// schema prints one of the embedded JSON Schemas.
func schema(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		fmt.Fprintf(stderr, "notifyd schema: name one of %s\n", strings.Join(schemas.SchemaNames(), ", "))
		return errUsage
	}
	b, err := schemas.Schema(args[0])
	if err != nil {
		return err
	}
	_, err = stdout.Write(b)
	return err
}

// apiKey prints a new random HTTP API key (first line) and the api.keys
// entry that configures it (second line): notifyd keeps only the hash.
// With -merchant ID the entry is for the merchant's settings file (its
// api.keys, published with notifyd merchant put).
func apiKey(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	const usage = "usage: notifyd api-key NAME [-merchant MERCHANT_ID]   (NAME becomes the requested_by of the key's commands)"
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, usage)
		return errUsage
	}
	name := args[0]
	fs := newFlags("api-key", stderr)
	merchant := fs.String("merchant", "", "the merchant the key belongs to (its settings' api.keys)")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 0 {
		fmt.Fprintln(stderr, usage)
		return errUsage
	}
	if err := (&api.Config{Listen: api.DefaultListen, Keys: []api.Key{{Name: name, SHA256: strings.Repeat("0", 64), Merchant: *merchant}}}).Validate(); err != nil {
		fmt.Fprintf(stderr, "notifyd api-key: %v\n", err)
		return errUsage
	}
	key, sum, err := api.NewKey()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, key)
	fmt.Fprintf(stdout, "    - {name: %q, sha256: \"%s\"}\n", name, sum)
	if *merchant != "" {
		fmt.Fprintf(stderr, "notifyd api-key: the first line is the key (give it to the client; it is not stored anywhere); the second goes under api.keys of merchant %s's settings file (notifyd merchant put)\n", *merchant)
		return nil
	}
	fmt.Fprintln(stderr, "notifyd api-key: the first line is the key (give it to the client; it is not stored anywhere); the second goes under api.keys")
	return nil
}
