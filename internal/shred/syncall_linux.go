package shred

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// canSyncAll: syncAll is available.
const canSyncAll = true

// syncAll writes the dirty data of the file system holding dir to disk
// and waits (syncfs(2)): one flush for many files instead of one fsync
// each, without flushing the machine's other file systems as sync(2)
// would. It reports no error, so it serves only where syncing is best
// effort (the zeros written over former-layout files before they are
// unlinked); where dir cannot be opened it falls back to sync(2).
func syncAll(dir string) {
	f, err := os.Open(dir)
	if err != nil {
		syscall.Sync()
		return
	}
	defer f.Close()
	if unix.Syncfs(int(f.Fd())) != nil {
		syscall.Sync()
	}
}
