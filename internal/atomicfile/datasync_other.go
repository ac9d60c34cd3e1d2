//go:build !linux

package atomicfile

import "os"

// Datasync makes the data written to f durable (fsync where fdatasync is
// not offered).
func Datasync(f *os.File) error { return f.Sync() }
