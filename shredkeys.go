package kms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/shred"
	badgerstore "github.com/pocketkms/kms/internal/store"
	"github.com/pocketkms/kms/store"
)

// Crypto-shredding. With a Badger directory, every key has a shred key
// (package internal/shred: a slot of pocketkms.shred/keys) made durable
// before the commit that first names the key, and every handle the store
// keeps for the key is sealed under it. Destruction deletes the shred key
// after the backend destroyed the material and before the records go, so
// the copies of the sealed handles that Badger keeps in its tables and
// logs, long after the records were deleted, open under nothing.

// errShredGone: a handle is sealed under a shred key this Engine no
// longer has (deleted by a destruction, or missing from the directory).
var errShredGone = errors.New("the key's shred key is gone: its material cannot be opened")

// plainHandle is the handle of a stored one when it is the backend's own
// (not sealed under a shred key), else nil.
func plainHandle(stored []byte) []byte {
	if shred.IsWrapped(stored) || isDual(stored) {
		return nil
	}
	return stored
}

// seal returns the stored form of a new handle of s's material: sealed
// under the key's shred key when its handles are, as it is otherwise (a
// key made before shred keys, or a store without a directory).
func (s *keySnap) seal(h []byte, purpose backend.Purpose, n uint32) ([]byte, error) {
	if !s.wrapped {
		return h, nil
	}
	if s.kek == nil {
		return nil, errShredGone
	}
	return s.kek.Wrap(h, string(purpose), n)
}

// open returns the backend handle of material whose snapshot holds plain
// (nil when not opened) and stored: of a handle sealed during a root-key
// rotation, the part for the snapshot's root key (rootkey.go).
func (s *keySnap) open(plain, stored []byte, purpose backend.Purpose, n uint32) ([]byte, error) {
	if plain != nil {
		return plain, nil
	}
	part, err := pickPart(stored, s.root)
	if err != nil {
		return nil, err
	}
	if !shred.IsWrapped(part) {
		return part, nil
	}
	return unwrapPart(s.kek, s.rare().kekNext, part, string(purpose), n)
}

// unwrapPart opens a wrapped handle with the key's shred key or, during or
// just after a root-key rotation, its next one.
func unwrapPart(kek, next *shred.Key, part []byte, purpose string, n uint32) ([]byte, error) {
	err := errShredGone
	for _, k := range []*shred.Key{kek, next} {
		if k == nil {
			continue
		}
		h, uerr := k.Unwrap(part, purpose, n)
		if uerr == nil {
			return h, nil
		}
		if err == errShredGone || !errors.Is(uerr, shred.ErrUnwrap) {
			err = uerr
		}
	}
	return nil, err
}

// openHandles opens the sealed handles of a key read from the store with
// its shred key. A key already due for destruction is not opened: its
// shred key may be gone already (a destruction interrupted between the
// shred key and the records), and it only needs destroying, which opens
// what it still can (see destroyLocked).
func (e *Engine) openHandles(s *keySnap, now time.Time) error {
	s.root = e.rootID
	if !s.wrapped {
		return nil
	}
	if e.shred == nil {
		return errors.New("its handles are sealed under a shred key, which only a Badger directory (WithDirectory) keeps")
	}
	k, ok, err := e.shred.Get(s.tag)
	kn, okn, nerr := e.shred.GetNext(s.tag)
	if okn && nerr == nil && e.bst != nil && e.bst.Rotation() == badgerstore.RotationSwitched {
		// The store is under the new root key: the next shred key is
		// the one new handles are sealed under (see rootkey.go).
		k, ok, err = kn, true, nil
		okn = false
	}
	if s.destructionDue(now) {
		if err == nil && ok {
			s.kek = k
		}
		if nerr == nil && okn {
			s.own().kekNext = kn
		}
		return nil
	}
	switch {
	case err != nil:
		return fmt.Errorf("its shred key (%s/%s): %w", shred.DirName, shred.SlotFile, err)
	case nerr != nil:
		return fmt.Errorf("its next shred key (%s/%s): %w", shred.DirName, shred.SlotFile, nerr)
	case !ok && !okn:
		return fmt.Errorf("its shred key is missing from %s/%s: the key's material cannot be opened", shred.DirName, shred.SlotFile)
	}
	if ok {
		s.kek = k
	}
	if okn {
		s.own().kekNext = kn
	}
	for i := range s.versions {
		v := &s.versions[i]
		if v.handle != nil {
			continue
		}
		if v.handle, err = s.open(nil, v.stored, backend.PurposeCipher, v.num); err != nil {
			return fmt.Errorf("version %d: %w", v.num, err)
		}
	}
	if g := s.gen; g != nil && g.handle == nil && len(g.stored) > 0 {
		if g.handle, err = s.open(nil, g.stored, backend.PurposeTokenSigning, g.generation); err != nil {
			return fmt.Errorf("token-signing key: %w", err)
		}
	}
	return nil
}

// dropShredAfter deletes the shred key made for a key whose creation was
// not committed, unless the store cannot tell whether the commit landed
// (then a committed record may need it; the next open removes it if not).
func (e *Engine) dropShredAfter(ctx context.Context, commitErr error, tag string) {
	if e.shred == nil || errors.Is(commitErr, store.ErrUncertain) {
		return
	}
	if err := e.shred.Delete(tag); err != nil {
		e.log.LogAttrs(ctx, slog.LevelWarn, "kms: could not delete the shred key of an uncommitted key; the next open removes it",
			slog.String("keyTag", tag), slog.String("error", err.Error()))
	}
}

// migrateShred moves the shred keys of a directory written before the
// slot file (one file per key) into it: what the first writable open of
// such a directory does (VerifyDirectory, read-only, only reads them). A
// failure is logged: every key stays readable from its file or its slot,
// and the next open retries.
func (e *Engine) migrateShred(ctx context.Context) {
	n, err := e.shred.Migrate()
	if n > 0 && err == nil {
		e.log.LogAttrs(ctx, slog.LevelInfo, "kms: moved the shred keys of the former one-file-per-key layout into "+shred.DirName+"/"+shred.SlotFile, slog.Int("keys", n))
	}
	if err != nil {
		e.log.LogAttrs(ctx, slog.LevelWarn, "kms: could not finish moving the shred key files into the slot file; the keys stay readable and the next open retries", slog.String("error", err.Error()))
	}
}

// pruneShred deletes the shred keys no key record names: made for a key
// whose commit never landed (a crash between the two, a commit the store
// could not confirm, or a failed commit whose clean-up failed too), and
// the temporary files of interrupted creations. Destruction cannot leave
// one: it deletes a key's shred key before its records. The caller has
// loaded every key, and nothing else runs yet.
func (e *Engine) pruneShred(ctx context.Context) {
	if e.shred == nil {
		return
	}
	removed, err := e.shred.Prune(func(tag string) bool {
		_, ok := e.keys.Load(tag)
		return ok
	})
	for _, tag := range removed {
		e.log.LogAttrs(ctx, slog.LevelInfo, "kms: removed the shred key of a key that was never committed", slog.String("keyTag", tag))
	}
	if err != nil {
		e.log.LogAttrs(ctx, slog.LevelWarn, "kms: could not remove unused shred keys; the next open retries", slog.String("error", err.Error()))
	}
}

// destroyHandles returns the backend handles of s's material for its
// destruction: versions[i] for s.versions[i], and gen for an active
// generator; nil where the material cannot be named any more. That is the
// case of a key loaded already due whose shred key is gone (a destruction
// interrupted after deleting it: the backend material went first) or
// damaged, or whose sealed handle does not open: it is logged, and the
// destruction goes on, since the material is out of reach through this
// directory either way (a backend that keeps material, such as an HSM,
// keeps that object; see issue #14 item 6). A shred key that cannot be
// read for another reason (an I/O error) fails the destruction, which the
// next Maintain retries.
func (e *Engine) destroyHandles(ctx context.Context, s *keySnap) (versions [][]byte, gen []byte, err error) {
	kek := s.kek
	sealed := func(plain, stored []byte) bool { return plain == nil && (shred.IsWrapped(stored) || isDual(stored)) }
	need := s.gen.isActive() && sealed(s.gen.handle, s.gen.stored)
	for _, v := range s.versions {
		need = need || sealed(v.handle, v.stored)
	}
	if need && kek == nil && e.shred != nil {
		k, ok, err := e.shred.Get(s.tag)
		switch {
		case errors.Is(err, shred.ErrCorrupt):
			e.log.LogAttrs(ctx, slog.LevelWarn, "kms: the shred key of a key due for destruction is damaged; destroying its records without its backend material",
				slog.String("keyTag", s.tag))
		case err != nil:
			return nil, nil, fmt.Errorf("read the key's shred key: %w", err)
		case !ok:
			e.log.LogAttrs(ctx, slog.LevelInfo, "kms: finishing an interrupted destruction: the shred key is gone, the backend material went before it",
				slog.String("keyTag", s.tag))
		default:
			kek = k
		}
	}
	kn := s.rare().kekNext
	if need && kn == nil && e.shred != nil {
		kn, _, _ = e.shred.GetNext(s.tag)
	}
	openOne := func(plain, stored []byte, purpose backend.Purpose, n uint32) []byte {
		if plain != nil {
			return plain
		}
		part, err := pickPart(stored, s.root)
		if err != nil {
			return nil
		}
		if !shred.IsWrapped(part) {
			return part
		}
		if kek == nil && kn == nil {
			return nil
		}
		h, err := unwrapPart(kek, kn, part, string(purpose), n)
		if errors.Is(err, shred.ErrDeleted) {
			// An earlier attempt deleted the shred key, then failed to
			// delete the records.
			return nil
		}
		if err != nil {
			e.log.LogAttrs(ctx, slog.LevelWarn, "kms: a sealed handle of a key due for destruction does not open; destroying its record without its backend material",
				slog.String("keyTag", s.tag), slog.String("purpose", string(purpose)), slog.Uint64("version", uint64(n)))
			return nil
		}
		return h
	}
	versions = make([][]byte, len(s.versions))
	for i, v := range s.versions {
		versions[i] = openOne(v.handle, v.stored, backend.PurposeCipher, v.num)
	}
	if s.gen.isActive() {
		gen = openOne(s.gen.handle, s.gen.stored, backend.PurposeTokenSigning, s.gen.generation)
	}
	return versions, gen, nil
}
