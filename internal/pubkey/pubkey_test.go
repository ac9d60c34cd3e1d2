package pubkey_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/pubkey"
)

// pssMaxSalt is the salt length backends sign with: 256 − 32 − 2.
const pssMaxSalt = backend.RSAModulusBits/8 - sha256.Size - 2

var keys = sync.OnceValues(func() (*testKeys, error) {
	r1, err := rsa.GenerateKey(rand.Reader, backend.RSAModulusBits)
	if err != nil {
		return nil, err
	}
	r2, err := rsa.GenerateKey(rand.Reader, backend.RSAModulusBits)
	if err != nil {
		return nil, err
	}
	e1, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	e2, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &testKeys{rsa: r1, rsa2: r2, ec: e1, ec2: e2}, nil
})

type testKeys struct {
	rsa, rsa2 *rsa.PrivateKey
	ec, ec2   *ecdsa.PrivateKey
}

func testKeysOrFail(t *testing.T) *testKeys {
	t.Helper()
	k, err := keys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func digest(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func signPSS(t *testing.T, k *rsa.PrivateKey, d []byte, salt int) []byte {
	t.Helper()
	sig, err := rsa.SignPSS(rand.Reader, k, crypto.SHA256, d, &rsa.PSSOptions{SaltLength: salt, Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func signECDSA(t *testing.T, k *ecdsa.PrivateKey, d []byte) []byte {
	t.Helper()
	sig, err := ecdsa.SignASN1(rand.Reader, k, d)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// TestVerify checks that Verify accepts a key's own signature and
// nothing else: every tampering answers (false, nil).
func TestVerify(t *testing.T) {
	k := testKeysOrFail(t)
	d := digest("message")
	for _, c := range []struct {
		name       string
		pub        crypto.PublicKey
		sig, other []byte
	}{
		{"RSA2048", &k.rsa.PublicKey, signPSS(t, k.rsa, d, pssMaxSalt), signPSS(t, k.rsa2, d, pssMaxSalt)},
		{"ECDSA", &k.ec.PublicKey, signECDSA(t, k.ec, d), signECDSA(t, k.ec2, d)},
	} {
		t.Run(c.name, func(t *testing.T) {
			sig := c.sig
			for _, v := range []struct {
				name   string
				digest []byte
				sig    []byte
				want   bool
			}{
				{"Own", d, sig, true},
				{"OtherKeysSignature", d, c.other, false},
				{"OtherDigest", digest("other message"), sig, false},
				{"FlippedFirst", d, flip(sig, 0), false},
				{"FlippedLast", d, flip(sig, len(sig)-1), false},
				{"Truncated", d, sig[:len(sig)-1], false},
				{"ByteAppended", d, append(bytes.Clone(sig), 0), false},
				{"Empty", d, nil, false},
				{"Garbage", d, randomBytes(t, len(sig)), false},
				{"Zero", d, make([]byte, len(sig)), false},
			} {
				got, err := pubkey.Verify(c.pub, v.digest, v.sig)
				if err != nil || got != v.want {
					t.Errorf("%s: Verify = %v, %v; want %v, nil", v.name, got, err, v.want)
				}
			}
		})
	}
}

// TestVerifyPSSSaltLength pins the salt rules: Verify accepts any salt
// length; VerifyPSS can require one.
func TestVerifyPSSSaltLength(t *testing.T) {
	k := testKeysOrFail(t)
	pub := &k.rsa.PublicKey
	d := digest("message")
	maxSalt := signPSS(t, k.rsa, d, pssMaxSalt)
	salt32 := signPSS(t, k.rsa, d, 32)
	pkcs1, err := rsa.SignPKCS1v15(nil, k.rsa, crypto.SHA256, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		sig  []byte
		salt int
		want bool
	}{
		{"MaxSaltAnySalt", maxSalt, pubkey.AnySaltLength, true},
		{"MaxSaltExact", maxSalt, pssMaxSalt, true},
		{"MaxSaltAs32", maxSalt, 32, false},
		{"MaxSaltAsMaxMinusOne", maxSalt, pssMaxSalt - 1, false},
		{"Salt32AnySalt", salt32, pubkey.AnySaltLength, true},
		{"Salt32Exact", salt32, 32, true},
		{"Salt32As20", salt32, 20, false},
		{"PKCS1v15AsPSS", pkcs1, pubkey.AnySaltLength, false},
	} {
		got, err := pubkey.VerifyPSS(pub, d, c.sig, c.salt)
		if err != nil || got != c.want {
			t.Errorf("%s: VerifyPSS(salt %d) = %v, %v; want %v, nil", c.name, c.salt, got, err, c.want)
		}
	}
	for _, sig := range [][]byte{maxSalt, salt32} {
		if got, err := pubkey.Verify(pub, d, sig); err != nil || !got {
			t.Errorf("Verify of a PSS signature = %v, %v; want true, nil", got, err)
		}
	}
	if got, err := pubkey.Verify(pub, d, pkcs1); err != nil || got {
		t.Errorf("Verify of a PKCS #1 v1.5 signature = %v, %v; want false, nil", got, err)
	}
}

// TestVerifyInvalid checks that requests that do not fit fail with the
// documented sentinel and never panic.
func TestVerifyInvalid(t *testing.T) {
	k := testKeysOrFail(t)
	d := digest("message")
	pss := signPSS(t, k.rsa, d, 32)
	ecSig := signECDSA(t, k.ec, d)
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, ecPub := &k.rsa.PublicKey, &k.ec.PublicKey
	type call func() (bool, error)
	cases := []struct {
		name string
		fn   call
		want error
	}{
		{"NilKey", func() (bool, error) { return pubkey.Verify(nil, d, ecSig) }, pubkey.ErrInvalidKey},
		{"TypedNilRSA", func() (bool, error) { return pubkey.Verify((*rsa.PublicKey)(nil), d, pss) }, pubkey.ErrInvalidKey},
		{"ZeroRSA", func() (bool, error) { return pubkey.Verify(&rsa.PublicKey{}, d, pss) }, pubkey.ErrInvalidKey},
		{"RSA1024", func() (bool, error) {
			return pubkey.Verify(&rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 1023), E: 65537}, d, pss)
		}, pubkey.ErrInvalidKey},
		{"TypedNilECDSA", func() (bool, error) { return pubkey.Verify((*ecdsa.PublicKey)(nil), d, ecSig) }, pubkey.ErrInvalidKey},
		{"ZeroECDSA", func() (bool, error) { return pubkey.Verify(&ecdsa.PublicKey{Curve: elliptic.P256()}, d, ecSig) }, pubkey.ErrInvalidKey},
		{"P384", func() (bool, error) { return pubkey.Verify(&p384.PublicKey, d, ecSig) }, pubkey.ErrInvalidKey},
		{"Ed25519", func() (bool, error) { return pubkey.Verify(edPub, d, ecSig) }, pubkey.ErrInvalidKey},
		{"PSSWithECDSAKey", func() (bool, error) { return pubkey.VerifyPSS(ecPub, d, ecSig, 32) }, pubkey.ErrInvalidKey},
		{"NegativeSalt", func() (bool, error) { return pubkey.VerifyPSS(rsaPub, d, pss, -1) }, pubkey.ErrInvalidArgument},
	}
	for _, n := range []int{0, 1, 20, 31, 33, 48, 64} {
		short := make([]byte, n)
		cases = append(cases,
			struct {
				name string
				fn   call
				want error
			}{fmt.Sprintf("RSADigest%d", n), func() (bool, error) { return pubkey.Verify(rsaPub, short, pss) }, pubkey.ErrInvalidArgument},
			struct {
				name string
				fn   call
				want error
			}{fmt.Sprintf("ECDSADigest%d", n), func() (bool, error) { return pubkey.Verify(ecPub, short, ecSig) }, pubkey.ErrInvalidArgument})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ok, err := c.fn()
			if ok || !errors.Is(err, c.want) {
				t.Errorf("= %v, %v; want false, %v", ok, err, c.want)
			}
		})
	}
	// A signature of the other algorithm is a mismatch, not an error: the
	// key decides the algorithm.
	if ok, err := pubkey.Verify(rsaPub, d, ecSig); ok || err != nil {
		t.Errorf("an ECDSA signature under an RSA key: %v, %v; want false, nil", ok, err)
	}
	if ok, err := pubkey.Verify(ecPub, d, pss); ok || err != nil {
		t.Errorf("a PSS signature under an ECDSA key: %v, %v; want false, nil", ok, err)
	}
}

func TestEncryptOAEP(t *testing.T) {
	k := testKeysOrFail(t)
	pub := &k.rsa.PublicKey
	for _, n := range []int{0, 1, 32, backend.RSAOAEPMaxPlaintext} {
		pt := bytes.Repeat([]byte{0xa5}, n)
		ct, err := pubkey.EncryptOAEP(pub, pt)
		if err != nil {
			t.Fatalf("%d-byte plaintext: %v", n, err)
		}
		if len(ct) != backend.RSAModulusBits/8 {
			t.Errorf("%d-byte plaintext: ciphertext is %d bytes, want %d", n, len(ct), backend.RSAModulusBits/8)
		}
		got, err := rsa.DecryptOAEP(sha256.New(), nil, k.rsa, ct, nil)
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("%d-byte plaintext: crypto/rsa cannot decrypt it: %v", n, err)
		}
	}
	pt := []byte("the same plaintext")
	c1, err := pubkey.EncryptOAEP(pub, pt)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := pubkey.EncryptOAEP(pub, pt)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(c1, c2) {
		t.Error("two OAEP encryptions of the same plaintext are equal")
	}
	for _, c := range []struct {
		name string
		pub  crypto.PublicKey
		pt   []byte
		want error
	}{
		{"Oversized191", pub, make([]byte, backend.RSAOAEPMaxPlaintext+1), pubkey.ErrInvalidArgument},
		{"Oversized256", pub, make([]byte, 256), pubkey.ErrInvalidArgument},
		{"NilKey", nil, pt, pubkey.ErrInvalidKey},
		{"TypedNilRSA", (*rsa.PublicKey)(nil), pt, pubkey.ErrInvalidKey},
		{"ZeroRSA", &rsa.PublicKey{}, pt, pubkey.ErrInvalidKey},
		{"ECDSAKey", &k.ec.PublicKey, pt, pubkey.ErrInvalidKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			ct, err := pubkey.EncryptOAEP(c.pub, c.pt)
			if ct != nil || !errors.Is(err, c.want) {
				t.Errorf("= %d bytes, %v; want nil, %v", len(ct), err, c.want)
			}
		})
	}
}

func TestParseAndCheck(t *testing.T) {
	k := testKeysOrFail(t)
	der := func(pub any) []byte {
		t.Helper()
		b, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, ecDER := der(&k.rsa.PublicKey), der(&k.ec.PublicKey)
	for _, c := range []struct {
		name string
		der  []byte
		typ  backend.KeyType // the type it fits; "" when Parse fails
	}{
		{"Empty", nil, backend.AES256},
		{"RSA2048", rsaDER, backend.RSA2048},
		{"P256", ecDER, backend.ECDSA},
		{"RSA1024", der(&rsa1024.PublicKey), ""},
		{"P384", der(&p384.PublicKey), ""},
		{"Ed25519", der(edPub), ""},
		{"Garbage", []byte("not a key"), ""},
		{"Truncated", rsaDER[:len(rsaDER)-1], ""},
		{"ByteAppended", append(bytes.Clone(ecDER), 0), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			pub, err := pubkey.Parse(c.der)
			if c.typ == "" {
				if pub != nil || !errors.Is(err, pubkey.ErrInvalidKey) {
					t.Fatalf("Parse = %T, %v; want nil, ErrInvalidKey", pub, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			for _, typ := range []backend.KeyType{backend.AES256, backend.RSA2048, backend.ECDSA, "DES"} {
				err := pubkey.Check(typ, pub)
				if fits := typ == c.typ; fits != (err == nil) || (err != nil && !errors.Is(err, pubkey.ErrInvalidKey)) {
					t.Errorf("Check(%s, %T) = %v; fits: %v", typ, pub, err, fits)
				}
			}
		})
	}
	if pub, err := pubkey.Parse(rsaDER); err != nil || !k.rsa.PublicKey.Equal(pub) {
		t.Errorf("Parse gave another key: %v", err)
	}
}
