// Package atomicfile replaces small files atomically and durably, for the
// records pocketkms keeps beside its store (the root-key check, and the
// integrity record of directories written before its slots), and makes
// in-place writes durable ([Datasync]: the integrity record's slots, the
// shred key slots).
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
	if err := writeSyncClose(f, data); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return SyncDir(dir)
}

// Create writes data to the new file path (mode 0600) durably, never over
// an existing file: it writes a temporary file beside path (named
// "."+base+".*"+TmpSuffix), syncs it, links it to path (an existing path
// is refused: errors.Is(err, fs.ErrExist)), removes the temporary file and
// syncs the directory.
func Create(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*"+TmpSuffix)
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if err := writeSyncClose(f, data); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// writeSyncClose writes data to f, syncs and closes it; f is closed
// whatever fails.
func writeSyncClose(f *os.File, data []byte) error {
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
