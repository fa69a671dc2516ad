package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStoreDirLockedFirst: a second serve on a store.dir in use stops at
// once, naming the process that holds it, before it starts a broker or a
// listener; the lock ends with the first.
func TestStoreDirLockedFirst(t *testing.T) {
	dir := t.TempDir()
	release, err := lockStoreDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockStoreDir(dir); err == nil || err.Error() != fmt.Sprintf("store.dir %s is in use by another notifyd (pid %d): one store.dir per instance", dir, os.Getpid()) {
		t.Errorf("a second lock: %v", err)
	}
	broker, apiAddr := freePort(t), freePort(t)
	path := filepath.Join(t.TempDir(), "notifyd.yaml")
	cfg := fmt.Sprintf("embedded_broker: {listen: %q}\nstore: {dir: %q}\nhttp: {listen: \"off\"}\napi: {listen: %q}\n", broker, dir, apiAddr)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"serve", "-config", path}, nil, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "is in use by another notifyd (pid ") {
		t.Errorf("serve on a store.dir in use: exit %d, %q", code, errOut.String())
	}
	for _, s := range []string{"listening", "embedded Kafka-protocol broker started", "made now"} {
		if strings.Contains(out.String()+errOut.String(), s) {
			t.Errorf("a start refused at the lock said %q", s)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "embedded-broker")); err == nil {
		t.Error("the broker's log was made in a store.dir in use")
	}
	release()
	again, err := lockStoreDir(dir)
	if err != nil {
		t.Errorf("the lock outlived its release: %v", err)
	} else {
		again()
	}
}

// TestFailedStartKeepsNoCredentials: a start that fails once the service
// runs (the API's address is taken) keeps no key, operator or session key
// in store.dir, shows none, and says nothing listens; the next start makes
// and shows them.
func TestFailedStartKeepsNoCredentials(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(t.TempDir(), "notifyd.yaml")
	cfg := fmt.Sprintf("embedded_broker: {listen: %q}\nstore: {dir: %q}\nhttp: {listen: \"off\"}\napi: {listen: %q}\nlog: {format: text}\n", freePort(t), dir, taken.Addr().String())
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"serve", "-config", path}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "address already in use") {
		t.Fatalf("exit %d, %q", code, errOut.String())
	}
	if strings.Contains(out.String(), "made now") || strings.Contains(errOut.String(), "console listening") {
		t.Errorf("a failed start announced credentials or the console: %q %q", out.String(), errOut.String())
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		switch name := e.Name(); {
		case name == "api-key", name == "console-user", name == "console-session-key", strings.HasPrefix(name, stagingPrefix):
			t.Errorf("a failed start left %s in store.dir", name)
		}
	}
}

// TestLocalFiles: a credential that exists is read in place; one made
// goes to store.dir, announced, only when kept, never over one there; a
// discarded start leaves nothing; a staging directory left by a crash is
// removed by the next start.
func TestLocalFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "there"), []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, stagingPrefix+"crashed"), 0o700); err != nil {
		t.Fatal(err)
	}
	l := &localFiles{dir: dir}
	if p, err := l.path("there"); err != nil || p != filepath.Join(dir, "there") {
		t.Errorf("an existing file read at %s, %v", p, err)
	}
	p, err := l.path("new")
	if err != nil || filepath.Dir(filepath.Dir(p)) != dir || !strings.HasPrefix(filepath.Base(filepath.Dir(p)), stagingPrefix) {
		t.Fatalf("a new file made at %s, %v", p, err)
	}
	if _, err := os.Stat(filepath.Join(dir, stagingPrefix+"crashed")); err == nil {
		t.Error("a crashed start's staging directory kept")
	}
	if err := os.WriteFile(p, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.made("new", func(path string) string { return "made " + path })
	l.made("there", func(string) string { return "never" }) // not made here: nothing to keep
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		t.Error("kept before keep")
	}
	var out bytes.Buffer
	if err := l.keep(&out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "new")); string(b) != "secret\n" || out.String() != "made "+filepath.Join(dir, "new")+"\n" {
		t.Errorf("kept %q, announced %q", b, out.String())
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "there")); string(b) != "old\n" {
		t.Errorf("an existing file changed: %q", b)
	}
	// Made again while one appeared meanwhile: keep refuses to replace it.
	l2 := &localFiles{dir: dir}
	p2, _ := l2.path("race")
	_ = os.WriteFile(p2, []byte("mine\n"), 0o600)
	l2.made("race", nil)
	_ = os.WriteFile(filepath.Join(dir, "race"), []byte("theirs\n"), 0o600)
	if err := l2.keep(&out); err == nil {
		t.Error("kept over a file there")
	}
	l2.discard()
	// Discarded: nothing of it remains.
	l3 := &localFiles{dir: dir}
	p3, _ := l3.path("gone")
	_ = os.WriteFile(p3, []byte("x"), 0o600)
	l3.made("gone", nil)
	l3.discard()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() == "gone" || strings.HasPrefix(e.Name(), stagingPrefix) {
			t.Errorf("left after discard: %s", e.Name())
		}
	}
}

// TestShippedLocalConfig: deploy/notifyd/local.yaml, the README's starting
// file for a first deployment, passes check-config once its variables are
// set, sends email and sms with the built-in templates under its one
// override, says whatsapp has no provider, and names a variable left unset.
func TestShippedLocalConfig(t *testing.T) {
	env := map[string]string{"KAFKA_BROKERS": "k1:9092,k2:9092", "SMTP_HOST": "smtp.example.com", "SMTP_USERNAME": "shop",
		"SMTP_PASSWORD": "smtp-secret-1", "TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef", "TWILIO_AUTH_TOKEN": "twilio-secret-1"}
	for k, v := range env {
		t.Setenv(k, v)
	}
	path := filepath.Join("..", "..", "deploy", "notifyd", "local.yaml")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"check-config", "-config", path}, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"kafka: k1:9092, k2:9092", "email: smtp; sends created, paid,", "sms: twilio; sends created, paid,",
		"whatsapp: NO PROVIDER (providers.whatsapp)", "templates: 48 rendered (1 of them from the file, over the built-in ones)", "api: 127.0.0.1:8000"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check-config lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String()+errOut.String(), "secret-1") {
		t.Error("check-config printed a secret")
	}
	t.Setenv("TWILIO_AUTH_TOKEN", "")
	os.Unsetenv("TWILIO_AUTH_TOKEN")
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"check-config", "-config", path}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "TWILIO_AUTH_TOKEN") {
		t.Errorf("an unset variable: exit %d, %q", code, errOut.String())
	}
}

// TestHelpAndVersion: notifyd help (and -h) lists every command; help
// COMMAND and COMMAND -h print its flags and exit 0; version prints the
// build that notifyd_build_info carries; an unknown command points at
// help.
func TestHelpAndVersion(t *testing.T) {
	call := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, nil, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		code, out := call(args...)
		if code != 0 {
			t.Errorf("%v: exit %d", args, code)
		}
		for _, c := range commands {
			if !strings.Contains(out, "\n  "+c.name+" ") {
				t.Errorf("%v does not list %s:\n%s", args, c.name, out)
			}
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"help", "resend"}, "-channels"},
		{[]string{"resend", "-h"}, "-channels"},
		{[]string{"publish", "-h"}, "-raw"},
		{[]string{"serve", "-h"}, "-config"},
		{[]string{"check-config", "-h"}, "-config"},
		{[]string{"recover", "-h"}, "-dry-run"},
		{[]string{"merchant", "-h"}, "notifyd merchant put"},
		{[]string{"api-key", "-h"}, "usage: notifyd api-key NAME"},
		{[]string{"schema", "-h"}, "usage: notifyd schema NAME"},
		{[]string{"help", "version"}, "Usage of notifyd version"},
	} {
		if code, out := call(c.args...); code != 0 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, %q lacks %q", c.args, code, out, c.want)
		}
	}
	for _, args := range [][]string{{"frobnicate"}, {"help", "frobnicate"}, {"help", "a", "b"}, {"version", "x"}, {"resend", "-nope"}} {
		if code, _ := call(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if _, out := call("frobnicate"); !strings.Contains(out, "notifyd help") {
		t.Errorf("an unknown command does not point at help: %q", out)
	}
	code, out := call("version")
	b := currentBuild()
	if code != 0 || strings.TrimSpace(out) != b.String() || !strings.HasPrefix(out, "notifyd "+b.Version+" (revision "+b.Revision) || !strings.Contains(out, b.GoVersion) {
		t.Errorf("version: exit %d, %q (build %+v)", code, out, b)
	}
	if ua := userAgent(); ua != "notifyd/"+b.Version {
		t.Errorf("the providers' User-Agent %q", ua)
	}
	mfs, err := newRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "notifyd_build_info" {
			continue
		}
		labels := map[string]string{}
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] != b.Version || labels["revision"] != b.Revision || labels["go_version"] != b.GoVersion {
			t.Errorf("notifyd_build_info %v, version prints %+v", labels, b)
		}
		return
	}
	t.Error("no notifyd_build_info")
}

// TestLogLines: every JSON log line of a start, a payment event and an
// order_no resend is one object with each key once (one component), and
// the line answering the command carries the session_id it resolved.
func TestLogLines(t *testing.T) {
	dir := t.TempDir()
	broker, httpAddr := freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "notifyd.yaml")
	cfg := fmt.Sprintf("embedded_broker: {listen: %q}\nstore: {dir: %q}\nhttp: {listen: %q}\nlog: {format: json, level: debug}\nproviders:\n  sms: {kind: console}\n",
		broker, filepath.Join(dir, "data"), httpAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, serveErr := serveForTest(t, httpAddr, "-config", cfgPath)
	event := `{"event_id":"e-1","session_id":"sess-log","order_no":"order-log","state":"paid","timestamp_utc":"2026-11-02 09:00:07","customer_phone":"+96550001234","notifications":{"sms":[]}}`
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"publish", "-config", cfgPath, "-topic", "payment-events"}, strings.NewReader(event), &out, &errOut); code != 0 {
		t.Fatalf("publish: %s", errOut.String())
	}
	if code := run(t.Context(), []string{"resend", "-config", cfgPath, "-order-no", "order-log", "-channels", "sms"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("resend: %d %s", code, errOut.String())
	}
	answered := false
	for _, line := range strings.Split(strings.TrimSpace(serveErr.String()), "\n") {
		keys, err := objectKeys([]byte(line))
		if err != nil {
			t.Errorf("not one JSON object: %v: %s", err, line)
			continue
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				t.Errorf("key %q twice: %s", k, line)
			}
			seen[k] = true
		}
		if strings.Contains(line, `"msg":"command answered"`) {
			answered = true
			if !strings.Contains(line, `"session_id":"sess-log"`) || !strings.Contains(line, `"order_no":"order-log"`) {
				t.Errorf("the answer's line lacks the resolved session_id: %s", line)
			}
		}
	}
	if !answered {
		t.Error("no command answered line")
	}
}

// objectKeys returns the top-level keys of a JSON object, in order,
// duplicates included.
func objectKeys(b []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not an object: %v", err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
	}
	return keys, nil
}
