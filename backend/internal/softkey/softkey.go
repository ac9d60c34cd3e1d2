// Package softkey is the secret side of the backend SPI in software: keys
// whose material is held in process memory, performing AES-GCM
// encryption and decryption, RSA-OAEP decryption and RSA and ECDSA
// signing. Backends that keep material in software share it:
// backend/memory seals the material into handles, and the test backend
// backend/backendtest/filebackend keeps it in files. Start with
// [Generate] or [Import], which make material, and [Load], which turns
// material into a [backend.Key].
//
// Material is, by key type:
//
//   - AES256: the 32-byte AES key, followed for a convergent key by its
//     32-byte HMAC-SHA256 nonce-derivation key;
//   - RSA2048 and ECDSA: the PKCS #8 DER encoding of the private key.
//
// The algorithms are those of the backend package documentation: the key
// type and the KeyRef's purpose fix them.
//
// # Concurrency
//
// Keys are immutable after Load and safe for concurrent use.
//
// # Security
//
// Load copies what it keeps (the AES-GCM instance, the convergent key, the
// parsed private key), so callers clear their material after use. Those
// copies stay in memory as long as the key is reachable. Keys print, as
// JSON and through log/slog too, as a description naming their type and
// KeyRef, never material.
package softkey

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/pocketkms/kms/backend"
)

// MaxAESInput is the largest plaintext, and the largest additional data,
// an AES256 key accepts, in bytes. It only rejects absurd sizes; the
// Engine's own limits are far smaller.
const MaxAESInput = 64 << 20

// aesKeySize is the size of an AES-256 key.
const aesKeySize = 32

// ErrMalformed is returned by Load for material that is not what the key
// type and convergent flag need; backends report it as
// backend.ErrInvalidHandle. It says nothing more, on purpose.
var ErrMalformed = errors.New("softkey: malformed key material")

// Generate makes new material of type typ (a convergent key for AES256
// when convergent is set) from crypto/rand, and returns it with its public
// key (nil for AES256). The caller clears material after use. typ must be
// valid (see backend.KeyRef.Validate); an unknown one fails with
// backend.ErrInvalidArgument.
func Generate(typ backend.KeyType, convergent bool) (material []byte, pub crypto.PublicKey, err error) {
	switch typ {
	case backend.AES256:
		n := aesKeySize
		if convergent {
			n += backend.ConvergentKeySize
		}
		material = make([]byte, n)
		if _, err := rand.Read(material); err != nil {
			return nil, nil, err
		}
		return material, nil, nil
	case backend.RSA2048:
		priv, err := rsa.GenerateKey(rand.Reader, backend.RSAModulusBits)
		if err != nil {
			return nil, nil, err
		}
		return encodePrivate(priv)
	case backend.ECDSA:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		return encodePrivate(priv)
	}
	return nil, nil, fmt.Errorf("%w: unknown key type", backend.ErrInvalidArgument)
}

func encodePrivate(priv crypto.Signer) ([]byte, crypto.PublicKey, error) {
	material, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return material, priv.Public(), nil
}

// Import returns the material of req (see backend.ImportRequest) and its
// public key. Material of the wrong Go type, size or curve, or a
// ConvergentKey that is not 32 bytes, fails with
// backend.ErrInvalidArgument, with a message that names no material. A
// non-empty ConvergentKey makes an AES256 key convergent; the caller
// validates the KeyRef, type and convergent flag first. The caller's
// material is not modified or retained; the caller clears the returned
// material after use.
func Import(req *backend.ImportRequest) (material []byte, pub crypto.PublicKey, err error) {
	switch req.Type {
	case backend.AES256:
		k, ok := req.Material.([]byte)
		if !ok || len(k) != aesKeySize {
			return nil, nil, fmt.Errorf("%w: material must be a %d-byte []byte", backend.ErrInvalidArgument, aesKeySize)
		}
		if len(req.ConvergentKey) != 0 && len(req.ConvergentKey) != backend.ConvergentKeySize {
			return nil, nil, fmt.Errorf("%w: convergent key must be %d bytes", backend.ErrInvalidArgument, backend.ConvergentKeySize)
		}
		material = make([]byte, 0, aesKeySize+backend.ConvergentKeySize)
		material = append(material, k...)
		return append(material, req.ConvergentKey...), nil, nil
	case backend.RSA2048:
		priv, ok := req.Material.(*rsa.PrivateKey)
		if !ok || priv == nil || priv.N == nil || priv.N.BitLen() != backend.RSAModulusBits {
			return nil, nil, fmt.Errorf("%w: material must be an *rsa.PrivateKey of %d bits", backend.ErrInvalidArgument, backend.RSAModulusBits)
		}
		if err := priv.Validate(); err != nil {
			return nil, nil, fmt.Errorf("%w: invalid rsa key", backend.ErrInvalidArgument)
		}
		if material, err = x509.MarshalPKCS8PrivateKey(priv); err != nil {
			return nil, nil, fmt.Errorf("%w: rsa key cannot be encoded", backend.ErrInvalidArgument)
		}
	case backend.ECDSA:
		priv, ok := req.Material.(*ecdsa.PrivateKey)
		if !ok || priv == nil || priv.Curve != elliptic.P256() {
			return nil, nil, fmt.Errorf("%w: material must be an *ecdsa.PrivateKey on P-256", backend.ErrInvalidArgument)
		}
		if material, err = x509.MarshalPKCS8PrivateKey(priv); err != nil {
			return nil, nil, fmt.Errorf("%w: ecdsa key cannot be encoded", backend.ErrInvalidArgument)
		}
	default:
		return nil, nil, fmt.Errorf("%w: unknown key type", backend.ErrInvalidArgument)
	}
	// Re-parse so that the returned public key is our own copy and the
	// encoding is known to load.
	signer, err := parsePrivate(req.Type, material)
	if err != nil {
		clear(material)
		return nil, nil, fmt.Errorf("%w: key cannot be decoded", backend.ErrInvalidArgument)
	}
	return material, signer.Public(), nil
}

// parsePrivate decodes PKCS #8 material of an RSA2048 or ECDSA key and
// checks that it is of that type and size.
func parsePrivate(typ backend.KeyType, der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, ErrMalformed
	}
	switch typ {
	case backend.RSA2048:
		if rk, ok := k.(*rsa.PrivateKey); ok && rk.N.BitLen() == backend.RSAModulusBits {
			return rk, nil
		}
	case backend.ECDSA:
		if ek, ok := k.(*ecdsa.PrivateKey); ok && ek.Curve == elliptic.P256() {
			return ek, nil
		}
	}
	return nil, ErrMalformed
}

// Load turns material made for (ref, typ, convergent) into a key that
// implements the SPI's operations for its type: backend.Encrypter and
// backend.Decrypter for AES256, backend.Decrypter and backend.Signer for
// RSA2048, backend.Signer for ECDSA. Material of the wrong size or format
// fails with ErrMalformed. Load copies what it keeps: the caller may clear
// material afterwards. o must stay valid as long as the key is used.
func Load(o *Owner, ref backend.KeyRef, typ backend.KeyType, convergent bool, material []byte) (backend.Key, error) {
	base := newKeyBase(o, ref, typ)
	switch typ {
	case backend.AES256:
		want := aesKeySize
		if convergent {
			want += backend.ConvergentKeySize
		}
		if len(material) != want {
			return nil, ErrMalformed
		}
		block, err := aes.NewCipher(material[:aesKeySize])
		if err != nil {
			return nil, ErrMalformed
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, ErrMalformed
		}
		k := &aesKey{keyBase: base, aead: aead}
		if convergent {
			k.convergent = append([]byte(nil), material[aesKeySize:]...)
		}
		return k, nil
	case backend.RSA2048, backend.ECDSA:
		if convergent {
			return nil, ErrMalformed
		}
		signer, err := parsePrivate(typ, material)
		if err != nil {
			return nil, err
		}
		if rk, ok := signer.(*rsa.PrivateKey); ok {
			return &rsaKey{keyBase: base, priv: rk}, nil
		}
		return &ecdsaKey{keyBase: base, priv: signer.(*ecdsa.PrivateKey)}, nil
	}
	return nil, ErrMalformed
}
