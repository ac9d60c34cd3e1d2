package memory

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/atomicfile"
)

// Root-key rotation. The Engine (kms.Engine.RotateRootKey) drives it: it
// stages the new root key, has every stored handle re-sealed under it
// with ResealHandle while the backend keeps sealing and opening under the
// current one, records the switch durably, and then commits the staged
// key, after which the backend seals and opens under the new root key
// only. Keys loaded before the switch keep working: loaded material does
// not depend on the root key.

// ErrNoStagedRootKey: ResealHandle, StagedCheckValue or CommitRootKey was
// called with no root key staged.
var ErrNoStagedRootKey = errors.New("memory: no root key staged for rotation")

// StageRootKey holds newRoot (RootKeySize bytes, copied; the caller may
// clear its slice) as the root key a rotation moves to. Nothing changes
// for Generate, Load or CheckValue until CommitRootKey. Staging again
// replaces the staged key. A wrong size fails with
// backend.ErrInvalidArgument.
func (b *Backend) StageRootKey(newRoot []byte) error {
	if err := b.check(context.Background()); err != nil {
		return fmt.Errorf("memory: stage root key: %w", err)
	}
	k := bytes.Clone(newRoot)
	defer clear(k)
	rk, err := newRootState(k)
	if err != nil {
		return fmt.Errorf("memory: stage root key: %w", err)
	}
	b.staged.Store(rk)
	return nil
}

// StagedCheckValue returns the check value of the staged root key (see
// CheckValue), or ErrNoStagedRootKey.
func (b *Backend) StagedCheckValue(ctx context.Context) ([]byte, error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	rk := b.staged.Load()
	if rk == nil {
		return nil, ErrNoStagedRootKey
	}
	return bytes.Clone(rk.check), nil
}

// ResealHandle opens req.Handle under the current root key, exactly as
// Load would, and returns a handle of the same material for the same
// KeyRef, type and convergent flag sealed under the staged root key. A
// handle that does not open fails with backend.ErrInvalidHandle; with no
// staged key it fails with ErrNoStagedRootKey. The material is cleared
// after use.
func (b *Backend) ResealHandle(ctx context.Context, req *backend.LoadRequest) ([]byte, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("memory: reseal: %w", err)
	}
	if req == nil {
		return nil, fmt.Errorf("memory: reseal: %w: nil request", backend.ErrInvalidArgument)
	}
	rk := b.staged.Load()
	if rk == nil {
		return nil, ErrNoStagedRootKey
	}
	if err := req.Ref.Validate(req.Type, req.Convergent); err != nil {
		return nil, fmt.Errorf("memory: reseal %s: %w", req.Ref, err)
	}
	material, err := b.open(req.Ref, req.Type, req.Convergent, req.Handle)
	if err != nil {
		return nil, fmt.Errorf("memory: reseal %s: %w", req.Ref, backend.ErrInvalidHandle)
	}
	defer clear(material)
	h, err := b.sealUnder(rk, req.Ref, req.Type, req.Convergent, material)
	if err != nil {
		return nil, fmt.Errorf("memory: reseal %s: %w", req.Ref, err)
	}
	return h, nil
}

// CommitRootKey makes the staged root key the current one: from then on
// Generate and ImportKey seal under it, Load opens only handles sealed
// under it, and CheckValue names it. The previous root key is dropped.
// Keys loaded earlier keep working. With no staged key it fails with
// ErrNoStagedRootKey.
func (b *Backend) CommitRootKey() error {
	if err := b.check(context.Background()); err != nil {
		return fmt.Errorf("memory: commit root key: %w", err)
	}
	rk := b.staged.Swap(nil)
	if rk == nil {
		return ErrNoStagedRootKey
	}
	b.root.Store(rk)
	return nil
}

// DropStagedRootKey forgets the staged root key, if any (a rotation that
// is abandoned before its switch).
func (b *Backend) DropStagedRootKey() { b.staged.Store(nil) }

// ReadRootKeyFile reads a root key file as NewFromFile does (same format
// and mode rules) and returns the key; the caller clears it after use.
func ReadRootKeyFile(path string) ([]byte, error) { return readRootKeyFile(path) }

// WriteRootKeyFile replaces the file at path with key (RootKeySize bytes)
// as 64 hexadecimal characters and a newline, mode 0600, atomically and
// durably: it writes path+".tmp", syncs it, renames it over path and syncs
// the directory, so that after a crash path holds the old key or the new
// one, never a mix. Errors never carry the key.
func WriteRootKeyFile(path string, key []byte) error {
	if len(key) != RootKeySize {
		return fmt.Errorf("memory: write root key file: %w: root key must be %d bytes", backend.ErrInvalidArgument, RootKeySize)
	}
	text := make([]byte, hex.EncodedLen(len(key))+1)
	defer clear(text)
	hex.Encode(text, key)
	text[len(text)-1] = '\n'
	if err := atomicfile.Write(filepath.Dir(path), filepath.Base(path), text); err != nil {
		return fmt.Errorf("memory: write root key file %q: %w", path, err)
	}
	return nil
}
