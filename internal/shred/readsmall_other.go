//go:build !unix

package shred

import (
	"io"
	"os"
)

// readSmall returns the bytes of the file at path, at most fileSize+1 of
// them (one more than a key file holds, so that a longer file shows as
// such).
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, int64(fileSize)+1))
}
