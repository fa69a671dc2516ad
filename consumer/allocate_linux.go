package consumer

import (
	"errors"
	"os"
	"syscall"
)

// allocate creates path (0600) with size bytes allocated on disk: the
// blocks are reserved (fallocate), not a sparse file; where fallocate is
// not supported, zeros are written.
func allocate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		err = writeZeros(f, size)
	}
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}
