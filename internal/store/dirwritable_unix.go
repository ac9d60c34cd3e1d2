//go:build unix

package store

import "syscall"

// accessW is access(2)'s W_OK.
const accessW = 0x2

// dirWritable reports (as an error) whether dir would take a new file:
// not when it lost its write permission or its file system was remounted
// read-only (EACCES, EROFS). access(2) costs no disk write.
func dirWritable(dir string) error { return syscall.Access(dir, accessW) }
