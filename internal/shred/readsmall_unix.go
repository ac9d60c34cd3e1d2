//go:build unix

package shred

import (
	"io/fs"
	"syscall"
)

// readSmall returns the bytes of the file at path, at most fileSize+1 of
// them (one more than a key file holds, so that a longer file shows as
// such). An Engine opening a directory reads one such file per key, so
// this goes to the system calls directly: open, read until end of file,
// close, without os.File's registration with the poller (which fails for
// a regular file, but costs a system call first).
func readSmall(path string) ([]byte, error) {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	buf := make([]byte, fileSize+1)
	n := 0
	for n < len(buf) {
		m, err := syscall.Read(fd, buf[n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		case m == 0:
			return buf[:n], nil
		}
		n += m
	}
	return buf, nil
}
