package webhooks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every secret, as the Standard Webhooks specification
// writes it.
const SecretPrefix = "whsec_"

// Bounds of a secret's key, in bytes (the specification: 24 to 64).
const (
	MinKeyBytes = 24
	MaxKeyBytes = 64
)

// Key is a subscription's signing key: the bytes of its secret.
type Key struct{ b []byte }

// ErrSecret is what ParseSecret's errors wrap; they never hold the secret.
var ErrSecret = errors.New("webhook secret")

// ParseSecret reads a secret: "whsec_" and the standard base64 of 24 to 64
// bytes.
func ParseSecret(secret string) (Key, error) {
	rest, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return Key{}, fmt.Errorf("%w: must start with %s", ErrSecret, SecretPrefix)
	}
	b, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return Key{}, fmt.Errorf("%w: must be %s and base64", ErrSecret, SecretPrefix)
	}
	if len(b) < MinKeyBytes || len(b) > MaxKeyBytes {
		return Key{}, fmt.Errorf("%w: must hold %d to %d bytes, not %d", ErrSecret, MinKeyBytes, MaxKeyBytes, len(b))
	}
	return Key{b: b}, nil
}

// NewSecret makes a secret of 32 random bytes.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new webhook secret: %w", err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// Sign is the webhook-signature header of a message: "v1," and the base64
// HMAC-SHA256 of "id.timestamp.body", timestamp in Unix seconds.
func (k Key) Sign(id string, at time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(k.mac(id, at.Unix(), body))
}

func (k Key) mac(id string, unix int64, body []byte) []byte {
	h := hmac.New(sha256.New, k.b)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write(strconv.AppendInt(nil, unix, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify reports whether one of the space-separated signatures of a
// webhook-signature header is a v1 signature of the message by k (compared
// in constant time), and whether its timestamp (Unix seconds) is within
// tolerance of now: what a receiver checks.
func (k Key) Verify(id, timestamp, signatures string, body []byte, now time.Time, tolerance time.Duration) error {
	unix, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("webhook-timestamp is not Unix seconds")
	}
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return errors.New("webhook-timestamp is outside the tolerance")
	}
	want := k.mac(id, unix, body)
	for _, s := range strings.Fields(signatures) {
		version, sig, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no signature matches")
}
