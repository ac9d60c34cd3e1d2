package kms

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
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
// It returns an error only when it cannot check at all: dir is not a
// directory, cannot be read (permissions), or is in use by another
// process or by an Engine of this one (the error's text says so).
// Everything else is a finding in the report: a store that does not open
// (content not matching its integrity record, a damaged table, a schema
// too new), a root key that is not the store's (its check value differs:
// one problem wrapping ErrBackendMismatch's text), records that do not
// decode (one problem, since nothing after them can be checked), a key's
// records that disagree, and material that does not open. be is used,
// not closed.
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
	rep := &VerifyReport{}
	problem := func(tag string, v uint32, format string, args ...any) {
		rep.Problems = append(rep.Problems, VerifyProblem{KeyTag: tag, Version: v, Problem: fmt.Sprintf(format, args...)})
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return nil, wrapErr("verify", "", ErrInvalidArgument, fmt.Errorf("store directory %s: %w", dir, err))
	}
	st, err := badgerstore.Open(badgerstore.Options{Dir: dir, ReadOnly: true, Check: check})
	switch {
	case err == nil:
	case errors.Is(err, badgerstore.ErrInUse), errors.Is(err, badgerstore.ErrLocked), strings.Contains(err.Error(), "Cannot acquire directory lock"),
		errors.Is(err, fs.ErrPermission):
		// Not a finding: the check could not run.
		return nil, wrapErr("verify", "", ErrInternal, err)
	case errors.Is(err, badgerstore.ErrCheckMismatch):
		problem("", 0, "%v: the root key does not open this store's key material (%v)", ErrBackendMismatch, err)
		return rep, nil
	default:
		problem("", 0, "store does not open: %v", err)
		return rep, nil
	}
	defer st.Close()
	sh, err := shred.Open(dir)
	if err != nil {
		return nil, wrapErr("verify", "", ErrInternal, err)
	}
	defer sh.Close()
	e := &Engine{be: be, st: st, shred: sh, clock: systemClock{}}
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
		for i := range s.versions {
			v := &s.versions[i]
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
