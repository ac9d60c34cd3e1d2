package backendtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/pocketkms/kms/backend"
)

// Run runs the conformance suite against the backends newBackend makes. It
// calls newBackend once per subtest, with that subtest's *testing.T, and
// closes the backend when the subtest ends. See the package documentation
// for what is checked.
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	t.Run("Generate", func(t *testing.T) { testGenerate(t, newBackend) })
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, newBackend) })
	t.Run("Differ", func(t *testing.T) { testDiffer(t, newBackend) })
	t.Run("Convergent", func(t *testing.T) { testConvergent(t, newBackend) })
	t.Run("Malformed", func(t *testing.T) { testMalformed(t, newBackend) })
	t.Run("Verify", func(t *testing.T) { testVerify(t, newBackend) })
	t.Run("PSSMaxSalt", func(t *testing.T) { testPSSMaxSalt(t, newBackend) })
	t.Run("Load", func(t *testing.T) { testLoad(t, newBackend) })
	t.Run("Destroy", func(t *testing.T) { testDestroy(t, newBackend) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newBackend) })
	t.Run("Close", func(t *testing.T) { testClose(t, newBackend) })
	t.Run("Import", func(t *testing.T) { testImport(t, newBackend) })
	t.Run("PublicVerifier", func(t *testing.T) { testPublicVerifier(t, newBackend) })
}

func testGenerate(t *testing.T, nb func(t *testing.T) backend.Backend) {
	for _, s := range allSpecs {
		t.Run(s.name, func(t *testing.T) {
			f := setup(t, nb)
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
		f := setup(t, nb)
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

func testRoundTrip(t *testing.T, nb func(t *testing.T) backend.Backend) {
	aesInputs := []struct{ name, pt, ad string }{
		{"Empty", "", ""},
		{"EmptyPlaintext", "", "context"},
		{"OneByte", "x", ""},
		{"Short", "attack at dawn", "ad"},
		{"Max", strings.Repeat("p", 32768), strings.Repeat("c", 50)},
	}
	for _, s := range []spec{specAES, specConvergent} {
		t.Run(s.name, func(t *testing.T) {
			f := setup(t, nb)
			k, _ := f.key(s)
			if _, ok := k.(backend.Signer); ok {
				t.Error("AES256 key implements backend.Signer")
			}
			if _, ok := k.(backend.Verifier); ok {
				t.Error("AES256 key implements backend.Verifier")
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
		f := setup(t, nb)
		k, g := f.key(specRSA)
		checkPublic(t, k, g)
		for _, n := range []int{0, 1, 32, backend.RSAOAEPMaxPlaintext} {
			pt := bytes.Repeat([]byte{0xa5}, n)
			ct := f.encrypt(k, pt, nil)
			if len(ct) != backend.RSAModulusBits/8 {
				t.Errorf("%d-byte plaintext: ciphertext is %d bytes, want %d", n, len(ct), backend.RSAModulusBits/8)
			}
			if got := f.decrypt(k, ct, nil); !bytes.Equal(got, pt) {
				t.Errorf("%d-byte plaintext: round trip changed it", n)
			}
			// Interoperable with the standard library.
			ct2, err := backend.EncryptOAEP(g.resp.Public.(*rsa.PublicKey), pt)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.decrypt(k, ct2, nil); !bytes.Equal(got, pt) {
				t.Errorf("%d-byte plaintext: decrypting a crypto/rsa ciphertext changed it", n)
			}
		}
		d := digest("message")
		sig := f.sign(k, backend.AlgRSAPSSSHA256, d)
		if !f.verify(k, &backend.VerifyRequest{Algorithm: backend.AlgRSAPSSSHA256, Digest: d, Signature: sig}) {
			t.Error("Verify rejects the key's own PSS signature")
		}
		if err := rsa.VerifyPSS(g.resp.Public.(*rsa.PublicKey), crypto.SHA256, d, sig, nil); err != nil {
			t.Errorf("crypto/rsa rejects the PSS signature: %v", err)
		}
	})

	t.Run(specToken.name, func(t *testing.T) {
		f := setup(t, nb)
		k, g := f.key(specToken)
		checkPublic(t, k, g)
		d := digest("header.claims")
		sig := f.sign(k, backend.AlgRSAPKCS1v15SHA256, d)
		if !f.verify(k, &backend.VerifyRequest{Algorithm: backend.AlgRSAPKCS1v15SHA256, Digest: d, Signature: sig}) {
			t.Error("Verify rejects the key's own PKCS #1 v1.5 signature")
		}
		if err := rsa.VerifyPKCS1v15(g.resp.Public.(*rsa.PublicKey), crypto.SHA256, d, sig); err != nil {
			t.Errorf("crypto/rsa rejects the PKCS #1 v1.5 signature: %v", err)
		}
		if sig2 := f.sign(k, backend.AlgRSAPKCS1v15SHA256, d); !bytes.Equal(sig, sig2) {
			t.Error("PKCS #1 v1.5 signatures are not deterministic")
		}
	})

	t.Run(specECDSA.name, func(t *testing.T) {
		f := setup(t, nb)
		k, g := f.key(specECDSA)
		checkPublic(t, k, g)
		if _, ok := k.(backend.Encrypter); ok {
			t.Error("ECDSA key implements backend.Encrypter")
		}
		if _, ok := k.(backend.Decrypter); ok {
			t.Error("ECDSA key implements backend.Decrypter")
		}
		d := digest("message")
		sig := f.sign(k, backend.AlgECDSAP256SHA256, d)
		if !f.verify(k, &backend.VerifyRequest{Algorithm: backend.AlgECDSAP256SHA256, Digest: d, Signature: sig}) {
			t.Error("Verify rejects the key's own signature")
		}
		if !ecdsa.VerifyASN1(g.resp.Public.(*ecdsa.PublicKey), d, sig) {
			t.Error("crypto/ecdsa rejects the signature")
		}
	})
}

// checkPublic checks that a signing key's Public matches Generate's.
func checkPublic(t *testing.T, k backend.Key, g generated) {
	t.Helper()
	pub := as[backend.Signer](t, k).Public()
	eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !eq.Equal(g.resp.Public) {
		t.Errorf("the loaded key's Public (%T) differs from Generate's (%T)", pub, g.resp.Public)
	}
}

func testDiffer(t *testing.T, nb func(t *testing.T) backend.Backend) {
	pt, ad := []byte("the same plaintext"), []byte("the same context")

	t.Run("AES256SamePlaintext", func(t *testing.T) {
		f := setup(t, nb)
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
		f := setup(t, nb)
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
		f := setup(t, nb)
		k1, _ := f.key(specConvergent)
		k2, _ := f.key(specConvergent)
		if bytes.Equal(f.encrypt(k1, pt, ad), f.encrypt(k2, pt, ad)) {
			t.Error("two convergent keys gave the same ciphertext")
		}
	})

	t.Run("AES256ConvergentTwoVersions", func(t *testing.T) {
		f := setup(t, nb)
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
		f := setup(t, nb)
		k, _ := f.key(specRSA)
		if bytes.Equal(f.encrypt(k, pt, nil), f.encrypt(k, pt, nil)) {
			t.Error("two OAEP encryptions of the same plaintext are equal")
		}
		d := digest("message")
		if bytes.Equal(f.sign(k, backend.AlgRSAPSSSHA256, d), f.sign(k, backend.AlgRSAPSSSHA256, d)) {
			t.Error("two PSS signatures of the same digest are equal (salt not random)")
		}
	})

	t.Run("ECDSA", func(t *testing.T) {
		f := setup(t, nb)
		k, _ := f.key(specECDSA)
		d := digest("message")
		if bytes.Equal(f.sign(k, backend.AlgECDSAP256SHA256, d), f.sign(k, backend.AlgECDSAP256SHA256, d)) {
			t.Error("two ECDSA signatures of the same digest are equal")
		}
	})
}

func testConvergent(t *testing.T, nb func(t *testing.T) backend.Backend) {
	t.Run("SameInputSameOutput", func(t *testing.T) {
		f := setup(t, nb)
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
		f := setup(t, nb)
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

func testMalformed(t *testing.T, nb func(t *testing.T) backend.Backend) {
	for _, s := range []spec{specAES, specConvergent} {
		t.Run(s.name+"Decrypt", func(t *testing.T) {
			f := setup(t, nb)
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
		f := setup(t, nb)
		k, _ := f.key(specRSA)
		pt := []byte("attack at dawn, bring coffee")
		ct := f.encrypt(k, pt, nil)
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
		encCases := []struct {
			name   string
			pt, ad []byte
		}{
			{"Oversized191", make([]byte, backend.RSAOAEPMaxPlaintext+1), nil},
			{"Oversized256", make([]byte, 256), nil},
			{"AdditionalData", []byte("x"), []byte("ad")},
		}
		for _, c := range encCases {
			noPanic(t, c.name, func() {
				_, err := as[backend.Encrypter](t, k).Encrypt(f.ctx, &backend.EncryptRequest{Plaintext: c.pt, AdditionalData: c.ad})
				wantErr(t, "Encrypt "+c.name, err, backend.ErrInvalidArgument)
			})
		}
		noPanic(t, "DecryptAdditionalData", func() {
			_, err := as[backend.Decrypter](t, k).Decrypt(f.ctx, &backend.DecryptRequest{Ciphertext: ct, AdditionalData: []byte("ad")})
			wantErr(t, "Decrypt with additional data", err, backend.ErrInvalidArgument)
		})
		noPanic(t, "NilRequest", func() {
			_, err := as[backend.Decrypter](t, k).Decrypt(f.ctx, nil)
			wantErr(t, "Decrypt(nil)", err, backend.ErrInvalidArgument)
			_, err = as[backend.Encrypter](t, k).Encrypt(f.ctx, nil)
			wantErr(t, "Encrypt(nil)", err, backend.ErrInvalidArgument)
		})
		testMalformedSign(t, f, k, specRSA)
	})

	t.Run("RSA2048TokenSigning", func(t *testing.T) {
		f := setup(t, nb)
		k, _ := f.key(specToken)
		testMalformedSign(t, f, k, specToken)
	})

	t.Run("ECDSA", func(t *testing.T) {
		f := setup(t, nb)
		k, _ := f.key(specECDSA)
		testMalformedSign(t, f, k, specECDSA)
	})
}

// testMalformedSign checks Sign and Verify with bad digests and algorithms.
func testMalformedSign(t *testing.T, f *fixture, k backend.Key, s spec) {
	t.Helper()
	alg := signAlg(s)
	for _, n := range []int{0, 1, 20, 31, 33, 48, 64} {
		name := fmt.Sprintf("Digest%d", n)
		noPanic(t, name, func() {
			_, err := as[backend.Signer](t, k).Sign(f.ctx, &backend.SignRequest{Algorithm: alg, Digest: make([]byte, n)})
			wantErr(t, "Sign "+name, err, backend.ErrInvalidArgument)
			_, err = as[backend.Verifier](t, k).Verify(f.ctx, &backend.VerifyRequest{Algorithm: alg, Digest: make([]byte, n), Signature: make([]byte, 64)})
			wantErr(t, "Verify "+name, err, backend.ErrInvalidArgument)
		})
	}
	wrong := []backend.Algorithm{0, backend.AlgAESGCM, backend.AlgRSAOAEPSHA256, backend.Algorithm(99), backend.Algorithm(-1)}
	if s.typ == backend.ECDSA {
		wrong = append(wrong, backend.AlgRSAPSSSHA256, backend.AlgRSAPKCS1v15SHA256)
	} else {
		wrong = append(wrong, backend.AlgECDSAP256SHA256)
	}
	d := digest("message")
	for _, a := range wrong {
		name := fmt.Sprintf("Algorithm(%d)", int(a))
		noPanic(t, name, func() {
			_, err := as[backend.Signer](t, k).Sign(f.ctx, &backend.SignRequest{Algorithm: a, Digest: d})
			wantErr(t, "Sign "+name, err, backend.ErrInvalidArgument)
			_, err = as[backend.Verifier](t, k).Verify(f.ctx, &backend.VerifyRequest{Algorithm: a, Digest: d, Signature: make([]byte, 256)})
			wantErr(t, "Verify "+name, err, backend.ErrInvalidArgument)
		})
	}
	if alg == backend.AlgRSAPSSSHA256 {
		noPanic(t, "NegativeSalt", func() {
			_, err := as[backend.Verifier](t, k).Verify(f.ctx, &backend.VerifyRequest{Algorithm: alg, Digest: d, Signature: make([]byte, 256), PSSSaltLength: -1})
			wantErr(t, "Verify with a negative salt length", err, backend.ErrInvalidArgument)
		})
	}
	noPanic(t, "NilRequest", func() {
		_, err := as[backend.Signer](t, k).Sign(f.ctx, nil)
		wantErr(t, "Sign(nil)", err, backend.ErrInvalidArgument)
		_, err = as[backend.Verifier](t, k).Verify(f.ctx, nil)
		wantErr(t, "Verify(nil)", err, backend.ErrInvalidArgument)
	})
}

func testVerify(t *testing.T, nb func(t *testing.T) backend.Backend) {
	for _, s := range []spec{specRSA, specToken, specECDSA} {
		t.Run(s.name, func(t *testing.T) {
			f := setup(t, nb)
			k1, _ := f.key(s)
			k2, _ := f.key(s)
			alg := signAlg(s)
			d := digest("message")
			sig := f.sign(k1, alg, d)
			other := f.sign(k2, alg, d)
			cases := []struct {
				name   string
				digest []byte
				sig    []byte
				want   bool
			}{
				{"Own", d, sig, true},
				{"OtherKeysSignature", d, other, false},
				{"OtherDigest", digest("other message"), sig, false},
				{"FlippedFirst", d, flip(sig, 0), false},
				{"FlippedLast", d, flip(sig, len(sig)-1), false},
				{"Truncated", d, sig[:len(sig)-1], false},
				{"ByteAppended", d, append(bytes.Clone(sig), 0), false},
				{"Empty", d, nil, false},
				{"Garbage", d, randomBytes(t, len(sig)), false},
				{"Zero", d, make([]byte, len(sig)), false},
			}
			for _, c := range cases {
				noPanic(t, c.name, func() {
					got, err := as[backend.Verifier](t, k1).Verify(f.ctx, &backend.VerifyRequest{Algorithm: alg, Digest: c.digest, Signature: c.sig})
					if err != nil || got != c.want {
						t.Errorf("%s: Verify = %v, %v; want %v, nil", c.name, got, err, c.want)
					}
				})
			}
		})
	}
}

func testPSSMaxSalt(t *testing.T, nb func(t *testing.T) backend.Backend) {
	f := setup(t, nb)
	k, g := f.key(specRSA)
	const maxSalt = backend.RSAModulusBits/8 - 32 - 2 // 222
	d := digest("message")
	sig := f.sign(k, backend.AlgRSAPSSSHA256, d)
	if err := rsa.VerifyPSS(g.resp.Public.(*rsa.PublicKey), crypto.SHA256, d, sig, &rsa.PSSOptions{SaltLength: maxSalt}); err != nil {
		t.Errorf("crypto/rsa rejects the signature with salt length %d: %v", maxSalt, err)
	}
	for _, c := range []struct {
		salt int
		want bool
	}{{0, true}, {maxSalt, true}, {32, false}, {maxSalt - 1, false}} {
		if got := f.verify(k, &backend.VerifyRequest{Algorithm: backend.AlgRSAPSSSHA256, Digest: d, Signature: sig, PSSSaltLength: c.salt}); got != c.want {
			t.Errorf("Verify with PSSSaltLength %d = %v, want %v", c.salt, got, c.want)
		}
	}
}

func testLoad(t *testing.T, nb func(t *testing.T) backend.Backend) {
	t.Run("OtherRef", func(t *testing.T) {
		f := setup(t, nb)
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
		f := setup(t, nb)
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
		f := setup(t, nb)
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
		f := setup(t, nb)
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
			d := digest("m")
			sig := f.sign(k1, backend.AlgRSAPSSSHA256, d)
			if !f.verify(k2, &backend.VerifyRequest{Algorithm: backend.AlgRSAPSSSHA256, Digest: d, Signature: sig}) {
				t.Errorf("%s: two loads of one handle disagree", s.name)
			}
		}
	})
}

func testDestroy(t *testing.T, nb func(t *testing.T) backend.Backend) {
	f := setup(t, nb)
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

func testConcurrent(t *testing.T, nb func(t *testing.T) backend.Backend) {
	const goroutines, ops = 16, 50
	f := setup(t, nb)
	rsaKey, rsaGen := f.key(specRSA)
	aesKey, _ := f.key(specAES)
	convKey, _ := f.key(specConvergent)
	ecKey, _ := f.key(specECDSA)

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
				if err := concurrentOp(f, g, i, rsaKey, mine, aesKey, convKey, ecKey); err != nil {
					t.Errorf("goroutine %d op %d: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// concurrentOp performs one operation of testConcurrent and checks it.
func concurrentOp(f *fixture, g, i int, rsaKey, rsaMine, aesKey, convKey, ecKey backend.Key) error {
	ctx := f.ctx
	pt := fmt.Appendf(nil, "goroutine %d op %d", g, i)
	ad := fmt.Appendf(nil, "ad %d", g)
	d := digest(string(pt))
	roundTrip := func(k backend.Key, ad []byte) error {
		ct, err := k.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{Plaintext: pt, AdditionalData: ad})
		if err != nil {
			return fmt.Errorf("%v Encrypt: %w", k.Type(), err)
		}
		got, err := k.(backend.Decrypter).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: ct, AdditionalData: ad})
		if err != nil {
			return fmt.Errorf("%v Decrypt: %w", k.Type(), err)
		}
		if !bytes.Equal(got, pt) {
			return fmt.Errorf("%v round trip changed the plaintext", k.Type())
		}
		return nil
	}
	signVerify := func(k, other backend.Key, alg backend.Algorithm) error {
		sig, err := k.(backend.Signer).Sign(ctx, &backend.SignRequest{Algorithm: alg, Digest: d})
		if err != nil {
			return fmt.Errorf("%v Sign: %w", k.Type(), err)
		}
		ok, err := other.(backend.Verifier).Verify(ctx, &backend.VerifyRequest{Algorithm: alg, Digest: d, Signature: sig})
		if err != nil || !ok {
			return fmt.Errorf("%v Verify = %v, %v", k.Type(), ok, err)
		}
		return nil
	}
	switch i % 6 {
	case 0:
		return roundTrip(rsaKey, nil)
	case 1:
		return signVerify(rsaKey, rsaMine, backend.AlgRSAPSSSHA256)
	case 2:
		return signVerify(rsaMine, rsaKey, backend.AlgRSAPSSSHA256)
	case 3:
		return roundTrip(aesKey, ad)
	case 4:
		return roundTrip(convKey, ad)
	default:
		return signVerify(ecKey, ecKey, backend.AlgECDSAP256SHA256)
	}
}

func testClose(t *testing.T, nb func(t *testing.T) backend.Backend) {
	f := setup(t, nb)
	aesGen := f.generate(specAES)
	aesKey := f.load(aesGen)
	rsaKey, _ := f.key(specRSA)
	ecKey, _ := f.key(specECDSA)
	aesCT := f.encrypt(aesKey, []byte("pt"), nil)
	rsaCT := f.encrypt(rsaKey, []byte("pt"), nil)
	d := digest("m")
	rsaSig := f.sign(rsaKey, backend.AlgRSAPSSSHA256, d)
	ecSig := f.sign(ecKey, backend.AlgECDSAP256SHA256, d)

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
		{"RSA2048.Encrypt", func() error {
			_, err := rsaKey.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{Plaintext: []byte("pt")})
			return err
		}},
		{"RSA2048.Decrypt", func() error {
			_, err := rsaKey.(backend.Decrypter).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: rsaCT})
			return err
		}},
		{"RSA2048.Sign", func() error {
			_, err := rsaKey.(backend.Signer).Sign(ctx, &backend.SignRequest{Algorithm: backend.AlgRSAPSSSHA256, Digest: d})
			return err
		}},
		{"RSA2048.Verify", func() error {
			_, err := rsaKey.(backend.Verifier).Verify(ctx, &backend.VerifyRequest{Algorithm: backend.AlgRSAPSSSHA256, Digest: d, Signature: rsaSig})
			return err
		}},
		{"ECDSA.Sign", func() error {
			_, err := ecKey.(backend.Signer).Sign(ctx, &backend.SignRequest{Algorithm: backend.AlgECDSAP256SHA256, Digest: d})
			return err
		}},
		{"ECDSA.Verify", func() error {
			_, err := ecKey.(backend.Verifier).Verify(ctx, &backend.VerifyRequest{Algorithm: backend.AlgECDSAP256SHA256, Digest: d, Signature: ecSig})
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
	if pv, ok := f.b.(backend.PublicVerifier); ok {
		calls = append(calls, struct {
			name string
			fn   func() error
		}{"VerifyWithPublicKey", func() error {
			_, err := pv.VerifyWithPublicKey(ctx, ecKey.(backend.Signer).Public(), &backend.VerifyRequest{Algorithm: backend.AlgECDSAP256SHA256, Digest: d, Signature: ecSig})
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
