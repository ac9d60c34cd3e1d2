package kms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/store"
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

// edit is what an update function decides about a key.
type edit struct {
	// next is the snapshot to publish; nil means nothing changes.
	next *keySnap
	// change holds the records written besides the key record, which is
	// always written (and its last revision expected) with them.
	change store.Change
	// made is key material generated for this change: if the commit
	// fails it is destroyed, unless the store cannot tell whether the
	// commit landed (see discardAfter).
	made *backend.DestroyRequest
}

// mutate is the prologue of every trusted-plane change to one key: it
// enters the Engine, then runs update.
func mutate[R any](e *Engine, ctx context.Context, op, keyTag string, fn func(s *keySnap, now time.Time) (edit, R, error)) (R, error) {
	if err := e.enter(ctx, op); err != nil {
		var zero R
		return zero, err
	}
	defer e.leave()
	start := e.startTime()
	r, err := update(e, ctx, op, keyTag, fn)
	if e.watching() {
		return endTrusted(e, ctx, op, keyTag, nil, resultVersion(r), start, r, err)
	}
	return r, err
}

// update changes one key under its lock (the caller has entered): fn
// gets the current snapshot and the time, truncated to the millisecond
// as the store keeps it, and returns its edit and its result. The edit's
// records and the new key record are committed in one atomic, durable
// change, then the snapshot is published.
func update[R any](e *Engine, ctx context.Context, op, keyTag string, fn func(s *keySnap, now time.Time) (edit, R, error)) (R, error) {
	ent, _, err := e.lookup(op, keyTag)
	if err != nil {
		var zero R
		return zero, err
	}
	for attempt := 1; ; attempt++ {
		ent.mu.Lock()
		seen := ent.snap.Load().rev
		r, err := updateLocked(e, ctx, op, ent, fn)
		ent.mu.Unlock()
		// Another process changed the key first. With a change feed,
		// wait for that change to arrive and decide again on the fresh
		// snapshot: the caller sees its change land or a refusal that
		// the new state explains, not a spurious conflict.
		if attempt == conflictAttempts || !errors.Is(err, ErrConflict) || !e.watched || !e.awaitNewer(ctx, ent, seen) {
			return r, err
		}
	}
}

// conflictAttempts bounds how often update decides again after losing a
// race to another process; conflictWait bounds each wait for the feed.
const (
	conflictAttempts = 4
	conflictWait     = time.Second
)

// awaitNewer waits until the key's snapshot is newer than revision rev
// (the feed brought the change that won), and reports whether it is.
func (e *Engine) awaitNewer(ctx context.Context, ent *keyEntry, rev int64) bool {
	deadline := time.Now().Add(conflictWait)
	for ent.snap.Load().rev <= rev {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// updateLocked is update for a caller that holds ent.mu.
func updateLocked[R any](e *Engine, ctx context.Context, op string, ent *keyEntry, fn func(s *keySnap, now time.Time) (edit, R, error)) (R, error) {
	var zero R
	s := ent.snap.Load()
	if s.state == stateDestroyed {
		return zero, newErr(op, s.tag, ErrKeyNotFound, "")
	}
	ed, r, err := fn(s, msTime(e.now().UnixMilli()))
	if err != nil {
		return zero, err
	}
	if ed.next == nil {
		if e.watched {
			// "Nothing to change" was decided on this Engine's view. On a
			// shared store another process may have changed the key and
			// its commit not reached us yet: confirm the view is current
			// (a change that writes nothing and only expects the key's
			// revision), so that the caller's request holds afterwards,
			// or the conflict makes update decide again on fresh state.
			if _, err := e.st.Apply(ctx, (&store.Change{}).Expecting(store.KeyKey(s.tag), s.rev)); err != nil {
				return zero, e.storeErr(op, s.tag, err)
			}
		}
		return r, nil
	}
	if err := e.commit(ctx, op, ent, s, &ed); err != nil {
		return zero, err
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: key updated", slog.String("op", op), slog.String("keyTag", s.tag), slog.String("state", string(ed.next.state)))
	return r, nil
}

// commit writes ed for the key whose current snapshot is s (the caller
// holds ent.mu) and publishes ed.next. The change expects the key record
// at the revision s was built from, so a change made meanwhile by another
// process sharing the store fails it with ErrConflict instead of being
// lost.
func (e *Engine) commit(ctx context.Context, op string, ent *keyEntry, s *keySnap, ed *edit) error {
	c := &ed.change
	addHistory(ctx, c, op, s, ed.next, e.now())
	c.Put(ed.next.keyRecord()).Expecting(store.KeyKey(s.tag), s.rev)
	rev, err := e.st.Apply(ctx, c)
	if err != nil {
		if ed.made != nil {
			e.discardAfter(ctx, err, ed.made)
		}
		return e.storeErr(op, s.tag, err)
	}
	ed.next.rev = rev
	ent.publish(ed.next)
	return nil
}

// storeErr maps a failed commit to the Engine's error classes.
func (e *Engine) storeErr(op, tag string, err error) *Error {
	switch {
	case errors.Is(err, store.ErrConflict):
		return wrapErr(op, tag, ErrConflict, err)
	case isContextErr(err) && !errors.Is(err, store.ErrUncertain):
		return canceled(op, tag, err)
	}
	return wrapErr(op, tag, ErrInternal, err)
}

// withState returns a copy of s in state st, changed at now.
func (s *keySnap) withState(st KeyState, now time.Time) *keySnap {
	ns := s.clone()
	ns.state, ns.stateChangedAt = st, stampOf(now)
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
// An empty request changes nothing and returns the key. Names are unique
// case-insensitively; the store decides (see package store), so a rename
// racing a create of the same name elsewhere fails with ErrAlreadyExists.
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
	k, err := mutate(e, ctx, op, keyTag, func(s *keySnap, now time.Time) (edit, *Key, error) {
		ns := s.clone()
		var ed edit
		if req.State != nil && *req.State != s.state {
			if s.state == StateRevoked {
				return ed, nil, newErr(op, s.tag, ErrInvalidState, "deletion is pending; cancel it first")
			}
			ns.state, ns.stateChangedAt, ed.next = *req.State, stampOf(now), ns
		}
		if req.Memo != nil && *req.Memo != s.rare().memo {
			ns.own().memo, ed.next = *req.Memo, ns
		}
		if req.Name != nil {
			if lower(*req.Name) == lower(s.name) {
				return ed, nil, newErr(op, s.tag, ErrAlreadyExists, "the key already has this name")
			}
			ns.name, ed.next = *req.Name, ns
			ed.change.Delete(store.NameKey(s.name)).
				Put(&store.NameRecord{Name: lower(ns.name), Tag: s.tag}).
				Expecting(store.NameKey(ns.name), 0)
		}
		if ed.next == nil {
			return ed, s.info(), nil
		}
		return ed, ns.info(), nil
	})
	if errors.Is(err, ErrConflict) && req.Name != nil {
		return nil, newErr(op, keyTag, ErrAlreadyExists, "a key with this name exists")
	}
	return k, err
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
	return mutate(e, ctx, op, keyTag, func(s *keySnap, now time.Time) (edit, *Key, error) {
		if s.state == StateRevoked {
			return edit{}, nil, newErr(op, s.tag, ErrInvalidState, "deletion is already pending")
		}
		ns := s.withState(StateRevoked, now)
		ns.own().destroyAt = stampOf(now.Add(DeletionDelay))
		return edit{next: ns}, ns.info(), nil
	})
}

// CancelKeyDeletion cancels a pending deletion; the key becomes DISABLED
// (not ENABLED), as on NAVER. A key that is not REVOKED fails with
// ErrInvalidState, and so does one whose destruction time has come, even
// if Maintain has not run since: NAVER's periodic job may leave a key
// cancellable a little past its time, but here the time is the promise,
// however long the process was down or maintenance was off.
func (e *Engine) CancelKeyDeletion(ctx context.Context, keyTag string) (*Key, error) {
	const op = "cancel key deletion"
	return mutate(e, ctx, op, keyTag, func(s *keySnap, now time.Time) (edit, *Key, error) {
		if s.state != StateRevoked {
			return edit{}, nil, newErr(op, s.tag, ErrInvalidState, "no deletion is pending")
		}
		if s.destructionDue(now) {
			return edit{}, nil, newErr(op, s.tag, ErrInvalidState, "the destruction time has passed")
		}
		ns := s.withState(StateDisabled, now)
		ns.own().destroyAt = 0
		return edit{next: ns}, ns.info(), nil
	})
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
	return mutate(e, ctx, op, keyTag, func(s *keySnap, now time.Time) (edit, *KeyVersion, error) {
		if !s.enabled() {
			return edit{}, nil, newErr(op, s.tag, ErrKeyNotEnabled, "")
		}
		v := s.version(version)
		if v == nil {
			return edit{}, nil, newErr(op, s.tag, ErrVersionNotFound, fmt.Sprintf("version %d", version))
		}
		if v.state == want {
			info := s.versionInfo(v)
			return edit{}, &info, nil
		}
		if int(v.num) == len(s.versions) {
			return edit{}, nil, newErr(op, s.tag, ErrInvalidState, "the current version's state cannot change")
		}
		nv := *v
		nv.state, nv.stateChangedAt = want, stampOf(now)
		ns := s.clone()
		ns.versions = slices.Clone(s.versions)
		ns.versions[version-1] = nv
		info := ns.versionInfo(&nv)
		ed := edit{next: ns}
		ed.change.Put(nv.record(s.tag))
		return ed, &info, nil
	})
}

// SetKeyMinDecryptionVersion sets the lowest version of a key that still
// decrypts and re-encrypts (Vault's min_decryption_version): ciphertexts
// of lower versions fail with ErrVersionBelowMinimum on both planes,
// without disabling the versions one by one (they still verify and show
// their public keys). version is 1..the current version, or 0 to let every
// version decrypt again; it may be lowered as well as raised, since the
// versions' material is kept. The key must be ENABLED.
func (e *Engine) SetKeyMinDecryptionVersion(ctx context.Context, keyTag string, version uint32) (*Key, error) {
	const op = "set key min decryption version"
	return mutate(e, ctx, op, keyTag, func(s *keySnap, _ time.Time) (edit, *Key, error) {
		if !s.enabled() {
			return edit{}, nil, newErr(op, s.tag, ErrKeyNotEnabled, "")
		}
		if int(version) > len(s.versions) {
			return edit{}, nil, newErr(op, s.tag, ErrInvalidArgument, fmt.Sprintf("version %d is above the current version %d", version, len(s.versions)))
		}
		if version == s.minDecrypt {
			return edit{}, s.info(), nil
		}
		ns := s.clone()
		ns.minDecrypt = version
		return edit{next: ns}, ns.info(), nil
	})
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
	return mutate(e, ctx, op, keyTag, func(s *keySnap, now time.Time) (edit, *Key, error) {
		if !s.enabled() {
			return edit{}, nil, newErr(op, s.tag, ErrKeyNotEnabled, "")
		}
		r := s.rare().rotation
		if req.Enabled != nil {
			r.enabled = *req.Enabled
		}
		if req.PeriodDays != nil {
			if !r.enabled {
				return edit{}, nil, newErr(op, s.tag, ErrInvalidArgument, "periodDays needs rotation enabled")
			}
			r.periodDays = *req.PeriodDays
		}
		if r.enabled && r.periodDays == 0 {
			r.periodDays = DefaultRotationPeriodDays
		}
		if r.enabled == s.rare().rotation.enabled && r.periodDays == s.rare().rotation.periodDays {
			return edit{}, s.info(), nil
		}
		r.set, r.nextAt = true, 0
		if r.enabled {
			r.nextAt = stampOf(now.Add(days(r.periodDays)))
		}
		ns := s.clone()
		ns.own().rotation = r
		return edit{next: ns}, ns.info(), nil
	})
}

// Maintain does the time-driven work that is due at the Engine clock's
// now: it destroys REVOKED keys whose DestroyAt has passed, rotates
// ENABLED keys whose auto-rotation is due (once, however many periods were
// missed, e.g. while the process was down), and, at most once per
// WithOrphanSweep grace, destroys leftover backend material no record
// names (SweepOrphans). The Engine calls it in the
// background (see WithMaintenanceInterval); tests call it directly. It
// returns the errors it met, joined; work that failed is retried on the
// next call.
func (e *Engine) Maintain(ctx context.Context) error {
	const op = "maintain"
	if err := e.enter(ctx, op); err != nil {
		return err
	}
	defer e.leave()
	now := msTime(e.now().UnixMilli())
	var due []*keyEntry
	e.keys.Range(func(_ string, ent *keyEntry) bool {
		if s := ent.snap.Load(); s.destructionDue(now) || s.rotationDue(now) {
			due = append(due, ent)
		}
		return true
	})
	var errs []error
	for _, ent := range due {
		if err := ctx.Err(); err != nil {
			return canceled(op, "", errors.Join(append(errs, err)...))
		}
		if err := e.maintainKey(ctx, ent, now); err != nil {
			errs = append(errs, err)
		}
	}
	// Leftover backend material, at most once per grace period.
	if g := e.orphanGrace; g > 0 {
		last := e.lastSweep.Load()
		if (last == 0 || now.Sub(time.UnixMilli(last)) >= g) && e.lastSweep.CompareAndSwap(last, now.UnixMilli()) {
			if _, err := e.sweepOrphans(ctx, op, g); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Rotations asked for by encryption budget warnings, then the usage
	// counters (usage.go).
	if err := e.budgetRotations(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := e.flushUsage(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (e *Engine) maintainKey(ctx context.Context, ent *keyEntry, now time.Time) error {
	ent.mu.Lock()
	defer ent.mu.Unlock()
	s := ent.snap.Load()
	ctx = withPlane(ctx, PlaneSystem, systemCaller, noAddr)
	start := e.startTime()
	switch {
	case s.destructionDue(now):
		err := e.destroyLocked(ctx, ent, s)
		if e.watching() {
			_, err = endTrusted(e, ctx, "destroy key", s.tag, nil, 0, start, struct{}{}, err)
		}
		return err
	case s.rotationDue(now):
		const op = "auto-rotate key"
		r, err := updateLocked(e, ctx, op, ent, e.rotation(ctx, op))
		if e.watching() {
			_, err = endTrusted(e, ctx, op, s.tag, nil, resultVersion(r), start, r, err)
		}
		if !errors.Is(err, ErrVersionLimit) {
			return err
		}
		// Nothing more can be done until versions are possible again:
		// push the schedule a period on and say so once per period.
		e.log.LogAttrs(ctx, slog.LevelWarn, "kms: auto-rotation skipped: version limit reached", slog.String("keyTag", s.tag))
		_, err = updateLocked(e, ctx, op, ent, func(s *keySnap, now time.Time) (edit, struct{}, error) {
			ns := s.clone()
			ns.own().rotation.nextAt = stampOf(now.Add(days(ns.rare().rotation.periodDays)))
			return edit{next: ns}, struct{}{}, nil
		})
		return err
	}
	return nil
}

// destroyLocked destroys a key: first its material in the backend (every
// version and the token-signing key), then its shred key (with a Badger
// directory; see shredkeys.go), then its records in one change. That
// order never orphans material: if a step fails, or the process dies
// before the records go, the key stays REVOKED and past its time (it can
// no longer be cancelled) and the next Maintain does the rest; backends
// treat destroying what is gone as success. The shred key goes after the
// backend material because a backend that keeps material (an HSM) needs
// the opened handle to find it, and before the records so that no copy
// of the sealed handles Badger keeps opens after the records are gone. A
// destruction interrupted after the shred key is finished without the
// backend step, which had succeeded (see destroyHandles). The caller
// holds ent.mu.
func (e *Engine) destroyLocked(ctx context.Context, ent *keyEntry, s *keySnap) error {
	const op = "destroy key"
	tag := s.tag
	handles, genHandle, err := e.destroyHandles(ctx, s)
	if err != nil {
		return wrapErr(op, tag, ErrInternal, fmt.Errorf("the key stays pending deletion and the next maintenance run retries: %w", err))
	}
	var errs []error
	c := &store.Change{}
	for i, v := range s.versions {
		c.Delete(store.VersionKey(tag, v.num))
		if handles[i] == nil {
			continue
		}
		if err := e.be.Destroy(ctx, cipherMaterial(tag, v.num, s.typ, handles[i])); err != nil {
			errs = append(errs, fmt.Errorf("version %d: %w", v.num, err))
		}
	}
	if s.gen.isActive() && genHandle != nil {
		if err := e.be.Destroy(ctx, &backend.DestroyRequest{Ref: s.gen.ref(tag), Type: RSA2048, Handle: genHandle}); err != nil {
			errs = append(errs, fmt.Errorf("token-signing key: %w", err))
		}
	}
	if len(errs) > 0 {
		return wrapErr(op, tag, ErrInternal, fmt.Errorf("the backend could not destroy the key material; the key stays pending deletion and the next maintenance run retries: %w", errors.Join(errs...)))
	}
	if e.shred != nil {
		if err := e.shred.Delete(tag); err != nil {
			return wrapErr(op, tag, ErrInternal, fmt.Errorf("could not delete the key's shred key; the key stays pending deletion and the next maintenance run retries: %w", err))
		}
	}
	c.Delete(store.NameKey(s.name), store.GeneratorKey(tag), store.ACLKey(tag), store.KeyKey(tag), store.UsageKey(tag)).
		Expecting(store.KeyKey(tag), s.rev)
	if _, err := e.st.Apply(ctx, c); err != nil {
		return e.storeErr(op, tag, err)
	}
	e.forget(ent, s)
	e.dropHistory(ctx, s)
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: key destroyed", slog.String("keyTag", tag))
	return nil
}

// forget drops a destroyed key from the Engine: out of the map first, so
// no new lookup finds it; a caller that looked it up before and waits for
// ent.mu sees the tombstone.
func (e *Engine) forget(ent *keyEntry, s *keySnap) {
	e.keys.Delete(s.tag)
	if ent.usage.rotate.Swap(0) != 0 {
		e.usage.rotations.Add(-1) // a budget rotation no longer due
	}
	ts := s.clone()
	ts.state = stateDestroyed
	ent.publish(ts)
	if s.gen.isActive() {
		e.tokens.DeleteGenerator(s.gen.id)
	}
}
