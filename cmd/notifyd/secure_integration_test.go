//go:build integration

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/notifyd/notifyd/internal/testkit"
)

// secureListener is the SASL_SSL listener of the broker that
// scripts/kafka-local runs, as `scripts/kafka-local secure-env` prints it
// (NOTIFYD_TEST_SECURE_*): TLS with a client certificate required, then
// SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) as one user.
type secureListener struct {
	brokers                         []string
	caFile, certFile, keyFile, name string
	username, password              string
}

func secureEnv(t *testing.T) secureListener {
	t.Helper()
	if os.Getenv("NOTIFYD_TEST_BROKERS") == "embedded" {
		t.Skip("the embedded broker speaks plaintext only: this test runs against scripts/kafka-local's SASL_SSL listener")
	}
	l := secureListener{
		caFile: os.Getenv("NOTIFYD_TEST_SECURE_CA_FILE"), certFile: os.Getenv("NOTIFYD_TEST_SECURE_CERT_FILE"),
		keyFile: os.Getenv("NOTIFYD_TEST_SECURE_KEY_FILE"), name: os.Getenv("NOTIFYD_TEST_SECURE_SERVER_NAME"),
		username: os.Getenv("NOTIFYD_TEST_SECURE_USERNAME"), password: os.Getenv("NOTIFYD_TEST_SECURE_PASSWORD"),
	}
	if b := os.Getenv("NOTIFYD_TEST_SECURE_BROKERS"); b != "" {
		l.brokers = strings.Split(b, ",")
	}
	if len(l.brokers) == 0 || l.caFile == "" || l.password == "" {
		t.Fatal("this test needs the SASL_SSL listener of scripts/kafka-local: eval \"$(scripts/kafka-local secure-env)\" and export its NOTIFYD_TEST_SECURE_* variables")
	}
	return l
}

// kafkaBlock is the kafka.tls and kafka.sasl configuration of a notifyd
// reaching the listener, the password read from a file (password_file).
func (l secureListener) kafkaBlock(t *testing.T, mechanism, password, caFile string, clientCert bool, serverName string) string {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "kafka-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert := ""
	if clientCert {
		cert = fmt.Sprintf("    cert_file: %q\n    key_file: %q\n", l.certFile, l.keyFile)
	}
	return fmt.Sprintf("  tls:\n    ca_file: %q\n%s    server_name: %q\n  sasl:\n    mechanism: %s\n    username: %q\n    password_file: %q\n",
		caFile, cert, serverName, mechanism, l.username, pwFile)
}

// TestSecureKafka: notifyd reaches Kafka over TLS with a client
// certificate and SASL with each mechanism, and decides a command end to
// end; a wrong password, a CA that did not sign the broker's certificate,
// a missing client certificate or a wrong server name stop start-up at once
// with a message that names the key to fix and never shows the password.
func TestSecureKafka(t *testing.T) {
	l := secureEnv(t)
	c := newCluster(t, 0)
	for i, mechanism := range []string{"plain", "scram-sha-256", "scram-sha-512"} {
		t.Run(mechanism, func(t *testing.T) {
			p := c.start(procOpts{name: "s" + mechanism, brokers: l.brokers, waitForReady: true,
				kafka: l.kafkaBlock(t, mechanism, l.password, l.caFile, true, l.name)})
			session := fmt.Sprintf("secure-%d", i)
			c.events([]string{session}, "paid", 1)
			id := "secure-cmd-" + mechanism
			c.produce(c.topics.Commands, kafka.Message{Key: []byte(session), Value: commandJSON(id, session, "email", "sms")})
			c.waitAnswered([]string{id}, 60*time.Second)
			if n := c.calls.total(); n != 2*(i+1) {
				t.Errorf("%d provider calls after %d commands of 2 channels", n, i+1)
			}
			p.stop()
			logText, _ := os.ReadFile(p.logPath)
			if strings.Contains(string(logText), l.password) {
				t.Error("the log shows the Kafka password")
			}
		})
	}

	otherCA := writeOtherCA(t)
	for _, tc := range []struct {
		name  string
		kafka string
		want  string
	}{
		{"wrong password", l.kafkaBlock(t, "scram-sha-512", "not-"+l.password, l.caFile, true, l.name),
			"SASL authentication failed: wrong username or password, or a mechanism the user has no credentials for (kafka.sasl)"},
		{"wrong password, plain", l.kafkaBlock(t, "plain", "not-"+l.password, l.caFile, true, l.name),
			"SASL authentication failed"},
		{"untrusted certificate", l.kafkaBlock(t, "scram-sha-512", l.password, otherCA, true, l.name),
			"the brokers' certificate is not signed by a CA notifyd trusts (kafka.tls.ca_file)"},
		{"wrong server name", l.kafkaBlock(t, "scram-sha-512", l.password, l.caFile, true, "kafka.example"),
			"the brokers' certificate does not name the broker's host (kafka.tls.server_name)"},
		{"no client certificate", l.kafkaBlock(t, "scram-sha-512", l.password, l.caFile, false, l.name),
			"(kafka.tls.cert_file, kafka.tls.key_file)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "notifyd.yaml")
			cfg := c.config(procOpts{name: "bad", dir: dir, concurrency: 4, catchUpWait: time.Second, brokers: l.brokers, kafka: tc.kafka}, freePort(t))
			if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			start := time.Now()
			out, err := exec.CommandContext(ctx, notifydBin, "serve", "-config", cfgPath).CombinedOutput()
			var exit *exec.ExitError
			if ctx.Err() != nil || err == nil || !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("serve: %v after %s (want exit 1 at once):\n%s", err, time.Since(start), lastBytes(out, 2048))
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, lastBytes(out, 2048))
			}
			if strings.Contains(string(out), l.password) {
				t.Errorf("output shows the password:\n%s", out)
			}
			t.Logf("%s: exit 1 after %s", tc.name, time.Since(start).Round(10*time.Millisecond))
		})
	}
}

// TestSecureKafkaMismatch: a client whose TLS does not match the listener
// (TLS to a plaintext listener, plaintext to a TLS one) only sees the broker
// close the connection, which a restarting broker does too: notifyd keeps
// retrying, and says in each retry's log line what to check.
func TestSecureKafkaMismatch(t *testing.T) {
	l := secureEnv(t)
	c := newCluster(t, 0)
	for _, tc := range []struct {
		name    string
		brokers []string
		kafka   string
	}{
		{"TLS to the plaintext listener", c.brokers, l.kafkaBlock(t, "scram-sha-512", l.password, l.caFile, true, l.name)},
		{"plaintext to the SASL_SSL listener", l.brokers, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "notifyd.yaml")
			cfg := c.config(procOpts{name: "mismatch", dir: dir, concurrency: 4, catchUpWait: time.Second, brokers: tc.brokers, kafka: tc.kafka}, freePort(t))
			if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			out := &testkit.SyncBuffer{}
			cmd := exec.Command(notifydBin, "serve", "-config", cfgPath)
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			const hint = "check that kafka.tls and kafka.sasl match the listener of kafka.brokers"
			testkit.Until(t, 30*time.Second, func() error {
				if !strings.Contains(out.String(), hint) {
					return fmt.Errorf("no retry log line with %q:\n%s", hint, lastBytes([]byte(out.String()), 2048))
				}
				return nil
			})
		})
	}
}

// writeOtherCA writes the certificate of a CA that signed nothing the
// broker has, with the name of the real one.
func writeOtherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "kafka-local CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
