//go:build unix

package main

import (
	"io/fs"
	"os"
	"syscall"
)

// restrictUmask makes every file and directory the process creates 0600 or
// 0700 at most, whatever umask it was started with, until restore is
// called.
func restrictUmask() (restore func()) {
	old := syscall.Umask(0o077)
	return func() { syscall.Umask(old) }
}

// ownedByMe reports whether the process's user owns the file.
func ownedByMe(info fs.FileInfo) bool {
	st, ok := info.Sys().(*syscall.Stat_t)
	return !ok || int(st.Uid) == os.Geteuid()
}
