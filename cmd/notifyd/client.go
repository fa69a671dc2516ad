package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
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
		return usageErr(err)
	}
	if (*sessionID == "" && *orderNo == "") || *channels == "" {
		fmt.Fprintln(stderr, "notifyd resend: -session-id or -order-no, and -channels, are required")
		return errUsage
	}
	chs, err := parseChannels(*channels)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd resend: -channels: %v\n", err)
		return errUsage
	}
	cfg, conn, err := cliConn(load)
	if err != nil {
		return err
	}
	cmd := map[string]any{
		"command_id":   *commandID,
		"channels":     chs,
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
	// Checked as the service decodes it: a command it would refuse is
	// not published.
	if _, err := schemas.DecodeCommand(value); err != nil {
		fmt.Fprintf(stderr, "notifyd resend: %v\n", err)
		return errUsage
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

// parseChannels reads -channels: comma-separated, spaces around each
// trimmed, any case (SMS is sms), each once; an unknown one is refused.
func parseChannels(list string) ([]schemas.Channel, error) {
	var out []schemas.Channel
	for _, part := range strings.Split(list, ",") {
		name := strings.ToLower(strings.TrimSpace(part))
		if name == "" {
			continue
		}
		ch := schemas.Channel(name)
		if !ch.Valid() {
			return nil, fmt.Errorf("unknown channel %q (want email, sms or whatsapp)", strings.TrimSpace(part))
		}
		if !slices.Contains(out, ch) {
			out = append(out, ch)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("name at least one channel: email, sms or whatsapp")
	}
	return out, nil
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

// publish produces the JSON documents of stdin to a topic, keyed as the
// contract says: payment events by session_id, commands by session_id or
// order_no, results by session_id, order_no or command_id. Stdin holds one
// document per line, pretty-printed documents one after another, or a
// JSON array of them. Every document is checked before any is published:
// a payment event or a resend command as the service decodes it (its
// schema), any other as a JSON object; the first that fails is named by
// its line and field and nothing is published (exit 1). -raw publishes
// each line as it is, unchecked, to any topic.
func publish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("publish", stderr)
	load := configFlag(fs)
	topic := fs.String("topic", "", "topic to produce to (required): one of notifyd's topics by name")
	raw := fs.Bool("raw", false, "publish each line of stdin as it is, unchecked, to any topic")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usageErr(err)
	}
	if *topic == "" {
		fmt.Fprintln(stderr, "notifyd publish: -topic is required")
		return errUsage
	}
	cfg, conn, err := cliConn(load)
	if err != nil {
		return err
	}
	var docs []document
	if *raw {
		docs, err = readLines(stdin)
	} else {
		var check func([]byte) error
		if check, err = checkerFor(cfg.Kafka.Topics, *topic); err != nil {
			fmt.Fprintf(stderr, "notifyd publish: %v\n", err)
			return errUsage
		}
		if docs, err = readDocuments(stdin); err == nil {
			for _, d := range docs {
				if cerr := check(d.value); cerr != nil {
					err = fmt.Errorf("line %d: %w (nothing published)", d.line, cerr)
					break
				}
			}
		}
	}
	if err != nil {
		return err
	}
	if len(docs) == 0 {
		fmt.Fprintf(stderr, "notifyd publish: nothing on standard input: nothing published to %s\n", *topic)
		return exitError(1)
	}
	msgs := make([]kafka.Message, len(docs))
	for i, d := range docs {
		msgs[i] = kafka.Message{Topic: *topic, Key: []byte(recordKey(d.value)), Value: d.value}
	}
	w := conn.Writer(*topic)
	defer w.Close()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("publish to %s: %w", *topic, err)
	}
	records := "records"
	if len(docs) == 1 {
		records = "record"
	}
	fmt.Fprintf(stderr, "published %d %s to %s\n", len(docs), records, *topic)
	return nil
}

// document is a JSON document of publish's input, compacted, with the
// line it starts on.
type document struct {
	line  int
	value []byte
}

// maxPublishInput bounds what publish reads from stdin.
const maxPublishInput = 64 << 20

// readDocuments reads JSON documents: one per line, pretty-printed ones
// one after another, or one JSON array holding them.
func readDocuments(r io.Reader) ([]document, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxPublishInput+1))
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	if len(data) > maxPublishInput {
		return nil, fmt.Errorf("stdin: more than %d MiB", maxPublishInput>>20)
	}
	lineAt := func(off int64) int { return 1 + bytes.Count(data[:min(int(off), len(data))], []byte("\n")) }
	start := func(off int64) int64 { // the offset of the next value, past spaces and commas
		for off < int64(len(data)) && strings.ContainsRune(" \t\r\n,", rune(data[off])) {
			off++
		}
		return off
	}
	notJSON := func(err error, at int64) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			at = se.Offset
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			at = int64(len(data))
		}
		return fmt.Errorf("line %d: not JSON: %v (nothing published)", lineAt(at), err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	array := false
	if first := start(0); first < int64(len(data)) && data[first] == '[' {
		if _, err := dec.Token(); err != nil {
			return nil, notJSON(err, first)
		}
		array = true
	}
	var docs []document
	for {
		at := start(dec.InputOffset())
		if array && !dec.More() {
			if _, err := dec.Token(); err != nil {
				return nil, notJSON(err, at)
			}
			if rest := start(dec.InputOffset()); rest < int64(len(data)) {
				return nil, fmt.Errorf("line %d: more after the array (nothing published)", lineAt(rest))
			}
			return docs, nil
		}
		var v json.RawMessage
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) && !array {
			return docs, nil
		}
		if err != nil {
			return nil, notJSON(err, at)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, v); err != nil {
			return nil, notJSON(err, at)
		}
		docs = append(docs, document{line: lineAt(at), value: b.Bytes()})
	}
}

// readLines reads publish -raw's input: each non-empty line as it is.
func readLines(r io.Reader) ([]document, error) {
	var docs []document
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			docs = append(docs, document{line: n, value: []byte(line)})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	return docs, nil
}

// checkerFor returns how publish checks a document for topic: payment
// events and resend commands as the service decodes them, the others as
// JSON objects; merchant settings only through notifyd merchant put (which
// seals their secrets), and a topic that is not notifyd's not at all.
func checkerFor(t consumer.Topics, topic string) (func([]byte) error, error) {
	switch topic {
	case t.PaymentEvents:
		return func(v []byte) error { _, err := schemas.DecodePaymentEvent(v); return err }, nil
	case t.Commands:
		return func(v []byte) error { _, err := schemas.DecodeCommand(v); return err }, nil
	case t.MerchantSettings:
		return nil, fmt.Errorf("-topic %s: publish merchants' settings with notifyd merchant put (it checks and seals them)", topic)
	case t.Results, t.DeadLetter, t.Deliveries, t.ConsoleSessions:
		return func(v []byte) error {
			var m map[string]json.RawMessage
			if json.Unmarshal(v, &m) != nil {
				return errors.New("not a JSON object")
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("-topic %s is not one of notifyd's topics (%s, %s, %s, %s, %s, %s); -raw publishes to any topic unchecked",
		topic, t.PaymentEvents, t.Commands, t.Results, t.DeadLetter, t.Deliveries, t.ConsoleSessions)
}

// recordKey is the key of a record the contract's way: session_id, else
// order_no, else command_id.
func recordKey(v []byte) string {
	var ids struct {
		SessionID string `json:"session_id"`
		OrderNo   string `json:"order_no"`
		CommandID string `json:"command_id"`
	}
	_ = json.Unmarshal(v, &ids)
	return cmp.Or(ids.SessionID, ids.OrderNo, ids.CommandID)
}

// tail prints every delivery result as it is published (with -from-beginning,
// the ones already there first), one JSON document per line.
func tail(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("tail", stderr)
	load := configFlag(fs)
	fromBeginning := fs.Bool("from-beginning", false, "print the results already on the topic first")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
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
	if len(args) != 1 || isHelpFlag(args[0]) {
		fmt.Fprintf(stderr, "usage: notifyd schema NAME, NAME one of %s\n", strings.Join(schemas.SchemaNames(), ", "))
		return usageErr(helpAsked(args))
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
		return usageErr(helpAsked(args))
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
