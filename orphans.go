package kms

import (
	"context"
	"log/slog"
	"time"

	"github.com/pocketkms/kms/backend"
)

// SweepReport is what SweepOrphans did.
type SweepReport struct {
	// Removed lists the key material destroyed: the key tag, version (or
	// token generator generation) and purpose it was made for, its type
	// and when the backend created it. It names no secret and no handle.
	Removed []backend.Swept
}

// SweepOrphans destroys key material that the backend holds but no record
// of the store names, created more than grace ago, and reports what it
// destroyed. Such material is left when a process dies between creating
// material (CreateKey, RotateKey, activating or rotating a token
// generator) and committing the record that names it; it is unused but
// takes space in the token.
//
// Only backends that keep material themselves implement
// backend.Sweeper (backend/softhsm); for any other (backend/memory, whose
// material lives in its handles) SweepOrphans returns an empty report.
// The backend considers only material it created itself (for
// backend/softhsm: its own label prefix), never other objects sharing it.
//
// The records are read from the store, not only from this Engine's
// snapshots, so material whose commit this Engine could not confirm and
// keys of other Engines sharing the store are kept; a store that cannot
// be read sweeps nothing. grace protects material whose record is still
// being committed: it must exceed the longest create-to-commit time of
// any Engine on the backend (seconds; an hour is a safe default) plus the
// difference between their clocks, measured on this Engine's clock
// against the creation time the backend recorded with its own (the
// system clock for backend/softhsm). A backend serving the records of
// another store would lose that store's keys: one store per token.
//
// A negative grace fails with ErrInvalidArgument, a store that cannot be
// read with ErrInternal, a backend failure with the class of the
// backend's error (ErrUnavailable for a token that cannot be reached). On
// a backend failure the report still lists what was destroyed.
// SweepOrphans reads the whole store and enumerates the backend once, so
// run it with maintenance (once an hour or a day), not per request.
func (e *Engine) SweepOrphans(ctx context.Context, grace time.Duration) (*SweepReport, error) {
	const op = "sweep orphans"
	if grace < 0 {
		return nil, newErr(op, "", ErrInvalidArgument, "grace must not be negative")
	}
	if err := e.enter(ctx, op); err != nil {
		return nil, err
	}
	defer e.leave()
	return e.sweepOrphans(ctx, op, grace)
}

// sweepOrphans is SweepOrphans for a caller that has entered the Engine
// (Maintain).
func (e *Engine) sweepOrphans(ctx context.Context, op string, grace time.Duration) (*SweepReport, error) {
	report := &SweepReport{}
	sw, ok := e.be.(backend.Sweeper)
	if !ok {
		return report, nil
	}
	before := e.now().Add(-grace)
	keep, err := e.recordedHandles(ctx)
	if err != nil {
		if isContextErr(err) {
			return nil, canceled(op, "", err)
		}
		return nil, wrapErr(op, "", ErrInternal, err)
	}
	removed, err := sw.Sweep(ctx, &backend.SweepRequest{Keep: keep, CreatedBefore: before})
	report.Removed = removed
	for _, r := range removed {
		e.log.LogAttrs(ctx, slog.LevelInfo, "kms: orphaned key material destroyed",
			slog.String("key", r.Ref.String()), slog.String("type", string(r.Type)), slog.Time("created", r.Created))
	}
	if err != nil {
		return report, backendErr(op, "", err)
	}
	return report, nil
}

// recordedHandles returns every handle the records name: those the
// store holds now, then those of this Engine's snapshots, which add
// commits published after the store was read. Material is thus kept if
// any record names it, whatever this Engine has seen of it.
func (e *Engine) recordedHandles(ctx context.Context) ([][]byte, error) {
	c, err := e.st.Load(ctx)
	if err != nil {
		return nil, err
	}
	var keep [][]byte
	for _, kd := range c.Keys {
		for _, v := range kd.Versions {
			keep = append(keep, v.Handle)
		}
		if g := kd.Generator; g != nil && len(g.Handle) > 0 {
			keep = append(keep, g.Handle)
		}
	}
	e.keys.Range(func(_ string, v *keyEntry) bool {
		s := v.snap.Load()
		for _, ver := range s.versions {
			keep = append(keep, ver.handle)
		}
		if s.gen != nil && len(s.gen.handle) > 0 {
			keep = append(keep, s.gen.handle)
		}
		return true
	})
	return keep, nil
}
