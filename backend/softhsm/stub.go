//go:build !cgo

package softhsm

import (
	"context"
	"fmt"

	"github.com/pocketkms/kms/backend"
)

// errNoCgo is what every function of this build returns.
var errNoCgo = fmt.Errorf("softhsm: PKCS#11 needs cgo, and this program was built without it (CGO_ENABLED=0): %w", backend.ErrUnsupported)

var (
	_ backend.Backend  = (*Backend)(nil)
	_ backend.Importer = (*Backend)(nil)
	_ backend.Sweeper  = (*Backend)(nil)
)

// MaxAESInput is the largest plaintext, and the largest additional data,
// an AES256 key accepts, in bytes.
const MaxAESInput = 64 << 20

// Backend is a backend.Backend whose key material lives in a PKCS#11
// token. This build has no cgo: New always fails.
type Backend struct{}

// New fails with an error wrapping backend.ErrUnsupported: PKCS#11 needs
// cgo, and this build has none.
func New(ctx context.Context, cfg Config) (*Backend, error) { return nil, errNoCgo }

// Generate fails with backend.ErrUnsupported.
func (*Backend) Generate(context.Context, *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	return nil, errNoCgo
}

// ImportKey fails with backend.ErrUnsupported.
func (*Backend) ImportKey(context.Context, *backend.ImportRequest) (*backend.GenerateResponse, error) {
	return nil, errNoCgo
}

// Load fails with backend.ErrUnsupported.
func (*Backend) Load(context.Context, *backend.LoadRequest) (backend.Key, error) {
	return nil, errNoCgo
}

// Destroy fails with backend.ErrUnsupported.
func (*Backend) Destroy(context.Context, *backend.DestroyRequest) error { return errNoCgo }

// Sweep fails with backend.ErrUnsupported.
func (*Backend) Sweep(context.Context, *backend.SweepRequest) ([]backend.Swept, error) {
	return nil, errNoCgo
}

// Close does nothing and returns nil.
func (*Backend) Close() error { return nil }
