package kms_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/token"
)

// sealer is the part of both planes AppendSeal's tests use.
type sealer interface {
	Encrypt(ctx context.Context, keyTag string, plaintext, encCtx []byte) (string, error)
	Decrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) ([]byte, error)
	AppendDecrypt(ctx context.Context, dst []byte, keyTag string, ciphertext, encCtx []byte) ([]byte, error)
	AppendSeal(ctx context.Context, dst []byte, keyTag string, plaintext, additionalData []byte) ([]byte, error)
	AppendOpen(ctx context.Context, dst []byte, keyTag string, ciphertext, additionalData []byte) ([]byte, error)
}

var (
	_ sealer = (*kms.Engine)(nil)
	_ sealer = kms.TokenClient{}
)

// TestAppendSealOpen: AppendSeal and AppendOpen round-trip on both planes,
// bind the associated data (nil and empty alike), and neither they nor
// Encrypt/Decrypt open the other's ciphertexts.
func TestAppendSealOpen(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	aes := createKey(t, e, "seal", kms.AES256, false)
	if _, err := e.ActivateTokenGenerator(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, aes.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "t"})
	if err != nil {
		t.Fatal(err)
	}
	planes := map[string]sealer{"trusted": e, "token": e.WithToken(set.Access, callerIP)}
	pt, ad := []byte("plaintext bytes"), []byte("associated bytes")
	for name, p := range planes {
		t.Run(name, func(t *testing.T) {
			ct, err := p.AppendSeal(ctx, []byte("held:"), aes.Tag, pt, ad)
			if err != nil || !bytes.HasPrefix(ct, []byte("held:ncpkms:v1:")) {
				t.Fatalf("AppendSeal = %.40q, %v", ct, err)
			}
			ct = ct[len("held:"):]
			if bytes.Contains(ct, pt) || bytes.Contains(ct, ad) {
				t.Fatal("the ciphertext shows the plaintext or the associated data")
			}
			// Either plane opens what the other sealed.
			for other, op := range planes {
				got, err := op.AppendOpen(ctx, []byte("out:"), aes.Tag, ct, ad)
				if err != nil || string(got) != "out:"+string(pt) {
					t.Fatalf("AppendOpen on the %s plane = %q, %v", other, got, err)
				}
			}
			if got, err := p.AppendOpen(ctx, nil, aes.Tag, ct, ad); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("AppendOpen(nil dst) = %q, %v", got, err)
			}
			ct2, _ := p.AppendSeal(ctx, nil, aes.Tag, pt, ad)
			if bytes.Equal(ct, ct2) {
				t.Fatal("two seals are equal")
			}

			// Wrong, swapped, truncated or extended associated data.
			for _, bad := range [][]byte{nil, {}, pt, ad[:len(ad)-1], append(bytes.Clone(ad), 0), []byte("Associated bytes")} {
				got, err := p.AppendOpen(ctx, nil, aes.Tag, ct, bad)
				if got != nil {
					t.Fatalf("AD %q: a plaintext came back", bad)
				}
				wantErr(t, err, kms.ErrDecryptionFailed)
				noSecrets(t, err, pt, ad)
			}
			swapped, err := p.AppendSeal(ctx, nil, aes.Tag, ad, pt)
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.AppendOpen(ctx, nil, aes.Tag, swapped, ad)
			wantErr(t, err, kms.ErrDecryptionFailed)

			// nil and empty associated data are the same.
			ctNil, err := p.AppendSeal(ctx, nil, aes.Tag, pt, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := p.AppendOpen(ctx, nil, aes.Tag, ctNil, []byte{}); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("sealed with nil AD, opened with empty: %q, %v", got, err)
			}

			// Sealed ciphertexts are not Encrypt's, and Encrypt's are not
			// sealed ones: each side fails with ErrDecryptionFailed.
			for _, sealed := range [][]byte{ct, ctNil} {
				_, err = p.Decrypt(ctx, aes.Tag, string(sealed), nil)
				wantErr(t, err, kms.ErrDecryptionFailed)
				_, err = p.AppendDecrypt(ctx, nil, aes.Tag, sealed, nil)
				wantErr(t, err, kms.ErrDecryptionFailed)
			}
			// A context is ignored for a non-convergent key, whatever its
			// first byte: it cannot make Encrypt's ciphertext a sealed one.
			for _, encCtx := range [][]byte{nil, {0xFF}, append([]byte{0xFF}, ad...)} {
				enc, err := p.Encrypt(ctx, aes.Tag, pt, encCtx)
				if err != nil {
					t.Fatal(err)
				}
				for _, try := range [][]byte{nil, ad, encCtx, encCtx[min(1, len(encCtx)):]} {
					_, err = p.AppendOpen(ctx, nil, aes.Tag, []byte(enc), try)
					wantErr(t, err, kms.ErrDecryptionFailed)
				}
			}

			// Altered and truncated ciphertexts.
			for i := len("ncpkms:v1:"); i < len(ct); i += 7 {
				bad := bytes.Clone(ct)
				bad[i] ^= 'A' ^ 'B'
				if _, err := p.AppendOpen(ctx, nil, aes.Tag, bad, ad); err == nil {
					t.Fatalf("a ciphertext altered at %d opened", i)
				}
			}
			for _, n := range []int{0, 5, len("ncpkms:v1:"), len(ct) - 4, len(ct) - 1} {
				_, err := p.AppendOpen(ctx, nil, aes.Tag, ct[:n], ad)
				if !errors.Is(err, kms.ErrInvalidArgument) && !errors.Is(err, kms.ErrDecryptionFailed) {
					t.Fatalf("truncated to %d: %v", n, err)
				}
			}
			short := append([]byte("ncpkms:v1:"), "AAAA"...) // a body shorter than nonce and tag
			_, err = p.AppendOpen(ctx, nil, aes.Tag, short, ad)
			if !errors.Is(err, kms.ErrDecryptionFailed) && !errors.Is(err, kms.ErrInvalidArgument) {
				t.Fatalf("short body: %v", err)
			}

			// Limits.
			for _, n := range []int{0, kms.MaxAESPlaintext + 1} {
				_, err := p.AppendSeal(ctx, nil, aes.Tag, make([]byte, n), ad)
				wantErr(t, err, kms.ErrInvalidArgument)
			}
			big := make([]byte, kms.MaxAdditionalData)
			full, err := p.AppendSeal(ctx, nil, aes.Tag, make([]byte, kms.MaxAESPlaintext), big)
			if err != nil {
				t.Fatalf("the largest plaintext and associated data: %v", err)
			}
			if got, err := p.AppendOpen(ctx, nil, aes.Tag, full, big); err != nil || len(got) != kms.MaxAESPlaintext {
				t.Fatalf("open the largest: %d bytes, %v", len(got), err)
			}
			tooBig := make([]byte, kms.MaxAdditionalData+1)
			_, err = p.AppendSeal(ctx, nil, aes.Tag, pt, tooBig)
			wantErr(t, err, kms.ErrInvalidArgument)
			_, err = p.AppendOpen(ctx, nil, aes.Tag, full, tooBig)
			wantErr(t, err, kms.ErrInvalidArgument)
		})
	}
}

// TestAppendSealKeys: only non-convergent AES256 keys seal, on both
// planes; version states and the minimum decryption version apply as
// they do to Decrypt; usage is counted as encryptions and decryptions.
func TestAppendSealKeys(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	aes := createKey(t, e, "aes", kms.AES256, false)
	for _, k := range []*kms.Key{
		createKey(t, e, "conv", kms.AES256, true),
		createKey(t, e, "rsa", kms.RSA2048, false),
		createKey(t, e, "ecdsa", kms.ECDSA, false),
	} {
		if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
		set, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "t"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []sealer{e, e.WithToken(set.Access, callerIP)} {
			_, err := p.AppendSeal(ctx, nil, k.Tag, []byte("x"), []byte("ad"))
			wantErr(t, err, kms.ErrWrongKeyType)
			_, err = p.AppendOpen(ctx, nil, k.Tag, []byte("ncpkms:v1:YWJj"), []byte("ad"))
			wantErr(t, err, kms.ErrWrongKeyType)
		}
	}
	_, err := e.AppendSeal(ctx, nil, unknownTag(aes.Tag), []byte("x"), nil)
	wantErr(t, err, kms.ErrKeyNotFound)

	ct1, err := e.AppendSeal(ctx, nil, aes.Tag, []byte("v1"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.RotateKey(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	ct2, err := e.AppendSeal(ctx, nil, aes.Tag, []byte("v2"), []byte("ad"))
	if err != nil || !bytes.HasPrefix(ct2, []byte("ncpkms:v2:")) {
		t.Fatalf("AppendSeal after rotation = %.12q, %v", ct2, err)
	}
	if got, err := e.AppendOpen(ctx, nil, aes.Tag, ct1, []byte("ad")); err != nil || string(got) != "v1" {
		t.Fatalf("an older version opens: %q, %v", got, err)
	}
	// The version prefix is bound: version 1's body under version 2's
	// prefix does not open.
	moved := append([]byte("ncpkms:v2:"), ct1[len("ncpkms:v1:"):]...)
	_, err = e.AppendOpen(ctx, nil, aes.Tag, moved, []byte("ad"))
	wantErr(t, err, kms.ErrDecryptionFailed)
	// ReEncrypt does not know the associated data: a sealed ciphertext
	// fails there, as in Decrypt.
	_, err = e.ReEncrypt(ctx, aes.Tag, string(ct1), nil)
	wantErr(t, err, kms.ErrDecryptionFailed)

	if _, err := e.DisableKeyVersion(ctx, aes.Tag, 1); err != nil {
		t.Fatal(err)
	}
	_, err = e.AppendOpen(ctx, nil, aes.Tag, ct1, []byte("ad"))
	wantErr(t, err, kms.ErrVersionDisabled)
	if _, err := e.EnableKeyVersion(ctx, aes.Tag, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetKeyMinDecryptionVersion(ctx, aes.Tag, 2); err != nil {
		t.Fatal(err)
	}
	_, err = e.AppendOpen(ctx, nil, aes.Tag, ct1, []byte("ad"))
	wantErr(t, err, kms.ErrVersionBelowMinimum)
	if got, err := e.AppendOpen(ctx, nil, aes.Tag, ct2, []byte("ad")); err != nil || string(got) != "v2" {
		t.Fatalf("the current version opens: %q, %v", got, err)
	}

	u, err := e.KeyUsage(ctx, aes.Tag)
	if err != nil {
		t.Fatal(err)
	}
	if v1, v2 := u.Versions[0], u.Versions[1]; v1.Encryptions != 1 || v1.Decryptions != 1 || v2.Encryptions != 1 || v2.Decryptions != 1 {
		t.Fatalf("usage: %+v", u.Versions)
	}

	if _, err := e.DisableKey(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	_, err = e.AppendSeal(ctx, nil, aes.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrKeyNotEnabled)
	_, err = e.AppendOpen(ctx, nil, aes.Tag, ct2, []byte("ad"))
	wantErr(t, err, kms.ErrKeyNotEnabled)
}

// TestAppendSealToken: the token plane needs Encrypt to seal and Decrypt
// to open, and a valid token.
func TestAppendSealToken(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	aes := createKey(t, e, "aes", kms.AES256, false)
	if _, err := e.ActivateTokenGenerator(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	issue := func(perms ...token.Permission) kms.TokenClient {
		set, err := e.IssueTokens(ctx, aes.Tag, kms.IssueTokensRequest{Permissions: perms, Subject: "t"})
		if err != nil {
			t.Fatal(err)
		}
		return e.WithToken(set.Access, callerIP)
	}
	ct, err := e.AppendSeal(ctx, nil, aes.Tag, []byte("x"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	enc, dec := issue(token.PermEncrypt), issue(token.PermDecrypt)
	if _, err := enc.AppendSeal(ctx, nil, aes.Tag, []byte("x"), []byte("ad")); err != nil {
		t.Fatalf("encrypt-only token, AppendSeal: %v", err)
	}
	_, err = enc.AppendOpen(ctx, nil, aes.Tag, ct, []byte("ad"))
	wantErr(t, err, kms.ErrPermissionDenied)
	_, err = dec.AppendSeal(ctx, nil, aes.Tag, []byte("x"), []byte("ad"))
	wantErr(t, err, kms.ErrPermissionDenied)
	if got, err := dec.AppendOpen(ctx, nil, aes.Tag, ct, []byte("ad")); err != nil || string(got) != "x" {
		t.Fatalf("decrypt-only token, AppendOpen: %q, %v", got, err)
	}
	junk := e.WithToken("junk", netip.MustParseAddr("10.9.9.9"))
	_, err = junk.AppendSeal(ctx, nil, aes.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrTokenInvalid)
	_, err = junk.AppendOpen(ctx, nil, aes.Tag, ct, []byte("ad"))
	wantErr(t, err, kms.ErrTokenInvalid)
}

// noSecrets fails if err's text shows any of the secrets.
func noSecrets(t *testing.T, err error, secrets ...[]byte) {
	t.Helper()
	for _, s := range secrets {
		if len(s) > 0 && strings.Contains(err.Error(), string(s)) {
			t.Fatalf("error %q shows %q", err, s)
		}
	}
}
