//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// storeLockFile is the file in store.dir whose lock says a notifyd runs
// on the directory; it holds that process's pid.
const storeLockFile = "notifyd.lock"

// lockStoreDir takes store.dir for this process before anything else of
// serve touches it (the embedded broker's log, the store, the keys made
// at the first start), so that a second notifyd on the same directory
// stops at once, naming the one that holds it. The lock (flock) ends with
// the process, or with the returned release.
func lockStoreDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, storeLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store.dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := "another process"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = fmt.Sprintf("pid %d", pid)
			}
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("store.dir %s is in use by another notifyd (%s): one store.dir per instance", dir, holder)
		}
		return nil, fmt.Errorf("store.dir: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
