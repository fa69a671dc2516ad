package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// The store directory holds customer data (the projection: emails, phone
// numbers, names; the embedded broker's log) and the generated API key.
// notifyd keeps it to its own user: the process's umask is 077 from the
// start of serve, so every file and directory it creates, through Pebble
// and the embedded broker too, is 0600 or 0700 whatever umask it was
// started with; prepareStoreDir creates the directory 0700, refuses one
// that others can write (they could plant or swap files), and takes the
// read bits of group and others off what an earlier version left there.

// storeFileMode and storeDirMode are the modes of what notifyd keeps in
// store.dir.
const (
	storeFileMode fs.FileMode = 0o600
	storeDirMode  fs.FileMode = 0o700
)

// prepareStoreDir makes dir (0700) or checks it: an error names store.dir
// when group or others can write it; files and directories below it that
// group or others can read are tightened (and counted in the log).
func prepareStoreDir(dir string, log *slog.Logger) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, storeDirMode); err != nil {
			return fmt.Errorf("store.dir: %w", err)
		}
		return os.Chmod(dir, storeDirMode) // MkdirAll's mode went through the umask
	case err != nil:
		return fmt.Errorf("store.dir: %w", err)
	case !st.IsDir():
		return fmt.Errorf("store.dir: %s is not a directory", dir)
	case st.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("store.dir: %s can be written by other users (mode %04o): it holds customer data; chmod 700 it (or choose another store.dir)",
			dir, st.Mode().Perm())
	}
	tightened := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := storeFileMode
		if d.IsDir() {
			want = storeDirMode
		}
		if info.Mode().Perm()&^want != 0 {
			tightened++
			return os.Chmod(path, info.Mode().Perm()&want)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store.dir: %w", err)
	}
	if tightened > 0 {
		log.Warn("store.dir: took group and others' access off files an earlier start left readable", "dir", dir, "paths", tightened)
	}
	return nil
}
