package softkey

import (
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/internal/redact"
)

var (
	_ backend.Encrypter       = (*aesKey)(nil)
	_ backend.Decrypter       = (*aesKey)(nil)
	_ backend.AppendEncrypter = (*aesKey)(nil)
	_ backend.AppendDecrypter = (*aesKey)(nil)
	_ backend.Decrypter       = (*rsaKey)(nil)
	_ backend.Signer          = (*rsaKey)(nil)
	_ backend.Signer          = (*ecdsaKey)(nil)
)

// Owner is what loaded keys need from the backend that loaded them.
type Owner struct {
	// Name names the backend (its package name): it prefixes errors and
	// key descriptions, as in "memory: sign key … v1 (cipher): …".
	Name string
	// Check returns backend.ErrClosed once the backend is closed, else
	// the context's error (nil for a nil context). Every operation calls
	// it first.
	Check func(ctx context.Context) error
	// Random is the source of AES-GCM nonces of keys that are not
	// convergent. It must be safe for concurrent use.
	Random io.Reader
}

// keyBase is embedded in every loaded key. Its formatting methods (those
// of redact.Text, over a description made when asked) are promoted to the
// key types, so no key prints its material. The description is not kept:
// with many keys loaded it was about 130 bytes of each one's footprint.
type keyBase struct {
	o   *Owner
	ref backend.KeyRef
	typ backend.KeyType
}

func newKeyBase(o *Owner, ref backend.KeyRef, typ backend.KeyType) keyBase {
	return keyBase{o: o, ref: ref, typ: typ}
}

func (k keyBase) text() redact.Text {
	return redact.Text(fmt.Sprintf("%s.Key{%s %s, material redacted}", k.o.Name, k.typ, k.ref))
}

// String returns the redacted description.
func (k keyBase) String() string { return k.text().String() }

// GoString returns the redacted description, for %#v.
func (k keyBase) GoString() string { return k.text().GoString() }

// Format prints the redacted description for every verb.
func (k keyBase) Format(f fmt.State, verb rune) { k.text().Format(f, verb) }

// MarshalJSON encodes the redacted description as a JSON string.
func (k keyBase) MarshalJSON() ([]byte, error) { return k.text().MarshalJSON() }

// LogValue logs the redacted description.
func (k keyBase) LogValue() slog.Value { return k.text().LogValue() }

// Ref returns the KeyRef the material was created for.
func (k *keyBase) Ref() backend.KeyRef { return k.ref }

// Type returns the key type.
func (k *keyBase) Type() backend.KeyType { return k.typ }

func (k *keyBase) errorf(op string, err error) error {
	return fmt.Errorf("%s: %s %s: %w", k.o.Name, op, k.ref, err)
}

// aesKey is a loaded AES256 key.
type aesKey struct {
	keyBase
	aead       cipher.AEAD
	convergent []byte // HMAC-SHA256 nonce key; nil unless convergent
}

// Encrypt encrypts with AES-256-GCM under a random nonce, or the
// convergent nonce for a convergent key.
func (k *aesKey) Encrypt(ctx context.Context, req *backend.EncryptRequest) ([]byte, error) {
	if req == nil {
		return nil, k.errorf("encrypt", backend.CheckEncryptRequest(req, k.typ, k.ref.Purpose))
	}
	return k.EncryptAppend(ctx, nil, *req)
}

// EncryptAppend is Encrypt appending nonce ‖ ciphertext ‖ tag to dst
// (backend.AppendEncrypter).
func (k *aesKey) EncryptAppend(ctx context.Context, dst []byte, req backend.EncryptRequest) ([]byte, error) {
	if err := k.o.Check(ctx); err != nil {
		return nil, k.errorf("encrypt", err)
	}
	if err := backend.CheckEncryptRequest(&req, k.typ, k.ref.Purpose); err != nil {
		return nil, k.errorf("encrypt", err)
	}
	if len(req.Plaintext) > MaxAESInput || len(req.AdditionalData) > MaxAESInput {
		return nil, k.errorf("encrypt", fmt.Errorf("%w: input larger than %d bytes", backend.ErrInvalidArgument, MaxAESInput))
	}
	start := len(dst)
	out := slices.Grow(dst, backend.NonceSize+len(req.Plaintext)+backend.TagSize)[:start+backend.NonceSize]
	nonce := out[start:]
	if k.convergent != nil {
		copy(nonce, backend.ConvergentNonce(k.convergent, req.AdditionalData, req.Plaintext))
	} else if _, err := io.ReadFull(k.o.Random, nonce); err != nil {
		return nil, k.errorf("encrypt", fmt.Errorf("read nonce: %w", err))
	}
	return k.aead.Seal(out, nonce, req.Plaintext, req.AdditionalData), nil
}

// Decrypt decrypts AES-256-GCM; every failure of the ciphertext is
// backend.ErrDecryptionFailed.
func (k *aesKey) Decrypt(ctx context.Context, req *backend.DecryptRequest) ([]byte, error) {
	if req == nil {
		return nil, k.errorf("decrypt", backend.CheckDecryptRequest(req, k.typ, k.ref.Purpose))
	}
	pt, err := k.DecryptAppend(ctx, nil, *req)
	if err == nil && pt == nil {
		pt = []byte{}
	}
	return pt, err
}

// DecryptAppend is Decrypt appending the plaintext to dst
// (backend.AppendDecrypter).
func (k *aesKey) DecryptAppend(ctx context.Context, dst []byte, req backend.DecryptRequest) ([]byte, error) {
	if err := k.o.Check(ctx); err != nil {
		return nil, k.errorf("decrypt", err)
	}
	if err := backend.CheckDecryptRequest(&req, k.typ, k.ref.Purpose); err != nil {
		return nil, k.errorf("decrypt", err)
	}
	if len(req.AdditionalData) > MaxAESInput {
		return nil, k.errorf("decrypt", fmt.Errorf("%w: additional data larger than %d bytes", backend.ErrInvalidArgument, MaxAESInput))
	}
	ct := req.Ciphertext
	if len(ct) < backend.NonceSize+backend.TagSize || len(ct) > backend.NonceSize+MaxAESInput+backend.TagSize {
		return nil, k.errorf("decrypt", backend.ErrDecryptionFailed)
	}
	pt, err := k.aead.Open(dst, ct[:backend.NonceSize], ct[backend.NonceSize:], req.AdditionalData)
	if err != nil {
		return nil, k.errorf("decrypt", backend.ErrDecryptionFailed)
	}
	return pt, nil
}

// rsaKey is a loaded RSA2048 key.
type rsaKey struct {
	keyBase
	priv *rsa.PrivateKey
}

// pssSalt is the salt length a checked request asks for: its
// PSSSaltLength, or the maximum when that is 0.
func pssSalt(req *backend.SignRequest) int {
	if req.PSSSaltLength == 0 {
		return backend.MaxPSSSaltLength
	}
	return req.PSSSaltLength
}

// Decrypt decrypts RSA-OAEP-SHA256; every failure of the ciphertext is
// backend.ErrDecryptionFailed.
func (k *rsaKey) Decrypt(ctx context.Context, req *backend.DecryptRequest) ([]byte, error) {
	if err := k.o.Check(ctx); err != nil {
		return nil, k.errorf("decrypt", err)
	}
	if err := backend.CheckDecryptRequest(req, k.typ, k.ref.Purpose); err != nil {
		return nil, k.errorf("decrypt", err)
	}
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, k.priv, req.Ciphertext, nil)
	if err != nil {
		return nil, k.errorf("decrypt", backend.ErrDecryptionFailed)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

// Sign signs RSASSA-PSS for a cipher key, with the salt length the
// request asks for (the maximum when it is 0), and RSASSA-PKCS1-v1_5 for
// a token-signing key.
func (k *rsaKey) Sign(ctx context.Context, req *backend.SignRequest) ([]byte, error) {
	if err := k.o.Check(ctx); err != nil {
		return nil, k.errorf("sign", err)
	}
	if err := backend.CheckSignRequest(req, k.typ, k.ref.Purpose); err != nil {
		return nil, k.errorf("sign", err)
	}
	var sig []byte
	var err error
	if k.ref.Purpose == backend.PurposeCipher {
		sig, err = rsa.SignPSS(rand.Reader, k.priv, crypto.SHA256, req.Digest,
			&rsa.PSSOptions{SaltLength: pssSalt(req), Hash: crypto.SHA256})
	} else {
		sig, err = rsa.SignPKCS1v15(nil, k.priv, crypto.SHA256, req.Digest)
	}
	if err != nil {
		return nil, k.errorf("sign", err)
	}
	return sig, nil
}

// ecdsaKey is a loaded ECDSA P-256 key.
type ecdsaKey struct {
	keyBase
	priv *ecdsa.PrivateKey
}

// Sign signs ECDSA P-256 and returns the signature in ASN.1 DER.
func (k *ecdsaKey) Sign(ctx context.Context, req *backend.SignRequest) ([]byte, error) {
	if err := k.o.Check(ctx); err != nil {
		return nil, k.errorf("sign", err)
	}
	if err := backend.CheckSignRequest(req, k.typ, k.ref.Purpose); err != nil {
		return nil, k.errorf("sign", err)
	}
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, req.Digest)
	if err != nil {
		return nil, k.errorf("sign", err)
	}
	return sig, nil
}
