package consumer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func TestUnreachable(t *testing.T) {
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection refused", fmt.Errorf("metadata: %w", dialErr), true},
		{"pooled connection to a restarted broker", fmt.Errorf("kafka.(*Client).CreateTopics: %w", io.ErrUnexpectedEOF), true},
		{"closed connection", io.EOF, true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"leader being elected", kafka.LeaderNotAvailable, true},
		{"broker not available", fmt.Errorf("x: %w", kafka.BrokerNotAvailable), true},
		{"not controller", kafka.NotController, true},
		{"authorization is an answer", kafka.TopicAuthorizationFailed, false},
		{"bad config is an answer", kafka.InvalidReplicationFactor, false},
		{"caller cancelled", context.Canceled, false},
		{"request timed out (client Timeout)", fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"other", errors.New("topics missing (kafka.create_topics is false): a"), false},
		{"SASL refused is an answer", fmt.Errorf("could not successfully authenticate: %w", kafka.SASLAuthenticationFailed), false},
		{"untrusted certificate is an answer", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, false},
		{"client certificate refused is an answer", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, false},
	} {
		if got := Unreachable(tc.err); got != tc.want {
			t.Errorf("%s: Unreachable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestRetryUnreachable(t *testing.T) {
	calls := 0
	err := RetryUnreachable(context.Background(), nil, "x", func(context.Context) error {
		calls++
		if calls < 3 {
			return io.ErrUnexpectedEOF
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("got %v after %d calls, want nil after 3", err, calls)
	}

	answer := kafka.TopicAuthorizationFailed
	calls = 0
	err = RetryUnreachable(context.Background(), nil, "x", func(context.Context) error { calls++; return answer })
	if !errors.Is(err, answer) || calls != 1 {
		t.Fatalf("got %v after %d calls, want the answer after 1", err, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	err = RetryUnreachable(ctx, nil, "start", func(context.Context) error { return io.EOF })
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, io.EOF) {
		t.Fatalf("got %v, want the deadline and the last error", err)
	}
}

// TestSecurityProblem: the errors kafka-go returns when the brokers refuse
// the client's TLS or SASL settings (texts as seen against Kafka 4.1 with
// kafka-go 0.4.51) are told apart from the brokers being out of reach, with
// the key to fix.
func TestSecurityProblem(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string // a substring of the hint; "" means not a security problem
	}{
		{"wrong password (Transport)", fmt.Errorf("kafka.(*Client).Metadata: %w", kafka.SASLAuthenticationFailed), "(kafka.sasl)"},
		{"mechanism not enabled", kafka.UnsupportedSASLMechanism, "(kafka.sasl.mechanism)"},
		{"unknown CA", fmt.Errorf("failed to dial: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), "(kafka.tls.ca_file)"},
		{"wrong server name", &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: &x509.Certificate{}, Host: "kafka.example"}}, "(kafka.tls.server_name)"},
		{"expired certificate", &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired}}, "(kafka.tls)"},
		{"plaintext port", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "does not speak TLS"},
		{"client certificate refused (TLS 1.3)", fmt.Errorf("SASL handshake failed: %w", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}),
			"(kafka.tls.cert_file, kafka.tls.key_file)"},
		{"a broker's internal error alert is retried", &net.OpError{Op: "remote error", Err: errors.New("tls: internal error")}, ""},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, ""},
		{"closed connection", io.EOF, ""},
		{"other Kafka error", kafka.TopicAuthorizationFailed, ""},
		{"nil", nil, ""},
	} {
		hint, ok := SecurityProblem(tc.err)
		if ok != (tc.want != "") || !strings.Contains(hint, tc.want) {
			t.Errorf("%s: SecurityProblem = %q, %v; want one naming %q", tc.name, hint, ok, tc.want)
		}
	}
}
