package backendtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/pubkey"
)

// Run runs the conformance suite against the backends open opens. open
// must return a backend whose state lives in dir (a token, a file holding
// a root key, key files: whatever the backend keeps), creating that state
// on first use; Run calls it with the subtest's *testing.T.
//
// Run gives every subtest a fresh directory from t.TempDir, so each starts
// on empty state. The Reopen subtests call open again with the same
// directory, after closing the backend that used it, and once with
// another directory, whose backend must refuse the first one's handles.
// The suite closes every backend it opens when the subtest ends (Close
// must be idempotent), so open need not. See the package documentation
// for what is checked.
func Run(t *testing.T, open func(t *testing.T, dir string) backend.Backend) {
	t.Run("Generate", func(t *testing.T) { testGenerate(t, open) })
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open) })
	t.Run("Differ", func(t *testing.T) { testDiffer(t, open) })
	t.Run("Convergent", func(t *testing.T) { testConvergent(t, open) })
	t.Run("Malformed", func(t *testing.T) { testMalformed(t, open) })
	t.Run("Sign", func(t *testing.T) { testSign(t, open) })
	t.Run("PSSMaxSalt", func(t *testing.T) { testPSSMaxSalt(t, open) })
	t.Run("PSSSaltLength", func(t *testing.T) { testPSSSaltLength(t, open) })
	t.Run("Load", func(t *testing.T) { testLoad(t, open) })
	t.Run("Destroy", func(t *testing.T) { testDestroy(t, open) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open) })
	t.Run("Close", func(t *testing.T) { testClose(t, open) })
	t.Run("Import", func(t *testing.T) { testImport(t, open) })
	t.Run("Reopen", func(t *testing.T) { testReopen(t, open) })
	t.Run("Wycheproof", func(t *testing.T) { testWycheproof(t, open) })
}

func testGenerate(t *testing.T, open opener) {
	for _, s := range allSpecs {
		t.Run(s.name, func(t *testing.T) {
			f := setup(t, open)
			g := f.generate(s)
			switch s.typ {
			case backend.AES256:
				if g.resp.Public != nil {
					t.Errorf("AES256 public key is %T, want nil", g.resp.Public)
				}
			case backend.RSA2048:
				pub, ok := g.resp.Public.(*rsa.PublicKey)
				if !ok || pub.N.BitLen() != backend.RSAModulusBits {
					t.Errorf("RSA2048 public key is %T, want a 2048-bit *rsa.PublicKey", g.resp.Public)
				}
			case backend.ECDSA:
				pub, ok := g.resp.Public.(*ecdsa.PublicKey)
				if !ok || pub.Curve != elliptic.P256() {
					t.Errorf("ECDSA public key is %T, want a P-256 *ecdsa.PublicKey", g.resp.Public)
				}
			}
			// A second generation makes other material and another handle.
			g2 := f.generate(s)
			if bytes.Equal(g.resp.Handle, g2.resp.Handle) {
				t.Error("two generations returned the same handle")
			}
			if g.resp.Public != nil && g.resp.Public.(interface{ Equal(crypto.PublicKey) bool }).Equal(g2.resp.Public) {
				t.Error("two generations returned the same public key")
			}
		})
	}

	t.Run("InvalidRequest", func(t *testing.T) {
		f := setup(t, open)
		tag := newTag(t)
		ref := func(tag string, v uint32, p backend.Purpose) backend.KeyRef {
			return backend.KeyRef{KeyTag: tag, Version: v, Purpose: p}
		}
		cases := []struct {
			name string
			req  *backend.GenerateRequest
		}{
			{"NilRequest", nil},
			{"UnknownType", &backend.GenerateRequest{Ref: ref(tag, 1, backend.PurposeCipher), Type: "DES"}},
			{"EmptyType", &backend.GenerateRequest{Ref: ref(tag, 1, backend.PurposeCipher)}},
			{"UnknownPurpose", &backend.GenerateRequest{Ref: ref(tag, 1, "storage"), Type: backend.AES256}},
			{"EmptyPurpose", &backend.GenerateRequest{Ref: ref(tag, 1, ""), Type: backend.AES256}},
			{"ConvergentRSA", &backend.GenerateRequest{Ref: ref(tag, 1, backend.PurposeCipher), Type: backend.RSA2048, Convergent: true}},
			{"ConvergentECDSA", &backend.GenerateRequest{Ref: ref(tag, 1, backend.PurposeCipher), Type: backend.ECDSA, Convergent: true}},
			{"TokenSigningAES", &backend.GenerateRequest{Ref: ref(tag, 1, backend.PurposeTokenSigning), Type: backend.AES256}},
			{"TokenSigningECDSA", &backend.GenerateRequest{Ref: ref(tag, 1, backend.PurposeTokenSigning), Type: backend.ECDSA}},
			{"VersionZero", &backend.GenerateRequest{Ref: ref(tag, 0, backend.PurposeCipher), Type: backend.AES256}},
			{"EmptyTag", &backend.GenerateRequest{Ref: ref("", 1, backend.PurposeCipher), Type: backend.AES256}},
			{"ShortTag", &backend.GenerateRequest{Ref: ref(tag[:63], 1, backend.PurposeCipher), Type: backend.AES256}},
			{"LongTag", &backend.GenerateRequest{Ref: ref(tag+"0", 1, backend.PurposeCipher), Type: backend.AES256}},
			{"UppercaseTag", &backend.GenerateRequest{Ref: ref(strings.ToUpper("a"+tag[1:]), 1, backend.PurposeCipher), Type: backend.AES256}},
			{"NonHexTag", &backend.GenerateRequest{Ref: ref("g"+tag[1:], 1, backend.PurposeCipher), Type: backend.AES256}},
		}
		for _, c := range cases {
			noPanic(t, c.name, func() {
				resp, err := f.b.Generate(f.ctx, c.req)
				wantErr(t, c.name, err, backend.ErrInvalidArgument)
				if err == nil && resp != nil {
					t.Errorf("%s: got a handle for an invalid request", c.name)
				}
			})
		}
	})
}

func testRoundTrip(t *testing.T, open opener) {
	aesInputs := []struct{ name, pt, ad string }{
		{"Empty", "", ""},
		{"EmptyPlaintext", "", "context"},
		{"OneByte", "x", ""},
		{"Short", "attack at dawn", "ad"},
		{"Max", strings.Repeat("p", 32768), strings.Repeat("c", 50)},
	}
	for _, s := range []spec{specAES, specConvergent} {
		t.Run(s.name, func(t *testing.T) {
			f := setup(t, open)
			k, _ := f.key(s)
			if _, ok := k.(backend.Signer); ok {
				t.Error("AES256 key implements backend.Signer")
			}
			for _, in := range aesInputs {
				ct := f.encrypt(k, []byte(in.pt), []byte(in.ad))
				if want := backend.NonceSize + len(in.pt) + backend.TagSize; len(ct) != want {
					t.Errorf("%s: ciphertext is %d bytes, want %d", in.name, len(ct), want)
				}
				if got := f.decrypt(k, ct, []byte(in.ad)); !bytes.Equal(got, []byte(in.pt)) {
					t.Errorf("%s: round trip changed the plaintext", in.name)
				}
			}
			// nil and empty additional data are the same thing.
			ct := f.encrypt(k, []byte("nil ad"), nil)
			if got := f.decrypt(k, ct, []byte{}); string(got) != "nil ad" {
				t.Error("nil and empty additional data differ")
			}
		})
	}

	t.Run(specRSA.name, func(t *testing.T) {
		f := setup(t, open)
		k, g := f.key(specRSA)
		if _, ok := k.(backend.Encrypter); ok {
			t.Error("RSA2048 key implements backend.Encrypter (the Engine encrypts with the public key)")
		}
		for _, n := range []int{0, 1, 32, backend.RSAOAEPMaxPlaintext} {
			pt := bytes.Repeat([]byte{0xa5}, n)
			// What the Engine encrypts with Generate's public key ...
			if got := f.decrypt(k, encryptOAEP(t, g, pt), nil); !bytes.Equal(got, pt) {
				t.Errorf("%d-byte plaintext: round trip changed it", n)
			}
			// ... and what crypto/rsa does.
			ct2, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, g.resp.Public.(*rsa.PublicKey), pt, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.decrypt(k, ct2, nil); !bytes.Equal(got, pt) {
				t.Errorf("%d-byte plaintext: decrypting a crypto/rsa ciphertext changed it", n)
			}
		}
		d := digest("message")
		sig := f.sign(k, d)
		if !verifies(t, specRSA, g.resp.Public, d, sig) {
			t.Error("the Engine's Verify rejects the key's own PSS signature")
		}
		if err := rsa.VerifyPSS(g.resp.Public.(*rsa.PublicKey), crypto.SHA256, d, sig, nil); err != nil {
			t.Errorf("crypto/rsa rejects the PSS signature: %v", err)
		}
		if rsa.VerifyPKCS1v15(g.resp.Public.(*rsa.PublicKey), crypto.SHA256, d, sig) == nil {
			t.Error("a cipher key signed PKCS #1 v1.5, not PSS")
		}
	})

	t.Run(specToken.name, func(t *testing.T) {
		f := setup(t, open)
		k, g := f.key(specToken)
		if _, ok := k.(backend.Encrypter); ok {
			t.Error("token-signing key implements backend.Encrypter")
		}
		d := digest("header.claims")
		sig := f.sign(k, d)
		if err := rsa.VerifyPKCS1v15(g.resp.Public.(*rsa.PublicKey), crypto.SHA256, d, sig); err != nil {
			t.Errorf("crypto/rsa rejects the PKCS #1 v1.5 signature: %v", err)
		}
		if sig2 := f.sign(k, d); !bytes.Equal(sig, sig2) {
			t.Error("PKCS #1 v1.5 signatures are not deterministic")
		}
		if verifies(t, specRSA, g.resp.Public, d, sig) {
			t.Error("a token-signing key signed PSS, not PKCS #1 v1.5")
		}
	})

	t.Run(specECDSA.name, func(t *testing.T) {
		f := setup(t, open)
		k, g := f.key(specECDSA)
		if _, ok := k.(backend.Encrypter); ok {
			t.Error("ECDSA key implements backend.Encrypter")
		}
		if _, ok := k.(backend.Decrypter); ok {
			t.Error("ECDSA key implements backend.Decrypter")
		}
		d := digest("message")
		sig := f.sign(k, d)
		if !verifies(t, specECDSA, g.resp.Public, d, sig) {
			t.Error("the Engine's Verify rejects the key's own signature")
		}
		if !ecdsa.VerifyASN1(g.resp.Public.(*ecdsa.PublicKey), d, sig) {
			t.Error("crypto/ecdsa rejects the signature")
		}
	})
}

func testDiffer(t *testing.T, open opener) {
	pt, ad := []byte("the same plaintext"), []byte("the same context")

	t.Run("AES256SamePlaintext", func(t *testing.T) {
		f := setup(t, open)
		k, _ := f.key(specAES)
		c1, c2 := f.encrypt(k, pt, ad), f.encrypt(k, pt, ad)
		if bytes.Equal(c1, c2) {
			t.Error("two encryptions of the same plaintext are equal")
		}
		if bytes.Equal(c1[:backend.NonceSize], c2[:backend.NonceSize]) {
			t.Error("two encryptions used the same nonce")
		}
	})

	t.Run("AES256TwoKeys", func(t *testing.T) {
		f := setup(t, open)
		k1, _ := f.key(specAES)
		k2, _ := f.key(specAES)
		c1 := f.encrypt(k1, pt, ad)
		if bytes.Equal(c1, f.encrypt(k2, pt, ad)) {
			t.Error("two keys gave the same ciphertext")
		}
		_, err := as[backend.Decrypter](t, k2).Decrypt(f.ctx, &backend.DecryptRequest{Ciphertext: c1, AdditionalData: ad})
		wantErr(t, "decrypting under another key", err, backend.ErrDecryptionFailed)
	})

	t.Run("AES256ConvergentTwoKeys", func(t *testing.T) {
		f := setup(t, open)
		k1, _ := f.key(specConvergent)
		k2, _ := f.key(specConvergent)
		if bytes.Equal(f.encrypt(k1, pt, ad), f.encrypt(k2, pt, ad)) {
			t.Error("two convergent keys gave the same ciphertext")
		}
	})

	t.Run("AES256ConvergentTwoVersions", func(t *testing.T) {
		f := setup(t, open)
		tag := newTag(t)
		g1 := f.generateRef(specConvergent, backend.KeyRef{KeyTag: tag, Version: 1, Purpose: backend.PurposeCipher})
		g2 := f.generateRef(specConvergent, backend.KeyRef{KeyTag: tag, Version: 2, Purpose: backend.PurposeCipher})
		k1, k2 := f.load(g1), f.load(g2)
		c1, c2 := f.encrypt(k1, pt, ad), f.encrypt(k2, pt, ad)
		if bytes.Equal(c1, c2) {
			t.Error("two versions of a convergent key gave the same ciphertext")
		}
		if bytes.Equal(c1[:backend.NonceSize], c2[:backend.NonceSize]) {
			t.Error("two versions of a convergent key derived the same nonce")
		}
		_, err := as[backend.Decrypter](t, k2).Decrypt(f.ctx, &backend.DecryptRequest{Ciphertext: c1, AdditionalData: ad})
		wantErr(t, "decrypting under another version", err, backend.ErrDecryptionFailed)
	})

	t.Run("RSA2048", func(t *testing.T) {
		f := setup(t, open)
		k, _ := f.key(specRSA)
		d := digest("message")
		if bytes.Equal(f.sign(k, d), f.sign(k, d)) {
			t.Error("two PSS signatures of the same digest are equal (salt not random)")
		}
	})

	t.Run("ECDSA", func(t *testing.T) {
		f := setup(t, open)
		k, _ := f.key(specECDSA)
		d := digest("message")
		if bytes.Equal(f.sign(k, d), f.sign(k, d)) {
			t.Error("two ECDSA signatures of the same digest are equal")
		}
	})
}

func testConvergent(t *testing.T, open opener) {
	t.Run("SameInputSameOutput", func(t *testing.T) {
		f := setup(t, open)
		k, g := f.key(specConvergent)
		k2 := f.load(g) // another instance of the same material
		for _, in := range []struct{ name, pt, ad string }{
			{"Empty", "", ""},
			{"NoAD", "plaintext", ""},
			{"Both", "plaintext", "context"},
		} {
			c1 := f.encrypt(k, []byte(in.pt), []byte(in.ad))
			c2 := f.encrypt(k, []byte(in.pt), []byte(in.ad))
			c3 := f.encrypt(k2, []byte(in.pt), []byte(in.ad))
			if !bytes.Equal(c1, c2) || !bytes.Equal(c1, c3) {
				t.Errorf("%s: convergent encryption is not deterministic", in.name)
			}
			if got := f.decrypt(k, c1, []byte(in.ad)); string(got) != in.pt {
				t.Errorf("%s: round trip changed the plaintext", in.name)
			}
		}
	})

	t.Run("DifferentInputDifferentOutput", func(t *testing.T) {
		f := setup(t, open)
		k, _ := f.key(specConvergent)
		base := f.encrypt(k, []byte("plaintext"), []byte("context"))
		for _, in := range []struct{ name, pt, ad string }{
			{"OtherAD", "plaintext", "context2"},
			{"NoAD", "plaintext", ""},
			{"OtherPlaintext", "plaintexT", "context"},
			// The boundary between AD and plaintext is part of the nonce
			// derivation: moving it must change the output.
			{"ShiftedBoundary", "textplaintext", "con"},
		} {
			c := f.encrypt(k, []byte(in.pt), []byte(in.ad))
			if bytes.Equal(c[:backend.NonceSize], base[:backend.NonceSize]) {
				t.Errorf("%s: same nonce as for other input", in.name)
			}
		}
		c1 := f.encrypt(k, []byte("c"), []byte("ab"))
		c2 := f.encrypt(k, []byte("bc"), []byte("a"))
		if bytes.Equal(c1[:backend.NonceSize], c2[:backend.NonceSize]) {
			t.Error("(ad, plaintext) = (ab, c) and (a, bc) derive the same nonce")
		}
	})
}

func testMalformed(t *testing.T, open opener) {
	for _, s := range []spec{specAES, specConvergent} {
		t.Run(s.name+"Decrypt", func(t *testing.T) {
			f := setup(t, open)
			k, _ := f.key(s)
			pt, ad := []byte("attack at dawn, bring coffee"), []byte("context")
			ct := f.encrypt(k, pt, ad)
			n := len(ct)
			cases := []struct {
				name   string
				ct, ad []byte
			}{
				{"Nil", nil, ad},
				{"Empty", []byte{}, ad},
				{"OneByte", ct[:1], ad},
				{"NonceOnly", ct[:backend.NonceSize], ad},
				{"ShorterThanNonceAndTag", ct[:backend.NonceSize+backend.TagSize-1], ad},
				{"ZeroNonceAndTag", make([]byte, backend.NonceSize+backend.TagSize), ad},
				{"TruncatedByOne", ct[:n-1], ad},
				{"TagRemoved", ct[:n-backend.TagSize], ad},
				{"FirstByteRemoved", ct[1:], ad},
				{"ByteAppended", append(bytes.Clone(ct), 0), ad},
				{"FlippedNonce", flip(ct, 0), ad},
				{"FlippedCiphertext", flip(ct, backend.NonceSize), ad},
				{"FlippedTag", flip(ct, n-1), ad},
				{"Random", randomBytes(t, n), ad},
				{"WrongAD", ct, []byte("context2")},
				{"MissingAD", ct, nil},
				{"TruncatedAD", ct, ad[:len(ad)-1]},
			}
			for _, c := range cases {
				noPanic(t, c.name, func() {
					got, err := as[backend.Decrypter](t, k).Decrypt(f.ctx, &backend.DecryptRequest{Ciphertext: c.ct, AdditionalData: c.ad})
					wantErr(t, c.name, err, backend.ErrDecryptionFailed)
					noLeak(t, c.name, err, pt, ad)
					if err == nil && got != nil {
						t.Errorf("%s: tampered ciphertext decrypted", c.name)
					}
				})
			}
			noPanic(t, "NilRequest", func() {
				_, err := as[backend.Decrypter](t, k).Decrypt(f.ctx, nil)
				wantErr(t, "Decrypt(nil)", err, backend.ErrInvalidArgument)
				_, err = as[backend.Encrypter](t, k).Encrypt(f.ctx, nil)
				wantErr(t, "Encrypt(nil)", err, backend.ErrInvalidArgument)
			})
		})
	}

	t.Run("RSA2048", func(t *testing.T) {
		f := setup(t, open)
		k, g := f.key(specRSA)
		pt := []byte("attack at dawn, bring coffee")
		ct := encryptOAEP(t, g, pt)
		n := len(ct)
		ff := bytes.Repeat([]byte{0xff}, n) // larger than the modulus
		decCases := []struct {
			name string
			ct   []byte
		}{
			{"Nil", nil},
			{"Empty", []byte{}},
			{"OneByte", []byte{1}},
			{"Garbage", randomBytes(t, n)},
			{"GarbageShort", randomBytes(t, n-1)},
			{"GarbageLong", randomBytes(t, n+1)},
			{"AllOnes", ff},
			{"Zero", make([]byte, n)},
			{"TruncatedByOne", ct[:n-1]},
			{"ByteAppended", append(bytes.Clone(ct), 0)},
			{"ZeroPrepended", append([]byte{0}, ct...)},
			{"FlippedFirst", flip(ct, 0)},
			{"FlippedLast", flip(ct, n-1)},
		}
		for _, c := range decCases {
			noPanic(t, c.name, func() {
				got, err := as[backend.Decrypter](t, k).Decrypt(f.ctx, &backend.DecryptRequest{Ciphertext: c.ct})
				wantErr(t, "Decrypt "+c.name, err, backend.ErrDecryptionFailed)
				noLeak(t, c.name, err, pt)
				if err == nil && got != nil {
					t.Errorf("%s: garbage decrypted", c.name)
				}
			})
		}
		noPanic(t, "DecryptAdditionalData", func() {
			_, err := as[backend.Decrypter](t, k).Decrypt(f.ctx, &backend.DecryptRequest{Ciphertext: ct, AdditionalData: []byte("ad")})
			wantErr(t, "Decrypt with additional data", err, backend.ErrInvalidArgument)
		})
		noPanic(t, "NilRequest", func() {
			_, err := as[backend.Decrypter](t, k).Decrypt(f.ctx, nil)
			wantErr(t, "Decrypt(nil)", err, backend.ErrInvalidArgument)
		})
		testMalformedSign(t, f, k)
	})

	t.Run("RSA2048TokenSigning", func(t *testing.T) {
		f := setup(t, open)
		k, g := f.key(specToken)
		testMalformedSign(t, f, k)
		// A token-signing key only signs, even where its Go type decrypts.
		if dk, ok := k.(backend.Decrypter); ok {
			noPanic(t, "Decrypt", func() {
				_, err := dk.Decrypt(f.ctx, &backend.DecryptRequest{Ciphertext: encryptOAEP(t, g, []byte("x"))})
				wantErr(t, "Decrypt with a token-signing key", err, backend.ErrInvalidArgument)
			})
		}
	})

	t.Run("ECDSA", func(t *testing.T) {
		f := setup(t, open)
		k, _ := f.key(specECDSA)
		testMalformedSign(t, f, k)
	})
}

// testMalformedSign checks Sign with bad digests and a nil request.
func testMalformedSign(t *testing.T, f *fixture, k backend.Key) {
	t.Helper()
	for _, n := range []int{0, 1, 20, 31, 33, 48, 64} {
		name := fmt.Sprintf("Digest%d", n)
		noPanic(t, name, func() {
			_, err := as[backend.Signer](t, k).Sign(f.ctx, &backend.SignRequest{Digest: make([]byte, n)})
			wantErr(t, "Sign "+name, err, backend.ErrInvalidArgument)
		})
	}
	noPanic(t, "NilRequest", func() {
		_, err := as[backend.Signer](t, k).Sign(f.ctx, nil)
		wantErr(t, "Sign(nil)", err, backend.ErrInvalidArgument)
	})
	// An RSA2048 cipher key takes salt lengths 0..222; other keys take
	// none. rsa.PSSSaltLengthEqualsHash (-1) is crypto/rsa's, not ours.
	badSalts := []int{-1, -2, backend.MaxPSSSaltLength + 1, 1 << 20}
	if k.Type() != backend.RSA2048 || k.Ref().Purpose != backend.PurposeCipher {
		badSalts = append(badSalts, 1, 32, backend.MaxPSSSaltLength)
	}
	for _, salt := range badSalts {
		name := fmt.Sprintf("PSSSaltLength%d", salt)
		noPanic(t, name, func() {
			_, err := as[backend.Signer](t, k).Sign(f.ctx, &backend.SignRequest{Digest: make([]byte, 32), PSSSaltLength: salt})
			wantErr(t, "Sign "+name, err, backend.ErrInvalidArgument)
		})
	}
}

// testSign checks that a key's signatures verify under the public key
// Generate returned, with the algorithm its type and purpose fix, and
// under no other key or digest. (How verification treats tampered
// signatures is the Engine's, tested in internal/pubkey.)
func testSign(t *testing.T, open opener) {
	for _, s := range []spec{specRSA, specToken, specECDSA} {
		t.Run(s.name, func(t *testing.T) {
			f := setup(t, open)
			k1, g1 := f.key(s)
			k2, g2 := f.key(s)
			d := digest("message")
			sig, other := f.sign(k1, d), f.sign(k2, d)
			cases := []struct {
				name   string
				pub    crypto.PublicKey
				digest []byte
				sig    []byte
				want   bool
			}{
				{"Own", g1.resp.Public, d, sig, true},
				{"OtherKey", g2.resp.Public, d, sig, false},
				{"OtherKeysSignature", g1.resp.Public, d, other, false},
				{"OtherDigest", g1.resp.Public, digest("other message"), sig, false},
			}
			for _, c := range cases {
				if got := verifies(t, s, c.pub, c.digest, c.sig); got != c.want {
					t.Errorf("%s: verifies = %v, want %v", c.name, got, c.want)
				}
			}
		})
	}
}

func testPSSMaxSalt(t *testing.T, open opener) {
	f := setup(t, open)
	k, g := f.key(specRSA)
	const maxSalt = backend.RSAModulusBits/8 - 32 - 2 // 222
	d := digest("message")
	sig := f.sign(k, d)
	if err := rsa.VerifyPSS(g.resp.Public.(*rsa.PublicKey), crypto.SHA256, d, sig, &rsa.PSSOptions{SaltLength: maxSalt}); err != nil {
		t.Errorf("crypto/rsa rejects the signature with salt length %d: %v", maxSalt, err)
	}
	for _, c := range []struct {
		salt int
		want bool
	}{{pubkey.AnySaltLength, true}, {maxSalt, true}, {32, false}, {maxSalt - 1, false}} {
		got, err := pubkey.VerifyPSS(g.resp.Public, d, sig, c.salt)
		if err != nil || got != c.want {
			t.Errorf("VerifyPSS with salt length %d = %v, %v; want %v", c.salt, got, err, c.want)
		}
	}
}

// testPSSSaltLength checks that an RSA2048 cipher key signs with the salt
// length the request asks for (32 is what TLS 1.3 and X.509 RSASSA-PSS
// use), and with the maximum when it asks for none.
func testPSSSaltLength(t *testing.T, open opener) {
	f := setup(t, open)
	k, g := f.key(specRSA)
	pub := g.resp.Public.(*rsa.PublicKey)
	const maxSalt = backend.MaxPSSSaltLength
	d := digest("message")
	for _, c := range []struct {
		name        string
		salt, want  int // asked, and the length the signature must have
		notThisSalt int // a length the signature must not verify with
	}{
		{"Zero", 0, maxSalt, 32},
		{"EqualsHash", 32, 32, maxSalt},
		{"One", 1, 1, 32},
		{"Max", maxSalt, maxSalt, 32},
	} {
		t.Run(c.name, func(t *testing.T) {
			sig := f.signSalt(k, d, c.salt)
			if err := rsa.VerifyPSS(pub, crypto.SHA256, d, sig, &rsa.PSSOptions{SaltLength: c.want}); err != nil {
				t.Errorf("crypto/rsa rejects the signature with salt length %d: %v", c.want, err)
			}
			if err := rsa.VerifyPSS(pub, crypto.SHA256, d, sig, &rsa.PSSOptions{SaltLength: c.notThisSalt}); err == nil {
				t.Errorf("crypto/rsa accepts the signature with salt length %d, want only %d", c.notThisSalt, c.want)
			}
			if err := rsa.VerifyPSS(pub, crypto.SHA256, digest("other"), sig, &rsa.PSSOptions{SaltLength: c.want}); err == nil {
				t.Error("the signature verifies for another digest")
			}
			if bytes.Equal(sig, f.signSalt(k, d, c.salt)) {
				t.Error("two PSS signatures of the same digest are equal (salt not random)")
			}
		})
	}
}

func testLoad(t *testing.T, open opener) {
	t.Run("OtherRef", func(t *testing.T) {
		f := setup(t, open)
		tag := newTag(t)
		ref := backend.KeyRef{KeyTag: tag, Version: 1, Purpose: backend.PurposeCipher}
		aes := f.generateRef(specAES, ref)
		aes2 := f.generate(specAES)
		conv := f.generate(specConvergent)
		rsaKey := f.generate(specRSA)
		ec := f.generate(specECDSA)
		token := f.generateRef(specToken, backend.KeyRef{KeyTag: tag, Version: 1, Purpose: backend.PurposeTokenSigning})
		mutate := func(g generated, fn func(*backend.LoadRequest)) *backend.LoadRequest {
			r := g.loadRequest()
			fn(r)
			return r
		}
		cases := []struct {
			name string
			req  *backend.LoadRequest
		}{
			{"OtherTag", mutate(aes, func(r *backend.LoadRequest) { r.Ref.KeyTag = newTag(t) })},
			{"OtherVersion", mutate(aes, func(r *backend.LoadRequest) { r.Ref.Version = 2 })},
			{"AESAsConvergent", mutate(aes, func(r *backend.LoadRequest) { r.Convergent = true })},
			{"ConvergentAsAES", mutate(conv, func(r *backend.LoadRequest) { r.Convergent = false })},
			{"AESAsRSA", mutate(aes, func(r *backend.LoadRequest) { r.Type = backend.RSA2048 })},
			{"AESAsECDSA", mutate(aes, func(r *backend.LoadRequest) { r.Type = backend.ECDSA })},
			{"RSAAsECDSA", mutate(rsaKey, func(r *backend.LoadRequest) { r.Type = backend.ECDSA })},
			{"RSAAsAES", mutate(rsaKey, func(r *backend.LoadRequest) { r.Type = backend.AES256 })},
			{"ECDSAAsRSA", mutate(ec, func(r *backend.LoadRequest) { r.Type = backend.RSA2048 })},
			{"RSAAsTokenSigning", mutate(rsaKey, func(r *backend.LoadRequest) { r.Ref.Purpose = backend.PurposeTokenSigning })},
			{"TokenSigningAsCipher", mutate(token, func(r *backend.LoadRequest) { r.Ref.Purpose = backend.PurposeCipher })},
			{"OtherKeysHandle", mutate(aes, func(r *backend.LoadRequest) { r.Handle = bytes.Clone(aes2.resp.Handle) })},
		}
		for _, c := range cases {
			noPanic(t, c.name, func() {
				k, err := f.b.Load(f.ctx, c.req)
				wantErr(t, c.name, err, backend.ErrInvalidHandle)
				if err == nil && k != nil {
					t.Errorf("%s: loaded a key for another KeyRef", c.name)
				}
			})
		}
	})

	t.Run("Tampered", func(t *testing.T) {
		f := setup(t, open)
		for _, s := range []spec{specAES, specECDSA} {
			g := f.generate(s)
			h := g.resp.Handle
			n := len(h)
			cases := []struct {
				name    string
				handle  []byte
				targets []error
			}{
				{"Nil", nil, []error{backend.ErrInvalidHandle}},
				{"Empty", []byte{}, []error{backend.ErrInvalidHandle}},
				{"FlippedFirst", flip(h, 0), []error{backend.ErrInvalidHandle, backend.ErrKeyNotFound}},
				{"FlippedMiddle", flip(h, n/2), []error{backend.ErrInvalidHandle, backend.ErrKeyNotFound}},
				{"FlippedLast", flip(h, n-1), []error{backend.ErrInvalidHandle, backend.ErrKeyNotFound}},
				{"TruncatedByOne", h[:n-1], []error{backend.ErrInvalidHandle, backend.ErrKeyNotFound}},
				{"Half", h[:n/2], []error{backend.ErrInvalidHandle, backend.ErrKeyNotFound}},
				{"FirstByteOnly", h[:1], []error{backend.ErrInvalidHandle, backend.ErrKeyNotFound}},
				{"ByteAppended", append(bytes.Clone(h), 0), []error{backend.ErrInvalidHandle, backend.ErrKeyNotFound}},
				{"Garbage", randomBytes(t, n), []error{backend.ErrInvalidHandle, backend.ErrKeyNotFound}},
			}
			for _, c := range cases {
				name := s.name + "/" + c.name
				noPanic(t, name, func() {
					r := g.loadRequest()
					r.Handle = c.handle
					k, err := f.b.Load(f.ctx, r)
					wantErr(t, name, err, c.targets...)
					if err == nil && k != nil {
						t.Errorf("%s: loaded a key from a tampered handle", name)
					}
				})
			}
			// The handle itself still loads.
			f.load(g)
		}
	})

	t.Run("InvalidRequest", func(t *testing.T) {
		f := setup(t, open)
		g := f.generate(specAES)
		noPanic(t, "Nil", func() {
			_, err := f.b.Load(f.ctx, nil)
			wantErr(t, "Load(nil)", err, backend.ErrInvalidArgument, backend.ErrInvalidHandle)
		})
		noPanic(t, "UnknownType", func() {
			r := g.loadRequest()
			r.Type = "DES"
			_, err := f.b.Load(f.ctx, r)
			wantErr(t, "Load with an unknown type", err, backend.ErrInvalidArgument, backend.ErrInvalidHandle)
		})
		noPanic(t, "UnknownPurpose", func() {
			r := g.loadRequest()
			r.Ref.Purpose = "storage"
			_, err := f.b.Load(f.ctx, r)
			wantErr(t, "Load with an unknown purpose", err, backend.ErrInvalidArgument, backend.ErrInvalidHandle)
		})
	})

	t.Run("Repeated", func(t *testing.T) {
		f := setup(t, open)
		for _, s := range []spec{specAES, specRSA} {
			g := f.generate(s)
			k1, k2 := f.load(g), f.load(g)
			if s.typ == backend.AES256 {
				ct := f.encrypt(k1, []byte("pt"), []byte("ad"))
				if string(f.decrypt(k2, ct, []byte("ad"))) != "pt" {
					t.Errorf("%s: two loads of one handle disagree", s.name)
				}
				continue
			}
			ct := encryptOAEP(t, g, []byte("pt"))
			if string(f.decrypt(k1, ct, nil)) != "pt" || string(f.decrypt(k2, ct, nil)) != "pt" {
				t.Errorf("%s: two loads of one handle disagree", s.name)
			}
			d := digest("m")
			if !verifies(t, s, g.resp.Public, d, f.sign(k1, d)) || !verifies(t, s, g.resp.Public, d, f.sign(k2, d)) {
				t.Errorf("%s: two loads of one handle disagree", s.name)
			}
		}
	})
}

func testDestroy(t *testing.T, open opener) {
	f := setup(t, open)
	for _, s := range []spec{specAES, specECDSA} {
		g := f.generate(s)
		req := &backend.DestroyRequest{Ref: g.ref, Type: g.typ, Handle: bytes.Clone(g.resp.Handle)}
		if err := f.b.Destroy(f.ctx, req); err != nil {
			t.Fatalf("%s: Destroy: %v", s.name, err)
		}
		if err := f.b.Destroy(f.ctx, req); err != nil {
			t.Errorf("%s: second Destroy: %v", s.name, err)
		}
		if _, err := f.b.Load(f.ctx, g.loadRequest()); err != nil {
			wantErr(t, s.name+": Load after Destroy", err, backend.ErrKeyNotFound)
		}
	}
	noPanic(t, "NilRequest", func() {
		wantErr(t, "Destroy(nil)", f.b.Destroy(f.ctx, nil), backend.ErrInvalidArgument)
	})
}

func testConcurrent(t *testing.T, open opener) {
	const goroutines, ops = 16, 50
	f := setup(t, open)
	rsaKey, rsaGen := f.key(specRSA)
	aesKey, _ := f.key(specAES)
	convKey, _ := f.key(specConvergent)
	ecKey, ecGen := f.key(specECDSA)

	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			// Concurrent loads of the shared handle, used to cross-check.
			mine, err := f.b.Load(f.ctx, rsaGen.loadRequest())
			if err != nil {
				t.Errorf("goroutine %d: Load: %v", g, err)
				return
			}
			for i := range ops {
				if err := concurrentOp(f, g, i, rsaGen, rsaKey, mine, aesKey, convKey, ecGen, ecKey); err != nil {
					t.Errorf("goroutine %d op %d: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// concurrentOp performs one operation of testConcurrent and checks it.
func concurrentOp(f *fixture, g, i int, rsaGen generated, rsaKey, rsaMine, aesKey, convKey backend.Key, ecGen generated, ecKey backend.Key) error {
	ctx := f.ctx
	pt := fmt.Appendf(nil, "goroutine %d op %d", g, i)
	ad := fmt.Appendf(nil, "ad %d", g)
	d := digest(string(pt))
	decrypt := func(k backend.Key, ct, ad []byte) error {
		got, err := k.(backend.Decrypter).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: ct, AdditionalData: ad})
		if err != nil {
			return fmt.Errorf("%v Decrypt: %w", k.Type(), err)
		}
		if !bytes.Equal(got, pt) {
			return fmt.Errorf("%v round trip changed the plaintext", k.Type())
		}
		return nil
	}
	roundTrip := func(k backend.Key, ad []byte) error {
		ct, err := k.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{Plaintext: pt, AdditionalData: ad})
		if err != nil {
			return fmt.Errorf("%v Encrypt: %w", k.Type(), err)
		}
		return decrypt(k, ct, ad)
	}
	signVerify := func(k backend.Key, gen generated) error {
		sig, err := k.(backend.Signer).Sign(ctx, &backend.SignRequest{Digest: d})
		if err != nil {
			return fmt.Errorf("%v Sign: %w", k.Type(), err)
		}
		ok, err := pubkey.Verify(gen.resp.Public, d, sig)
		if err != nil || !ok {
			return fmt.Errorf("%v Verify = %v, %v", k.Type(), ok, err)
		}
		return nil
	}
	switch i % 6 {
	case 0:
		ct, err := pubkey.EncryptOAEP(rsaGen.resp.Public, pt)
		if err != nil {
			return err
		}
		return decrypt(rsaKey, ct, nil)
	case 1:
		return signVerify(rsaKey, rsaGen)
	case 2:
		return signVerify(rsaMine, rsaGen)
	case 3:
		return roundTrip(aesKey, ad)
	case 4:
		return roundTrip(convKey, ad)
	default:
		return signVerify(ecKey, ecGen)
	}
}

func testClose(t *testing.T, open opener) {
	f := setup(t, open)
	aesGen := f.generate(specAES)
	aesKey := f.load(aesGen)
	rsaKey, rsaGen := f.key(specRSA)
	ecKey, _ := f.key(specECDSA)
	tokenKey, _ := f.key(specToken)
	aesCT := f.encrypt(aesKey, []byte("pt"), nil)
	rsaCT := encryptOAEP(t, rsaGen, []byte("pt"))
	d := digest("m")

	if err := f.b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := f.b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx := f.ctx
	calls := []struct {
		name string
		fn   func() error
	}{
		{"Generate", func() error {
			_, err := f.b.Generate(ctx, &backend.GenerateRequest{Ref: backend.KeyRef{KeyTag: newTag(t), Version: 1, Purpose: backend.PurposeCipher}, Type: backend.AES256})
			return err
		}},
		{"Load", func() error { _, err := f.b.Load(ctx, aesGen.loadRequest()); return err }},
		{"Destroy", func() error {
			return f.b.Destroy(ctx, &backend.DestroyRequest{Ref: aesGen.ref, Type: aesGen.typ, Handle: aesGen.resp.Handle})
		}},
		{"AES256.Encrypt", func() error {
			_, err := aesKey.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{Plaintext: []byte("pt")})
			return err
		}},
		{"AES256.Decrypt", func() error {
			_, err := aesKey.(backend.Decrypter).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: aesCT})
			return err
		}},
		{"RSA2048.Decrypt", func() error {
			_, err := rsaKey.(backend.Decrypter).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: rsaCT})
			return err
		}},
		{"RSA2048.Sign", func() error {
			_, err := rsaKey.(backend.Signer).Sign(ctx, &backend.SignRequest{Digest: d})
			return err
		}},
		{"RSA2048TokenSigning.Sign", func() error {
			_, err := tokenKey.(backend.Signer).Sign(ctx, &backend.SignRequest{Digest: d})
			return err
		}},
		{"ECDSA.Sign", func() error {
			_, err := ecKey.(backend.Signer).Sign(ctx, &backend.SignRequest{Digest: d})
			return err
		}},
	}
	if imp, ok := f.b.(backend.Importer); ok {
		calls = append(calls, struct {
			name string
			fn   func() error
		}{"ImportKey", func() error {
			_, err := imp.ImportKey(ctx, &backend.ImportRequest{Ref: backend.KeyRef{KeyTag: newTag(t), Version: 1, Purpose: backend.PurposeCipher}, Type: backend.AES256, Material: make([]byte, 32)})
			return err
		}})
	}
	for _, c := range calls {
		noPanic(t, c.name, func() { wantErr(t, c.name+" after Close", c.fn(), backend.ErrClosed) })
	}
	if aesKey.Ref() != aesGen.ref || aesKey.Type() != backend.AES256 {
		t.Error("Ref or Type changed after Close")
	}
}
