package kms

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/pocketkms/kms/internal/atomicfile"
)

// BackupFile writes a backup (Engine.Backup) to the file at path,
// atomically: into a temporary file beside it (mode 0600), synced, then
// renamed over path and the directory synced. When anything fails (a full
// disk, a write error, a cancelled ctx) the temporary file is removed and
// path is left as it was, absent or holding the previous backup, so no
// file that looks complete is left; the error is ErrInternal naming the
// cause (for a full disk, "no space left on device" or "file too large"),
// or ErrCanceled. An existing file at path is replaced only by a complete
// backup.
func (e *Engine) BackupFile(ctx context.Context, path string) (info *BackupInfo, err error) {
	const op = "backup"
	if path == "" {
		return nil, newErr(op, "", ErrInvalidArgument, "empty path")
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*"+atomicfile.TmpSuffix)
	if err != nil {
		return nil, wrapErr(op, "", ErrInternal, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return nil, wrapErr(op, "", ErrInternal, err)
	}
	if info, err = e.Backup(ctx, f); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, wrapErr(op, "", ErrInternal, errors.Join(errors.New("sync the backup file"), err))
	}
	if err := f.Close(); err != nil {
		return nil, wrapErr(op, "", ErrInternal, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, wrapErr(op, "", ErrInternal, err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		// The rename is done: the file at path is complete, only its
		// durability is in doubt.
		return nil, wrapErr(op, "", ErrInternal, errors.Join(errors.New("the backup file is complete but its directory could not be synced"), err))
	}
	return info, nil
}
