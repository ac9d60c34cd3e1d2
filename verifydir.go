package kms

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/shred"
	badgerstore "github.com/pocketkms/kms/internal/store"
)

// VerifyReport is the result of VerifyDirectory.
type VerifyReport struct {
	// Keys and Versions count what was checked; Skipped counts the keys
	// not opened because they are due for destruction (their material
	// may be gone by design).
	Keys, Versions, Skipped int
	// Problems lists every problem found; empty when the directory is
	// sound.
	Problems []VerifyProblem
}

// VerifyProblem is one problem VerifyDirectory found. Problem never holds
// key material.
type VerifyProblem struct {
	KeyTag  string // "" for the store as a whole
	Version uint32 // 0 for the key as a whole
	Problem string
}

// VerifyDirectory checks a data directory written with WithDirectory,
// offline and read-only: nothing in dir is written, created or removed.
// It opens the Badger store read-only (which fails while another process,
// such as a running server, has it open), checks its content against its
// integrity record, decodes every record and checks that they agree, and
// then opens every version's material and every active token-signing key
// with be (each key's shred key first): a wrong root key, a missing shred
// key or a damaged handle is reported per key and version.
//
// It returns an error only when it cannot check at all (the directory
// cannot be opened, including the integrity and root-key check values
// failing); damage found after the open is in the report. A store whose
// records do not decode is one Problem, since nothing after it can be
// checked. be is used, not closed.
func VerifyDirectory(ctx context.Context, be backend.Backend, dir string) (*VerifyReport, error) {
	if be == nil {
		return nil, newErr("verify", "", ErrInvalidArgument, "nil backend")
	}
	if dir == "" {
		return nil, newErr("verify", "", ErrInvalidArgument, "empty directory")
	}
	var check []byte
	if cv, ok := be.(backend.CheckValuer); ok {
		var err error
		if check, err = cv.CheckValue(ctx); err != nil {
			return nil, backendErr("verify", "", err)
		}
	}
	st, err := badgerstore.Open(badgerstore.Options{Dir: dir, ReadOnly: true, Check: check})
	if errors.Is(err, badgerstore.ErrCheckMismatch) {
		return nil, wrapErr("verify", "", ErrBackendMismatch, fmt.Errorf("%w: %w", err, backend.ErrInvalidHandle))
	}
	if err != nil {
		return nil, wrapErr("verify", "", ErrInternal, err)
	}
	defer st.Close()
	sh, err := shred.Open(dir)
	if err != nil {
		return nil, wrapErr("verify", "", ErrInternal, err)
	}
	defer sh.Close()
	e := &Engine{be: be, st: st, shred: sh, clock: systemClock{}}
	rep := &VerifyReport{}
	problem := func(tag string, v uint32, format string, args ...any) {
		rep.Problems = append(rep.Problems, VerifyProblem{KeyTag: tag, Version: v, Problem: fmt.Sprintf(format, args...)})
	}
	c, err := st.Load(ctx)
	if err != nil {
		if isContextErr(err) {
			return nil, canceled("verify", "", err)
		}
		problem("", 0, "%v", err)
		return rep, nil
	}
	now := time.Now()
	names := map[string]string{}
	for _, kd := range c.Keys {
		if err := ctx.Err(); err != nil {
			return nil, canceled("verify", "", err)
		}
		rep.Keys++
		s, err := snapFromData(kd)
		if err != nil {
			problem(kd.Key.Tag, 0, "records: %v", err)
			continue
		}
		names[lower(s.name)] = s.tag
		if s.destructionDue(now) {
			rep.Skipped++
			continue
		}
		if err := e.openHandles(s, now); err != nil {
			problem(s.tag, 0, "%v", err)
			continue
		}
		for _, v := range s.versions {
			rep.Versions++
			if _, err := e.loadKey(ctx, s, v); err != nil {
				problem(s.tag, v.num, "material does not open: %v", err)
			}
		}
		if g := s.gen; g.isActive() {
			h, err := s.open(g.handle, g.stored, backend.PurposeTokenSigning, g.generation)
			if err == nil {
				_, err = be.Load(ctx, &backend.LoadRequest{Ref: g.ref(s.tag), Type: RSA2048, Handle: h})
			}
			if err != nil {
				problem(s.tag, 0, "token-signing key does not open: %v", err)
			}
		}
	}
	if len(c.Names) != len(names) {
		problem("", 0, "name index holds %d names for %d keys", len(c.Names), len(names))
	}
	for name, tag := range c.Names {
		if names[name] != tag {
			problem(tag, 0, "name index entry %q does not match the key", name)
		}
	}
	return rep, nil
}
