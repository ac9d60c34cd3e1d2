package kms_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"

	"github.com/pocketkms/kms"
)

func TestEncryptDecryptRoundTrip(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	for _, tc := range []struct {
		typ  kms.KeyType
		size int
	}{
		{kms.AES256, 1}, {kms.AES256, 1024}, {kms.AES256, kms.MaxAESPlaintext},
		{kms.RSA2048, 1}, {kms.RSA2048, kms.MaxRSAPlaintext},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.typ, tc.size), func(t *testing.T) {
			k := createKey(t, e, fmt.Sprintf("k%s%d", tc.typ, tc.size), tc.typ, false)
			pt := bytes.Repeat([]byte{0xa5}, tc.size)
			ct, err := e.Encrypt(ctx, k.Tag, pt, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(ct, "ncpkms:v1:") {
				t.Fatalf("ciphertext prefix: %.20q", ct)
			}
			ct2, _ := e.Encrypt(ctx, k.Tag, pt, nil)
			if ct == ct2 {
				t.Fatal("two encryptions of the same plaintext are equal")
			}
			got, err := e.Decrypt(ctx, k.Tag, ct, []byte("ignored context"))
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("Decrypt: %v", err)
			}
			if len(ct) > kms.MaxCiphertextLength {
				t.Fatalf("ciphertext longer than NAVER's maximum: %d", len(ct))
			}
		})
	}
}

func TestAESBodyLayout(t *testing.T) {
	e := newEngine(t)
	k := createKey(t, e, "layout", kms.AES256, false)
	ct, err := e.Encrypt(context.Background(), k.Tag, make([]byte, 100), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(ct, "ncpkms:v1:"))
	if err != nil || len(body) != 12+100+16 {
		t.Fatalf("body is %d bytes (%v), want nonce 12 + 100 + tag 16", len(body), err)
	}
}

func TestConvergent(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "conv", kms.AES256, true)
	pt, c1, c2 := []byte("same plaintext"), []byte("user-123"), []byte("user-456")
	a, err := e.Encrypt(ctx, k.Tag, pt, c1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := e.Encrypt(ctx, k.Tag, pt, c1)
	if a != b {
		t.Fatal("same (version, context, plaintext) gave different ciphertexts")
	}
	c, _ := e.Encrypt(ctx, k.Tag, pt, c2)
	if c == a {
		t.Fatal("different contexts gave the same ciphertext")
	}
	d, _ := e.Encrypt(ctx, k.Tag, []byte("other plaintext"), c1)
	if d == a {
		t.Fatal("different plaintexts gave the same ciphertext")
	}
	if got, err := e.Decrypt(ctx, k.Tag, a, c1); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("decrypt with the right context: %v", err)
	}
	_, err = e.Decrypt(ctx, k.Tag, a, c2)
	wantErr(t, err, kms.ErrDecryptionFailed)
	_, err = e.ReEncrypt(ctx, k.Tag, a, c2)
	wantErr(t, err, kms.ErrDecryptionFailed)
	for _, bad := range [][]byte{nil, {}, bytes.Repeat([]byte("x"), kms.MaxContext+1)} {
		_, err = e.Encrypt(ctx, k.Tag, pt, bad)
		wantErr(t, err, kms.ErrInvalidArgument)
		_, err = e.Decrypt(ctx, k.Tag, a, bad)
		wantErr(t, err, kms.ErrInvalidArgument)
	}
	if _, err := e.Encrypt(ctx, k.Tag, pt, bytes.Repeat([]byte("x"), kms.MaxContext)); err != nil {
		t.Fatalf("50-byte context: %v", err)
	}
	_, err = e.CreateCustomKey(ctx, k.Tag, kms.CustomKeyRequest{})
	wantErr(t, err, kms.ErrInvalidArgument)

	// After rotation the same input gives a different ciphertext, and the
	// old one still decrypts; re-encryption is deterministic too.
	if _, err := e.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	a2, _ := e.Encrypt(ctx, k.Tag, pt, c1)
	if a2 == a || !strings.HasPrefix(a2, "ncpkms:v2:") {
		t.Fatalf("after rotation: %q", a2)
	}
	re, err := e.ReEncrypt(ctx, k.Tag, a, c1)
	if err != nil || re != a2 {
		t.Fatalf("ReEncrypt = %q, %v; want %q", re, err, a2)
	}
	if got, err := e.Decrypt(ctx, k.Tag, a, c1); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("v1 ciphertext after rotation: %v", err)
	}
}

func TestConvergentDiffersAcrossKeys(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k1 := createKey(t, e, "conv1", kms.AES256, true)
	k2 := createKey(t, e, "conv2", kms.AES256, true)
	a, _ := e.Encrypt(ctx, k1.Tag, []byte("p"), []byte("c"))
	b, _ := e.Encrypt(ctx, k2.Tag, []byte("p"), []byte("c"))
	if a == b {
		t.Fatal("two convergent keys gave the same ciphertext")
	}
}

func flipBase64(ct string, at int) string {
	i := strings.LastIndexByte(ct, ':') + 1
	body, _ := base64.StdEncoding.DecodeString(ct[i:])
	body[(at+len(body))%len(body)] ^= 1
	return ct[:i] + base64.StdEncoding.EncodeToString(body)
}

func TestDecryptRejects(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "victim", kms.AES256, false)
	other := createKey(t, e, "other", kms.AES256, false)
	rsaKey := createKey(t, e, "rsa", kms.RSA2048, false)
	ct, _ := e.Encrypt(ctx, k.Tag, []byte("secret data!"), nil) // 40-byte body: padded
	if !strings.HasSuffix(ct, "==") {
		t.Fatalf("test needs a padded ciphertext: %q", ct)
	}
	otherCT, _ := e.Encrypt(ctx, other.Tag, []byte("secret data"), nil)
	rsaCT, _ := e.Encrypt(ctx, rsaKey.Tag, []byte("secret data"), nil)
	if _, err := e.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	body := strings.TrimPrefix(ct, "ncpkms:v1:")
	for _, tc := range []struct {
		name string
		key  string
		ct   string
		kind error
	}{
		{"other key's ciphertext", k.Tag, otherCT, kms.ErrDecryptionFailed},
		{"moved to version 2", k.Tag, "ncpkms:v2:" + body, kms.ErrDecryptionFailed},
		{"flipped nonce", k.Tag, flipBase64(ct, 0), kms.ErrDecryptionFailed},
		{"flipped ciphertext", k.Tag, flipBase64(ct, 14), kms.ErrDecryptionFailed},
		{"flipped tag", k.Tag, flipBase64(ct, -1), kms.ErrDecryptionFailed},
		{"truncated", k.Tag, "ncpkms:v1:" + base64.StdEncoding.EncodeToString([]byte("short")), kms.ErrDecryptionFailed},
		{"unknown version", k.Tag, "ncpkms:v3:" + body, kms.ErrVersionNotFound},
		{"v0", k.Tag, "ncpkms:v0:" + body, kms.ErrInvalidArgument},
		{"leading zero", k.Tag, "ncpkms:v01:" + body, kms.ErrInvalidArgument},
		{"no prefix", k.Tag, body, kms.ErrInvalidArgument},
		{"url alphabet", k.Tag, "ncpkms:v1:" + base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff, 0xfe}), kms.ErrInvalidArgument},
		{"unpadded", k.Tag, strings.TrimRight(ct, "="), kms.ErrInvalidArgument},
		{"whitespace", k.Tag, ct + " ", kms.ErrInvalidArgument},
		{"empty", k.Tag, "", kms.ErrInvalidArgument},
		{"oversized", k.Tag, "ncpkms:v1:" + strings.Repeat("AAAA", 11000), kms.ErrInvalidArgument},
		{"aes ciphertext on rsa key", rsaKey.Tag, ct, kms.ErrDecryptionFailed},
		{"rsa flipped", rsaKey.Tag, flipBase64(rsaCT, 7), kms.ErrDecryptionFailed},
		{"rsa wrong length", rsaKey.Tag, "ncpkms:v1:" + base64.StdEncoding.EncodeToString(make([]byte, 255)), kms.ErrDecryptionFailed},
		{"unknown key", strings.Repeat("ab", 32), ct, kms.ErrKeyNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := e.Decrypt(ctx, tc.key, tc.ct, nil)
			if pt != nil {
				t.Fatalf("got plaintext %q", pt)
			}
			wantErr(t, err, tc.kind)
			if strings.Contains(err.Error(), "secret data") || (len(tc.ct) > 12 && strings.Contains(err.Error(), tc.ct[10:])) {
				t.Fatalf("error leaks input: %v", err)
			}
			_, err = e.ReEncrypt(ctx, tc.key, tc.ct, nil)
			wantErr(t, err, tc.kind)
		})
	}
}

func TestSizeLimits(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	aes := createKey(t, e, "aes", kms.AES256, false)
	rsaKey := createKey(t, e, "rsa", kms.RSA2048, false)
	ec := createKey(t, e, "ecdsa", kms.ECDSA, false)
	for _, tc := range []struct {
		name string
		fn   func() error
	}{
		{"aes empty", func() error { _, err := e.Encrypt(ctx, aes.Tag, nil, nil); return err }},
		{"aes 32769", func() error { _, err := e.Encrypt(ctx, aes.Tag, make([]byte, kms.MaxAESPlaintext+1), nil); return err }},
		{"rsa 191", func() error {
			_, err := e.Encrypt(ctx, rsaKey.Tag, make([]byte, kms.MaxRSAPlaintext+1), nil)
			return err
		}},
		{"rsa empty", func() error { _, err := e.Encrypt(ctx, rsaKey.Tag, []byte{}, nil); return err }},
		{"sign 8193", func() error { _, err := e.Sign(ctx, ec.Tag, make([]byte, kms.MaxSignData+1)); return err }},
		{"sign empty", func() error { _, err := e.Sign(ctx, ec.Tag, nil); return err }},
		{"verify 8193", func() error {
			_, err := e.Verify(ctx, ec.Tag, make([]byte, kms.MaxSignData+1), "ncpkms:v1:AAAA")
			return err
		}},
		{"custom key 64 bits", func() error {
			_, err := e.CreateCustomKey(ctx, aes.Tag, kms.CustomKeyRequest{Bits: 64})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.fn(), kms.ErrInvalidArgument) })
	}
	if _, err := e.Sign(ctx, ec.Tag, make([]byte, kms.MaxSignData)); err != nil {
		t.Fatalf("sign 8192 bytes: %v", err)
	}
}

func TestWrongKeyType(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	aes := createKey(t, e, "aes", kms.AES256, false)
	ec := createKey(t, e, "ecdsa", kms.ECDSA, false)
	for _, tc := range []struct {
		name string
		fn   func() error
	}{
		{"encrypt ecdsa", func() error { _, err := e.Encrypt(ctx, ec.Tag, []byte("x"), nil); return err }},
		{"decrypt ecdsa", func() error { _, err := e.Decrypt(ctx, ec.Tag, "ncpkms:v1:AAAA", nil); return err }},
		{"re-encrypt ecdsa", func() error { _, err := e.ReEncrypt(ctx, ec.Tag, "ncpkms:v1:AAAA", nil); return err }},
		{"custom key ecdsa", func() error { _, err := e.CreateCustomKey(ctx, ec.Tag, kms.CustomKeyRequest{}); return err }},
		{"sign aes", func() error { _, err := e.Sign(ctx, aes.Tag, []byte("x")); return err }},
		{"verify aes", func() error { _, err := e.Verify(ctx, aes.Tag, []byte("x"), "ncpkms:v1:AAAA"); return err }},
		{"public key aes", func() error { _, err := e.GetPublicKey(ctx, aes.Tag, 0); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.fn(), kms.ErrWrongKeyType) })
	}
}

func TestSignVerify(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	for _, typ := range []kms.KeyType{kms.RSA2048, kms.ECDSA} {
		t.Run(string(typ), func(t *testing.T) {
			k := createKey(t, e, "s"+string(typ), typ, false)
			other := createKey(t, e, "o"+string(typ), typ, false)
			data := []byte("release v1.2.3")
			sig, err := e.Sign(ctx, k.Tag, data)
			if err != nil || !strings.HasPrefix(sig, "ncpkms:v1:") {
				t.Fatalf("Sign = %q, %v", sig, err)
			}
			if ok, err := e.Verify(ctx, k.Tag, data, sig); err != nil || !ok {
				t.Fatalf("Verify = %v, %v", ok, err)
			}
			for name, d := range map[string][]byte{"other data": []byte("release v1.2.4")} {
				if ok, err := e.Verify(ctx, k.Tag, d, sig); err != nil || ok {
					t.Fatalf("%s: Verify = %v, %v", name, ok, err)
				}
			}
			if ok, err := e.Verify(ctx, other.Tag, data, sig); err != nil || ok {
				t.Fatalf("other key: Verify = %v, %v", ok, err)
			}
			if typ == kms.RSA2048 {
				if ok, err := e.Verify(ctx, k.Tag, data, flipBase64(sig, 100)); err != nil || ok {
					t.Fatalf("flipped: Verify = %v, %v", ok, err)
				}
				short := "ncpkms:v1:" + base64.StdEncoding.EncodeToString(make([]byte, 255))
				if ok, err := e.Verify(ctx, k.Tag, data, short); err != nil || ok {
					t.Fatalf("255-byte RSA signature: Verify = %v, %v", ok, err)
				}
			} else {
				_, err := e.Verify(ctx, k.Tag, data, "ncpkms:v1:"+base64.StdEncoding.EncodeToString([]byte("not der")))
				wantErr(t, err, kms.ErrInvalidArgument)
			}
			_, err = e.Verify(ctx, k.Tag, data, strings.Replace(sig, "ncpkms:v1:", "ncpkms:v7:", 1))
			wantErr(t, err, kms.ErrVersionNotFound)
			_, err = e.Verify(ctx, k.Tag, data, "v1:"+sig)
			wantErr(t, err, kms.ErrInvalidArgument)

			// Offline verification with the version's public key.
			p, err := e.GetPublicKey(ctx, k.Tag, 1)
			if err != nil {
				t.Fatal(err)
			}
			block, rest := pem.Decode([]byte(p))
			if block == nil || block.Type != "PUBLIC KEY" || len(rest) != 0 {
				t.Fatalf("PEM: %q", p)
			}
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sig, "ncpkms:v1:"))
			digest := sha256.Sum256(data)
			switch pk := pub.(type) {
			case *rsa.PublicKey:
				// NAVER's salt is the maximum: 256 - 32 - 2 = 222 bytes.
				if err := rsa.VerifyPSS(pk, crypto.SHA256, digest[:], raw, &rsa.PSSOptions{SaltLength: 222}); err != nil {
					t.Fatalf("offline PSS verify with salt 222: %v", err)
				}
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(pk, digest[:], raw) {
					t.Fatal("offline ECDSA verify failed")
				}
			default:
				t.Fatalf("public key type %T", pub)
			}
			// The rotated version signs with a new key; the old signature
			// still verifies with v1.
			if _, err := e.RotateKey(ctx, k.Tag); err != nil {
				t.Fatal(err)
			}
			sig2, _ := e.Sign(ctx, k.Tag, data)
			if !strings.HasPrefix(sig2, "ncpkms:v2:") {
				t.Fatalf("sig after rotation %q", sig2[:12])
			}
			if ok, err := e.Verify(ctx, k.Tag, data, sig); err != nil || !ok {
				t.Fatalf("v1 signature after rotation: %v %v", ok, err)
			}
			p2, _ := e.GetPublicKey(ctx, k.Tag, 0)
			if p2 == p {
				t.Fatal("current public key did not change with rotation")
			}
			_, err = e.GetPublicKey(ctx, k.Tag, 3)
			wantErr(t, err, kms.ErrVersionNotFound)
		})
	}
}

func TestCreateCustomKey(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	for _, typ := range []kms.KeyType{kms.AES256, kms.RSA2048} {
		k := createKey(t, e, "dk"+string(typ), typ, false)
		for _, bits := range []int{0, 128, 256, 512} {
			t.Run(fmt.Sprintf("%s/%d", typ, bits), func(t *testing.T) {
				dk, err := e.CreateCustomKey(ctx, k.Tag, kms.CustomKeyRequest{Bits: bits, RequestPlainKey: true})
				if err != nil {
					t.Fatal(err)
				}
				want := bits / 8
				if bits == 0 {
					want = 32
				}
				if len(dk.Plaintext) != want || dk.KeyVersion != 1 {
					t.Fatalf("data key %d bytes, version %d", len(dk.Plaintext), dk.KeyVersion)
				}
				pt, err := e.Decrypt(ctx, k.Tag, dk.Ciphertext, nil)
				if err != nil || !bytes.Equal(pt, dk.Plaintext) {
					t.Fatalf("data key ciphertext does not decrypt to it: %v", err)
				}
				for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
					if s := fmt.Sprintf(verb, dk); strings.Contains(s, fmt.Sprint(dk.Plaintext)) || strings.Contains(s, fmt.Sprintf("%x", dk.Plaintext)) {
						t.Fatalf("%s prints the data key: %s", verb, s)
					}
				}
				noPlain, err := e.CreateCustomKey(ctx, k.Tag, kms.CustomKeyRequest{Bits: bits})
				if err != nil || noPlain.Plaintext != nil || noPlain.Ciphertext == "" {
					t.Fatalf("without RequestPlainKey: %+v %v", noPlain, err)
				}
			})
		}
	}
}

func TestConcurrentUseOneKey(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "busy", kms.AES256, false)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				pt := []byte(fmt.Sprintf("g%d-i%d", g, i))
				ct, err := e.Encrypt(ctx, k.Tag, pt, nil)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := e.Decrypt(ctx, k.Tag, ct, nil)
				if err != nil || !bytes.Equal(got, pt) {
					t.Errorf("round trip: %v", err)
					return
				}
				if g == 0 && i%10 == 0 {
					if _, err := e.RotateKey(ctx, k.Tag); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	got, _ := e.GetKey(ctx, k.Tag)
	if got.CurrentVersion != 6 {
		t.Fatalf("CurrentVersion = %d, want 6", got.CurrentVersion)
	}
}

// TestVerifySignatureForms: an RSA signature of any length but 256 bytes
// is a mismatch, however long; an ECDSA signature with anything beyond
// (r, s) in its SEQUENCE is not DER.
func TestVerifySignatureForms(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	rk := createKey(t, e, "rsa", kms.RSA2048, false)
	for _, n := range []int{1, 255, 257, 1025, 32 << 10} {
		sig := "ncpkms:v1:" + base64.StdEncoding.EncodeToString(make([]byte, n))
		if ok, err := e.Verify(ctx, rk.Tag, []byte("data"), sig); ok || err != nil {
			t.Errorf("RSA signature of %d bytes: %v, %v; want false, nil", n, ok, err)
		}
	}
	ek := createKey(t, e, "ecdsa", kms.ECDSA, false)
	data := []byte("data")
	sig, err := e.Sign(ctx, ek.Tag, data)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sig, "ncpkms:v1:"))
	if err != nil {
		t.Fatal(err)
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(raw, &rs); err != nil {
		t.Fatal(err)
	}
	r, _ := asn1.Marshal(rs.R)
	s, _ := asn1.Marshal(rs.S)
	extra, _ := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: append(append(r, s...), 0x05, 0x00)})
	if ok, err := e.Verify(ctx, ek.Tag, data, "ncpkms:v1:"+base64.StdEncoding.EncodeToString(extra)); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("SEQUENCE{r, s, NULL}: %v, %v; want ErrInvalidArgument", ok, err)
	}
	if ok, err := e.Verify(ctx, ek.Tag, data, sig); !ok || err != nil {
		t.Fatalf("the genuine signature: %v, %v", ok, err)
	}
}
