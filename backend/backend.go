// Package backend is the service-provider interface between the pocketkms
// Engine and the places key material lives. A backend does only what
// needs the secret; everything a public key can do, the Engine does
// itself.
//
// Start with [Backend]: a backend generates key material for a [KeyRef]
// (key tag, version, purpose), hands the Engine an opaque, storable handle
// plus the public key, and later turns that handle back into a [Key] that
// performs the secret operations: [Encrypter], [Decrypter], [Signer].
//
// Implementations in this module: backend/memory (software keys sealed
// under a root key) and backend/softhsm (PKCS#11). A new backend is one
// package whose test calls backendtest.Run once; that suite checks the
// contract written here, reopening included, and runs the Wycheproof
// vectors that need a secret (backend/backendtest/filebackend is a small
// example).
//
// # Algorithms
//
// The algorithms are fixed by key type and purpose, so that every backend
// produces interoperable results. Backends do the secret side:
//
//   - AES256: AES-256-GCM, 12-byte nonce, 16-byte tag, both directions.
//     Encrypt returns nonce ‖ ciphertext ‖ tag. Convergent keys derive the
//     nonce with [ConvergentNonceMessage] and HMAC-SHA256 under a second,
//     per-version key; other keys use a random nonce. No nonce ever
//     crosses this API.
//   - RSA2048 cipher keys: RSA-OAEP decryption with SHA-256 and
//     MGF1-SHA256, empty label; RSASSA-PSS signatures with SHA-256,
//     MGF1-SHA256 and the maximum salt length (222 bytes for a 2048-bit
//     modulus) unless [SignRequest.PSSSaltLength] asks for a shorter one.
//   - RSA2048 token-signing keys: RSASSA-PKCS1-v1_5 signatures with
//     SHA-256 (JWT RS256). They neither encrypt nor decrypt.
//   - ECDSA: P-256 signatures with SHA-256, in ASN.1 DER.
//
// The Engine does the public side from the public key Generate returned,
// which it stores with every version: RSA-OAEP encryption, and
// verification of PSS and ECDSA signatures (accepting any PSS salt
// length). The token package verifies the RS256 signatures of tokens.
//
// # Concurrency
//
// A Backend and every Key it returns must be safe for concurrent use by
// multiple goroutines; see [Backend] for what Close must do to calls in
// flight.
//
// # Security
//
// Handles are stored by the Engine in its database as they are: a backend
// must make them safe to store (sealed under a root key, or mere references
// to material it holds). Errors must never contain key material, plaintext
// or handles; authentication failures on decryption collapse into
// [ErrDecryptionFailed] so callers get no oracle. Loaded keys should print
// (fmt, JSON, log/slog) as a description that names no material.
package backend

import (
	"context"
	"crypto"
	"crypto/sha256"
)

// KeyType is the type of a key, named as NAVER KMS names it.
type KeyType string

// The key types NAVER KMS offers.
const (
	// AES256 is a 256-bit AES key used with GCM. It encrypts and decrypts.
	AES256 KeyType = "AES256"
	// RSA2048 is a 2048-bit RSA key. The backend decrypts and signs with
	// it; the Engine encrypts and verifies with its public key.
	RSA2048 KeyType = "RSA2048"
	// ECDSA is a NIST P-256 ECDSA key. The backend signs with it; the
	// Engine verifies with its public key.
	ECDSA KeyType = "ECDSA"
)

// RSAModulusBits is the size of every RSA key this module uses.
const RSAModulusBits = 2048

// RSAOAEPMaxPlaintext is the largest plaintext RSA-OAEP-SHA256 carries
// under a 2048-bit key: 256 − 2·32 − 2 bytes.
const RSAOAEPMaxPlaintext = 190

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
// handle so material made for one purpose can never be loaded for another,
// and with the key type it fixes the algorithms (see the package
// documentation).
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

// GenerateResponse is the result of Generate or ImportKey.
type GenerateResponse struct {
	// Handle is opaque and safe to store; Load turns it back into a Key.
	Handle []byte
	// Public is the public key (*rsa.PublicKey or *ecdsa.PublicKey), or nil
	// for AES256. The Engine stores it and does every public-key
	// operation with it.
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

// Backend creates, loads and destroys key material; the keys it loads do
// the operations that need the secret.
//
// Errors: every method fails with an error that wraps one of this
// package's sentinels where one applies, so callers match with errors.Is:
// ErrInvalidArgument for a malformed request (a nil request included),
// ErrInvalidHandle and ErrKeyNotFound as Load states, ErrClosed after
// Close, the context's error when ctx is done, ErrUnavailable when the
// backend cannot be reached or lost its session and could not recover
// (never ErrInvalidHandle or ErrKeyNotFound for that: those say the
// material is wrong or gone, and the Engine reports them as a wrong
// backend); other errors are backend failures. No error carries key
// material, plaintext or a handle.
//
// Concurrency: a Backend, and every Key it returns, is safe for concurrent
// use by multiple goroutines.
//
// Handle safety: the Engine stores handles as they are, in a database
// that is not secret, and gives them back unchanged. A handle must
// therefore be safe to store (material sealed under a key the backend
// holds, or a mere reference to material the backend keeps), and bound to
// the KeyRef, type and convergent flag it was made for: presented with
// anything else, or altered, it must not load.
//
// Close: calls in flight may finish or fail with ErrClosed; Close is
// idempotent, and once it has returned every method of the Backend and of
// the keys it loaded fails with ErrClosed (a Key's Ref and Type still
// answer).
type Backend interface {
	// Generate creates new key material and returns its handle and, for
	// RSA2048 and ECDSA, its public key. It fails with ErrInvalidArgument
	// for an invalid request (unknown type or purpose, Convergent on a
	// non-AES key, a token-signing key that is not RSA2048, a KeyRef
	// without a 64-character lowercase hex KeyTag or a Version of at least
	// 1; see KeyRef.Validate), with ErrClosed after Close, and with other
	// errors for backend failures.
	Generate(ctx context.Context, req *GenerateRequest) (*GenerateResponse, error)
	// Load returns the Key behind a handle. A handle that is empty,
	// malformed, was made for another KeyRef, type or convergent flag, or
	// was sealed under another root key fails with ErrInvalidHandle;
	// material no longer present fails with ErrKeyNotFound (a tampered
	// handle may give either); an invalid request (unknown type or
	// purpose) fails with ErrInvalidArgument or ErrInvalidHandle. Load
	// does the expensive work once: callers cache the Key and use it on
	// the hot path, so its operations must not search the backend.
	Load(ctx context.Context, req *LoadRequest) (Key, error)
	// Destroy destroys the material behind a handle. Destroying material
	// that is already gone is not an error. Afterwards Load of the handle
	// fails with ErrKeyNotFound, or still works for a backend that stores
	// nothing (its material dies with the last copy of the handle); keys
	// loaded earlier may fail with ErrKeyNotFound. An invalid request
	// fails with ErrInvalidArgument, a handle not in the backend's format
	// with ErrInvalidHandle.
	Destroy(ctx context.Context, req *DestroyRequest) error
	// Close releases the backend's resources. It is idempotent; afterwards
	// every method fails with ErrClosed.
	Close() error
}

// Key is loaded key material. Depending on its type it also implements
// [Encrypter], [Decrypter] and [Signer]:
//
//	AES256:  Encrypter, Decrypter
//	RSA2048: Decrypter, Signer (token-signing keys: Signer; Decrypt fails)
//	ECDSA:   Signer
//
// A Key is safe for concurrent use, and fails with ErrClosed once its
// Backend is closed. Its operations fail with ErrInvalidArgument for a nil
// or malformed request, with ErrKeyNotFound when its material was
// destroyed (backends that can tell), with ErrUnavailable when the
// backend cannot be reached, and never panic on any input.
type Key interface {
	// Ref returns the KeyRef the material was created for.
	Ref() KeyRef
	// Type returns the key type.
	Type() KeyType
}

// EncryptRequest is the input of Encrypter.Encrypt.
type EncryptRequest struct {
	// Plaintext to encrypt.
	Plaintext []byte
	// AdditionalData is authenticated but not encrypted. For convergent
	// keys it also enters the nonce derivation, see
	// ConvergentNonceMessage. nil and empty are the same.
	AdditionalData []byte
}

// DecryptRequest is the input of Decrypter.Decrypt.
type DecryptRequest struct {
	// Ciphertext as Encrypt returned it for AES256 (nonce ‖ ciphertext ‖
	// tag), or the 256-byte OAEP block for RSA2048.
	Ciphertext []byte
	// AdditionalData must equal the one given to Encrypt (AES256 only:
	// RSA2048 fails with ErrInvalidArgument when it is not empty).
	AdditionalData []byte
}

// Encrypter is implemented by AES256 keys: AES-GCM encryption needs the
// secret. (RSA-OAEP encryption does not; the Engine does it.)
type Encrypter interface {
	Key
	// Encrypt encrypts req.Plaintext under a random nonce, or the
	// convergent nonce for a convergent key. Oversized input fails with
	// ErrInvalidArgument.
	Encrypt(ctx context.Context, req *EncryptRequest) ([]byte, error)
}

// Decrypter is implemented by keys that decrypt: AES256 (AES-GCM) and
// RSA2048 (RSA-OAEP).
type Decrypter interface {
	Key
	// Decrypt decrypts req.Ciphertext. Any authentication or padding
	// failure, truncation or tampering fails with ErrDecryptionFailed and
	// nothing more specific, so callers get no oracle. A token-signing key
	// fails with ErrInvalidArgument.
	Decrypt(ctx context.Context, req *DecryptRequest) ([]byte, error)
}

// SignRequest is the input of Signer.Sign.
type SignRequest struct {
	// Digest is the SHA-256 digest of the message (32 bytes).
	Digest []byte
	// PSSSaltLength is the RSASSA-PSS salt length in bytes for an RSA2048
	// cipher key. Zero means the maximum, MaxPSSSaltLength (222 bytes, what
	// NAVER signs with and the Engine's Sign uses); a positive value at
	// most the maximum is that length (32, as long as the SHA-256 hash, is
	// what TLS 1.3 and X.509 RSASSA-PSS ask for). It is meaningless for
	// ECDSA and token-signing (PKCS #1 v1.5) keys, where anything but zero
	// is ErrInvalidArgument, as is a negative value or one above the
	// maximum.
	PSSSaltLength int
}

// MaxPSSSaltLength is the largest RSASSA-PSS salt length SHA-256 allows
// under a 2048-bit modulus: emLen − hLen − 2 = 256 − 32 − 2 = 222 bytes.
// A SignRequest with PSSSaltLength zero signs with it.
const MaxPSSSaltLength = RSAModulusBits/8 - sha256.Size - 2

// Signer is implemented by keys that sign: RSA2048 and ECDSA. The key's
// type and purpose fix the algorithm (see the package documentation); the
// public key is the one Generate returned.
type Signer interface {
	Key
	// Sign signs req.Digest. A digest that is not 32 bytes, or a
	// PSSSaltLength the key cannot take (see SignRequest), fails with
	// ErrInvalidArgument.
	Sign(ctx context.Context, req *SignRequest) ([]byte, error)
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
// material implement it. The conformance suite runs its known-answer
// tests and the Wycheproof vectors through it.
type Importer interface {
	// ImportKey imports key material and returns a handle as Generate does;
	// a non-empty ConvergentKey makes an AES256 key convergent. Material
	// of the wrong type or size fails with ErrInvalidArgument, and so does
	// an invalid KeyRef or a nil request; ErrClosed after Close.
	ImportKey(ctx context.Context, req *ImportRequest) (*GenerateResponse, error)
}

// CheckValuer is an optional capability: a backend that holds one secret
// for all its material (the memory backend's root key) gives a value that
// identifies that secret without revealing it, a MAC over a fixed label.
// Two backends give the same value exactly when they hold the same secret.
// The Engine records it when it creates a store and refuses to open the
// store with a backend that gives another, before touching it, even when
// the store holds no key material to try.
type CheckValuer interface {
	// CheckValue returns the check value. It fails with ErrClosed after
	// Close.
	CheckValue(ctx context.Context) ([]byte, error)
}
