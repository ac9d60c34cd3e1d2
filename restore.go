package kms

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/atomicfile"
	"github.com/pocketkms/kms/internal/shred"
	badgerstore "github.com/pocketkms/kms/internal/store"
	"github.com/pocketkms/kms/store"
)

// Restore writes the keys of a backup made by Engine.Backup into an empty
// target, chosen as New chooses its store: WithDirectory (a directory
// that does not exist or is empty) or WithStore (a store that holds no
// key and no name, e.g. an empty etcd prefix). Other options are ignored
// but WithLogger, WithClock and WithMinFreeSpace. Restore does not open an
// Engine and does not take ownership of be or of the store: afterwards,
// New(ctx, be, sameOption) opens an Engine that decrypts, verifies and
// serves tokens for everything the source could at the backup's revision.
//
// Everything is checked before anything is written: the whole backup (a
// truncated, altered or inconsistent one is ErrBackupInvalid), then the
// backend, which must be the one the backup was made with (the same root
// key, the same token): its check value must match the backup's, and
// every handle of every key not due for destruction must load. A backend
// that cannot open the material fails with ErrBackendMismatch, and the
// target is left as it was (a directory that did not exist still does
// not). A target that is not empty is refused with ErrAlreadyExists,
// before the backup is read.
//
// A target directory that does not exist is built as a hidden sibling
// (its parent is made if missing and must be writable), synced, and
// renamed into place: it is absent or whole. An existing empty directory
// (a mount point, say) is built in a hidden subdirectory of it whose
// entries are then renamed up, the store's integrity record first, so a
// crash part way leaves a directory New refuses (ErrInternal: the
// content does not match the record), never one that opens with keys
// missing; empty it and restore again. Every key gets a new shred key
// and its handles are sealed under it. A WithStore target is written one key
// per change (key, versions, generator, allow-list and name together,
// each expecting the key and its name to be absent), so a failure part
// way (a store error, a concurrent writer: ErrConflict) can leave some
// keys restored; the error says so, and emptying the target and running
// Restore again is the remedy.
func Restore(ctx context.Context, r io.Reader, be backend.Backend, opts ...Option) (*RestoreInfo, error) {
	const op = "restore"
	if r == nil || be == nil {
		return nil, newErr(op, "", ErrInvalidArgument, "nil reader or backend")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, newErr(op, "", ErrInvalidArgument, err.Error())
		}
	}
	if cfg.store == nil && cfg.dir == "" {
		return nil, newErr(op, "", ErrInvalidArgument, "Restore needs a target: WithDirectory or WithStore")
	}
	if err := ctx.Err(); err != nil {
		return nil, canceled(op, "", err)
	}
	// Refuse a target that is not empty before reading a byte.
	dirExists := false
	if cfg.store != nil {
		if err := checkEmptyStore(ctx, op, cfg.store); err != nil {
			return nil, err
		}
	} else {
		var err error
		if dirExists, err = checkEmptyDir(op, cfg.dir); err != nil {
			return nil, err
		}
	}
	d, err := readBackup(ctx, op, r)
	if err != nil {
		return nil, err
	}
	check, err := checkRestoreBackend(ctx, op, be, d, cfg.clock.Now())
	if err != nil {
		return nil, err
	}
	info := &RestoreInfo{Backup: d.info}
	if cfg.store != nil {
		err = restoreToStore(ctx, op, cfg.store, d.contents, nil, info)
	} else {
		err = restoreToDir(ctx, op, &cfg, d.contents, check, dirExists, info)
	}
	if err != nil {
		return nil, err
	}
	cfg.logger.LogAttrs(ctx, slog.LevelInfo, "kms: backup restored", slog.Int("keys", info.Keys), slog.Int("records", info.Records))
	return info, nil
}

// checkEmptyStore fails unless st holds no key and no name.
func checkEmptyStore(ctx context.Context, op string, st store.Store) error {
	c, err := st.Load(ctx)
	if err != nil {
		if isContextErr(err) {
			return canceled(op, "", err)
		}
		return wrapErr(op, "", ErrInternal, err)
	}
	if len(c.Keys) != 0 || len(c.Names) != 0 {
		return newErr(op, "", ErrAlreadyExists, fmt.Sprintf("the target store is not empty (%d keys): Restore writes only into an empty one", len(c.Keys)))
	}
	return nil
}

// checkEmptyDir fails unless dir does not exist or is an empty directory;
// it reports whether it exists.
func checkEmptyDir(op, dir string) (bool, error) {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, wrapErr(op, "", ErrInternal, err)
	case !fi.IsDir():
		return false, newErr(op, "", ErrAlreadyExists, "the target exists and is not a directory")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, wrapErr(op, "", ErrInternal, err)
	}
	if len(ents) != 0 {
		return false, newErr(op, "", ErrAlreadyExists, "the target directory is not empty: Restore writes only into an empty one")
	}
	return true, nil
}

// checkRestoreBackend checks that be holds the backup's material: the
// check value, then a load of every handle of every key not due for
// destruction (such a key may have lost its material already, as in
// Engine.load). It returns be's check value (nil without one).
func checkRestoreBackend(ctx context.Context, op string, be backend.Backend, d *backupData, now time.Time) ([]byte, error) {
	var check []byte
	if cv, ok := be.(backend.CheckValuer); ok {
		var err error
		if check, err = cv.CheckValue(ctx); err != nil {
			return nil, backendErr(op, "", err)
		}
		if d.hdr.CheckValue != nil && subtle.ConstantTimeCompare(check, d.hdr.CheckValue) != 1 {
			return nil, wrapErr(op, "", ErrBackendMismatch,
				fmt.Errorf("the backend's root key is not the one the backup was made under: %w", backend.ErrInvalidHandle))
		}
	}
	fail := func(tag string, err error) error {
		if isContextErr(err) || errors.Is(err, backend.ErrUnavailable) || errors.Is(err, backend.ErrClosed) {
			return backendErr(op, tag, err)
		}
		return wrapErr(op, tag, ErrBackendMismatch, err)
	}
	for _, kd := range d.contents.Keys {
		if kd.Key.State == string(StateRevoked) && kd.Key.DestroyAt <= timeMs(now) {
			continue
		}
		for _, v := range kd.Versions {
			_, err := be.Load(ctx, &backend.LoadRequest{
				Ref:  backend.KeyRef{KeyTag: kd.Key.Tag, Version: v.Version, Purpose: backend.PurposeCipher},
				Type: KeyType(kd.Key.Type), Convergent: kd.Key.Convergent, Handle: v.Handle,
			})
			if err != nil {
				return nil, fail(kd.Key.Tag, err)
			}
		}
		if g := kd.Generator; g != nil && g.Active {
			_, err := be.Load(ctx, &backend.LoadRequest{
				Ref:  backend.KeyRef{KeyTag: kd.Key.Tag, Version: g.Generation, Purpose: backend.PurposeTokenSigning},
				Type: RSA2048, Handle: g.Handle,
			})
			if err != nil {
				return nil, fail(kd.Key.Tag, err)
			}
		}
	}
	return check, nil
}

// restoreToStore writes c into st, one change per key; with ks, each
// key gets a new shred key and its handles are sealed under it.
func restoreToStore(ctx context.Context, op string, st store.Store, c *store.Contents, ks *shred.Keys, info *RestoreInfo) error {
	partial := func(err error) error {
		if info.Keys > 0 {
			return fmt.Errorf("%w (%d of %d keys were restored before the failure: empty the target and restore again)", err, info.Keys, len(c.Keys))
		}
		return err
	}
	for _, kd := range c.Keys {
		tag := kd.Key.Tag
		if err := ctx.Err(); err != nil {
			return canceled(op, tag, partial(err))
		}
		seal := func(h []byte, _ backend.Purpose, _ uint32) ([]byte, error) { return h, nil }
		if ks != nil {
			k, err := ks.Create(tag)
			if err != nil {
				return wrapErr(op, tag, ErrInternal, partial(err))
			}
			seal = func(h []byte, p backend.Purpose, n uint32) ([]byte, error) { return k.Wrap(h, string(p), n) }
		}
		kr := kd.Key
		ch := (&store.Change{}).Put(&kr).Expecting(store.KeyKey(tag), 0).Expecting(store.NameKey(kr.Name), 0)
		for _, v := range kd.Versions {
			h, err := seal(v.Handle, backend.PurposeCipher, v.Version)
			if err != nil {
				return wrapErr(op, tag, ErrInternal, partial(err))
			}
			v.Handle = h
			ch.Put(&v)
		}
		if g := kd.Generator; g != nil {
			gr := *g
			if len(gr.Handle) > 0 {
				h, err := seal(gr.Handle, backend.PurposeTokenSigning, gr.Generation)
				if err != nil {
					return wrapErr(op, tag, ErrInternal, partial(err))
				}
				gr.Handle = h
			}
			ch.Put(&gr)
		}
		if a := kd.ACL; a != nil {
			ar := *a
			ch.Put(&ar)
		}
		ch.Put(&store.NameRecord{Name: lower(kr.Name), Tag: tag})
		if _, err := st.Apply(ctx, ch); err != nil {
			switch {
			case errors.Is(err, store.ErrConflict):
				return wrapErr(op, tag, ErrConflict, partial(err))
			case isContextErr(err):
				return canceled(op, tag, partial(err))
			}
			return wrapErr(op, tag, ErrInternal, partial(err))
		}
		info.Keys++
		info.Records += len(ch.Puts)
	}
	return nil
}

// restoreToDir builds the store in a temporary directory and moves it
// into place; on failure the temporary directory is removed. A target
// that does not exist is built as a sibling and renamed into place
// (atomic). An existing empty target (perhaps a mount point, or in a
// parent the process may not write) is built in a hidden subdirectory of
// the target, whose entries are then renamed up one by one, the
// integrity record first: a crash part way leaves a directory that New
// refuses (its content does not match the record), never one that opens
// with keys missing.
func restoreToDir(ctx context.Context, op string, cfg *config, c *store.Contents, check []byte, exists bool, info *RestoreInfo) (err error) {
	dir := filepath.Clean(cfg.dir)
	parent := filepath.Dir(dir)
	var tmp string
	if exists {
		tmp, err = os.MkdirTemp(dir, restoreTmpPrefix+"*")
	} else {
		if err := os.MkdirAll(parent, 0o700); err != nil {
			return wrapErr(op, "", ErrInternal, err)
		}
		tmp, err = os.MkdirTemp(parent, "."+filepath.Base(dir)+".restore-*")
	}
	if err != nil {
		return wrapErr(op, "", ErrInternal, err)
	}
	moving := false
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
			if moving {
				err = fmt.Errorf("%w (the target holds part of the restore: empty it and restore again)", err)
			}
		}
	}()
	bst, err := badgerstore.Open(badgerstore.Options{Dir: tmp, Logger: cfg.logger, Check: check, MinFree: cfg.minFree})
	if err != nil {
		return wrapErr(op, "", ErrInternal, err)
	}
	ks, err := shred.Open(tmp)
	if err != nil {
		bst.Close()
		return wrapErr(op, "", ErrInternal, err)
	}
	err = restoreToStore(ctx, op, bst, c, ks, info)
	ks.Close()
	if err == nil && bst.CheckPending() {
		if cerr := bst.WriteCheck(); cerr != nil {
			err = wrapErr(op, "", ErrInternal, cerr)
		}
	}
	if cerr := bst.Close(); cerr != nil && err == nil {
		err = wrapErr(op, "", ErrInternal, cerr)
	}
	if err != nil {
		return err
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return wrapErr(op, "", ErrInternal, err)
	}
	if !exists {
		if err := os.Rename(tmp, dir); err != nil {
			return wrapErr(op, "", ErrInternal, err)
		}
		if err := atomicfile.SyncDir(parent); err != nil {
			return wrapErr(op, "", ErrInternal, fmt.Errorf("the restored directory is in place but its parent could not be synced: %w", err))
		}
		return nil
	}
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return wrapErr(op, "", ErrInternal, err)
	}
	slices.SortStableFunc(ents, func(a, b fs.DirEntry) int {
		return cmp.Compare(btoi(a.Name() != integrityName), btoi(b.Name() != integrityName))
	})
	moving = true
	for _, ent := range ents {
		if err := os.Rename(filepath.Join(tmp, ent.Name()), filepath.Join(dir, ent.Name())); err != nil {
			return wrapErr(op, "", ErrInternal, err)
		}
	}
	if err := os.Remove(tmp); err != nil {
		return wrapErr(op, "", ErrInternal, err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return wrapErr(op, "", ErrInternal, err)
	}
	return nil
}

// restoreTmpPrefix starts the name of the hidden directory Restore builds
// in an existing empty target.
const restoreTmpPrefix = ".pocketkms-restore-"

// integrityName is internal/store's integrity record, moved first.
const integrityName = "pocketkms.integrity"

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
