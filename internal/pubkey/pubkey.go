// Package pubkey holds the public-key operations of pocketkms: verifying
// signatures and encrypting with RSA-OAEP under the public key the Engine
// stores for every RSA2048 and ECDSA key version. They need no secret, so
// no backend does them: the Engine calls this package, and the Wycheproof
// verification and OAEP-encryption vectors run against it once, in the
// root package's wycheproof_test.go.
//
// Start with [Verify], what the Engine's Verify runs, and [EncryptOAEP],
// what its RSA2048 Encrypt runs. [Parse] and [Check] read a version's
// stored public key and check it fits the key type.
//
// # Algorithms
//
//   - RSA2048: RSASSA-PSS with SHA-256 and MGF1-SHA256. Backends sign with
//     the maximum salt length (222 bytes) unless asked for another
//     (backend.SignRequest.PSSSaltLength); [Verify] accepts any salt
//     length, as the Engine always has, and [VerifyPSS] can require one.
//     RSA-OAEP with SHA-256, MGF1-SHA256 and an empty label, for at most
//     [backend.RSAOAEPMaxPlaintext] bytes.
//   - ECDSA: P-256 with SHA-256, signatures in ASN.1 DER.
//
// Token-signing keys sign JWTs (RS256); the token package verifies those.
//
// # Concurrency
//
// Every function is safe for concurrent use: the package keeps no state.
package pubkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"

	"github.com/pocketkms/kms/backend"
)

// AnySaltLength, as the salt length of [VerifyPSS], accepts a signature
// with any salt length.
const AnySaltLength = 0

// Parse parses a public key in PKIX (SubjectPublicKeyInfo) DER, as the
// Engine stores it for a key version. Empty input is no key: (nil, nil),
// as for AES256 versions. Anything that is not an RSA-2048 or a P-256 key
// fails with ErrInvalidKey.
func Parse(der []byte) (crypto.PublicKey, error) {
	if len(der) == 0 {
		return nil, nil
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if _, err := rsaKey(k); err != nil {
			return nil, err
		}
	case *ecdsa.PublicKey:
		if _, err := ecdsaKey(k); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: %T", ErrInvalidKey, pub)
	}
	return pub, nil
}

// Check returns nil if pub is the public key a version of type typ has:
// none for AES256, an RSA-2048 key for RSA2048, a P-256 key for ECDSA.
// Otherwise it fails with ErrInvalidKey.
func Check(typ backend.KeyType, pub crypto.PublicKey) error {
	var err error
	switch typ {
	case backend.AES256:
		if pub != nil {
			err = fmt.Errorf("%w: an AES256 key has no public key, found %T", ErrInvalidKey, pub)
		}
	case backend.RSA2048:
		_, err = rsaKey(pub)
	case backend.ECDSA:
		_, err = ecdsaKey(pub)
	default:
		err = fmt.Errorf("%w: unknown key type", ErrInvalidKey)
	}
	return err
}

// Verify reports whether sig is a valid signature of digest, a SHA-256
// digest, under pub: RSASSA-PSS with any salt length for an RSA-2048 key,
// ASN.1 DER ECDSA for a P-256 key. A signature that does not match or
// does not parse answers (false, nil). A key of another kind fails with
// ErrInvalidKey, a digest that is not 32 bytes with ErrInvalidArgument.
func Verify(pub crypto.PublicKey, digest, sig []byte) (bool, error) {
	if _, ok := pub.(*ecdsa.PublicKey); ok {
		return verifyECDSA(pub, digest, sig)
	}
	return VerifyPSS(pub, digest, sig, AnySaltLength)
}

// VerifyPSS reports whether sig is a valid RSASSA-PSS signature (SHA-256,
// MGF1-SHA256) of digest under pub, an RSA-2048 key. saltLength is the
// salt length the signature must have, in bytes, or AnySaltLength. Errors
// are as for Verify, and a negative saltLength is ErrInvalidArgument.
func VerifyPSS(pub crypto.PublicKey, digest, sig []byte, saltLength int) (bool, error) {
	k, err := rsaKey(pub)
	if err != nil {
		return false, err
	}
	if err := checkDigest(digest); err != nil {
		return false, err
	}
	if saltLength < 0 {
		return false, fmt.Errorf("%w: negative salt length", ErrInvalidArgument)
	}
	if saltLength == AnySaltLength {
		saltLength = rsa.PSSSaltLengthAuto
	}
	err = rsa.VerifyPSS(k, crypto.SHA256, digest, sig, &rsa.PSSOptions{SaltLength: saltLength, Hash: crypto.SHA256})
	return err == nil, nil
}

func verifyECDSA(pub crypto.PublicKey, digest, sig []byte) (bool, error) {
	k, err := ecdsaKey(pub)
	if err != nil {
		return false, err
	}
	if err := checkDigest(digest); err != nil {
		return false, err
	}
	return ecdsa.VerifyASN1(k, digest, sig), nil
}

// EncryptOAEP encrypts plaintext under pub, an RSA-2048 key, with
// RSA-OAEP (SHA-256, MGF1-SHA256, empty label) and randomness from
// crypto/rand. The ciphertext is 256 bytes. A plaintext longer than
// backend.RSAOAEPMaxPlaintext fails with ErrInvalidArgument, a key of
// another kind with ErrInvalidKey.
func EncryptOAEP(pub crypto.PublicKey, plaintext []byte) ([]byte, error) {
	k, err := rsaKey(pub)
	if err != nil {
		return nil, err
	}
	if len(plaintext) > backend.RSAOAEPMaxPlaintext {
		return nil, fmt.Errorf("%w: rsa plaintext is %d bytes, at most %d", ErrInvalidArgument, len(plaintext), backend.RSAOAEPMaxPlaintext)
	}
	return rsa.EncryptOAEP(sha256.New(), rand.Reader, k, plaintext, nil)
}

func checkDigest(digest []byte) error {
	if len(digest) != sha256.Size {
		return fmt.Errorf("%w: digest must be %d bytes", ErrInvalidArgument, sha256.Size)
	}
	return nil
}

// rsaKey returns pub as an RSA-2048 key or fails with ErrInvalidKey.
func rsaKey(pub crypto.PublicKey) (*rsa.PublicKey, error) {
	k, ok := pub.(*rsa.PublicKey)
	if !ok || k == nil || k.N == nil || k.N.BitLen() != backend.RSAModulusBits {
		return nil, fmt.Errorf("%w: not an rsa-%d public key", ErrInvalidKey, backend.RSAModulusBits)
	}
	return k, nil
}

// ecdsaKey returns pub as a P-256 key or fails with ErrInvalidKey.
func ecdsaKey(pub crypto.PublicKey) (*ecdsa.PublicKey, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	// crypto/ecdsa panics on a key without coordinates (a zero value), so
	// that is refused here.
	//lint:ignore SA1019 only tested for nil, never used as numbers
	if !ok || k == nil || k.Curve != elliptic.P256() || k.X == nil || k.Y == nil {
		return nil, fmt.Errorf("%w: not a P-256 public key", ErrInvalidKey)
	}
	return k, nil
}
