package kms_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
)

// unavailableBackend fails every key operation as a token that lost its
// session and could not get it back.
type unavailableBackend struct{ *memory.Backend }

type unavailableKey struct{ backend.Key }

func (unavailableKey) Encrypt(context.Context, *backend.EncryptRequest) ([]byte, error) {
	return nil, backend.ErrUnavailable
}

func (b unavailableBackend) Load(ctx context.Context, req *backend.LoadRequest) (backend.Key, error) {
	k, err := b.Backend.Load(ctx, req)
	if err != nil {
		return nil, err
	}
	return unavailableKey{k}, nil
}

// TestBackendUnavailableIsNotMismatch: a backend that cannot be reached
// is ErrUnavailable (503), never ErrBackendMismatch, which would send an
// operator looking for a wrong root key or token.
func TestBackendUnavailableIsNotMismatch(t *testing.T) {
	ctx := context.Background()
	e, err := kms.New(ctx, unavailableBackend{newBackend(t, rootKey)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	k := createKey(t, e, "key", kms.AES256, false)
	_, err = e.Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrUnavailable)
	var ke *kms.Error
	if errors.As(err, &ke); ke.Status != http.StatusServiceUnavailable || errors.Is(err, kms.ErrBackendMismatch) {
		t.Fatalf("err = %v (status %d), want 503 and not ErrBackendMismatch", err, ke.Status)
	}
}
