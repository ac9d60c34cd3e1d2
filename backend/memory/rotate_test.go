package memory_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
)

// TestRotateRootKeySteps: a handle resealed under the staged key opens
// only once the key is committed, the old handle no longer does, keys
// loaded before the commit keep working, and the check value follows.
func TestRotateRootKeySteps(t *testing.T) {
	ctx := context.Background()
	oldRoot, newRoot := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	b, err := memory.New(oldRoot)
	if err != nil {
		t.Fatal(err)
	}
	ref := cipherRef('a')
	gen, err := b.Generate(ctx, &backend.GenerateRequest{Ref: ref, Type: backend.AES256})
	if err != nil {
		t.Fatal(err)
	}
	load := func(h []byte) (backend.Key, error) {
		return b.Load(ctx, &backend.LoadRequest{Ref: ref, Type: backend.AES256, Handle: h})
	}
	if _, err := b.ResealHandle(ctx, &backend.LoadRequest{Ref: ref, Type: backend.AES256, Handle: gen.Handle}); !errors.Is(err, memory.ErrNoStagedRootKey) {
		t.Fatalf("reseal with nothing staged: %v", err)
	}
	if err := b.StageRootKey(newRoot[:31]); !errors.Is(err, backend.ErrInvalidArgument) {
		t.Fatalf("stage a short key: %v", err)
	}
	oldCheck, _ := b.CheckValue(ctx)
	if err := b.StageRootKey(newRoot); err != nil {
		t.Fatal(err)
	}
	nh, err := b.ResealHandle(ctx, &backend.LoadRequest{Ref: ref, Type: backend.AES256, Handle: gen.Handle})
	if err != nil {
		t.Fatal(err)
	}
	// Another binding does not reseal.
	if _, err := b.ResealHandle(ctx, &backend.LoadRequest{Ref: cipherRef('b'), Type: backend.AES256, Handle: gen.Handle}); !errors.Is(err, backend.ErrInvalidHandle) {
		t.Fatalf("reseal for another key: %v", err)
	}
	k, err := load(gen.Handle)
	if err != nil {
		t.Fatalf("the old handle before the commit: %v", err)
	}
	if _, err := load(nh); !errors.Is(err, backend.ErrInvalidHandle) {
		t.Fatalf("the new handle before the commit: %v", err)
	}
	ct, err := k.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.CommitRootKey(); err != nil {
		t.Fatal(err)
	}
	if _, err := load(gen.Handle); !errors.Is(err, backend.ErrInvalidHandle) {
		t.Fatalf("the old handle after the commit: %v", err)
	}
	k2, err := load(nh)
	if err != nil {
		t.Fatalf("the new handle after the commit: %v", err)
	}
	if pt, err := k2.(backend.Decrypter).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: ct}); err != nil || string(pt) != "x" {
		t.Fatalf("same material: %q %v", pt, err)
	}
	if _, err := k.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{Plaintext: []byte("x")}); err != nil {
		t.Fatalf("a key loaded before the commit: %v", err)
	}
	newCheck, _ := b.CheckValue(ctx)
	nb, _ := memory.New(newRoot)
	want, _ := nb.CheckValue(ctx)
	if bytes.Equal(newCheck, oldCheck) || !bytes.Equal(newCheck, want) {
		t.Fatal("the check value does not name the new root key")
	}
	if err := b.CommitRootKey(); !errors.Is(err, memory.ErrNoStagedRootKey) {
		t.Fatalf("a second commit: %v", err)
	}
}

func TestWriteRootKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "root.key")
	key := bytes.Repeat([]byte{0xab}, 32)
	if err := memory.WriteRootKeyFile(path, key); err != nil {
		t.Fatal(err)
	}
	got, err := memory.ReadRootKeyFile(path)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("read back: %v", err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	if err := memory.WriteRootKeyFile(path, key[:5]); !errors.Is(err, backend.ErrInvalidArgument) {
		t.Fatalf("short key: %v", err)
	}
}
