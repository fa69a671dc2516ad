//go:build unix

package main

import "syscall"

// restrictUmask makes every file and directory the process creates from
// now on 0600 or 0700 at most, whatever umask it was started with.
func restrictUmask() { syscall.Umask(0o077) }
