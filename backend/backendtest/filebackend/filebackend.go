// Package filebackend is a [backend.Backend] for tests that keeps software
// keys in files, one file per piece of material, in a state directory.
// It exists to show what a new backend takes: this one package, and a test
// file whose only test is one call to backendtest.Run. Nothing else in the
// module knows about it.
//
// Start with [Open], which opens (and creates) the state directory.
//
// It is NOT for real keys: the material lies in the clear in its files
// (mode 0600), readable by anyone who can read the directory or its
// backups. Use backend/memory or backend/softhsm.
//
// # Handles and files
//
// A handle is a reference, not material: a format byte (1) and a random
// 16-byte id. The file <hex id>.key in the state directory holds, as
// JSON, the KeyRef, type and convergent flag the material was made for
// and the material itself (see backend/internal/softkey for its formats).
// Load refuses a handle whose file was made for another KeyRef, type or
// convergent flag (backend.ErrInvalidHandle); a handle whose file is not
// there, in another state directory or after Destroy, fails with
// backend.ErrKeyNotFound.
//
// # Concurrency
//
// A Backend and its keys are safe for concurrent use: every piece of
// material has its own file, created once (O_EXCL) and never rewritten.
package filebackend

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/internal/softkey"
)

var (
	_ backend.Backend  = (*Backend)(nil)
	_ backend.Importer = (*Backend)(nil)
)

const (
	handleFormatV1 byte = 1
	idSize              = 16
	handleSize          = 1 + idSize
)

// Backend keeps key material in files in a state directory. Create it
// with Open.
type Backend struct {
	dir    string
	closed atomic.Bool
	keys   softkey.Owner
}

// Open returns a Backend on the state directory dir, creating it (mode
// 0700) if needed.
func Open(dir string) (*Backend, error) {
	if dir == "" {
		return nil, fmt.Errorf("filebackend: open: %w: no state directory", backend.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("filebackend: open: %w", err)
	}
	b := &Backend{dir: dir}
	b.keys = softkey.Owner{Name: "filebackend", Check: b.check, Random: rand.Reader}
	return b, nil
}

// check returns ErrClosed after Close, or the context's error.
func (b *Backend) check(ctx context.Context) error {
	if b.closed.Load() {
		return backend.ErrClosed
	}
	if ctx != nil {
		return ctx.Err()
	}
	return nil
}

// keyFile is the content of a key file.
type keyFile struct {
	KeyTag     string          `json:"keyTag"`
	Version    uint32          `json:"version"`
	Purpose    backend.Purpose `json:"purpose"`
	Type       backend.KeyType `json:"type"`
	Convergent bool            `json:"convergent"`
	Material   []byte          `json:"material"`
}

func (f *keyFile) madeFor(ref backend.KeyRef, typ backend.KeyType, convergent bool) bool {
	return f.KeyTag == ref.KeyTag && f.Version == ref.Version && f.Purpose == ref.Purpose &&
		f.Type == typ && f.Convergent == convergent
}

// path returns the file of a handle, or an error wrapping
// backend.ErrInvalidHandle for a handle not in this backend's format.
func (b *Backend) path(handle []byte) (string, error) {
	if len(handle) != handleSize || handle[0] != handleFormatV1 {
		return "", backend.ErrInvalidHandle
	}
	return filepath.Join(b.dir, hex.EncodeToString(handle[1:])+".key"), nil
}

// store writes material to a new file and returns its handle.
func (b *Backend) store(ref backend.KeyRef, typ backend.KeyType, convergent bool, material []byte) ([]byte, error) {
	h := make([]byte, handleSize)
	h[0] = handleFormatV1
	if _, err := rand.Read(h[1:]); err != nil {
		return nil, err
	}
	data, err := json.Marshal(&keyFile{
		KeyTag: ref.KeyTag, Version: ref.Version, Purpose: ref.Purpose,
		Type: typ, Convergent: convergent, Material: material,
	})
	if err != nil {
		return nil, err
	}
	defer clear(data)
	path, _ := b.path(h) // h is in the format path accepts
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, errors.New("cannot create the key file")
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, errors.New("cannot write the key file")
	}
	return h, nil
}

// read returns the key file of a handle: backend.ErrInvalidHandle for a
// handle not in the format or a file that does not parse,
// backend.ErrKeyNotFound for a file that is not there.
func (b *Backend) read(handle []byte) (*keyFile, error) {
	path, err := b.path(handle)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, backend.ErrKeyNotFound
	case err != nil:
		return nil, errors.New("cannot read the key file")
	}
	defer clear(data)
	var f keyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, backend.ErrInvalidHandle
	}
	return &f, nil
}

// Generate creates new key material and stores it in a new file. See
// backend.Backend for the error contract.
func (b *Backend) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("filebackend: generate: %w", err)
	}
	if req == nil {
		return nil, fmt.Errorf("filebackend: generate: %w: nil request", backend.ErrInvalidArgument)
	}
	if err := req.Ref.Validate(req.Type, req.Convergent); err != nil {
		return nil, fmt.Errorf("filebackend: generate %s: %w", req.Ref, err)
	}
	material, pub, err := softkey.Generate(req.Type, req.Convergent)
	if err != nil {
		return nil, fmt.Errorf("filebackend: generate %s: %w", req.Ref, err)
	}
	defer clear(material)
	return b.respond("generate", req.Ref, req.Type, req.Convergent, material, pub)
}

// ImportKey stores existing key material in a new file, as Generate
// does; see backend.Importer for the error contract.
func (b *Backend) ImportKey(ctx context.Context, req *backend.ImportRequest) (*backend.GenerateResponse, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("filebackend: import: %w", err)
	}
	if req == nil {
		return nil, fmt.Errorf("filebackend: import: %w: nil request", backend.ErrInvalidArgument)
	}
	convergent := len(req.ConvergentKey) > 0
	if err := req.Ref.Validate(req.Type, convergent); err != nil {
		return nil, fmt.Errorf("filebackend: import %s: %w", req.Ref, err)
	}
	material, pub, err := softkey.Import(req)
	if err != nil {
		return nil, fmt.Errorf("filebackend: import %s: %w", req.Ref, err)
	}
	defer clear(material)
	return b.respond("import", req.Ref, req.Type, convergent, material, pub)
}

func (b *Backend) respond(op string, ref backend.KeyRef, typ backend.KeyType, convergent bool, material []byte, pub crypto.PublicKey) (*backend.GenerateResponse, error) {
	h, err := b.store(ref, typ, convergent, material)
	if err != nil {
		return nil, fmt.Errorf("filebackend: %s %s: %w", op, ref, err)
	}
	return &backend.GenerateResponse{Handle: h, Public: pub}, nil
}

// Load reads the file of a handle and returns its key. See
// backend.Backend for the error contract.
func (b *Backend) Load(ctx context.Context, req *backend.LoadRequest) (backend.Key, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("filebackend: load: %w", err)
	}
	if req == nil {
		return nil, fmt.Errorf("filebackend: load: %w: nil request", backend.ErrInvalidArgument)
	}
	if err := req.Ref.Validate(req.Type, req.Convergent); err != nil {
		return nil, fmt.Errorf("filebackend: load %s: %w", req.Ref, err)
	}
	f, err := b.read(req.Handle)
	if err != nil {
		return nil, fmt.Errorf("filebackend: load %s: %w", req.Ref, err)
	}
	defer clear(f.Material)
	if !f.madeFor(req.Ref, req.Type, req.Convergent) {
		return nil, fmt.Errorf("filebackend: load %s: %w", req.Ref, backend.ErrInvalidHandle)
	}
	k, err := softkey.Load(&b.keys, req.Ref, req.Type, req.Convergent, f.Material)
	if err != nil {
		return nil, fmt.Errorf("filebackend: load %s: %w", req.Ref, backend.ErrInvalidHandle)
	}
	return k, nil
}

// Destroy removes the file of a handle; a file already gone is not an
// error. A handle whose file was made for another KeyRef or type fails
// with backend.ErrInvalidHandle and removes nothing. Keys loaded earlier
// keep working until the backend is closed.
func (b *Backend) Destroy(ctx context.Context, req *backend.DestroyRequest) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("filebackend: destroy: %w", err)
	}
	if req == nil {
		return fmt.Errorf("filebackend: destroy: %w: nil request", backend.ErrInvalidArgument)
	}
	if err := req.Ref.Validate(req.Type, false); err != nil {
		return fmt.Errorf("filebackend: destroy %s: %w", req.Ref, err)
	}
	f, err := b.read(req.Handle)
	switch {
	case errors.Is(err, backend.ErrKeyNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("filebackend: destroy %s: %w", req.Ref, err)
	}
	clear(f.Material)
	if !f.madeFor(req.Ref, req.Type, f.Convergent) {
		return fmt.Errorf("filebackend: destroy %s: %w", req.Ref, backend.ErrInvalidHandle)
	}
	path, _ := b.path(req.Handle) // read accepted the handle
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filebackend: destroy %s: cannot remove the key file", req.Ref)
	}
	return nil
}

// Close marks the backend closed. It is idempotent and returns nil;
// afterwards every method of the backend and of the keys it loaded fails
// with backend.ErrClosed.
func (b *Backend) Close() error {
	b.closed.Store(true)
	return nil
}
