package softhsm_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/softhsm/softhsmtest"
	"github.com/pocketkms/kms/kmscrypto"
)

// TestAppendSealOnSoftHSM: AppendSeal/AppendOpen and kmscrypto's AEAD
// over a SoftHSM key, whose AES-GCM runs in the token (through the
// backend's plain Encrypt/Decrypt, not the append forms): the associated
// data is bound, and sealed and Encrypt ciphertexts never open each
// other.
func TestAppendSealOnSoftHSM(t *testing.T) {
	ctx := context.Background()
	e, err := kms.New(ctx, softhsmtest.Open(t, softhsmtest.NewToken(t)), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "sealed", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	pt, ad := []byte("kept in the token"), []byte("orders/2024")
	ct, err := e.AppendSeal(ctx, []byte("x"), k.Tag, pt, ad)
	if err != nil || !bytes.HasPrefix(ct, []byte("xncpkms:v1:")) {
		t.Fatalf("AppendSeal = %.20q, %v", ct, err)
	}
	ct = ct[1:]
	if got, err := e.AppendOpen(ctx, nil, k.Tag, ct, ad); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("AppendOpen = %q, %v", got, err)
	}
	if _, err := e.AppendOpen(ctx, nil, k.Tag, ct, []byte("orders/2025")); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("wrong associated data: %v", err)
	}
	if _, err := e.Decrypt(ctx, k.Tag, string(ct), nil); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("Decrypt of a sealed ciphertext: %v", err)
	}
	enc, err := e.Encrypt(ctx, k.Tag, pt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.AppendOpen(ctx, nil, k.Tag, []byte(enc), nil); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("AppendOpen of an Encrypt ciphertext: %v", err)
	}

	a, err := kmscrypto.NewAEAD(ctx, e, k.Tag)
	if err != nil {
		t.Fatal(err)
	}
	act, err := a.Encrypt(pt, ad)
	if err != nil || !strings.HasPrefix(string(act), "aead:ncpkms:v1:") {
		t.Fatalf("AEAD.Encrypt = %.20q, %v", act, err)
	}
	if got, err := a.Decrypt(act, ad); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("AEAD.Decrypt = %q, %v", got, err)
	}
	if _, err := a.Decrypt(act, nil); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("AEAD.Decrypt, wrong associated data: %v", err)
	}
}
