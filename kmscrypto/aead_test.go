package kmscrypto_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/kmscrypto"
	"github.com/pocketkms/kms/token"
)

// tinkAEAD and tinkAEADWithContext are Tink's tink.AEAD and
// tink.AEADWithContext, restated so that the core module does not import
// Tink (integration/tink tests the real thing).
type tinkAEAD interface {
	Encrypt(plaintext, associatedData []byte) ([]byte, error)
	Decrypt(ciphertext, associatedData []byte) ([]byte, error)
}

type tinkAEADWithContext interface {
	EncryptWithContext(ctx context.Context, plaintext, associatedData []byte) ([]byte, error)
	DecryptWithContext(ctx context.Context, ciphertext, associatedData []byte) ([]byte, error)
}

var (
	_ tinkAEAD            = (*kmscrypto.AEAD)(nil)
	_ tinkAEADWithContext = (*kmscrypto.AEAD)(nil)
)

func newAEAD(t *testing.T, c kmscrypto.Client, tag string) *kmscrypto.AEAD {
	t.Helper()
	a, err := kmscrypto.NewAEAD(context.Background(), c, tag)
	if err != nil {
		t.Fatalf("NewAEAD: %v", err)
	}
	return a
}

func TestAEADRoundTrip(t *testing.T) {
	e := newEngine(t)
	tag := newKey(t, e, kms.AES256, false)
	ps := planes(t, e, tag)
	// A Client without the []byte entry points (AppendSeal, AppendEncrypt
	// and the rest) takes AEAD's string path, which writes the legacy
	// format: the other planes read it, it cannot read theirs.
	ps["trusted, strings only"] = stringOnly{e}
	for plane, c := range ps {
		t.Run(plane, func(t *testing.T) {
			a := newAEAD(t, c, tag)
			pt, ad := []byte("data key bytes"), []byte("orders/2024")
			ct, err := a.Encrypt(pt, ad)
			if err != nil {
				t.Fatal(err)
			}
			prefix := "aead:ncpkms:v1:"
			if _, legacy := c.(stringOnly); legacy {
				prefix = "ncpkms:v1:"
			}
			if !strings.HasPrefix(string(ct), prefix) || bytes.Contains(ct, pt) || bytes.Contains(ct, ad) {
				t.Fatalf("ciphertext %q", ct)
			}
			ct2, _ := a.Encrypt(pt, ad)
			if bytes.Equal(ct, ct2) {
				t.Fatal("two encryptions are equal")
			}
			// Either plane decrypts what the other encrypted.
			for other, oc := range ps {
				got, err := newAEAD(t, oc, tag).Decrypt(ct, ad)
				if _, legacy := oc.(stringOnly); legacy && prefix != "ncpkms:v1:" {
					wantKind(t, err, kms.ErrInvalidArgument)
					if !errors.Is(err, errors.ErrUnsupported) || got != nil {
						t.Fatalf("a Client without AppendOpen: %v", err)
					}
					continue
				}
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("decrypt on the %s plane: %q, %v", other, got, err)
				}
			}
			// The context-taking methods are the same operation.
			got, err := a.DecryptWithContext(context.Background(), ct, ad)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("DecryptWithContext: %q, %v", got, err)
			}
			ct3, err := a.EncryptWithContext(context.Background(), pt, ad)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := a.Decrypt(ct3, ad); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("Decrypt of EncryptWithContext: %q, %v", got, err)
			}
		})
	}
}

// TestAEADAssociatedData: the associated data is bound; nil and empty are
// the same (as in Tink).
func TestAEADAssociatedData(t *testing.T) {
	e := newEngine(t)
	tag := newKey(t, e, kms.AES256, false)
	a := newAEAD(t, e, tag)
	pt := []byte("secret")
	ct, err := a.Encrypt(pt, []byte("ad-1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{nil, {}, []byte("ad-2"), []byte("ad-1\x00"), []byte("AD-1")} {
		got, err := a.Decrypt(ct, bad)
		if got != nil {
			t.Fatalf("AD %q: got a plaintext", bad)
		}
		wantKind(t, err, kms.ErrDecryptionFailed)
	}
	ctNil, _ := a.Encrypt(pt, nil)
	for _, ad := range [][]byte{nil, {}} {
		if got, err := a.Decrypt(ctNil, ad); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("AD %q: %q, %v", ad, got, err)
		}
	}
	// Another key, and a flipped byte, fail the same way.
	other := newAEAD(t, e, newKey(t, e, kms.AES256, false))
	_, err = other.Decrypt(ct, []byte("ad-1"))
	wantKind(t, err, kms.ErrDecryptionFailed)
	flipped := bytes.Clone(ct)
	flipped[20] ^= 'A' ^ 'B'
	if _, err := a.Decrypt(flipped, []byte("ad-1")); err == nil {
		t.Fatal("tampered ciphertext decrypted")
	}
}

// TestAEADAfterReEncrypt: Engine.ReEncrypt cannot re-encrypt an AEAD
// ciphertext of the current format (it lacks the associated data), but
// still moves a legacy one; AEAD.ReEncrypt moves both to the current
// version, in the current format, bound to the same associated data.
func TestAEADAfterReEncrypt(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	tag := newKey(t, e, kms.AES256, false)
	a := newAEAD(t, e, tag)
	ct, _ := a.Encrypt([]byte("dek"), []byte("ad"))
	legacy, _ := newAEAD(t, stringOnly{e}, tag).Encrypt([]byte("dek"), []byte("ad"))
	if _, err := e.RotateKey(ctx, tag); err != nil {
		t.Fatal(err)
	}
	_, err := e.ReEncrypt(ctx, tag, string(ct), nil)
	wantKind(t, err, kms.ErrInvalidArgument) // the marker is not an envelope
	_, err = e.ReEncrypt(ctx, tag, strings.TrimPrefix(string(ct), "aead:"), nil)
	wantKind(t, err, kms.ErrDecryptionFailed)

	re, err := e.ReEncrypt(ctx, tag, string(legacy), nil)
	if err != nil || !strings.HasPrefix(re, "ncpkms:v2:") {
		t.Fatalf("ReEncrypt of a legacy ciphertext: %v", err)
	}
	if got, err := a.Decrypt([]byte(re), []byte("ad")); err != nil || string(got) != "dek" {
		t.Fatalf("after ReEncrypt: %q, %v", got, err)
	}
	if _, err := a.Decrypt([]byte(re), []byte("other")); !errors.Is(err, kms.ErrDecryptionFailed) {
		t.Fatalf("after ReEncrypt, wrong AD: %v", err)
	}

	for _, old := range [][]byte{ct, legacy} {
		moved, err := a.ReEncrypt(ctx, old, []byte("ad"))
		if err != nil || !strings.HasPrefix(string(moved), "aead:ncpkms:v2:") {
			t.Fatalf("AEAD.ReEncrypt = %.20q, %v", moved, err)
		}
		if got, err := a.Decrypt(moved, []byte("ad")); err != nil || string(got) != "dek" {
			t.Fatalf("after AEAD.ReEncrypt: %q, %v", got, err)
		}
		_, err = a.Decrypt(moved, []byte("other"))
		wantKind(t, err, kms.ErrDecryptionFailed)
		_, err = a.ReEncrypt(ctx, old, []byte("other"))
		wantKind(t, err, kms.ErrDecryptionFailed)
	}
}

func TestAEADLimits(t *testing.T) {
	e := newEngine(t)
	a := newAEAD(t, e, newKey(t, e, kms.AES256, false))
	for _, n := range []int{0, kmscrypto.MaxAEADPlaintext + 1} {
		_, err := a.Encrypt(make([]byte, n), nil)
		wantKind(t, err, kms.ErrInvalidArgument)
	}
	pt := bytes.Repeat([]byte{7}, kmscrypto.MaxAEADPlaintext)
	ct, err := a.Encrypt(pt, []byte("big"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.Decrypt(ct, []byte("big")); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("largest plaintext: %v", err)
	}
	for _, bad := range []string{"", "garbage", "ncpkms:v1:", "ncpkms:v9:AAAA", "aead:", "aead:garbage", "aead:ncpkms:v1:", "aead:aead:" + string(ct)} {
		if _, err := a.Decrypt([]byte(bad), nil); err == nil {
			t.Fatalf("Decrypt(%q) succeeded", bad)
		}
	}
}

// TestAEADRefusesKeys: the trusted plane refuses other key types and
// convergent keys at construction; the token plane, which cannot read the
// key, refuses them at the first call, and never accepts RSA-OAEP
// ciphertexts, which anyone holding the public key can make.
func TestAEADRefusesKeys(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	rsaTag := newKey(t, e, kms.RSA2048, false)
	convTag := newKey(t, e, kms.AES256, true)
	for _, tag := range []string{rsaTag, newKey(t, e, kms.ECDSA, false), convTag} {
		_, err := kmscrypto.NewAEAD(ctx, e, tag)
		wantKind(t, err, kms.ErrWrongKeyType)
	}
	_, err := kmscrypto.NewAEAD(ctx, e, unknownTag(rsaTag))
	wantKind(t, err, kms.ErrKeyNotFound)

	perms := []token.Permission{token.PermEncrypt, token.PermDecrypt}
	ra := newAEAD(t, tokenClient(t, e, rsaTag, perms...), rsaTag)
	_, err = ra.Encrypt([]byte("x"), nil)
	wantKind(t, err, kms.ErrWrongKeyType)
	// A forged RSA-OAEP ciphertext with a valid associated-data digest.
	sealed := append(make([]byte, 32), 'x')
	copy(sealed, sha256Of(nil))
	forged, err := e.Encrypt(ctx, rsaTag, sealed, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ra.Decrypt([]byte(forged), nil)
	wantKind(t, err, kms.ErrDecryptionFailed)

	ca := newAEAD(t, tokenClient(t, e, convTag, perms...), convTag)
	_, err = ca.Encrypt([]byte("x"), nil)
	wantKind(t, err, kms.ErrWrongKeyType)
	// The legacy path (a Client without AppendSeal) refuses it too: a
	// convergent key needs a context.
	_, err = newAEAD(t, stringOnly{tokenClient(t, e, convTag, perms...)}, convTag).Encrypt([]byte("x"), nil)
	wantKind(t, err, kms.ErrInvalidArgument)
	_, err = newAEAD(t, stringOnly{tokenClient(t, e, rsaTag, perms...)}, rsaTag).Encrypt([]byte("x"), nil)
	wantKind(t, err, kms.ErrWrongKeyType)

	// The token needs Encrypt and Decrypt.
	aesTag := newKey(t, e, kms.AES256, false)
	_, err = newAEAD(t, tokenClient(t, e, aesTag, token.PermDecrypt), aesTag).Encrypt([]byte("x"), nil)
	wantKind(t, err, kms.ErrPermissionDenied)
	ct, _ := newAEAD(t, e, aesTag).Encrypt([]byte("x"), nil)
	_, err = newAEAD(t, tokenClient(t, e, aesTag, token.PermEncrypt), aesTag).Decrypt(ct, nil)
	wantKind(t, err, kms.ErrPermissionDenied)
}

func TestAEADContext(t *testing.T) {
	e := newEngine(t)
	tag := newKey(t, e, kms.AES256, false)
	ctx, cancel := context.WithCancel(context.Background())
	a, err := kmscrypto.NewAEAD(ctx, e, tag)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := a.Encrypt([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := a.Encrypt([]byte("x"), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Encrypt after cancel: %v", err)
	}
	if _, err := a.Decrypt(ct, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Decrypt after cancel: %v", err)
	}
	// The WithContext methods use their own context.
	if got, err := a.DecryptWithContext(context.Background(), ct, nil); err != nil || string(got) != "x" {
		t.Fatalf("DecryptWithContext: %q, %v", got, err)
	}
}

// TestFormatHidesToken: no fmt verb shows the TokenClient's token.
func TestFormatHidesToken(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	rsaTag := newKey(t, e, kms.RSA2048, false)
	aesTag := newKey(t, e, kms.AES256, false)
	if _, err := e.ActivateTokenGenerator(ctx, rsaTag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, rsaTag, kms.IssueTokensRequest{Subject: "fmt", Permissions: token.AllPermissions()})
	if err != nil {
		t.Fatal(err)
	}
	tc := e.WithToken(set.Access, callerIP)
	s, err := kmscrypto.NewSigner(ctx, tc, rsaTag)
	if err != nil {
		t.Fatal(err)
	}
	d, err := kmscrypto.NewDecrypter(ctx, tc, rsaTag)
	if err != nil {
		t.Fatal(err)
	}
	a, err := kmscrypto.NewAEAD(ctx, e.WithToken(set.Access, callerIP), aesTag)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{s, d, a, *s, *d, *a} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, set.Access) || strings.Contains(out, set.Access[20:40]) {
				t.Fatalf("%s of %T shows the token", verb, v)
			}
		}
	}
}

// stringOnly hides a Client's []byte entry points (AppendEncrypt,
// AppendDecrypt, AppendSeal, AppendOpen), so that AEAD's path through the
// string API, in the legacy format, is tested.
type stringOnly struct{ kmscrypto.Client }
