package backend

import (
	"context"
	"time"
)

// Sweeper is an optional capability of a backend that keeps key material
// itself, such as a PKCS#11 token, rather than inside its handles. Generate
// creates material before the caller has stored its handle; if the caller
// dies in between, the material stays in the backend and nothing names
// it. Sweep finds such material and destroys it. A backend whose material
// lives only in its handles (backend/memory) has nothing to sweep and does
// not implement Sweeper.
//
// Contract: Sweep considers only material this backend package created,
// which it recognises by its own marking (for backend/softhsm, the
// "pocketkms:" label prefix and the format of the object ID); objects of
// other applications sharing the backend are never listed or destroyed.
// It destroys a piece of material only when all of these hold:
//
//   - no handle in req.Keep names it. Handles are compared by the
//     backend's own identity of the material, not byte for byte, so a
//     kept handle protects its material even when part of it is gone;
//     handles the backend cannot parse name nothing;
//   - the backend knows when it was created, and that was before
//     req.CreatedBefore. Material whose creation time is unknown is kept;
//   - it is not loaded in this process (a loaded Key is in use).
//
// Material being created concurrently may be seen before its handle is
// stored anywhere: the caller protects it by setting CreatedBefore
// earlier than the start of any create-and-record still in flight (a
// grace period longer than the longest Generate-to-commit time, plus any
// clock difference between processes sharing the backend). Every
// material that the caller's records name must be in Keep; material of
// another store sharing the backend would be destroyed, so a backend
// (a token) serves the records of one store.
//
// Errors: ErrInvalidArgument for a nil request or a zero CreatedBefore,
// ErrClosed after Close, ErrUnavailable when the backend cannot be
// reached, the context's error when ctx is done. On an error, the result
// still lists the material destroyed before it.
type Sweeper interface {
	// Sweep destroys the material described above and returns what it
	// destroyed, in no particular order.
	Sweep(ctx context.Context, req *SweepRequest) ([]Swept, error)
}

// SweepRequest is the input of Sweeper.Sweep.
type SweepRequest struct {
	// Keep holds the handle of every piece of material the caller's
	// records name; that material stays, whatever its age.
	Keep [][]byte
	// CreatedBefore: only material created before this time may be
	// destroyed. Zero is refused (ErrInvalidArgument).
	CreatedBefore time.Time
}

// Swept describes a piece of material Sweep destroyed: what it was made
// for, never a secret or a handle.
type Swept struct {
	// Ref is the KeyRef the material was created for.
	Ref KeyRef
	// Type is its key type.
	Type KeyType
	// Created is when the backend created it, by the backend's clock.
	Created time.Time
}
