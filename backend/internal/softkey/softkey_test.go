package softkey_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/internal/softkey"
)

var owner = &softkey.Owner{
	Name:   "test",
	Check:  func(ctx context.Context) error { return ctx.Err() },
	Random: rand.Reader,
}

func ref() backend.KeyRef {
	return backend.KeyRef{KeyTag: strings.Repeat("ab", 32), Version: 1, Purpose: backend.PurposeCipher}
}

// TestLoadMalformed checks that material that is not what the type and
// convergent flag need fails with ErrMalformed, never a panic or a key.
func TestLoadMalformed(t *testing.T) {
	aes, _, err := softkey.Generate(backend.AES256, false)
	if err != nil {
		t.Fatal(err)
	}
	conv, _, err := softkey.Generate(backend.AES256, true)
	if err != nil {
		t.Fatal(err)
	}
	ec, _, err := softkey.Generate(backend.ECDSA, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		typ        backend.KeyType
		convergent bool
		material   []byte
	}{
		{"AESEmpty", backend.AES256, false, nil},
		{"AESShort", backend.AES256, false, aes[:31]},
		{"AESGivenConvergent", backend.AES256, false, conv},
		{"ConvergentGivenAES", backend.AES256, true, aes},
		{"ECDSAGarbage", backend.ECDSA, false, aes},
		{"ECDSATruncated", backend.ECDSA, false, ec[:len(ec)-1]},
		{"ECDSAConvergent", backend.ECDSA, true, ec},
		{"RSAGivenECDSA", backend.RSA2048, false, ec},
		{"UnknownType", "DES", false, aes},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, err := softkey.Load(owner, ref(), c.typ, c.convergent, c.material)
			if k != nil || !errors.Is(err, softkey.ErrMalformed) {
				t.Errorf("Load = %v, %v; want nil, ErrMalformed", k, err)
			}
		})
	}
	for _, c := range []struct {
		name       string
		typ        backend.KeyType
		convergent bool
		material   []byte
	}{
		{"AES", backend.AES256, false, aes},
		{"Convergent", backend.AES256, true, conv},
		{"ECDSA", backend.ECDSA, false, ec},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, err := softkey.Load(owner, ref(), c.typ, c.convergent, c.material)
			if err != nil || k.Type() != c.typ || k.Ref() != ref() {
				t.Fatalf("Load = %v, %v", k, err)
			}
		})
	}
}
