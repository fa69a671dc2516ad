// Package seal keeps secrets sealed where they travel and rest outside
// notifyd's own configuration: the merchant-settings topic. A sealed value
// is "v1:<key id>:<base64 of nonce and ciphertext>", AES-256-GCM under a
// 32-byte key, with the merchant_id it belongs to as additional data, so a
// sealed secret copied into another merchant's settings does not open.
// The key id (8 hex characters of the key's SHA-256) says which key sealed
// it: Keys opens with the current key or any previous one (rotation) and
// seals with the current one.
//
// Nothing here logs, and no error holds a secret or a key.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the size of a sealing key, in bytes.
const KeySize = 32

// version is the prefix of sealed values of this format.
const version = "v1"

// ErrNoKey is wrapped by Open when the value names a key Keys does not
// hold (a key rotated out, or another deployment's).
var ErrNoKey = errors.New("sealed with a key that is not configured")

type key struct {
	id   string
	aead cipher.AEAD
}

// Keys seals with its current key and opens with any of its keys. It is
// safe for concurrent use.
type Keys struct {
	current key
	byID    map[string]key
}

// ParseKey reads a key written as base64 (standard or URL alphabet, with or
// without padding) of KeySize bytes.
func ParseKey(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(text); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("a sealing key is %d bytes, base64: this one is %d bytes", KeySize, len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("a sealing key is base64 of 32 bytes: this is not base64")
}

// NewKey returns a new random key, as base64.
func NewKey() (string, error) {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new sealing key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// New returns Keys sealing with current and opening with current and
// previous (each base64 of KeySize bytes, see ParseKey).
func New(current string, previous ...string) (*Keys, error) {
	k := &Keys{byID: map[string]key{}}
	for i, text := range append([]string{current}, previous...) {
		raw, err := ParseKey(text)
		if err != nil {
			if i == 0 {
				return nil, fmt.Errorf("sealing key: %w", err)
			}
			return nil, fmt.Errorf("previous sealing key %d: %w", i-1, err)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("sealing key: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("sealing key: %w", err)
		}
		sum := sha256.Sum256(append([]byte("notifyd sealing key id\x00"), raw...))
		kk := key{id: hex.EncodeToString(sum[:4]), aead: aead}
		if i == 0 {
			k.current = kk
		}
		if _, dup := k.byID[kk.id]; !dup {
			k.byID[kk.id] = kk
		}
	}
	return k, nil
}

// CurrentID is the id of the key Seal uses.
func (k *Keys) CurrentID() string { return k.current.id }

// Seal seals plain for merchantID with the current key.
func (k *Keys) Seal(merchantID, plain string) (string, error) {
	nonce := make([]byte, k.current.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	out := k.current.aead.Seal(nonce, nonce, []byte(plain), []byte(merchantID))
	return version + ":" + k.current.id + ":" + base64.StdEncoding.EncodeToString(out), nil
}

// Open opens a value Seal sealed for merchantID with any of the keys.
func (k *Keys) Open(merchantID, sealed string) (string, error) {
	plain, _, err := k.open(merchantID, sealed)
	return plain, err
}

// KeyID returns the id of the key a sealed value names ("" when it is not
// a sealed value).
func KeyID(sealed string) string {
	v, rest, ok := strings.Cut(sealed, ":")
	if !ok || v != version {
		return ""
	}
	id, _, _ := strings.Cut(rest, ":")
	return id
}

func (k *Keys) open(merchantID, sealed string) (string, string, error) {
	v, rest, ok := strings.Cut(sealed, ":")
	id, data, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || v != version {
		return "", "", errors.New("not a sealed value (want v1:<key id>:<base64>)")
	}
	kk, ok := k.byID[id]
	if !ok {
		return "", "", fmt.Errorf("key %s: %w", id, ErrNoKey)
	}
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil || len(raw) < kk.aead.NonceSize() {
		return "", "", errors.New("sealed value is not valid base64 of a nonce and ciphertext")
	}
	n := kk.aead.NonceSize()
	plain, err := kk.aead.Open(nil, raw[:n], raw[n:], []byte(merchantID))
	if err != nil {
		return "", "", fmt.Errorf("sealed value does not open with key %s for merchant %s (altered, or sealed for another merchant)", id, merchantID)
	}
	return string(plain), id, nil
}
