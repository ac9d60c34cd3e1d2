package kmscrypto_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/kmscrypto"
	"github.com/pocketkms/kms/token"
)

var oaepSHA256 = &rsa.OAEPOptions{Hash: crypto.SHA256}

func newDecrypter(t *testing.T, c kmscrypto.Client, tag string, opts ...kmscrypto.DecrypterOption) *kmscrypto.Decrypter {
	t.Helper()
	d, err := kmscrypto.NewDecrypter(context.Background(), c, tag, opts...)
	if err != nil {
		t.Fatalf("NewDecrypter: %v", err)
	}
	return d
}

func encryptOAEP(t *testing.T, d *kmscrypto.Decrypter, msg []byte) []byte {
	t.Helper()
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, d.Public().(*rsa.PublicKey), msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// TestDecrypterOAEP decrypts what rsa.EncryptOAEP made with Public.
func TestDecrypterOAEP(t *testing.T) {
	e := newEngine(t)
	tag := newKey(t, e, kms.RSA2048, false)
	for plane, c := range planes(t, e, tag) {
		t.Run(plane, func(t *testing.T) {
			d := newDecrypter(t, c, tag)
			msg := []byte("a 32-byte data key, for example.")
			ct := encryptOAEP(t, d, msg)
			for _, opts := range []*rsa.OAEPOptions{oaepSHA256, {Hash: crypto.SHA256, MGFHash: crypto.SHA256}} {
				pt, err := d.Decrypt(rand.Reader, ct, opts)
				if err != nil || !bytes.Equal(pt, msg) {
					t.Fatalf("Decrypt = %q, %v", pt, err)
				}
			}
			ct[100] ^= 1
			_, err := d.Decrypt(rand.Reader, ct, oaepSHA256)
			wantKind(t, err, kms.ErrDecryptionFailed)
		})
	}
}

func TestDecrypterRefusesOptions(t *testing.T) {
	e := newEngine(t)
	tag := newKey(t, e, kms.RSA2048, false)
	d := newDecrypter(t, e, tag)
	ct := encryptOAEP(t, d, []byte("x"))
	for _, tc := range []struct {
		name        string
		ct          []byte
		opts        crypto.DecrypterOpts
		unsupported bool
	}{
		{"nil (PKCS #1 v1.5)", ct, nil, true},
		//lint:ignore SA1019 the test checks that PKCS #1 v1.5 is refused.
		{"PKCS #1 v1.5", ct, &rsa.PKCS1v15DecryptOptions{}, true},
		{"nil OAEP options", ct, (*rsa.OAEPOptions)(nil), true},
		{"OAEP SHA-1", ct, &rsa.OAEPOptions{Hash: crypto.SHA1}, true},
		{"OAEP MGF1-SHA1", ct, &rsa.OAEPOptions{Hash: crypto.SHA256, MGFHash: crypto.SHA1}, true},
		{"OAEP label", ct, &rsa.OAEPOptions{Hash: crypto.SHA256, Label: []byte("l")}, true},
		{"short ciphertext", ct[:255], oaepSHA256, false},
		{"long ciphertext", append(ct, 0), oaepSHA256, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := d.Decrypt(rand.Reader, tc.ct, tc.opts)
			if pt != nil {
				t.Fatal("refused call returned a plaintext")
			}
			wantKind(t, err, kms.ErrInvalidArgument)
			if errors.Is(err, errors.ErrUnsupported) != tc.unsupported {
				t.Fatalf("errors.Is(%v, ErrUnsupported) != %v", err, tc.unsupported)
			}
		})
	}
}

// TestDecrypterVersions: a Decrypter keeps its version across rotations;
// WithVersion picks another.
func TestDecrypterVersions(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	tag := newKey(t, e, kms.RSA2048, false)
	d1 := newDecrypter(t, e, tag)
	ct1 := encryptOAEP(t, d1, []byte("to version 1"))
	if _, err := e.RotateKey(ctx, tag); err != nil {
		t.Fatal(err)
	}
	for plane, c := range planes(t, e, tag) {
		d2 := newDecrypter(t, c, tag)
		if d2.Version() != 2 || d2.Public().(*rsa.PublicKey).Equal(d1.Public()) {
			t.Fatalf("%s: after rotation: version %d", plane, d2.Version())
		}
		ct2 := encryptOAEP(t, d2, []byte("to version 2"))
		if pt, err := d2.Decrypt(nil, ct2, oaepSHA256); err != nil || string(pt) != "to version 2" {
			t.Fatalf("%s: v2: %q, %v", plane, pt, err)
		}
		if _, err := d2.Decrypt(nil, ct1, oaepSHA256); !errors.Is(err, kms.ErrDecryptionFailed) {
			t.Fatalf("%s: v1 ciphertext with the v2 decrypter: %v", plane, err)
		}
		old := newDecrypter(t, c, tag, kmscrypto.WithVersion(1))
		if pt, err := old.Decrypt(nil, ct1, oaepSHA256); err != nil || string(pt) != "to version 1" || old.Version() != 1 {
			t.Fatalf("%s: WithVersion(1): %q, %v", plane, pt, err)
		}
	}
	// d1 was made before the rotation and still decrypts with version 1.
	if pt, err := d1.Decrypt(nil, ct1, oaepSHA256); err != nil || string(pt) != "to version 1" {
		t.Fatalf("v1 decrypter after rotation: %q, %v", pt, err)
	}
	_, err := kmscrypto.NewDecrypter(ctx, e, tag, kmscrypto.WithVersion(0))
	wantKind(t, err, kms.ErrInvalidArgument)
	_, err = kmscrypto.NewDecrypter(ctx, e, tag, kmscrypto.WithVersion(7))
	wantKind(t, err, kms.ErrVersionNotFound)
	if _, err := e.DisableKeyVersion(ctx, tag, 1); err != nil {
		t.Fatal(err)
	}
	_, err = d1.Decrypt(nil, ct1, oaepSHA256)
	wantKind(t, err, kms.ErrVersionDisabled)
}

func TestDecrypterRefusesKeys(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	for _, typ := range []kms.KeyType{kms.ECDSA, kms.AES256} {
		tag := newKey(t, e, typ, false)
		_, err := kmscrypto.NewDecrypter(ctx, e, tag)
		wantKind(t, err, kms.ErrWrongKeyType)
	}
	tag := newKey(t, e, kms.RSA2048, false)
	d, err := kmscrypto.NewDecrypter(ctx, tokenClient(t, e, tag, token.PermGetPublicKey), tag)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Decrypt(nil, encryptOAEP(t, d, []byte("x")), oaepSHA256)
	wantKind(t, err, kms.ErrPermissionDenied)
}
