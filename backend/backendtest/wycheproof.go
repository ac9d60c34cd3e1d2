package backendtest

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/wycheproof"
)

// testWycheproof runs the Project Wycheproof vectors that need the
// secret, one subtest (and one fresh backend) per file, through
// backend.Importer:
//
//   - aes_gcm_test.json: groups with a 256-bit key, a 96-bit IV and a
//     128-bit tag. Each key is imported and Decrypt of iv ‖ ct ‖ tag with
//     the vector's aad must give msg ("valid") or fail with
//     backend.ErrDecryptionFailed ("invalid"). Encryption is not checked
//     against the vectors: the SPI never takes a caller's nonce.
//   - rsa_oaep_2048_sha256_mgf1sha256_test.json: the PKCS #8 private key is
//     imported; Decrypt as above. Vectors with a non-empty label are
//     skipped: the SPI (like NAVER KMS) has no OAEP label.
//
// The public-key vectors (PSS and ECDSA verification, OAEP encryption)
// run once, on what the Engine runs for them (the root package's
// wycheproof_test.go). Acceptable vectors are judged by the decision table
// of internal/wycheproof. Without Importer the files are skipped with the
// reason; when the vectors cannot be downloaded the test is skipped, or
// fails if the environment variable CI is "true".
func testWycheproof(t *testing.T, open opener) {
	dir := wycheproof.Vectors(t)
	t.Run("aes_gcm_test.json", func(t *testing.T) { wycheproofAESGCM(t, open, dir) })
	t.Run("rsa_oaep_2048_sha256_mgf1sha256_test.json", func(t *testing.T) { wycheproofOAEP(t, open, dir) })
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

func wycheproofAESGCM(t *testing.T, open opener, dir string) {
	const name = "aes_gcm_test.json"
	file := wycheproof.Read(t, dir, name)
	f := setup(t, open)
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

func wycheproofOAEP(t *testing.T, open opener, dir string) {
	const name = "rsa_oaep_2048_sha256_mgf1sha256_test.json"
	file := wycheproof.Read(t, dir, name)
	f := setup(t, open)
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
