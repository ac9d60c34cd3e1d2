package store

import (
	"os"
	"syscall"
)

// syncData makes the record file's data durable. An in-place write
// changes no size and no block, so fdatasync suffices: it skips the
// modification time, which fsync would also write to the journal.
func syncData(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
