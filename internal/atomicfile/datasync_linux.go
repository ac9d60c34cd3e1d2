//go:build linux

package atomicfile

import (
	"os"
	"syscall"
)

// Datasync makes the data written to f durable (fdatasync: the file's
// size too when it changed, but not its times, so a pure overwrite of a
// file kept open costs one device flush and no journal commit). Used
// for the in-place records: the integrity record's slots and the shred
// key slots.
func Datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
