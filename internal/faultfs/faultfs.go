// Package faultfs is a filesystem for tests that fills up on demand: it
// wraps Pebble's filesystem (vfs/errorfs) and fails every write with
// ENOSPC, as a full disk does, while Full is set.
package faultfs

import (
	"os"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/vfs"
	"github.com/cockroachdb/pebble/vfs/errorfs"
)

// Disk is the fault switch; its FS is the operating system's filesystem
// with the fault injected.
type Disk struct{ full atomic.Bool }

// SetFull turns the fault on (true) or off.
func (d *Disk) SetFull(full bool) { d.full.Store(full) }

// MaybeError is errorfs.Injector's: a write fails with ENOSPC while full.
func (d *Disk) MaybeError(op errorfs.Op, path string) error {
	if d.full.Load() && op.OpKind() == errorfs.OpKindWrite {
		return &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}
	}
	return nil
}

// FS returns the operating system's filesystem with d's fault.
func (d *Disk) FS() vfs.FS { return errorfs.Wrap(vfs.Default, d) }
