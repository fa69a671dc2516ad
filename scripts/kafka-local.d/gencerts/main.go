// Command gencerts writes the TLS material of the SASL_SSL listener of the
// broker that scripts/kafka-local runs: a throwaway CA, a server certificate
// for localhost and 127.0.0.1, and a client certificate, all signed by that CA.
//
//	cd scripts/kafka-local.d/gencerts && go run . -dir DIR
//
// writes, in DIR (created if needed):
//
//	ca.pem          the CA certificate (the broker's truststore and the clients' root)
//	server.pem      the server's PKCS#8 private key, unencrypted, then its certificate
//	                and the CA certificate: a Kafka PEM keystore (ssl.keystore.type=PEM,
//	                no ssl.key.password)
//	client.pem      the client certificate (CN=notifyd), for ssl.client.auth=required
//	client-key.pem  its PKCS#8 private key, unencrypted
//
// Keys are ECDSA P-256, certificates valid for 10 years. Files holding a key
// are mode 0600, the others 0644. Each file is written under a temporary name
// and renamed, the CA last, so a DIR with ca.pem is complete. The CA's own key
// is not kept: nothing else can be signed by it afterwards.
//
// Only the standard library: it runs wherever the repository's Go does.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

const validity = 10 * 365 * 24 * time.Hour

func main() {
	dir := flag.String("dir", "", "directory to write ca.pem, server.pem, client.pem and client-key.pem into")
	flag.Parse()
	if *dir == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: gencerts -dir DIR")
		os.Exit(2)
	}
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "gencerts:", err)
		os.Exit(1)
	}
}

// issued is a key and its DER certificate.
type issued struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	der  []byte
}

func run(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// An hour back: a clock a little behind on the other side still accepts them.
	notBefore := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	notAfter := notBefore.Add(validity)

	ca, err := issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "kafka-local CA", Organization: []string{"notifyd kafka-local"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}, nil)
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	server, err := issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"notifyd kafka-local"}},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}, ca)
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	client, err := issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "notifyd", Organization: []string{"notifyd kafka-local"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}, ca)
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}

	serverKey, err := keyPEM(server.key)
	if err != nil {
		return err
	}
	clientKey, err := keyPEM(client.key)
	if err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"server.pem", concat(serverKey, certPEM(server.der), certPEM(ca.der)), 0o600},
		{"client-key.pem", clientKey, 0o600},
		{"client.pem", certPEM(client.der), 0o644},
		{"ca.pem", certPEM(ca.der), 0o644},
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// issue makes a P-256 key and a certificate for it from template, signed by
// parent (self-signed if nil).
func issue(template *x509.Certificate, parent *issued) (*issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	template.SerialNumber = serial.Add(serial, big.NewInt(1)) // positive, never 0
	parentCert, signer := template, key
	if parent != nil {
		parentCert, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parentCert, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &issued{key: key, cert: cert, der: der}, nil
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// writeFile writes data to path through a temporary file in the same
// directory, created with mode (not widened by the umask afterwards), synced,
// then renamed over path.
func writeFile(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
