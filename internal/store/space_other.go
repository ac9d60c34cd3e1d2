//go:build !linux

package store

// freeBytes is not implemented here; writes are not refused early.
func freeBytes(string) (uint64, bool) { return 0, false }
