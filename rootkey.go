package kms

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/shred"
	badgerstore "github.com/pocketkms/kms/internal/store"
)

// Root-key rotation (RotateRootKey). Every stored handle of a key is, with
// a directory, the backend's handle (sealed under the root key) sealed in
// turn under the key's shred key. A rotation re-seals them all under a new
// root key and a new shred key per key, online and crash-safe, in four
// steps:
//
//  1. begin: the backend stages the new root key, and the directory
//     records the rotation (pocketkms.rotation, phase "reseal"): it is
//     still under the old root key.
//  2. reseal: key by key, under the key's lock, every version's (and the
//     active token generator's) handle is stored in a dual form that holds
//     both the old part, as it was, and a part under the new root key
//     and the key's next shred key (a next-key slot of
//     pocketkms.shred/keys). Calls go on using the old part. Then, with calls paused (the Engine's write
//     lock), the keys changed meanwhile are resealed the same way.
//  3. switch: one atomic write of the marker (phase "switched") puts the
//     directory under the new root key; the backend commits it, and every
//     snapshot moves to the new part and the next shred key. Calls resume.
//  4. finish: key by key, the next shred key replaces the key's shred key
//     (the old one, the only key to the old part, is shredded) and the
//     dual records are rewritten to the new part alone; then the marker
//     goes and the check file names the new root key.
//
// A crash before the switch leaves a directory that opens with the old
// root key, which rolls the rotation back (drops the next shred keys and
// the new parts); the new key is refused with ErrBackendMismatch saying
// that the directory is still under the previous root key. A crash after
// it leaves a directory that opens with the new root key, which finishes
// the rotation; the old key is refused, saying that the directory was
// rotated to a new key.
//
// The dual form of a stored handle is
//
//	"pkd1" ‖ id(old) ‖ uint32be(len) ‖ old part ‖ id(new) ‖ uint32be(len) ‖ new part
//
// where id is the first 8 bytes of a root key's check value (an HMAC of a
// fixed label; see backend.CheckValuer), never the key.

// rootRotator is what RotateRootKey needs of a backend: backend/memory's
// Backend has it. PKCS #11 backends keep their keys in the token and have
// no root key to rotate.
type rootRotator interface {
	backend.CheckValuer
	StageRootKey(newRoot []byte) error
	StagedCheckValue(ctx context.Context) ([]byte, error)
	ResealHandle(ctx context.Context, req *backend.LoadRequest) ([]byte, error)
	CommitRootKey() error
	DropStagedRootKey()
}

const (
	dualPrefix = "pkd1"
	rootIDSize = 8
)

// rootIDOf is the id of the root key whose check value is check (nil
// without one).
func rootIDOf(check []byte) []byte {
	if len(check) < rootIDSize {
		return nil
	}
	return bytes.Clone(check[:rootIDSize])
}

func isDual(stored []byte) bool { return bytes.HasPrefix(stored, []byte(dualPrefix)) }

// encodeDual is the dual form of a handle with parts a and b.
func encodeDual(idA, a, idB, b []byte) []byte {
	out := make([]byte, 0, len(dualPrefix)+2*(rootIDSize+4)+len(a)+len(b))
	out = append(out, dualPrefix...)
	for _, p := range [2]struct{ id, part []byte }{{idA, a}, {idB, b}} {
		out = append(out, p.id...)
		out = binary.BigEndian.AppendUint32(out, uint32(len(p.part)))
		out = append(out, p.part...)
	}
	return out
}

var errNoPart = errors.New("the stored handle has no part for this root key")

// pickPart returns the part of a dual handle for the root key id, or a
// handle that is not dual as it is.
func pickPart(stored, id []byte) ([]byte, error) {
	if !isDual(stored) {
		return stored, nil
	}
	rest := stored[len(dualPrefix):]
	for range 2 {
		if len(rest) < rootIDSize+4 {
			break
		}
		pid, n := rest[:rootIDSize], binary.BigEndian.Uint32(rest[rootIDSize:rootIDSize+4])
		rest = rest[rootIDSize+4:]
		if uint64(n) > uint64(len(rest)) {
			break
		}
		if id != nil && bytes.Equal(pid, id) {
			return rest[:n], nil
		}
		rest = rest[n:]
	}
	return nil, errNoPart
}

// rootRotationHook, when set (tests), is called at each step of a
// rotation; an error it returns ends RotateRootKey at once with that
// error and nothing undone, as if the process had died there.
var rootRotationHook func(step string, n int) error

func rotationStep(step string, n int) error {
	if h := rootRotationHook; h != nil {
		return h(step, n)
	}
	return nil
}

// RotateRootKey re-seals every key's material under newRoot, the
// backend's new root key (backend/memory: RootKeySize bytes; the caller
// may clear its slice when the call returns), and gives every key a new
// shred key, so that neither the old root key nor any copy of the old
// sealed handles that Badger keeps opens the material afterwards.
//
// It runs online: every call keeps working during the rotation, except
// for a pause while the keys changed during it are resealed and the
// Engine switches to the new root key (the time of those keys' commits).
// It is crash-safe: a process killed at any point leaves a directory that
// New opens with the old root key (before the switch; the rotation is
// rolled back) or with the new one (after it; the rotation is finished),
// and the other key is refused with ErrBackendMismatch saying which key
// the directory is under. Only when RotateRootKey returns nil is the
// rotation complete: replace the root key file then (see
// memory.WriteRootKeyFile), not before.
//
// Keys already due for destruction are not resealed; Maintain destroys
// them as before. It fails with ErrUnsupported for a backend without a
// root key (backend/softhsm) or an Engine without a directory, with
// ErrInvalidArgument for a key of the wrong size or the current key, with
// ErrConflict while another rotation runs, and otherwise as the store and
// backend do; a rotation that fails before its switch is rolled back.
func (e *Engine) RotateRootKey(ctx context.Context, newRoot []byte) error {
	const op = "rotate root key"
	rr, ok := e.be.(rootRotator)
	switch {
	case !ok:
		return newErr(op, "", ErrUnsupported, "the backend has no root key to rotate (only backend/memory's has)")
	case e.bst == nil || e.shred == nil || e.rootID == nil:
		return newErr(op, "", ErrUnsupported, "root-key rotation needs a directory (WithDirectory)")
	}
	if !e.rotMu.TryLock() {
		return newErr(op, "", ErrConflict, "another root-key rotation is under way")
	}
	defer e.rotMu.Unlock()
	if err := e.enter(ctx, op); err != nil {
		return err
	}
	entered := true
	defer func() {
		if entered {
			e.leave()
		}
	}()
	// Left over by an earlier call that failed part-way.
	switch e.bst.Rotation() {
	case badgerstore.RotationSwitched:
		if err := e.finishRotation(ctx, op); err != nil {
			return err
		}
	case badgerstore.RotationReseal:
		if err := e.rollbackRotation(ctx, op); err != nil {
			return err
		}
	}
	if err := rr.StageRootKey(newRoot); err != nil {
		return backendErr(op, "", err)
	}
	to, err := rr.StagedCheckValue(ctx)
	if err == nil && bytes.Equal(rootIDOf(to), e.rootID) {
		rr.DropStagedRootKey()
		return newErr(op, "", ErrInvalidArgument, "the new root key is the current one")
	}
	if err == nil {
		err = e.bst.BeginRotation(to)
	}
	if err != nil {
		rr.DropStagedRootKey()
		return wrapErr(op, "", ErrInternal, err)
	}
	toID := rootIDOf(to)
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: root-key rotation begun")
	if err := rotationStep("begun", 0); err != nil {
		return err
	}
	fail := func(err error) error {
		if errors.Is(err, errRotationHookStop) {
			return err
		}
		if rerr := e.rollbackRotation(context.WithoutCancel(ctx), op); rerr != nil {
			e.log.LogAttrs(ctx, slog.LevelWarn, "kms: could not roll back a failed root-key rotation; the next open with the current root key or the next rotation does",
				slog.String("error", rerr.Error()))
		}
		return err
	}
	if err := e.resealAll(ctx, op, rr, toID); err != nil {
		return fail(err)
	}

	// The switch, with calls paused: reseal what changed meanwhile, then
	// move the directory, the backend and every snapshot to the new key.
	e.leave()
	entered = false
	e.guard.Lock()
	if e.closed {
		e.guard.Unlock()
		rr.DropStagedRootKey()
		return newErr(op, "", ErrClosed, "closed during the rotation; the next open with the current root key rolls it back")
	}
	err = e.resealAll(ctx, op, rr, toID)
	if err == nil {
		err = rotationStep("pass2", 0)
	}
	if err == nil {
		if serr := e.bst.SwitchRotation(); serr != nil {
			if e.bst.Rotation() != badgerstore.RotationSwitched {
				err = wrapErr(op, "", ErrInternal, serr)
			} else {
				e.log.LogAttrs(ctx, slog.LevelWarn, "kms: root-key rotation switched; the check file is rewritten when it ends", slog.String("error", serr.Error()))
			}
		}
	}
	if err != nil {
		e.guard.Unlock()
		if errors.Is(err, errRotationHookStop) {
			return err
		}
		if !e.enterQuiet() {
			rr.DropStagedRootKey()
			return err
		}
		err = fail(err)
		e.leave()
		return err
	}
	if cerr := rr.CommitRootKey(); cerr != nil {
		// Cannot happen (the key is staged and the Engine open); the
		// directory is switched, so the next open needs the new key.
		e.guard.Unlock()
		return wrapErr(op, "", ErrInternal, fmt.Errorf("switched the directory but the backend did not take the new root key; reopen with the new root key: %w", cerr))
	}
	e.switchSnapshots(toID)
	e.guard.Unlock()
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: root-key rotation switched to the new root key")
	if err := rotationStep("switched", 0); err != nil {
		return err
	}
	// Past the switch the rotation is finished whatever the context says:
	// only Close stops it (the next open with the new key finishes it).
	if !e.enterQuiet() {
		return newErr(op, "", ErrClosed, "closed after the switch: the directory is under the new root key, and the next open with it finishes the rotation")
	}
	entered = true
	if err := e.finishRotation(context.WithoutCancel(ctx), op); err != nil {
		var ke *Error
		if errors.As(err, &ke) {
			c := *ke
			c.Detail = strings.TrimSuffix("the directory is under the new root key; the next open with it, or the next rotation, finishes the clean-up; "+c.Detail, "; ")
			return &c
		}
		return err
	}
	return nil
}

// errRotationHookStop marks an error a test hook returned.
var errRotationHookStop = errors.New("stopped by the test hook")

// enterQuiet enters the Engine for clean-up regardless of any context.
func (e *Engine) enterQuiet() bool {
	e.guard.RLock()
	if e.closed {
		e.guard.RUnlock()
		return false
	}
	return true
}

// entries returns every live key's entry.
func (e *Engine) entries() []*keyEntry {
	var out []*keyEntry
	e.keys.Range(func(_ string, v *keyEntry) bool {
		out = append(out, v)
		return true
	})
	return out
}

// resealAll gives every key that lacks them the parts under the new root
// key (id toID). Keys destroyed meanwhile are skipped.
func (e *Engine) resealAll(ctx context.Context, op string, rr rootRotator, toID []byte) error {
	for i, ent := range e.entries() {
		if err := ctx.Err(); err != nil {
			return canceled(op, "", err)
		}
		ent.mu.Lock()
		_, err := updateLocked(e, ctx, op, ent, e.resealKey(ctx, op, rr, toID))
		ent.mu.Unlock()
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		if err := rotationStep("resealed", i+1); err != nil {
			return err
		}
	}
	return nil
}

// resealKey is the update that seals every handle of a key that has no
// part under the new root key yet: the old part stays as it is, the new
// one is sealed by the backend under the staged root key and wrapped
// under the key's next shred key.
func (e *Engine) resealKey(ctx context.Context, op string, rr rootRotator, toID []byte) func(s *keySnap, now time.Time) (edit, struct{}, error) {
	return func(s *keySnap, now time.Time) (edit, struct{}, error) {
		var none struct{}
		if s.destructionDue(now) {
			return edit{}, none, nil
		}
		need := s.gen.isActive() && s.gen.next == nil
		for _, v := range s.versions {
			need = need || v.nextHandle() == nil
		}
		if !need {
			return edit{}, none, nil
		}
		kn := s.rare().kekNext
		if kn == nil {
			var err error
			if kn, err = e.shred.Next(s.tag); err != nil {
				return edit{}, none, wrapErr(op, s.tag, ErrInternal, err)
			}
		}
		ns := s.clone()
		ns.own().kekNext, ns.root = kn, e.rootID
		ed := edit{next: ns}
		reseal := func(plain, stored []byte, ref backend.KeyRef, typ KeyType, convergent bool) (dual, next []byte, err error) {
			h, err := s.open(plain, stored, ref.Purpose, ref.Version)
			if err != nil {
				return nil, nil, wrapErr(op, s.tag, ErrInternal, err)
			}
			next, err = rr.ResealHandle(ctx, &backend.LoadRequest{Ref: ref, Type: typ, Convergent: convergent, Handle: h})
			if err != nil {
				return nil, nil, backendErr(op, s.tag, err)
			}
			w, err := kn.Wrap(next, string(ref.Purpose), ref.Version)
			if err != nil {
				return nil, nil, wrapErr(op, s.tag, ErrInternal, err)
			}
			old, err := pickPart(stored, e.rootID)
			if err != nil {
				return nil, nil, wrapErr(op, s.tag, ErrInternal, err)
			}
			return encodeDual(e.rootID, old, toID, w), next, nil
		}
		ns.versions = slices.Clone(s.versions)
		for i := range ns.versions {
			nv := &ns.versions[i]
			if nv.nextHandle() != nil {
				continue
			}
			var (
				next []byte
				err  error
			)
			ref := backend.KeyRef{KeyTag: s.tag, Version: nv.num, Purpose: backend.PurposeCipher}
			if nv.stored, next, err = reseal(nv.handle, nv.stored, ref, s.typ, s.convergent); err != nil {
				return edit{}, none, err
			}
			nv.setNext(next)
			ed.change.Put(nv.record(s.tag))
		}
		if g := s.gen; g.isActive() && g.next == nil {
			ng := *g
			var err error
			if ng.stored, ng.next, err = reseal(g.handle, g.stored, g.ref(s.tag), RSA2048, false); err != nil {
				return edit{}, none, err
			}
			ns.gen = &ng
			ed.change.Put(ng.record(s.tag))
		}
		return ed, none, nil
	}
}

// switchSnapshots moves every snapshot to the new root key: the handles
// under it and the next shred key. The caller holds guard's write lock,
// so no call runs; loaded keys stay (material does not depend on the
// root key).
func (e *Engine) switchSnapshots(toID []byte) {
	e.rootID = toID
	for _, ent := range e.entries() {
		s := ent.snap.Load()
		if s.state == stateDestroyed {
			continue
		}
		ns := s.clone()
		ns.root = toID
		if s.rare().kekNext != nil {
			ns.kek, ns.wrapped = s.rare().kekNext, true
			ns.setKekNext(nil)
		}
		ns.versions = slices.Clone(s.versions)
		for i := range ns.versions {
			if nv := &ns.versions[i]; nv.nextHandle() != nil {
				nv.handle = nv.nextHandle()
				nv.setNext(nil)
			}
		}
		if g := s.gen; g != nil && g.next != nil {
			ng := *g
			ng.handle, ng.next = g.next, nil
			ns.gen = &ng
		}
		ent.publish(ns)
	}
}

// collapseKey is the update that rewrites a key's dual handles to their
// part for the current root key, and moves the snapshot to shred key kek
// (nil: keep it). The key's other shred key is already gone (promoted
// over, or dropped).
func (e *Engine) collapseKey(kek func(s *keySnap) (*shred.Key, error)) func(s *keySnap, now time.Time) (edit, struct{}, error) {
	return func(s *keySnap, now time.Time) (edit, struct{}, error) {
		var none struct{}
		k, err := kek(s)
		if err != nil {
			return edit{}, none, err
		}
		ns := s.clone()
		ns.kek, ns.root = k, e.rootID
		ns.setKekNext(nil)
		ed := edit{next: ns}
		ns.wrapped = false
		ns.versions = slices.Clone(s.versions)
		for i := range ns.versions {
			v := &s.versions[i]
			nv := &ns.versions[i]
			nv.setNext(nil)
			if isDual(v.stored) {
				if nv.stored, err = pickPart(v.stored, e.rootID); err != nil {
					return edit{}, none, wrapErr("rotate root key", s.tag, ErrInternal, fmt.Errorf("version %d: %w", v.num, err))
				}
				ed.change.Put(nv.record(s.tag))
			}
			ns.wrapped = ns.wrapped || plainHandle(nv.stored) == nil
		}
		if g := s.gen; g != nil {
			ng := *g
			ng.next = nil
			if isDual(g.stored) {
				if ng.stored, err = pickPart(g.stored, e.rootID); err != nil {
					return edit{}, none, wrapErr("rotate root key", s.tag, ErrInternal, fmt.Errorf("token-signing key: %w", err))
				}
				ed.change.Put(ng.record(s.tag))
			}
			ns.wrapped = ns.wrapped || (len(ng.stored) > 0 && plainHandle(ng.stored) == nil)
			ns.gen = &ng
		}
		ns.wrapped = ns.wrapped || ns.kek != nil
		return ed, none, nil
	}
}

// finishRotation ends a switched rotation: every key's next shred key
// replaces its shred key, dual records are rewritten to the new part,
// and the marker goes. The caller has entered.
func (e *Engine) finishRotation(ctx context.Context, op string) error {
	for i, ent := range e.entries() {
		ent.mu.Lock()
		_, err := updateLocked(e, ctx, op, ent, e.collapseKey(func(s *keySnap) (*shred.Key, error) {
			kek := s.kek
			if s.rare().kekNext != nil {
				kek = s.rare().kekNext
			}
			if err := e.shred.Promote(s.tag); err != nil {
				return nil, wrapErr(op, s.tag, ErrInternal, err)
			}
			return kek, nil
		}))
		ent.mu.Unlock()
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		if err := rotationStep("finished", i+1); err != nil {
			return err
		}
	}
	if err := e.bst.EndRotation(); err != nil {
		return wrapErr(op, "", ErrInternal, err)
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: root-key rotation finished")
	return nil
}

// rollbackRotation undoes a rotation that has not switched: the next
// shred keys go first (the new parts then open under nothing), then the
// dual records are rewritten to the old part, then the marker goes. The
// caller has entered.
func (e *Engine) rollbackRotation(ctx context.Context, op string) error {
	if rr, ok := e.be.(rootRotator); ok {
		rr.DropStagedRootKey()
	}
	for _, ent := range e.entries() {
		ent.mu.Lock()
		_, err := updateLocked(e, ctx, op, ent, e.collapseKey(func(s *keySnap) (*shred.Key, error) {
			if err := e.shred.DropNext(s.tag); err != nil {
				return nil, wrapErr(op, s.tag, ErrInternal, err)
			}
			return s.kek, nil
		}))
		ent.mu.Unlock()
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			return err
		}
	}
	if err := e.bst.AbortRotation(); err != nil {
		return wrapErr(op, "", ErrInternal, err)
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: root-key rotation rolled back; the store stays under its root key")
	return nil
}

// recoverRotation, in New, finishes or rolls back a rotation a crash
// interrupted: the directory is under the backend's root key either way
// (the store refused the other). A failure is logged and left to the
// next open or rotation: the Engine works meanwhile.
func (e *Engine) recoverRotation(ctx context.Context) {
	if e.bst == nil || e.shred == nil {
		return
	}
	var err error
	switch e.bst.Rotation() {
	case badgerstore.RotationSwitched:
		e.log.LogAttrs(ctx, slog.LevelInfo, "kms: opened under the new root key of an interrupted root-key rotation; finishing it")
		err = e.finishRotation(ctx, "new")
	case badgerstore.RotationReseal:
		e.log.LogAttrs(ctx, slog.LevelInfo, "kms: opened under the previous root key of an interrupted root-key rotation; rolling it back")
		err = e.rollbackRotation(ctx, "new")
	default:
		return
	}
	if err != nil {
		e.log.LogAttrs(ctx, slog.LevelWarn, "kms: could not complete the recovery of an interrupted root-key rotation; the next open or rotation retries",
			slog.String("error", err.Error()))
	}
}
