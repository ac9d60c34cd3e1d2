package memory

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/pocketkms/kms/backend"
)

func testBackend(t *testing.T) *Backend {
	t.Helper()
	root, err := GenerateRootKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHandleBinding checks that the associated data, not only the parsing
// of the material, rejects a handle presented for anything else: every
// field of the binding fails the AEAD on its own.
func TestHandleBinding(t *testing.T) {
	b := testBackend(t)
	ref := backend.KeyRef{KeyTag: strings.Repeat("a", 64), Version: 7, Purpose: backend.PurposeCipher}
	material := bytes.Repeat([]byte{1}, 32)
	h, err := b.seal(ref, backend.AES256, false, material)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := b.open(ref, backend.AES256, false, h); err != nil || !bytes.Equal(m, material) {
		t.Fatalf("open = %v", err)
	}
	other := ref
	other.KeyTag = strings.Repeat("b", 64)
	otherVersion := ref
	otherVersion.Version = 8
	otherPurpose := ref
	otherPurpose.Purpose = backend.PurposeTokenSigning
	cases := []struct {
		name       string
		ref        backend.KeyRef
		typ        backend.KeyType
		convergent bool
	}{
		{"Tag", other, backend.AES256, false},
		{"Version", otherVersion, backend.AES256, false},
		{"Purpose", otherPurpose, backend.AES256, false},
		{"Type", ref, backend.RSA2048, false},
		{"Convergent", ref, backend.AES256, true},
	}
	for _, c := range cases {
		if _, err := b.open(c.ref, c.typ, c.convergent, h); !errors.Is(err, errOpen) {
			t.Errorf("%s: open = %v, want errOpen", c.name, err)
		}
	}
}

// TestHandleADInjective checks the length prefixes: moving bytes between
// adjacent fields changes the associated data.
func TestHandleADInjective(t *testing.T) {
	a := handleAD(backend.KeyRef{KeyTag: "ab", Version: 1, Purpose: "c"}, "AES256", false)
	b := handleAD(backend.KeyRef{KeyTag: "a", Version: 1, Purpose: "bc"}, "AES256", false)
	c := handleAD(backend.KeyRef{KeyTag: "a", Version: 1, Purpose: "b"}, "cAES256", false)
	if bytes.Equal(a, b) || bytes.Equal(b, c) || bytes.Equal(a, c) {
		t.Error("associated data is ambiguous")
	}
}

// FuzzLoad feeds arbitrary handles to Load: never a panic, and every
// failure is ErrInvalidHandle.
func FuzzLoad(f *testing.F) {
	root := bytes.Repeat([]byte{7}, RootKeySize)
	b, err := New(root)
	if err != nil {
		f.Fatal(err)
	}
	ref := backend.KeyRef{KeyTag: strings.Repeat("c", 64), Version: 1, Purpose: backend.PurposeCipher}
	for _, typ := range []backend.KeyType{backend.AES256, backend.ECDSA} {
		resp, err := b.Generate(f.Context(), &backend.GenerateRequest{Ref: ref, Type: typ})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(resp.Handle, string(typ), false)
	}
	f.Add([]byte{}, "AES256", true)
	f.Add([]byte{1}, "RSA2048", false)
	f.Fuzz(func(t *testing.T, handle []byte, typ string, convergent bool) {
		kt := backend.KeyType(typ)
		if !kt.Valid() || (convergent && kt != backend.AES256) {
			return
		}
		k, err := b.Load(t.Context(), &backend.LoadRequest{Ref: ref, Type: kt, Convergent: convergent, Handle: handle})
		if err != nil && !errors.Is(err, backend.ErrInvalidHandle) {
			t.Fatalf("Load: %v, want ErrInvalidHandle", err)
		}
		if err == nil && k.Type() != kt {
			t.Fatalf("Load returned a %v key for %v", k.Type(), kt)
		}
	})
}
