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
// notifyd keeps it to its own user: the process's umask is 077 while serve
// runs, so every file and directory it creates, through Pebble and the
// embedded broker too, is 0600 or 0700 whatever umask it was started with;
// prepareStoreDir creates the directory 0700, refuses one that any user
// can write (they could plant or swap files), takes group access off one
// notifyd owns, accepts one owned by another user that only a group can
// write (a Kubernetes volume mounted with an fsGroup: the group is the
// pod's) with a warning, and takes the access of group and others off
// what an earlier version left inside.

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
	case st.Mode().Perm()&0o002 != 0:
		return fmt.Errorf("store.dir: %s can be written by every user (mode %04o): it holds customer data; chmod 700 it (or choose another store.dir)",
			dir, st.Mode().Perm())
	case st.Mode().Perm()&0o020 != 0 && !ownedByMe(st):
		log.Warn("store.dir: a group can write it and notifyd does not own it (a volume shared with a group, such as a Kubernetes fsGroup mount): notifyd's own files and directories inside are 0600 and 0700",
			"dir", dir, "mode", fmt.Sprintf("%04o", st.Mode().Perm()))
		return tightenInside(dir, log)
	}
	return tightenInside(dir, log)
}

// tightenInside takes the access of group and others off dir (when notifyd
// owns it) and everything notifyd owns below it.
func tightenInside(dir string, log *slog.Logger) error {
	tightened := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
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
		if !ownedByMe(info) {
			return nil // a shared volume's root: not notifyd's to change
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
		log.Warn("store.dir: took the access of group and others off what an earlier start left open", "dir", dir, "paths", tightened)
	}
	return nil
}
