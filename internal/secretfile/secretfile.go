// Package secretfile keeps a secret in a file only its owner reads: made
// once (mode 0600, never over an existing file) and read back after.
package secretfile

import (
	"errors"
	"io/fs"
	"os"
	"strings"
)

// WriteNew creates path (mode 0600; it must not exist) holding content.
func WriteNew(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadOrMake returns the secret kept in path (its text without surrounding
// space), making it with newSecret first when there is none. Two processes
// making it at once: the second reads the first's.
func ReadOrMake(path string, newSecret func() (string, error)) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	secret, err := newSecret()
	if err != nil {
		return "", err
	}
	if err := WriteNew(path, secret+"\n"); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return ReadOrMake(path, newSecret)
		}
		return "", err
	}
	return secret, nil
}
