package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// localFiles are the credentials serve makes at the first start when the
// configuration gives none (the API key, the console's operator and
// session key), kept in store.dir. One that exists is read there; one that
// does not is made in a staging directory beside them and moved into
// store.dir, and announced, only by keep, once the API listens: a start
// that fails leaves nothing behind and shows no secret.
type localFiles struct {
	dir     string
	staging string
	// kept are the names made in staging, with what keep prints for each
	// (given the final path; nil prints nothing).
	kept []madeFile
}

type madeFile struct {
	name     string
	announce func(path string) string
}

// stagingPrefix names the staging directories in store.dir.
const stagingPrefix = ".made-"

// path is where name is read, or made when it does not exist yet.
func (l *localFiles) path(name string) (string, error) {
	final := l.final(name)
	if _, err := os.Lstat(final); !errors.Is(err, fs.ErrNotExist) {
		return final, nil // there (or unreadable: reading it says why)
	}
	if l.staging == "" {
		// One left by a start that ended without discarding it.
		if old, err := filepath.Glob(filepath.Join(l.dir, stagingPrefix+"*")); err == nil {
			for _, o := range old {
				_ = os.RemoveAll(o)
			}
		}
		dir, err := os.MkdirTemp(l.dir, stagingPrefix)
		if err != nil {
			return "", fmt.Errorf("store.dir: %w", err)
		}
		l.staging = dir
	}
	return filepath.Join(l.staging, name), nil
}

// final is name's place in store.dir.
func (l *localFiles) final(name string) string { return filepath.Join(l.dir, name) }

// made records that name was made in staging (when path put it there),
// and what keep prints for it.
func (l *localFiles) made(name string, announce func(path string) string) {
	if l.staging != "" {
		if _, err := os.Lstat(filepath.Join(l.staging, name)); err == nil {
			l.kept = append(l.kept, madeFile{name, announce})
		}
	}
}

// keep moves what was made into store.dir (never over a file there) and
// prints each announcement on w.
func (l *localFiles) keep(w io.Writer) error {
	for _, m := range l.kept {
		if err := os.Link(filepath.Join(l.staging, m.name), l.final(m.name)); err != nil {
			return fmt.Errorf("store.dir: keep %s: %w", m.name, err)
		}
		if m.announce != nil {
			fmt.Fprintln(w, m.announce(l.final(m.name)))
		}
	}
	l.kept = nil
	l.discard()
	return nil
}

// discard removes the staging directory and what keep did not move.
func (l *localFiles) discard() {
	if l.staging != "" {
		_ = os.RemoveAll(l.staging)
		l.staging = ""
	}
}
