//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package projection

import "errors"

// DiskSpace is not implemented on this system: the free-space guard is off
// (notifyd logs so at start-up).
func DiskSpace(string) (free, size uint64, err error) {
	return 0, 0, errors.New("free space: not implemented on this system")
}
