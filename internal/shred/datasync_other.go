//go:build !linux

package shred

import "os"

// datasync makes the data written to f durable (fsync where fdatasync is
// not offered).
func datasync(f *os.File) error { return f.Sync() }
