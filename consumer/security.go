package consumer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// TLSConfig is kafka.tls: TLS to the brokers. Any key but min_version
// turns TLS on; `enabled: true` alone trusts the system's roots.
type TLSConfig struct {
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM file of the certificates that may sign the brokers'
	// (default: the system's roots).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client's certificate and key (PEM), for
	// brokers that ask for one (ssl.client.auth); both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the brokers' certificates must carry (default:
	// the host of each broker address).
	ServerName string `yaml:"server_name"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// On reports whether TLS is configured.
func (c TLSConfig) On() bool {
	return c.Enabled || c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.ServerName != ""
}

// Build returns the tls.Config (nil when TLS is off), reading the files;
// errors name the key below kafka.tls.
func (c TLSConfig) Build() (*tls.Config, error) {
	if !c.On() {
		if c.MinVersion != "" {
			return nil, errors.New("min_version: set without TLS (set enabled: true)")
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	switch c.MinVersion {
	case "", "1.2":
	case "1.3":
		cfg.MinVersion = tls.VersionTLS13
	default:
		return nil, fmt.Errorf("min_version: %q (want 1.2 or 1.3)", c.MinVersion)
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file: %s holds no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.CertFile != "" && c.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			// The error names the files, never the key's bytes.
			return nil, fmt.Errorf("cert_file, key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case c.CertFile != "":
		return nil, errors.New("key_file: required with cert_file")
	case c.KeyFile != "":
		return nil, errors.New("cert_file: required with key_file")
	}
	return cfg, nil
}

// SASLConfig is kafka.sasl: authentication to the brokers.
type SASLConfig struct {
	// Mechanism is plain, scram-sha-256 or scram-sha-512; empty: none.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// Password is a secret: from ${ENV} or password_file, never written
	// in the file itself.
	Password string `yaml:"password" secret:"user=username"`
}

// Build returns the SASL mechanism (nil when none is configured); tlsOn
// says whether kafka.tls is on, without which plain would send the
// password in clear and is refused. Errors name the key below kafka.sasl
// and never hold the password.
func (c SASLConfig) Build(tlsOn bool) (sasl.Mechanism, error) {
	if c.Mechanism == "" {
		if c.Username != "" || c.Password != "" {
			return nil, errors.New("mechanism: required with username and password (plain, scram-sha-256 or scram-sha-512)")
		}
		return nil, nil
	}
	if c.Username == "" {
		return nil, errors.New("username: required with a mechanism")
	}
	if c.Password == "" {
		return nil, errors.New("password: required with a mechanism (password or password_file)")
	}
	switch strings.ToLower(c.Mechanism) {
	case "plain":
		if !tlsOn {
			return nil, errors.New("mechanism: plain sends the password in clear: turn kafka.tls on")
		}
		return plain.Mechanism{Username: c.Username, Password: c.Password}, nil
	case "scram-sha-256", "scram-sha-512":
		algo := scram.SHA256
		if strings.HasSuffix(c.Mechanism, "512") {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, c.Username, c.Password)
		if err != nil {
			// xdg-go/scram's errors are about the username or password
			// failing SASLprep; the text names neither.
			return nil, errors.New("username, password: not valid for SCRAM (SASLprep)")
		}
		return m, nil
	}
	return nil, fmt.Errorf("mechanism: %q (want plain, scram-sha-256 or scram-sha-512)", c.Mechanism)
}

// SecurityProblem reports whether err is the brokers refusing this
// client's security settings, rather than being out of reach, and if so
// says what to check: a certificate not trusted (kafka.tls.ca_file,
// kafka.tls.server_name), the brokers not speaking TLS or refusing the
// client's certificate, or SASL authentication failing (kafka.sasl). Such
// an error stops start-up instead of being retried.
func SecurityProblem(err error) (hint string, ok bool) {
	if err == nil {
		return "", false
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		alert     tls.AlertError
		kerr      kafka.Error
	)
	switch {
	case errors.As(err, &unknownCA):
		return "the brokers' certificate is not signed by a CA notifyd trusts (kafka.tls.ca_file)", true
	case errors.As(err, &hostname):
		return "the brokers' certificate does not name the broker's host (kafka.tls.server_name)", true
	case errors.As(err, &invalid), errors.As(err, &verify):
		return "the brokers' certificate was refused (kafka.tls)", true
	case errors.As(err, &record):
		return "the broker does not speak TLS on this address (kafka.tls, kafka.brokers)", true
	case errors.As(err, &alert):
		return "the broker refused the TLS handshake (kafka.tls)", true
	case errors.As(err, &kerr):
		switch kerr {
		case kafka.SASLAuthenticationFailed:
			return "SASL authentication failed: wrong username or password, or a mechanism the user has no credentials for (kafka.sasl)", true
		case kafka.UnsupportedSASLMechanism, kafka.IllegalSASLState:
			return "the broker does not take this SASL mechanism on this listener (kafka.sasl.mechanism)", true
		}
	}
	// An alert the broker sent (crypto/tls reports it as a net.OpError
	// "remote error" around an unexported type): under TLS 1.3 a missing or
	// untrusted client certificate shows only so, on the first read.
	// Other alerts (internal_error while a broker restarts) are not the
	// client's settings: they are retried.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		switch text := op.Err.Error(); {
		case strings.Contains(text, "certificate"), strings.Contains(text, "unknown ca"):
			return "the broker refused the TLS handshake: it wants a client certificate signed by a CA it trusts (kafka.tls.cert_file, kafka.tls.key_file)", true
		case strings.Contains(text, "protocol version"), strings.Contains(text, "handshake failure"):
			return "the broker refused the TLS handshake: no TLS version or cipher in common (kafka.tls.min_version)", true
		}
	}
	return "", false
}
