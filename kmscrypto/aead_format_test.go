package kmscrypto_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/kmscrypto"
)

// legacySeal makes a ciphertext of AEAD's legacy format exactly as the
// code before AppendSeal did: the Engine's envelope of
// SHA-256(ad) ‖ plaintext, encrypted with no context.
func legacySeal(t testing.TB, e *kms.Engine, tag string, pt, ad []byte) []byte {
	t.Helper()
	ct, err := e.AppendEncrypt(context.Background(), nil, tag, append(sha256Of(ad), pt...), nil)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// TestAEADLegacyFormat: ciphertexts of the legacy format, written before
// AppendSeal, still decrypt on every plane and only with their associated
// data; the two formats never stand in for each other; associated data
// over kms.MaxAdditionalData is still taken (in the legacy format).
func TestAEADLegacyFormat(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	tag := newKey(t, e, kms.AES256, false)
	pt, ad := []byte("a data key of 32 bytes, or so..."), []byte("orders/2024")
	byString, err := e.Encrypt(ctx, tag, append(sha256Of(ad), pt...), nil)
	if err != nil {
		t.Fatal(err)
	}
	olds := map[string][]byte{
		"AppendEncrypt": legacySeal(t, e, tag, pt, ad),
		"Encrypt":       []byte(byString),
		"AEAD, strings": mustEncrypt(t, newAEAD(t, stringOnly{e}, tag), pt, ad),
	}
	ps := planes(t, e, tag)
	ps["trusted, strings only"] = stringOnly{e}
	for plane, c := range ps {
		a := newAEAD(t, c, tag)
		for how, old := range olds {
			if !strings.HasPrefix(string(old), "ncpkms:v1:") {
				t.Fatalf("%s: not a legacy ciphertext: %.12q", how, old)
			}
			if got, err := a.Decrypt(old, ad); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("%s plane, legacy ciphertext by %s: %q, %v", plane, how, got, err)
			}
			for _, bad := range [][]byte{nil, pt, []byte("orders/2025")} {
				_, err := a.Decrypt(old, bad)
				wantKind(t, err, kms.ErrDecryptionFailed)
				if strings.Contains(err.Error(), string(pt)) || strings.Contains(err.Error(), string(ad)) {
					t.Fatalf("error %q shows the plaintext or associated data", err)
				}
			}
		}
	}

	a := newAEAD(t, e, tag)
	ct := mustEncrypt(t, a, pt, ad)
	// A legacy ciphertext behind the marker, and a current one without
	// it, are refused: the associated data of AppendSeal and of Encrypt
	// differ.
	for _, swapped := range [][]byte{append([]byte("aead:"), olds["AppendEncrypt"]...), ct[len("aead:"):]} {
		_, err := a.Decrypt(swapped, ad)
		wantKind(t, err, kms.ErrDecryptionFailed)
	}
	_, err = e.Decrypt(ctx, tag, string(ct[len("aead:"):]), nil)
	wantKind(t, err, kms.ErrDecryptionFailed)
	_, err = e.AppendOpen(ctx, nil, tag, olds["Encrypt"], ad)
	wantKind(t, err, kms.ErrDecryptionFailed)

	// Associated data over kms.MaxAdditionalData: the legacy format.
	huge := bytes.Repeat([]byte{'h'}, kms.MaxAdditionalData+1)
	hct := mustEncrypt(t, a, pt, huge)
	if !strings.HasPrefix(string(hct), "ncpkms:v1:") {
		t.Fatalf("huge associated data: %.12q", hct)
	}
	if got, err := a.Decrypt(hct, huge); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("huge associated data: %v", err)
	}
	_, err = a.Decrypt(hct, huge[1:])
	wantKind(t, err, kms.ErrDecryptionFailed)
	_, err = a.Decrypt(ct, huge)
	wantKind(t, err, kms.ErrDecryptionFailed)
	at := bytes.Repeat([]byte{'h'}, kms.MaxAdditionalData)
	if act := mustEncrypt(t, a, pt, at); !strings.HasPrefix(string(act), "aead:") {
		t.Fatalf("kms.MaxAdditionalData bytes of associated data: %.12q", act)
	}
}

func mustEncrypt(t testing.TB, a *kmscrypto.AEAD, pt, ad []byte) []byte {
	t.Helper()
	ct, err := a.Encrypt(pt, ad)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// FuzzAEADDecrypt feeds arbitrary ciphertexts and associated data to
// AEAD.Decrypt on both planes and through a Client without the []byte
// entry points, seeded with genuine ciphertexts of both formats.
// Property: no panic; a failure is a *kms.Error matching a kms sentinel
// and returns no plaintext; a success returns a plaintext the fixture
// encrypted with exactly that associated data (nil and empty alike):
// anything else would be a forgery.
func FuzzAEADDecrypt(f *testing.F) {
	e := newEngine(f)
	tag := newKey(f, e, kms.AES256, false)
	tc := tokenClient(f, e, tag, kms.AllPermissions()...)
	aeads := []*kmscrypto.AEAD{}
	for _, c := range []kmscrypto.Client{e, tc, stringOnly{e}} {
		a, err := kmscrypto.NewAEAD(context.Background(), c, tag)
		if err != nil {
			f.Fatal(err)
		}
		aeads = append(aeads, a)
	}
	type pair struct{ pt, ad string }
	made := map[pair]bool{}
	for i, s := range []struct{ pt, ad string }{
		{"k", ""}, {"data key", "orders/2024"}, {strings.Repeat("x", 100), "ad\x00"}, {"\xff", "\xff"},
	} {
		made[pair{s.pt, s.ad}] = true
		ct := mustEncrypt(f, aeads[i%2], []byte(s.pt), []byte(s.ad))
		f.Add(uint8(i), ct, []byte(s.ad))
		f.Add(uint8(i+1), legacySeal(f, e, tag, []byte(s.pt), []byte(s.ad)), []byte(s.ad))
		f.Add(uint8(2), ct[len("aead:"):], []byte(s.ad))
	}
	f.Fuzz(func(t *testing.T, which uint8, ct, ad []byte) {
		pt, err := aeads[int(which)%len(aeads)].Decrypt(ct, ad)
		if err != nil {
			if pt != nil {
				t.Fatal("a plaintext came back with an error")
			}
			var ke *kms.Error
			if !errors.As(err, &ke) || ke.Kind == nil || !errors.Is(err, ke.Kind) || ke.Code == "" {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if !made[pair{string(pt), string(ad)}] {
			t.Fatalf("decrypted %q with associated data %q, which no Encrypt made", pt, ad)
		}
	})
}

// legacyVectors are AEAD ciphertexts written by the code before
// AppendSeal (commit 7af33f2, kmscrypto.AEAD.Encrypt on fixedEngine's
// key), kept here as they came out.
var legacyVectors = []struct{ tag, pt, ad, ct string }{
	{"25f120b50cad8d767ed9bc4134a8e6901b05e5f010ab44ffbf033fdcd180edca", "a data key made by the old code", "orders/2024",
		"ncpkms:v1:TebMBlrNODu0S8Qq8RVGcf+n9M9glb4I/aRplYTk46TfHHAwh9aeoigqWRWgZ0cWjzoT5ppokcMEDt1VG5Xt1oNdBQZGvzgFl7rnkPFhkkHrSxZOJGZUvElqdQ=="},
	{"25f120b50cad8d767ed9bc4134a8e6901b05e5f010ab44ffbf033fdcd180edca", "no associated data", "",
		"ncpkms:v1:BUInUmETIOP7qrbp/rPLVXTqihPTMalRBpNLQVmLwkndzHMxjfFyIV3GKYZslO4ilnGuhVuehZJNUvqiqYz4z0g8iM24spAAOOUpJyC9"},
}

// TestAEADLegacyVectors: ciphertexts the old code wrote still decrypt,
// on every plane, with their associated data only, and AEAD.ReEncrypt
// moves them to the current format.
func TestAEADLegacyVectors(t *testing.T) {
	e, tag := fixedEngine(t)
	ps := planes(t, e, tag)
	ps["trusted, strings only"] = stringOnly{e}
	for _, v := range legacyVectors {
		if v.tag != tag {
			t.Fatalf("fixedEngine's key is %s, the vectors' %s: the fixture changed", tag, v.tag)
		}
		for plane, c := range ps {
			a := newAEAD(t, c, tag)
			got, err := a.Decrypt([]byte(v.ct), []byte(v.ad))
			if err != nil || string(got) != v.pt {
				t.Fatalf("%s plane: %q, %v", plane, got, err)
			}
			_, err = a.Decrypt([]byte(v.ct), []byte(v.ad+"x"))
			wantKind(t, err, kms.ErrDecryptionFailed)
		}
		a := newAEAD(t, e, tag)
		moved, err := a.ReEncrypt(context.Background(), []byte(v.ct), []byte(v.ad))
		if err != nil || !strings.HasPrefix(string(moved), "aead:ncpkms:v1:") {
			t.Fatalf("ReEncrypt: %.20q, %v", moved, err)
		}
		if got, err := a.Decrypt(moved, []byte(v.ad)); err != nil || string(got) != v.pt {
			t.Fatalf("after ReEncrypt: %q, %v", got, err)
		}
	}
}
