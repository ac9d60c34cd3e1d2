package kms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/store"
)

// Lifecycle constants (NAVER's).
const (
	// DeletionDelay is how long after RequestKeyDeletion a key is destroyed.
	DeletionDelay = 72 * time.Hour
	// DefaultRotationPeriodDays is the auto-rotation period when none is given.
	DefaultRotationPeriodDays = 90
	// MaxRotationPeriodDays is the longest auto-rotation period.
	MaxRotationPeriodDays = 730
)

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

func validatePeriod(p int) error {
	if p < 1 || p > MaxRotationPeriodDays {
		return fmt.Errorf("rotation period must be 1..%d days", MaxRotationPeriodDays)
	}
	return nil
}

// update applies a change to one key under its lock: fn gets the current
// snapshot and returns the new one (or the same one for no change) and
// the extra records to write. The key record of the new snapshot is
// written with them in one synced transaction, then the snapshot is
// published.
func (e *Engine) update(ctx context.Context, op, keyTag string, fn func(s *keySnap, now time.Time) (*keySnap, func(*store.Txn) error, error)) (*keySnap, error) {
	return e.updateThen(ctx, op, keyTag, fn, nil)
}

// updateThen is update with published, which runs after a change is
// committed and published, still under the key's lock, so that state kept
// outside the snapshot (the limiter) follows the commits in their order.
func (e *Engine) updateThen(ctx context.Context, op, keyTag string, fn func(s *keySnap, now time.Time) (*keySnap, func(*store.Txn) error, error), published func(*keySnap)) (*keySnap, error) {
	if !e.enter() {
		return nil, newErr(op, "", ErrClosed, "")
	}
	defer e.leave()
	ent, _, err := e.lookup(op, keyTag)
	if err != nil {
		return nil, err
	}
	ent.mu.Lock()
	defer ent.mu.Unlock()
	s := ent.snap.Load()
	if s.rec.State == stateDestroyed {
		return nil, newErr(op, s.rec.Tag, ErrKeyNotFound, "")
	}
	ns, writes, err := fn(s, e.now())
	if err != nil {
		return nil, err
	}
	if ns == s {
		return s, nil
	}
	if err := e.st.Update(func(tx *store.Txn) error {
		if err := tx.PutKey(&ns.rec); err != nil {
			return err
		}
		if writes != nil {
			return writes(tx)
		}
		return nil
	}); err != nil {
		return nil, wrapErr(op, s.rec.Tag, ErrInternal, err)
	}
	ent.snap.Store(ns)
	if published != nil {
		published(ns)
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: key updated", slog.String("op", op), slog.String("keyTag", s.rec.Tag), slog.String("state", ns.rec.State))
	return ns, nil
}

// stateDestroyed marks the last snapshot of a destroyed key, for callers
// that still hold its entry.
const stateDestroyed = "DESTROYED"

// withState returns a copy of s whose key record is rec.
func (s *keySnap) withRec(rec store.KeyRecord) *keySnap {
	ns := s.clone()
	ns.rec = rec
	return ns
}

// UpdateKeyRequest is a merge patch of a key: nil fields stay unchanged.
type UpdateKeyRequest struct {
	// Name renames the key (same rules as CreateKey). Renaming to the
	// current name or a case variant of it fails with ErrAlreadyExists,
	// as on NAVER.
	Name *string
	// Memo replaces the memo; an empty string clears it.
	Memo *string
	// State moves the key between StateEnabled and StateDisabled only.
	State *KeyState
}

// UpdateKey changes a key's name, memo or state (ENABLED ↔ DISABLED).
// An empty request changes nothing and returns the key.
func (e *Engine) UpdateKey(ctx context.Context, keyTag string, req UpdateKeyRequest) (*Key, error) {
	const op = "update key"
	if req.Name != nil {
		if err := validateName(*req.Name); err != nil {
			return nil, newErr(op, "", ErrInvalidArgument, err.Error())
		}
	}
	if req.Memo != nil {
		if err := validateMemo(*req.Memo); err != nil {
			return nil, newErr(op, "", ErrInvalidArgument, err.Error())
		}
	}
	if req.State != nil && *req.State != StateEnabled && *req.State != StateDisabled {
		return nil, newErr(op, "", ErrInvalidArgument, "state must be ENABLED or DISABLED")
	}
	if req.Name != nil {
		// The name index is shared by all keys: hold its lock around the
		// key's own lock (always in this order).
		e.createMu.Lock()
		defer e.createMu.Unlock()
	}
	var oldName string
	s, err := e.update(ctx, op, keyTag, func(s *keySnap, now time.Time) (*keySnap, func(*store.Txn) error, error) {
		rec := s.rec
		changed := false
		var writes func(*store.Txn) error
		if req.State != nil && string(*req.State) != rec.State {
			if KeyState(rec.State) == StateRevoked {
				return nil, nil, newErr(op, rec.Tag, ErrInvalidState, "deletion is pending; cancel it first")
			}
			rec.State, rec.StateChangedAt, changed = string(*req.State), now.UnixMilli(), true
		}
		if req.Memo != nil && *req.Memo != rec.Memo {
			rec.Memo, changed = *req.Memo, true
		}
		if req.Name != nil {
			if lower(*req.Name) == lower(rec.Name) {
				return nil, nil, newErr(op, rec.Tag, ErrAlreadyExists, "the key already has this name")
			}
			if _, taken := e.names[lower(*req.Name)]; taken {
				return nil, nil, newErr(op, rec.Tag, ErrAlreadyExists, "a key with this name exists")
			}
			oldName = rec.Name
			rec.Name, changed = *req.Name, true
			writes = func(tx *store.Txn) error {
				if err := tx.ReleaseName(oldName); err != nil {
					return err
				}
				return tx.ClaimName(rec.Name, rec.Tag)
			}
		}
		if !changed {
			return s, nil, nil
		}
		return s.withRec(rec), writes, nil
	})
	if err != nil {
		if errors.Is(err, store.ErrNameTaken) {
			return nil, newErr(op, keyTag, ErrAlreadyExists, "a key with this name exists")
		}
		return nil, err
	}
	if oldName != "" {
		delete(e.names, lower(oldName))
		e.names[lower(s.rec.Name)] = s.rec.Tag
	}
	return s.info(), nil
}

// EnableKey enables a DISABLED key; every version returns to its own
// state. Enabling an ENABLED key changes nothing; a REVOKED key cannot be
// enabled (ErrInvalidState): cancel its deletion first.
func (e *Engine) EnableKey(ctx context.Context, keyTag string) (*Key, error) {
	st := StateEnabled
	return e.UpdateKey(ctx, keyTag, UpdateKeyRequest{State: &st})
}

// DisableKey disables a key: every operation on it fails with
// ErrKeyNotEnabled until it is enabled again. Version states are kept.
func (e *Engine) DisableKey(ctx context.Context, keyTag string) (*Key, error) {
	st := StateDisabled
	return e.UpdateKey(ctx, keyTag, UpdateKeyRequest{State: &st})
}

// RequestKeyDeletion schedules an ENABLED or DISABLED key for destruction
// DeletionDelay (72 h) from now; it becomes REVOKED and serves nothing.
// The time is fixed; CancelKeyDeletion undoes the request until then, and
// Maintain destroys the key at its first run from then on.
func (e *Engine) RequestKeyDeletion(ctx context.Context, keyTag string) (*Key, error) {
	const op = "request key deletion"
	s, err := e.update(ctx, op, keyTag, func(s *keySnap, now time.Time) (*keySnap, func(*store.Txn) error, error) {
		if KeyState(s.rec.State) == StateRevoked {
			return nil, nil, newErr(op, s.rec.Tag, ErrInvalidState, "deletion is already pending")
		}
		rec := s.rec
		rec.State, rec.StateChangedAt = string(StateRevoked), now.UnixMilli()
		rec.DestroyAt = now.Add(DeletionDelay).UnixMilli()
		return s.withRec(rec), nil, nil
	})
	if err != nil {
		return nil, err
	}
	return s.info(), nil
}

// CancelKeyDeletion cancels a pending deletion; the key becomes DISABLED
// (not ENABLED), as on NAVER. A key that is not REVOKED fails with
// ErrInvalidState, and so does one whose destruction time has come, even
// if Maintain has not run since: NAVER's periodic job may leave a key
// cancellable a little past its time, but here the time is the promise,
// however long the process was down or maintenance was off.
func (e *Engine) CancelKeyDeletion(ctx context.Context, keyTag string) (*Key, error) {
	const op = "cancel key deletion"
	s, err := e.update(ctx, op, keyTag, func(s *keySnap, now time.Time) (*keySnap, func(*store.Txn) error, error) {
		if KeyState(s.rec.State) != StateRevoked {
			return nil, nil, newErr(op, s.rec.Tag, ErrInvalidState, "no deletion is pending")
		}
		if s.rec.DestroyAt <= now.UnixMilli() {
			return nil, nil, newErr(op, s.rec.Tag, ErrInvalidState, "the destruction time has passed")
		}
		rec := s.rec
		rec.State, rec.StateChangedAt, rec.DestroyAt = string(StateDisabled), now.UnixMilli(), 0
		return s.withRec(rec), nil, nil
	})
	if err != nil {
		return nil, err
	}
	return s.info(), nil
}

// EnableKeyVersion enables a version again: it decrypts, re-encrypts,
// verifies and shows its public key once more.
func (e *Engine) EnableKeyVersion(ctx context.Context, keyTag string, version uint32) (*KeyVersion, error) {
	return e.setVersionState(ctx, "enable key version", keyTag, version, VersionEnabled)
}

// DisableKeyVersion disables a version: it no longer decrypts,
// re-encrypts, verifies or shows its public key. The current version
// cannot be disabled (ErrInvalidState); versions of a key that is not
// ENABLED cannot be changed (ErrKeyNotEnabled).
func (e *Engine) DisableKeyVersion(ctx context.Context, keyTag string, version uint32) (*KeyVersion, error) {
	return e.setVersionState(ctx, "disable key version", keyTag, version, VersionDisabled)
}

func (e *Engine) setVersionState(ctx context.Context, op, keyTag string, version uint32, want VersionState) (*KeyVersion, error) {
	var out KeyVersion
	_, err := e.update(ctx, op, keyTag, func(s *keySnap, now time.Time) (*keySnap, func(*store.Txn) error, error) {
		tag := s.rec.Tag
		if KeyState(s.rec.State) != StateEnabled {
			return nil, nil, newErr(op, tag, ErrKeyNotEnabled, "")
		}
		v := s.version(version)
		if v == nil {
			return nil, nil, newErr(op, tag, ErrVersionNotFound, fmt.Sprintf("version %d", version))
		}
		out = s.versionInfo(v)
		if VersionState(v.rec.State) == want {
			return s, nil, nil
		}
		if out.Current {
			return nil, nil, newErr(op, tag, ErrInvalidState, "the current version's state cannot change")
		}
		vrec := v.rec
		vrec.State, vrec.StateChangedAt = string(want), now.UnixMilli()
		nv := new(versionSnap)
		*nv = *v // keeps what is derived from the record: ad, pub, the loaded key
		nv.rec = vrec
		versions := slices.Clone(s.versions)
		versions[version-1] = nv
		ns := s.clone()
		ns.versions = versions
		out = ns.versionInfo(nv)
		return ns, func(tx *store.Txn) error { return tx.PutVersion(&vrec) }, nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// RotationUpdate is a merge patch of the auto-rotation setting, applied
// with NAVER's rules: Enabled is applied before PeriodDays; PeriodDays may
// only be given when rotation ends up on; turning rotation off keeps the
// stored period; turning it on without a period reuses the stored one, or
// 90 days if none is stored; an empty update changes nothing.
type RotationUpdate struct {
	Enabled    *bool
	PeriodDays *int
}

// UpdateKeyRotation changes an ENABLED key's auto-rotation setting. The
// next rotation is due one period after the change.
func (e *Engine) UpdateKeyRotation(ctx context.Context, keyTag string, req RotationUpdate) (*Key, error) {
	const op = "update key rotation"
	if req.PeriodDays != nil {
		if err := validatePeriod(*req.PeriodDays); err != nil {
			return nil, newErr(op, "", ErrInvalidArgument, err.Error())
		}
	}
	s, err := e.update(ctx, op, keyTag, func(s *keySnap, now time.Time) (*keySnap, func(*store.Txn) error, error) {
		tag := s.rec.Tag
		if KeyState(s.rec.State) != StateEnabled {
			return nil, nil, newErr(op, tag, ErrKeyNotEnabled, "")
		}
		var r store.RotationRecord
		if s.rec.Rotation != nil {
			r = *s.rec.Rotation
		}
		old := r
		if req.Enabled != nil {
			r.Enabled = *req.Enabled
		}
		if req.PeriodDays != nil {
			if !r.Enabled {
				return nil, nil, newErr(op, tag, ErrInvalidArgument, "periodDays needs rotation enabled")
			}
			r.PeriodDays = *req.PeriodDays
		}
		if r.Enabled && r.PeriodDays == 0 {
			r.PeriodDays = DefaultRotationPeriodDays
		}
		if r.Enabled == old.Enabled && r.PeriodDays == old.PeriodDays {
			return s, nil, nil
		}
		if r.Enabled {
			r.NextAt = now.Add(days(r.PeriodDays)).UnixMilli()
		} else {
			r.NextAt = 0
		}
		rec := s.rec
		rec.Rotation = &r
		return s.withRec(rec), nil, nil
	})
	if err != nil {
		return nil, err
	}
	return s.info(), nil
}

// Maintain does the time-driven work that is due at the Engine clock's
// now: it destroys REVOKED keys whose DestroyAt has passed and rotates
// ENABLED keys whose auto-rotation is due (once, however many periods were
// missed, e.g. while the process was down). The Engine calls it in the
// background (see WithMaintenanceInterval); tests call it directly. It
// returns the errors it met, joined; work that failed is retried on the
// next call.
func (e *Engine) Maintain(ctx context.Context) error {
	if !e.enter() {
		return newErr("maintain", "", ErrClosed, "")
	}
	defer e.leave()
	now := e.now().UnixMilli()
	var due []*keyEntry
	e.keys.Range(func(_, v any) bool {
		ent := v.(*keyEntry)
		s := ent.snap.Load()
		switch {
		case KeyState(s.rec.State) == StateRevoked && s.rec.DestroyAt <= now:
			due = append(due, ent)
		case KeyState(s.rec.State) == StateEnabled && s.rec.Rotation != nil && s.rec.Rotation.Enabled && s.rec.Rotation.NextAt <= now:
			due = append(due, ent)
		}
		return true
	})
	var errs []error
	for _, ent := range due {
		if err := ctx.Err(); err != nil {
			return wrapErr("maintain", "", ErrInternal, errors.Join(append(errs, err)...))
		}
		if err := e.maintainKey(ctx, ent, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) maintainKey(ctx context.Context, ent *keyEntry, now int64) error {
	// Destruction edits the name index: take its lock first.
	e.createMu.Lock()
	defer e.createMu.Unlock()
	ent.mu.Lock()
	defer ent.mu.Unlock()
	s := ent.snap.Load()
	switch {
	case KeyState(s.rec.State) == StateRevoked && s.rec.DestroyAt <= now:
		return e.destroyLocked(ctx, ent, s)
	case KeyState(s.rec.State) == StateEnabled && s.rec.Rotation != nil && s.rec.Rotation.Enabled && s.rec.Rotation.NextAt <= now:
		_, err := e.rotateLocked(ctx, "auto-rotate key", ent)
		if errors.Is(err, ErrVersionLimit) {
			// Nothing more can be done until versions are possible again:
			// push the schedule a period on and say so once per period.
			e.log.LogAttrs(ctx, slog.LevelWarn, "kms: auto-rotation skipped: version limit reached", slog.String("keyTag", s.rec.Tag))
			rec := s.rec
			r := *rec.Rotation
			r.NextAt = e.now().Add(days(r.PeriodDays)).UnixMilli()
			rec.Rotation = &r
			if err := e.st.Update(func(tx *store.Txn) error { return tx.PutKey(&rec) }); err != nil {
				return wrapErr("auto-rotate key", s.rec.Tag, ErrInternal, err)
			}
			ent.snap.Store(s.withRec(rec))
			return nil
		}
		return err
	}
	return nil
}

// destroyLocked destroys a key: first its material in the backend (every
// version and the token-signing key), then its records in one transaction.
// That order never orphans material: if a destruction fails, or the
// process dies before the records go, the key stays REVOKED and past its
// time (it can no longer be cancelled) and the next Maintain does both
// steps again; backends treat destroying what is gone as success. The
// caller holds createMu and ent.mu.
func (e *Engine) destroyLocked(ctx context.Context, ent *keyEntry, s *keySnap) error {
	const op = "destroy key"
	tag := s.rec.Tag
	var errs []error
	nums := make([]uint32, len(s.versions))
	for i, v := range s.versions {
		nums[i] = v.rec.Version
		if err := e.be.Destroy(ctx, &backend.DestroyRequest{
			Ref:  backend.KeyRef{KeyTag: tag, Version: v.rec.Version, Purpose: backend.PurposeCipher},
			Type: s.typ, Handle: v.rec.Handle,
		}); err != nil {
			errs = append(errs, fmt.Errorf("version %d: %w", v.rec.Version, err))
		}
	}
	if s.gen.active() {
		if err := e.be.Destroy(ctx, &backend.DestroyRequest{Ref: s.gen.ref(), Type: RSA2048, Handle: s.gen.rec.Handle}); err != nil {
			errs = append(errs, fmt.Errorf("token-signing key: %w", err))
		}
	}
	if len(errs) > 0 {
		return wrapErr(op, tag, ErrInternal, fmt.Errorf("the backend could not destroy the key material; the key stays pending deletion and the next maintenance run retries: %w", errors.Join(errs...)))
	}
	if err := e.st.Update(func(tx *store.Txn) error {
		if err := tx.ReleaseName(s.rec.Name); err != nil {
			return err
		}
		return tx.DeleteKey(tag, nums)
	}); err != nil {
		return wrapErr(op, tag, ErrInternal, err)
	}
	// Out of the map first, so no new lookup finds it; a caller that
	// looked it up before and waits for ent.mu sees the tombstone.
	e.keys.Delete(tag)
	rec := s.rec
	rec.State = stateDestroyed
	ent.snap.Store(s.withRec(rec))
	delete(e.names, lower(s.rec.Name))
	if s.gen.active() {
		e.tokens.DeleteGenerator(s.gen.rec.ID)
	}
	e.limiter.ClearLimit(tag)
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: key destroyed", slog.String("keyTag", tag))
	return nil
}
