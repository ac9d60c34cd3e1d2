//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package store

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockShared takes a shared lock on dir, the lock Badger takes in
// read-only mode (a writer takes it exclusively), and returns its release.
// A read-only open holds it from before precheck until Badger holds its
// own, so no writer can start (and compact tables away) in between. A
// directory a writer holds fails with ErrLocked.
func lockShared(dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("store: open: lock: %w", err)
	}
	return func() { f.Close() }, nil
}
