// Package backend is the service-provider interface between the pocketkms
// Engine and the places key material lives.
//
// Start with [Backend]: a backend generates key material for a [KeyRef]
// (key tag, version, purpose), hands the Engine an opaque, storable handle
// plus the public key, and later turns that handle back into a [Key] that
// performs operations. Key material never passes through the Engine.
//
// Implementations in this module: backend/memory (software keys sealed
// under a root key) and backend/softhsm (PKCS#11). Every implementation must
// pass the conformance suite in backend/backendtest.
//
// # Algorithms
//
// The algorithms are fixed per key type so that every backend produces
// interoperable results:
//
//   - AES256: AES-256-GCM, 12-byte nonce, 16-byte tag. Encrypt returns
//     nonce ‖ ciphertext ‖ tag. Convergent keys derive the nonce with
//     [ConvergentNonceMessage] and HMAC-SHA256 under a second, per-version
//     key; other keys use a random nonce. No nonce ever crosses this API.
//   - RSA2048: RSA-OAEP with SHA-256 and MGF1-SHA256, empty label;
//     RSASSA-PSS with SHA-256, MGF1-SHA256 and the maximum salt length when
//     signing (222 bytes for a 2048-bit modulus); RSASSA-PKCS1-v1_5 with
//     SHA-256 for token-signing keys (JWT RS256).
//   - ECDSA: P-256 with SHA-256, signatures in ASN.1 DER.
//
// # Concurrency
//
// A Backend and every Key it returns must be safe for concurrent use by
// multiple goroutines.
//
// # Security
//
// Handles are stored by the Engine in its database as they are: a backend
// must make them safe to store (sealed under a root key, or mere references
// to objects held in a hardware token). Errors must never contain key
// material, plaintext or handles; authentication failures on decryption
// collapse into [ErrDecryptionFailed] so callers get no oracle.
package backend

import (
	"context"
	"crypto"
)

// KeyType is the type of a key, named as NAVER KMS names it.
type KeyType string

// The key types NAVER KMS offers.
const (
	// AES256 is a 256-bit AES key used with GCM. It encrypts and decrypts.
	AES256 KeyType = "AES256"
	// RSA2048 is a 2048-bit RSA key. It encrypts, decrypts, signs and verifies.
	RSA2048 KeyType = "RSA2048"
	// ECDSA is a NIST P-256 ECDSA key. It signs and verifies.
	ECDSA KeyType = "ECDSA"
)

// Valid reports whether t is one of the defined key types.
func (t KeyType) Valid() bool {
	switch t {
	case AES256, RSA2048, ECDSA:
		return true
	}
	return false
}

// String returns the NAVER name of the key type.
func (t KeyType) String() string { return string(t) }

// Purpose says what a piece of key material is for. It is bound into every
// handle so material made for one purpose can never be loaded for another.
type Purpose string

// The purposes the Engine uses.
const (
	// PurposeCipher is a version of a customer key.
	PurposeCipher Purpose = "cipher"
	// PurposeTokenSigning is the RSA-2048 key of a key's token generator.
	PurposeTokenSigning Purpose = "token-signing"
)

// Valid reports whether p is one of the defined purposes.
func (p Purpose) Valid() bool { return p == PurposeCipher || p == PurposeTokenSigning }

// KeyRef names one piece of key material: a key version (or a token
// generator generation, whose number goes in Version) of a key.
type KeyRef struct {
	// KeyTag is the key's tag: 64 lowercase hex characters.
	KeyTag string
	// Version is the key version (from 1), or the generator generation.
	Version uint32
	// Purpose is what the material is for.
	Purpose Purpose
}

// Algorithm names an operation's algorithm. See the package documentation.
type Algorithm int

// The algorithms a Key may be asked to perform.
const (
	// AlgAESGCM is AES-256-GCM with a 12-byte nonce and a 16-byte tag.
	AlgAESGCM Algorithm = iota + 1
	// AlgRSAOAEPSHA256 is RSA-OAEP with SHA-256, MGF1-SHA256 and an empty label.
	AlgRSAOAEPSHA256
	// AlgRSAPSSSHA256 is RSASSA-PSS with SHA-256 and MGF1-SHA256; signing uses
	// the maximum salt length.
	AlgRSAPSSSHA256
	// AlgRSAPKCS1v15SHA256 is RSASSA-PKCS1-v1_5 with SHA-256 (JWT RS256).
	AlgRSAPKCS1v15SHA256
	// AlgECDSAP256SHA256 is ECDSA on P-256 with SHA-256 and DER signatures.
	AlgECDSAP256SHA256
)

// String returns a short name of the algorithm.
func (a Algorithm) String() string {
	switch a {
	case AlgAESGCM:
		return "AES-256-GCM"
	case AlgRSAOAEPSHA256:
		return "RSA-OAEP-SHA256"
	case AlgRSAPSSSHA256:
		return "RSA-PSS-SHA256"
	case AlgRSAPKCS1v15SHA256:
		return "RSA-PKCS1v15-SHA256"
	case AlgECDSAP256SHA256:
		return "ECDSA-P256-SHA256"
	}
	return "unknown"
}

// GenerateRequest asks a backend to create new key material.
type GenerateRequest struct {
	// Ref names the material; it is bound into the handle.
	Ref KeyRef
	// Type is the key type. PurposeTokenSigning requires RSA2048.
	Type KeyType
	// Convergent, for AES256 only, also creates the per-version HMAC-SHA256
	// key that derives deterministic nonces.
	Convergent bool
}

// GenerateResponse is the result of Generate or Import.
type GenerateResponse struct {
	// Handle is opaque and safe to store; Load turns it back into a Key.
	Handle []byte
	// Public is the public key (*rsa.PublicKey or *ecdsa.PublicKey), or nil
	// for AES256.
	Public crypto.PublicKey
}

// LoadRequest asks a backend to turn a stored handle into a usable Key.
// Ref, Type and Convergent must be those the handle was created with.
type LoadRequest struct {
	Ref        KeyRef
	Type       KeyType
	Convergent bool
	Handle     []byte
}

// DestroyRequest asks a backend to destroy the material behind a handle.
type DestroyRequest struct {
	Ref    KeyRef
	Type   KeyType
	Handle []byte
}

// Backend creates, loads and destroys key material.
type Backend interface {
	// Generate creates new key material. It fails with ErrInvalidArgument
	// for an invalid request (unknown type or purpose, Convergent on a
	// non-AES key, a token-signing key that is not RSA2048), with ErrClosed
	// after Close, and with other errors for backend failures.
	Generate(ctx context.Context, req *GenerateRequest) (*GenerateResponse, error)
	// Load returns the Key behind a handle. A handle that is malformed, was
	// made for another KeyRef/type, or was sealed under another root key
	// fails with ErrInvalidHandle; material no longer present fails with
	// ErrKeyNotFound. Load must not search the backend on every call of the
	// returned Key: callers cache the Key and use it on the hot path.
	Load(ctx context.Context, req *LoadRequest) (Key, error)
	// Destroy destroys the material behind a handle. Destroying material
	// that is already gone is not an error. Keys loaded earlier from the
	// handle may fail afterwards.
	Destroy(ctx context.Context, req *DestroyRequest) error
	// Close releases the backend's resources. It is idempotent; afterwards
	// every method fails with ErrClosed.
	Close() error
}

// Key is loaded key material. Depending on its type it also implements
// [Encrypter], [Decrypter], [Signer] and [Verifier]:
//
//	AES256:  Encrypter, Decrypter
//	RSA2048: Encrypter, Decrypter, Signer, Verifier
//	ECDSA:   Signer, Verifier
type Key interface {
	// Ref returns the KeyRef the material was created for.
	Ref() KeyRef
	// Type returns the key type.
	Type() KeyType
}

// EncryptRequest is the input of Encrypter.Encrypt.
type EncryptRequest struct {
	// Plaintext to encrypt. RSA2048 accepts at most 190 bytes.
	Plaintext []byte
	// AdditionalData is authenticated but not encrypted (AES256 only; must
	// be empty for RSA2048). For convergent keys it also enters the nonce
	// derivation, see ConvergentNonceMessage.
	AdditionalData []byte
}

// DecryptRequest is the input of Decrypter.Decrypt.
type DecryptRequest struct {
	// Ciphertext as Encrypt returned it: nonce ‖ ciphertext ‖ tag for
	// AES256, the 256-byte OAEP block for RSA2048.
	Ciphertext []byte
	// AdditionalData must equal the one given to Encrypt (AES256 only).
	AdditionalData []byte
}

// Encrypter is implemented by keys that encrypt (AES256, RSA2048).
type Encrypter interface {
	Key
	// Encrypt encrypts req.Plaintext. Oversized input fails with
	// ErrInvalidArgument.
	Encrypt(ctx context.Context, req *EncryptRequest) ([]byte, error)
}

// Decrypter is implemented by keys that decrypt (AES256, RSA2048).
type Decrypter interface {
	Key
	// Decrypt decrypts req.Ciphertext. Any authentication or padding
	// failure, truncation or tampering fails with ErrDecryptionFailed and
	// nothing more specific, so callers get no oracle.
	Decrypt(ctx context.Context, req *DecryptRequest) ([]byte, error)
}

// SignRequest is the input of Signer.Sign.
type SignRequest struct {
	// Algorithm: AlgRSAPSSSHA256 or AlgRSAPKCS1v15SHA256 for RSA2048,
	// AlgECDSAP256SHA256 for ECDSA.
	Algorithm Algorithm
	// Digest is the SHA-256 digest of the message (32 bytes).
	Digest []byte
}

// VerifyRequest is the input of Verifier.Verify.
type VerifyRequest struct {
	// Algorithm, as for SignRequest.
	Algorithm Algorithm
	// Digest is the SHA-256 digest of the message (32 bytes).
	Digest []byte
	// Signature to check.
	Signature []byte
	// PSSSaltLength, for AlgRSAPSSSHA256 only: the required salt length in
	// bytes, or 0 to accept any salt length (what the Engine uses).
	PSSSaltLength int
}

// Signer is implemented by keys that sign (RSA2048, ECDSA).
type Signer interface {
	Key
	// Public returns the public key (*rsa.PublicKey or *ecdsa.PublicKey).
	Public() crypto.PublicKey
	// Sign signs req.Digest. An algorithm the key type does not support or
	// a digest that is not 32 bytes fails with ErrInvalidArgument.
	Sign(ctx context.Context, req *SignRequest) ([]byte, error)
}

// Verifier is implemented by keys that verify (RSA2048, ECDSA).
type Verifier interface {
	Key
	// Verify reports whether req.Signature is valid. A signature that does
	// not match, or cannot be parsed, answers (false, nil); errors are for
	// invalid requests (ErrInvalidArgument) and backend failures.
	Verify(ctx context.Context, req *VerifyRequest) (bool, error)
}

// ImportRequest asks a backend to take in existing key material (bring your
// own key, and known-answer tests). It is dangerous: the material has
// existed outside the backend.
type ImportRequest struct {
	Ref  KeyRef
	Type KeyType
	// Material is a 32-byte AES key ([]byte), an *rsa.PrivateKey of 2048
	// bits, or an *ecdsa.PrivateKey on P-256.
	Material any
	// ConvergentKey is the 32-byte HMAC-SHA256 nonce-derivation key of a
	// convergent AES256 key; nil for any other key.
	ConvergentKey []byte
}

// Importer is an optional capability: backends that can import key
// material implement it.
type Importer interface {
	// ImportKey imports key material and returns a handle as Generate does.
	// Material of the wrong type or size fails with ErrInvalidArgument.
	ImportKey(ctx context.Context, req *ImportRequest) (*GenerateResponse, error)
}

// PublicVerifier is an optional capability for backends whose public-key
// operations can run on any public key (used to run verification test
// vectors without importing a private key).
type PublicVerifier interface {
	// VerifyWithPublicKey verifies like Verifier.Verify, under pub.
	VerifyWithPublicKey(ctx context.Context, pub crypto.PublicKey, req *VerifyRequest) (bool, error)
}
