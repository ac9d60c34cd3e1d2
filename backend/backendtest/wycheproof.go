package backendtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/wycheproof"
)

// RunWycheproof runs Project Wycheproof vectors through the SPI, one
// subtest (and one fresh backend) per file:
//
//   - aes_gcm_test.json: groups with a 256-bit key, a 96-bit IV and a
//     128-bit tag. Each key is imported (backend.Importer) and Decrypt of
//     iv ‖ ct ‖ tag with the vector's aad must give msg ("valid") or fail
//     with backend.ErrDecryptionFailed ("invalid"). Encryption is not
//     checked against the vectors: the SPI never takes a caller's nonce.
//   - rsa_oaep_2048_sha256_mgf1sha256_test.json: the PKCS #8 private key is
//     imported; Decrypt as above. Vectors with a non-empty label are
//     skipped: the SPI (like NAVER KMS) has no OAEP label.
//   - rsa_pss_2048_sha256_mgf1_32_test.json: verification through
//     backend.PublicVerifier with PSSSaltLength set to the group's sLen.
//   - ecdsa_secp256r1_sha256_test.json: DER signatures through
//     backend.PublicVerifier with the SHA-256 digest of msg.
//
// "valid" vectors must pass and "invalid" ones must be rejected;
// "acceptable" ones are judged by the decision table of internal/wycheproof,
// and an acceptable vector that no entry covers fails the
// test, so that a new pin forces a decision. Per-file counts are logged.
//
// A file whose capability the backend lacks (Importer, PublicVerifier) is
// skipped with the reason. When the module cannot be downloaded the test
// is skipped, or fails if the environment variable CI is "true".
func RunWycheproof(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	dir := wycheproof.Vectors(t)
	t.Run("aes_gcm_test.json", func(t *testing.T) { wycheproofAESGCM(t, newBackend, dir) })
	t.Run("rsa_oaep_2048_sha256_mgf1sha256_test.json", func(t *testing.T) { wycheproofOAEP(t, newBackend, dir) })
	t.Run("rsa_pss_2048_sha256_mgf1_32_test.json", func(t *testing.T) { wycheproofPSS(t, newBackend, dir) })
	t.Run("ecdsa_secp256r1_sha256_test.json", func(t *testing.T) { wycheproofECDSA(t, newBackend, dir) })
}

// decryptOutcome decrypts and reports whether the backend accepted the
// ciphertext; a failure that is not ErrDecryptionFailed is a test error.
func decryptOutcome(t *testing.T, ctx context.Context, k backend.Key, tc wycheproof.Test, ct, ad []byte) (bool, string) {
	t.Helper()
	pt, err := as[backend.Decrypter](t, k).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: ct, AdditionalData: ad})
	if err != nil {
		if !errors.Is(err, backend.ErrDecryptionFailed) {
			t.Errorf("tcId %d: Decrypt failed with %v, want a result or backend.ErrDecryptionFailed", tc.TcID, err)
		}
		return false, err.Error()
	}
	if !bytes.Equal(pt, tc.Msg) {
		t.Errorf("tcId %d: Decrypt returned another plaintext", tc.TcID)
		return false, "wrong plaintext"
	}
	return true, ""
}

func wycheproofAESGCM(t *testing.T, nb func(t *testing.T) backend.Backend, dir string) {
	const name = "aes_gcm_test.json"
	file := wycheproof.Read(t, dir, name)
	f := setup(t, nb)
	f.importer()
	c := wycheproof.NewCounts()
	keys := map[string]backend.Key{}
	for _, g := range file.TestGroups {
		if g.KeySize != 256 || g.IVSize != 96 || g.TagSize != 128 {
			c.Skip("in groups other than key 256, iv 96, tag 128 bits", len(g.Tests))
			continue
		}
		for _, tc := range g.Tests {
			k, ok := keys[string(tc.Key)]
			if !ok {
				k, _ = f.importKey(specAES, []byte(tc.Key), nil)
				keys[string(tc.Key)] = k
			}
			ct := make([]byte, 0, len(tc.IV)+len(tc.CT)+len(tc.Tag))
			ct = append(append(append(ct, tc.IV...), tc.CT...), tc.Tag...)
			accepted, detail := decryptOutcome(t, f.ctx, k, tc, ct, tc.AAD)
			c.Judge(t, tc.TcID, tc.Result, tc.Flags, accepted, detail)
		}
	}
	c.Log(t, name)
}

func wycheproofOAEP(t *testing.T, nb func(t *testing.T) backend.Backend, dir string) {
	const name = "rsa_oaep_2048_sha256_mgf1sha256_test.json"
	file := wycheproof.Read(t, dir, name)
	f := setup(t, nb)
	f.importer()
	c := wycheproof.NewCounts()
	for _, g := range file.TestGroups {
		if g.KeySize != 2048 || g.SHA != "SHA-256" || g.MGF != "MGF1" || g.MGFSHA != "SHA-256" {
			c.Skip("group parameters outside the SPI", len(g.Tests))
			continue
		}
		if len(g.PrivateKeyPkcs8) == 0 {
			t.Fatalf("%s: group without privateKeyPkcs8", name)
		}
		priv := wycheproof.ParseDER[*rsa.PrivateKey](t, name+": privateKeyPkcs8", x509.ParsePKCS8PrivateKey, g.PrivateKeyPkcs8)
		k, _ := f.importKey(specRSA, priv, nil)
		for _, tc := range g.Tests {
			if len(tc.Label) != 0 {
				// Recorded decision: the SPI has no OAEP label (NAVER KMS
				// has none), so these cannot be expressed.
				c.Skip("with a non-empty OAEP label (no label in the SPI)", 1)
				continue
			}
			accepted, detail := decryptOutcome(t, f.ctx, k, tc, tc.CT, nil)
			c.Judge(t, tc.TcID, tc.Result, tc.Flags, accepted, detail)
		}
	}
	c.Log(t, name)
}

// publicVerifier returns the backend's PublicVerifier or skips the test.
func (f *fixture) publicVerifier() backend.PublicVerifier {
	return capability[backend.PublicVerifier](f)
}

// verifyOutcome verifies and reports whether the backend accepted the
// signature; an error is a test error (vectors are well-formed requests).
func verifyOutcome(t *testing.T, ctx context.Context, pv backend.PublicVerifier, pub any, tc wycheproof.Test, req *backend.VerifyRequest) (bool, string) {
	t.Helper()
	ok, err := pv.VerifyWithPublicKey(ctx, pub, req)
	if err != nil {
		t.Errorf("tcId %d: VerifyWithPublicKey: %v (want a result, not an error)", tc.TcID, err)
		return false, err.Error()
	}
	if !ok {
		return false, "signature rejected"
	}
	return true, ""
}

func wycheproofPSS(t *testing.T, nb func(t *testing.T) backend.Backend, dir string) {
	const name = "rsa_pss_2048_sha256_mgf1_32_test.json"
	file := wycheproof.Read(t, dir, name)
	f := setup(t, nb)
	pv := f.publicVerifier()
	c := wycheproof.NewCounts()
	for _, g := range file.TestGroups {
		if g.KeySize != 2048 || g.SHA != "SHA-256" || g.MGF != "MGF1" || g.MGFSHA != "SHA-256" {
			c.Skip("group parameters outside the SPI", len(g.Tests))
			continue
		}
		if g.SLen == nil || *g.SLen <= 0 {
			// PSSSaltLength 0 means "any salt" in the SPI, so a group
			// that demands exactly sLen 0 cannot be expressed.
			c.Skip("with sLen 0 (0 means any salt in the SPI)", len(g.Tests))
			continue
		}
		pub := wycheproof.ParseDER[*rsa.PublicKey](t, name+": publicKeyDer", x509.ParsePKIXPublicKey, g.PublicKeyDer)
		for _, tc := range g.Tests {
			d := sha256.Sum256(tc.Msg)
			req := &backend.VerifyRequest{Algorithm: backend.AlgRSAPSSSHA256, Digest: d[:], Signature: tc.Sig, PSSSaltLength: *g.SLen}
			accepted, detail := verifyOutcome(t, f.ctx, pv, pub, tc, req)
			c.Judge(t, tc.TcID, tc.Result, tc.Flags, accepted, detail)
		}
	}
	c.Log(t, name)
}

func wycheproofECDSA(t *testing.T, nb func(t *testing.T) backend.Backend, dir string) {
	const name = "ecdsa_secp256r1_sha256_test.json"
	file := wycheproof.Read(t, dir, name)
	f := setup(t, nb)
	pv := f.publicVerifier()
	c := wycheproof.NewCounts()
	for _, g := range file.TestGroups {
		if g.SHA != "SHA-256" {
			c.Skip("group hash is not SHA-256", len(g.Tests))
			continue
		}
		pub := wycheproof.ParseDER[*ecdsa.PublicKey](t, name+": publicKeyDer", x509.ParsePKIXPublicKey, g.PublicKeyDer)
		for _, tc := range g.Tests {
			d := sha256.Sum256(tc.Msg)
			req := &backend.VerifyRequest{Algorithm: backend.AlgECDSAP256SHA256, Digest: d[:], Signature: tc.Sig}
			accepted, detail := verifyOutcome(t, f.ctx, pv, pub, tc, req)
			c.Judge(t, tc.TcID, tc.Result, tc.Flags, accepted, detail)
		}
	}
	c.Log(t, name)
}
