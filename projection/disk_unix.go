//go:build linux || darwin || freebsd || netbsd || openbsd

package projection

import (
	"fmt"
	"syscall"
)

// DiskSpace returns the bytes available to notifyd's user on the
// filesystem holding path, and the filesystem's size.
func DiskSpace(path string) (free, size uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("free space of %s: %w", path, err)
	}
	//nolint:unconvert // the fields' types differ between systems
	return uint64(st.Bavail) * uint64(st.Bsize), uint64(st.Blocks) * uint64(st.Bsize), nil
}
