package softkey_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/internal/softkey"
)

// TestAppendForms checks the AES256 key's AppendEncrypter and
// AppendDecrypter: output appended after the caller's bytes, agreement
// with Encrypt and Decrypt, decryption in place, and the same refusals.
func TestAppendForms(t *testing.T) {
	for _, convergent := range []bool{false, true} {
		material, _, err := softkey.Generate(backend.AES256, convergent)
		if err != nil {
			t.Fatal(err)
		}
		k, err := softkey.Load(owner, ref(), backend.AES256, convergent, material)
		if err != nil {
			t.Fatal(err)
		}
		ae := k.(backend.AppendEncrypter)
		ad := k.(backend.AppendDecrypter)
		ctx := context.Background()
		pt, aad := []byte("attack at dawn"), []byte("ad")
		out, err := ae.EncryptAppend(ctx, []byte("held"), backend.EncryptRequest{Plaintext: pt, AdditionalData: aad})
		if err != nil || !bytes.HasPrefix(out, []byte("held")) || len(out) != 4+backend.NonceSize+len(pt)+backend.TagSize {
			t.Fatalf("EncryptAppend = %x, %v", out, err)
		}
		body := out[4:]
		got, err := k.(backend.Decrypter).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: body, AdditionalData: aad})
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Decrypt of EncryptAppend's body = %q, %v", got, err)
		}
		if convergent {
			again, err := k.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{Plaintext: pt, AdditionalData: aad})
			if err != nil || !bytes.Equal(again, body) {
				t.Fatalf("convergent Encrypt and EncryptAppend differ: %x, %x, %v", again, body, err)
			}
		}
		got, err = ad.DecryptAppend(ctx, []byte("x"), backend.DecryptRequest{Ciphertext: body, AdditionalData: aad})
		if err != nil || string(got) != "x"+string(pt) {
			t.Fatalf("DecryptAppend = %q, %v", got, err)
		}
		inPlace := bytes.Clone(body)
		got, err = ad.DecryptAppend(ctx, inPlace[backend.NonceSize:][:0], backend.DecryptRequest{Ciphertext: inPlace, AdditionalData: aad})
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("DecryptAppend in place = %q, %v", got, err)
		}
		tampered := bytes.Clone(body)
		tampered[len(tampered)-1] ^= 1
		if got, err := ad.DecryptAppend(ctx, nil, backend.DecryptRequest{Ciphertext: tampered, AdditionalData: aad}); got != nil || !errors.Is(err, backend.ErrDecryptionFailed) {
			t.Fatalf("DecryptAppend of a tampered body = %q, %v", got, err)
		}
		if _, err := ad.DecryptAppend(ctx, nil, backend.DecryptRequest{Ciphertext: body[:10]}); !errors.Is(err, backend.ErrDecryptionFailed) {
			t.Fatalf("DecryptAppend of a short body: %v", err)
		}
		done, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := ae.EncryptAppend(done, nil, backend.EncryptRequest{Plaintext: pt}); !errors.Is(err, context.Canceled) {
			t.Fatalf("EncryptAppend with an ended context: %v", err)
		}
		if _, err := ad.DecryptAppend(done, nil, backend.DecryptRequest{Ciphertext: body}); !errors.Is(err, context.Canceled) {
			t.Fatalf("DecryptAppend with an ended context: %v", err)
		}
		if _, err := k.(backend.Encrypter).Encrypt(ctx, nil); !errors.Is(err, backend.ErrInvalidArgument) {
			t.Fatalf("Encrypt(nil): %v", err)
		}
		if _, err := k.(backend.Decrypter).Decrypt(ctx, nil); !errors.Is(err, backend.ErrInvalidArgument) {
			t.Fatalf("Decrypt(nil): %v", err)
		}
	}
}
