//go:build !linux

package consumer

import (
	"errors"
	"os"
)

// allocate creates path (0600) with size bytes written (zeros), so that
// the blocks are reserved on disk.
func allocate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = writeZeros(f, size)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}
