package kms

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/pocketkms/kms/internal/pubkey"
	"github.com/pocketkms/kms/internal/wycheproof"
)

// TestWycheproofPublicKey runs the Project Wycheproof vectors of the
// operations that need no secret once, here, through exactly what the
// Engine runs for them, whatever the backend (the vectors that need a
// secret run on every backend, in backend/backendtest):
//
//   - rsa_pss_2048_sha256_mgf1_32_test.json: Engine.Verify of an RSA2048
//     key calls pubkey.Verify, which is pubkey.VerifyPSS with
//     pubkey.AnySaltLength. The file runs twice: through VerifyPSS with
//     the group's sLen (every vector judged as Wycheproof states), and
//     through Verify, where the vectors that are "invalid" only because
//     their salt length differs from sLen (comment "s_len changed to N")
//     are accepted, as the Engine accepts any salt length; every other
//     vector is judged as stated.
//   - ecdsa_secp256r1_sha256_test.json: Engine.Verify of an ECDSA key
//     refuses a signature that is not DER (isDERSignature, answering
//     ErrInvalidArgument) and then calls pubkey.Verify; a vector is
//     accepted when both accept it. Digests are SHA-256 of msg.
//   - rsa_oaep_2048_sha256_mgf1sha256_test.json: Engine.Encrypt of an
//     RSA2048 key calls pubkey.EncryptOAEP. Encryption is randomised, so
//     every valid vector's message (without label) is encrypted under the
//     group's public key and must decrypt, with crypto/rsa and the
//     vector's private key, to the message. The vectors' ciphertexts are
//     decrypted by every backend in backendtest.
//
// When the pinned module cannot be downloaded the test is skipped, or
// fails if the environment variable CI is "true".
func TestWycheproofPublicKey(t *testing.T) {
	dir := wycheproof.Vectors(t)
	t.Run("rsa_pss_2048_sha256_mgf1_32_test.json", func(t *testing.T) { wycheproofPSS(t, dir) })
	t.Run("ecdsa_secp256r1_sha256_test.json", func(t *testing.T) { wycheproofECDSA(t, dir) })
	t.Run("rsa_oaep_2048_sha256_mgf1sha256_test.json", func(t *testing.T) { wycheproofOAEPEncrypt(t, dir) })
}

// verifyOutcome turns a verification result into an outcome for
// Counts.Judge; an error is a test error (vectors are well-formed calls).
func verifyOutcome(t *testing.T, tc wycheproof.Test, ok bool, err error) (bool, string) {
	t.Helper()
	if err != nil {
		t.Errorf("tcId %d: %v (want a result, not an error)", tc.TcID, err)
		return false, err.Error()
	}
	if !ok {
		return false, "signature rejected"
	}
	return true, ""
}

func wycheproofPSS(t *testing.T, dir string) {
	const name = "rsa_pss_2048_sha256_mgf1_32_test.json"
	file := wycheproof.Read(t, dir, name)
	exact, anySalt := wycheproof.NewCounts(), wycheproof.NewCounts()
	saltChanged := 0
	for _, g := range file.TestGroups {
		if g.KeySize != 2048 || g.SHA != "SHA-256" || g.MGF != "MGF1" || g.MGFSHA != "SHA-256" {
			exact.Skip("group parameters other than pocketkms's", len(g.Tests))
			anySalt.Skip("group parameters other than pocketkms's", len(g.Tests))
			continue
		}
		if g.SLen == nil || *g.SLen <= 0 {
			// pubkey.AnySaltLength is 0, so a group that demands exactly
			// sLen 0 cannot be expressed.
			exact.Skip("with sLen 0 (0 means any salt)", len(g.Tests))
			anySalt.Skip("with sLen 0 (0 means any salt)", len(g.Tests))
			continue
		}
		pub := wycheproof.ParseDER[*rsa.PublicKey](t, name+": publicKeyDer", x509.ParsePKIXPublicKey, g.PublicKeyDer)
		for _, tc := range g.Tests {
			d := sha256.Sum256(tc.Msg)
			ok, err := pubkey.VerifyPSS(pub, d[:], tc.Sig, *g.SLen)
			accepted, detail := verifyOutcome(t, tc, ok, err)
			exact.Judge(t, tc.TcID, tc.Result, tc.Flags, accepted, detail)

			ok, err = pubkey.Verify(pub, d[:], tc.Sig)
			accepted, detail = verifyOutcome(t, tc, ok, err)
			result := tc.Result
			if result == "invalid" && strings.HasPrefix(tc.Comment, "s_len changed") {
				result = "valid" // a genuine signature with another salt length
				saltChanged++
			}
			anySalt.Judge(t, tc.TcID, result, tc.Flags, accepted, detail)
		}
	}
	exact.Log(t, name+" (VerifyPSS with sLen)")
	anySalt.Log(t, name+" (Verify, any salt length)")
	t.Logf("%s: %d invalid vectors with another salt length, accepted by Verify", name, saltChanged)
	if saltChanged == 0 {
		t.Errorf("%s: no vector with a changed salt length; has the file changed?", name)
	}
}

func wycheproofECDSA(t *testing.T, dir string) {
	const name = "ecdsa_secp256r1_sha256_test.json"
	file := wycheproof.Read(t, dir, name)
	c := wycheproof.NewCounts()
	for _, g := range file.TestGroups {
		if g.SHA != "SHA-256" {
			c.Skip("group hash is not SHA-256", len(g.Tests))
			continue
		}
		pub := wycheproof.ParseDER[*ecdsa.PublicKey](t, name+": publicKeyDer", x509.ParsePKIXPublicKey, g.PublicKeyDer)
		for _, tc := range g.Tests {
			if !isDERSignature(tc.Sig) {
				c.Judge(t, tc.TcID, tc.Result, tc.Flags, false, "not DER (ErrInvalidArgument)")
				continue
			}
			d := sha256.Sum256(tc.Msg)
			ok, err := pubkey.Verify(pub, d[:], tc.Sig)
			accepted, detail := verifyOutcome(t, tc, ok, err)
			c.Judge(t, tc.TcID, tc.Result, tc.Flags, accepted, detail)
		}
	}
	c.Log(t, name)
}

func wycheproofOAEPEncrypt(t *testing.T, dir string) {
	const name = "rsa_oaep_2048_sha256_mgf1sha256_test.json"
	file := wycheproof.Read(t, dir, name)
	encrypted, skipped := 0, 0
	for _, g := range file.TestGroups {
		if g.KeySize != 2048 || g.SHA != "SHA-256" || g.MGF != "MGF1" || g.MGFSHA != "SHA-256" {
			skipped += len(g.Tests)
			continue
		}
		priv := wycheproof.ParseDER[*rsa.PrivateKey](t, name+": privateKeyPkcs8", x509.ParsePKCS8PrivateKey, g.PrivateKeyPkcs8)
		for _, tc := range g.Tests {
			if tc.Result != "valid" || len(tc.Label) != 0 {
				// Invalid vectors are ciphertexts to refuse, and pocketkms
				// has no OAEP label (NAVER KMS has none).
				skipped++
				continue
			}
			ct, err := pubkey.EncryptOAEP(&priv.PublicKey, tc.Msg)
			if err != nil {
				t.Errorf("tcId %d: EncryptOAEP: %v", tc.TcID, err)
				continue
			}
			pt, err := rsa.DecryptOAEP(sha256.New(), nil, priv, ct, nil)
			if err != nil || !bytes.Equal(pt, tc.Msg) {
				t.Errorf("tcId %d: the vector's private key does not decrypt EncryptOAEP's ciphertext to msg: %v", tc.TcID, err)
				continue
			}
			encrypted++
		}
	}
	t.Logf("%s: %d valid messages encrypted and decrypted, %d vectors skipped (invalid, labelled, or other parameters)", name, encrypted, skipped)
	if encrypted == 0 {
		t.Errorf("%s: no message was encrypted; has the file layout changed?", name)
	}
}
