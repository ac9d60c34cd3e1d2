//go:build unix && !linux

package shred

import "syscall"

// canSyncAll: syncAll is available.
const canSyncAll = true

// syncAll writes every file system's dirty data to disk (sync(2)): one
// flush for many files instead of one fsync each. It reports no error,
// so it serves only where syncing is best effort (the zeros written over
// former-layout files before they are unlinked).
func syncAll(string) { syscall.Sync() }
