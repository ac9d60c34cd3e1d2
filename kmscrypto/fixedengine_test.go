package kmscrypto_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
)

// fixedBackend is the memory backend with fixed material for
// non-convergent AES256 cipher keys, so that ciphertexts made in one run
// (or by older code) decrypt in another.
type fixedBackend struct{ *memory.Backend }

func (b fixedBackend) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	if req.Type != backend.AES256 || req.Convergent || req.Ref.Purpose != backend.PurposeCipher {
		return b.Backend.Generate(ctx, req) // token-signing keys and the rest: random
	}
	seed := sha256.Sum256(fmt.Appendf(nil, "kmscrypto fixed %s %d %s", req.Ref.KeyTag, req.Ref.Version, req.Ref.Purpose))
	return b.ImportKey(ctx, &backend.ImportRequest{Ref: req.Ref, Type: req.Type, Material: seed[:]})
}

// fixedEngine returns an Engine whose first AES256 key has the same tag
// and material in every run, and that key's tag.
func fixedEngine(t testing.TB) (*kms.Engine, string) {
	t.Helper()
	ctx := context.Background()
	mb, err := memory.New(bytes.Repeat([]byte{0x4c}, memory.RootKeySize))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kms.New(ctx, fixedBackend{mb}, kms.WithRandom(rand.NewChaCha8([32]byte{'k', 'm', 's', 'c', 'r', 'y', 'p', 't', 'o'})),
		kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "fixed", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	return e, k.Tag
}
