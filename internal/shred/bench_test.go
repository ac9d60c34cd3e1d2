package shred

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/pocketkms/kms/internal/atomicfile"
)

// BenchmarkCreate is Keys.Create on a disk (b.TempDir: set TMPDIR to a
// disk, not a tmpfs), beside the raw primitives: a 128-byte overwrite in
// place plus fdatasync (what Create costs at least), and the former
// layout's file write (temporary file, fsync, rename, directory fsync).
func BenchmarkCreate(b *testing.B) {
	b.Run("slot", func(b *testing.B) {
		ks, err := Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		defer ks.Close()
		i := 0
		for b.Loop() {
			i++
			if _, err := ks.Create(fmt.Sprintf("%064x", i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-pwrite-fdatasync", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(make([]byte, 1<<20)); err != nil {
			b.Fatal(err)
		}
		f.Sync()
		buf := make([]byte, slotSize)
		i := 0
		for b.Loop() {
			buf[0]++
			if _, err := f.WriteAt(buf, int64(i%8192)*slotSize); err != nil {
				b.Fatal(err)
			}
			if err := atomicfile.Datasync(f); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("former-file", func(b *testing.B) {
		dir := b.TempDir()
		data := make([]byte, fileSize)
		i := 0
		for b.Loop() {
			i++
			if err := atomicfile.Write(dir, fmt.Sprintf("%064x", i), data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
