package backendtest

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/pocketkms/kms/backend"
)

// importer returns the backend's Importer or skips the test.
func (f *fixture) importer() backend.Importer { return capability[backend.Importer](f) }

// importKey imports material and loads it.
func (f *fixture) importKey(s spec, material any, convergentKey []byte) (backend.Key, generated) {
	f.t.Helper()
	ref := backend.KeyRef{KeyTag: newTag(f.t), Version: 1, Purpose: s.purpose}
	resp, err := f.importer().ImportKey(f.ctx, &backend.ImportRequest{Ref: ref, Type: s.typ, Material: material, ConvergentKey: convergentKey})
	if err != nil {
		f.t.Fatalf("ImportKey %s: %v", s.name, err)
	}
	if resp == nil || len(resp.Handle) == 0 {
		f.t.Fatalf("ImportKey %s: empty response or handle", s.name)
	}
	g := generated{spec: s, ref: ref, resp: resp}
	return f.load(g), g
}

func stdGCM(t *testing.T, key []byte) cipher.AEAD {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// katKey and katConvergentKey are the fixed keys of the known-answer
// tests: bytes 0x00..0x1f and 0x20..0x3f.
func katKeys() (key, conv []byte) {
	key, conv = make([]byte, 32), make([]byte, 32)
	for i := range 32 {
		key[i], conv[i] = byte(i), byte(32+i)
	}
	return key, conv
}

func testImport(t *testing.T, open opener) {
	t.Run("AES256KnownAnswer", func(t *testing.T) {
		f := setup(t, open)
		key, _ := katKeys()
		k, _ := f.importKey(specAES, bytes.Clone(key), nil)
		ref := stdGCM(t, key)
		pt, ad := []byte("known answer"), []byte("pocketkms")
		nonce := randomBytes(t, backend.NonceSize)
		want := ref.Seal(bytes.Clone(nonce), nonce, pt, ad)
		if got := f.decrypt(k, want, ad); !bytes.Equal(got, pt) {
			t.Error("Decrypt of a crypto/cipher ciphertext gave the wrong plaintext")
		}
		ct := f.encrypt(k, pt, ad)
		got, err := ref.Open(nil, ct[:backend.NonceSize], ct[backend.NonceSize:], ad)
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("crypto/cipher cannot open the backend's ciphertext: %v", err)
		}
	})

	t.Run("AES256ConvergentKnownAnswer", func(t *testing.T) {
		f := setup(t, open)
		key, conv := katKeys()
		k, _ := f.importKey(specConvergent, bytes.Clone(key), bytes.Clone(conv))
		// Pinned outputs of the cross-backend construction (computed
		// independently of this module).
		pinned := []struct{ ad, pt, want string }{
			{"", "", "14c5c66e38fe31a6847e138343c8fc787797ebccdb1dd90977b7d2e5"},
			{"pocketkms", "known answer", "0a865423d4f9bcdb16122bd2fbdbd8691b64db540909eede5b5d1259195c16b1f8776fe2fcf5df0e"},
		}
		for _, c := range pinned {
			if got := f.encrypt(k, []byte(c.pt), []byte(c.ad)); !bytes.Equal(got, mustHex(c.want)) {
				t.Errorf("Encrypt(%q, ad %q) = %x, want %s", c.pt, c.ad, got, c.want)
			}
		}
		// And against a reference built from crypto/aes, crypto/cipher and
		// backend.ConvergentNonce.
		ref := stdGCM(t, key)
		long := bytes.Repeat([]byte("0123456789"), 100)
		for _, c := range []struct{ ad, pt []byte }{
			{nil, []byte("x")},
			{[]byte("ab"), []byte("c")},
			{[]byte("a"), []byte("bc")},
			{long[:50], long},
		} {
			nonce := backend.ConvergentNonce(conv, c.ad, c.pt)
			want := ref.Seal(bytes.Clone(nonce), nonce, c.pt, c.ad)
			if got := f.encrypt(k, c.pt, c.ad); !bytes.Equal(got, want) {
				t.Errorf("Encrypt(%d-byte plaintext, ad %q) differs from the reference", len(c.pt), c.ad)
			}
			if got := f.decrypt(k, want, c.ad); !bytes.Equal(got, c.pt) {
				t.Errorf("Decrypt of the reference (ad %q) gave the wrong plaintext", c.ad)
			}
		}
	})

	t.Run("RSA2048", func(t *testing.T) {
		f := setup(t, open)
		priv := stdRSA(t)
		k, g := f.importKey(specRSA, priv, nil)
		if !priv.PublicKey.Equal(g.resp.Public) {
			t.Error("ImportKey returned another public key")
		}
		pt := []byte("known answer")
		ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &priv.PublicKey, pt, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.decrypt(k, ct, nil); !bytes.Equal(got, pt) {
			t.Error("Decrypt of a crypto/rsa ciphertext gave the wrong plaintext")
		}
		d := digest("message")
		sig := f.sign(k, d)
		if err := rsa.VerifyPSS(&priv.PublicKey, crypto.SHA256, d, sig, nil); err != nil {
			t.Errorf("crypto/rsa rejects the PSS signature: %v", err)
		}
	})

	t.Run("RSA2048TokenSigningKnownAnswer", func(t *testing.T) {
		f := setup(t, open)
		priv := stdRSA(t)
		k, _ := f.importKey(specToken, priv, nil)
		d := digest("header.claims")
		want, err := rsa.SignPKCS1v15(nil, priv, crypto.SHA256, d)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.sign(k, d); !bytes.Equal(got, want) {
			t.Error("PKCS #1 v1.5 signature differs from crypto/rsa's")
		}
	})

	t.Run("ECDSA", func(t *testing.T) {
		f := setup(t, open)
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k, g := f.importKey(specECDSA, priv, nil)
		if !priv.PublicKey.Equal(g.resp.Public) {
			t.Error("ImportKey returned another public key")
		}
		d := digest("message")
		if !ecdsa.VerifyASN1(&priv.PublicKey, d, f.sign(k, d)) {
			t.Error("crypto/ecdsa rejects the signature")
		}
	})

	t.Run("InvalidMaterial", func(t *testing.T) {
		f := setup(t, open)
		imp := f.importer()
		rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		_, edPriv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name     string
			s        spec
			material any
			conv     []byte
		}{
			{"AESNil", specAES, nil, nil},
			{"AES16Bytes", specAES, make([]byte, 16), nil},
			{"AES33Bytes", specAES, make([]byte, 33), nil},
			{"AESString", specAES, string(make([]byte, 32)), nil},
			{"AESArray", specAES, [32]byte{}, nil},
			{"ConvergentKey16Bytes", specAES, make([]byte, 32), make([]byte, 16)},
			{"ConvergentKey33Bytes", specAES, make([]byte, 32), make([]byte, 33)},
			{"RSANil", specRSA, nil, nil},
			{"RSATypedNil", specRSA, (*rsa.PrivateKey)(nil), nil},
			{"RSA1024", specRSA, rsa1024, nil},
			{"RSAWithConvergentKey", specRSA, stdRSA(t), make([]byte, 32)},
			{"RSAGivenECDSA", specRSA, p256, nil},
			{"RSAGivenBytes", specRSA, make([]byte, 32), nil},
			{"TokenSigningECDSA", spec{"", backend.ECDSA, backend.PurposeTokenSigning, false}, p256, nil},
			{"ECDSAP384", specECDSA, p384, nil},
			{"ECDSATypedNil", specECDSA, (*ecdsa.PrivateKey)(nil), nil},
			{"ECDSAGivenRSA", specECDSA, stdRSA(t), nil},
			{"ECDSAGivenEd25519", specECDSA, edPriv, nil},
			{"ECDSAWithConvergentKey", specECDSA, p256, make([]byte, 32)},
			{"UnknownType", spec{"", "DES", backend.PurposeCipher, false}, make([]byte, 32), nil},
		}
		for _, c := range cases {
			noPanic(t, c.name, func() {
				ref := backend.KeyRef{KeyTag: newTag(t), Version: 1, Purpose: c.s.purpose}
				_, err := imp.ImportKey(f.ctx, &backend.ImportRequest{Ref: ref, Type: c.s.typ, Material: c.material, ConvergentKey: c.conv})
				wantErr(t, c.name, err, backend.ErrInvalidArgument)
			})
		}
		noPanic(t, "BadRef", func() {
			ref := backend.KeyRef{KeyTag: "not a tag", Version: 1, Purpose: backend.PurposeCipher}
			_, err := imp.ImportKey(f.ctx, &backend.ImportRequest{Ref: ref, Type: backend.AES256, Material: make([]byte, 32)})
			wantErr(t, "ImportKey with a bad key tag", err, backend.ErrInvalidArgument)
		})
		noPanic(t, "NilRequest", func() {
			_, err := imp.ImportKey(f.ctx, nil)
			wantErr(t, "ImportKey(nil)", err, backend.ErrInvalidArgument)
		})
	})
}
