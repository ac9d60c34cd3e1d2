//go:build !linux

package store

import "os"

// syncData makes the record file's data durable (see the Linux version).
func syncData(f *os.File) error { return f.Sync() }
