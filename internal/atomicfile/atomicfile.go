// Package atomicfile replaces small files atomically and durably, for the
// records pocketkms keeps beside its store (the integrity record, the
// root-key check, shred keys).
package atomicfile

import (
	"os"
	"path/filepath"
)

// TmpSuffix ends the name of the temporary file Write writes first; a
// crash may leave one behind, which a caller may remove.
const TmpSuffix = ".tmp"

// Write replaces dir/name with data atomically and durably: it writes
// dir/name+TmpSuffix (mode 0600), syncs it, renames it over dir/name and
// syncs the directory. After a crash dir/name holds the old content or
// the new, never a mix.
func Write(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+TmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir syncs a directory, making the entries created, renamed or
// removed in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
