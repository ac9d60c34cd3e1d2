package backend

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
)

// RSAOAEPMaxPlaintext is the largest plaintext RSA-OAEP-SHA256 carries
// under a 2048-bit key: 256 − 2·32 − 2 bytes.
const RSAOAEPMaxPlaintext = 190

// RSAModulusBits is the size of every RSA key this module uses.
const RSAModulusBits = 2048

// VerifyWithPublicKey verifies req under pub in software. Public-key
// operations need no secret, so every backend may use this for Verify. It
// answers (false, nil) for a signature that does not match or does not
// parse, and ErrInvalidArgument for an algorithm that does not fit the key
// or a digest that is not 32 bytes.
func VerifyWithPublicKey(pub crypto.PublicKey, req *VerifyRequest) (bool, error) {
	if req == nil || len(req.Digest) != sha256.Size {
		return false, fmt.Errorf("%w: digest must be %d bytes", ErrInvalidArgument, sha256.Size)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil || k.N.BitLen() != RSAModulusBits {
			return false, fmt.Errorf("%w: rsa key is not %d bits", ErrInvalidArgument, RSAModulusBits)
		}
		switch req.Algorithm {
		case AlgRSAPSSSHA256:
			if req.PSSSaltLength < 0 {
				return false, fmt.Errorf("%w: negative salt length", ErrInvalidArgument)
			}
			salt := req.PSSSaltLength
			if salt == 0 {
				salt = rsa.PSSSaltLengthAuto
			}
			err := rsa.VerifyPSS(k, crypto.SHA256, req.Digest, req.Signature, &rsa.PSSOptions{SaltLength: salt, Hash: crypto.SHA256})
			return err == nil, nil
		case AlgRSAPKCS1v15SHA256:
			return rsa.VerifyPKCS1v15(k, crypto.SHA256, req.Digest, req.Signature) == nil, nil
		}
	case *ecdsa.PublicKey:
		if k == nil || k.Curve != elliptic.P256() {
			return false, fmt.Errorf("%w: ecdsa key is not P-256", ErrInvalidArgument)
		}
		if req.Algorithm == AlgECDSAP256SHA256 {
			return ecdsa.VerifyASN1(k, req.Digest, req.Signature), nil
		}
	default:
		return false, fmt.Errorf("%w: unsupported public key type %T", ErrInvalidArgument, pub)
	}
	return false, fmt.Errorf("%w: algorithm %v does not fit the key", ErrInvalidArgument, req.Algorithm)
}

// EncryptOAEP encrypts plaintext under an RSA-2048 public key with
// RSA-OAEP-SHA256 (MGF1-SHA256, empty label) in software. Plaintext longer
// than RSAOAEPMaxPlaintext fails with ErrInvalidArgument.
func EncryptOAEP(pub *rsa.PublicKey, plaintext []byte) ([]byte, error) {
	if pub == nil || pub.N == nil || pub.N.BitLen() != RSAModulusBits {
		return nil, fmt.Errorf("%w: not an rsa-%d public key", ErrInvalidArgument, RSAModulusBits)
	}
	if len(plaintext) > RSAOAEPMaxPlaintext {
		return nil, fmt.Errorf("%w: rsa plaintext is %d bytes, at most %d", ErrInvalidArgument, len(plaintext), RSAOAEPMaxPlaintext)
	}
	return rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, plaintext, nil)
}
