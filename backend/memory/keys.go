package memory

import (
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"

	"github.com/pocketkms/kms/backend"
)

var (
	_ backend.Encrypter = (*aesKey)(nil)
	_ backend.Decrypter = (*aesKey)(nil)
	_ backend.Decrypter = (*rsaKey)(nil)
	_ backend.Signer    = (*rsaKey)(nil)
	_ backend.Signer    = (*ecdsaKey)(nil)
)

// keyBase is embedded in every loaded key. Its formatting methods are
// promoted to the key types, so no key prints its material.
type keyBase struct {
	b   *Backend
	ref backend.KeyRef
	typ backend.KeyType
}

func (k *keyBase) Ref() backend.KeyRef   { return k.ref }
func (k *keyBase) Type() backend.KeyType { return k.typ }
func (k *keyBase) errorf(op string, err error) error {
	return fmt.Errorf("memory: %s %s: %w", op, k.ref, err)
}

// check returns ErrClosed after the backend's Close, or the context's error.
func (k *keyBase) check(ctx context.Context) error {
	return k.b.check(ctx)
}

// String returns a redacted description: type and KeyRef, never material.
func (k *keyBase) String() string {
	return fmt.Sprintf("memory.Key{%s %s, material redacted}", k.typ, k.ref)
}

// GoString returns the same redacted description as String.
func (k *keyBase) GoString() string { return k.String() }

// Format prints the redacted description for every verb.
func (k *keyBase) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// MarshalJSON encodes the redacted description as a JSON string.
func (k *keyBase) MarshalJSON() ([]byte, error) { return json.Marshal(k.String()) }

// LogValue logs the redacted description.
func (k *keyBase) LogValue() slog.Value { return slog.StringValue(k.String()) }

// aesKey is a loaded AES256 key.
type aesKey struct {
	keyBase
	aead       cipher.AEAD
	convergent []byte // HMAC-SHA256 nonce key; nil unless convergent
}

func (k *aesKey) Encrypt(ctx context.Context, req *backend.EncryptRequest) ([]byte, error) {
	if err := k.check(ctx); err != nil {
		return nil, k.errorf("encrypt", err)
	}
	if err := backend.CheckEncryptRequest(req, k.typ, k.ref.Purpose); err != nil {
		return nil, k.errorf("encrypt", err)
	}
	if len(req.Plaintext) > MaxAESInput || len(req.AdditionalData) > MaxAESInput {
		return nil, k.errorf("encrypt", fmt.Errorf("%w: input larger than %d bytes", backend.ErrInvalidArgument, MaxAESInput))
	}
	out := make([]byte, backend.NonceSize, backend.NonceSize+len(req.Plaintext)+backend.TagSize)
	if k.convergent != nil {
		copy(out, backend.ConvergentNonce(k.convergent, req.AdditionalData, req.Plaintext))
	} else if _, err := io.ReadFull(k.b.random, out); err != nil {
		return nil, k.errorf("encrypt", fmt.Errorf("read nonce: %w", err))
	}
	return k.aead.Seal(out, out[:backend.NonceSize], req.Plaintext, req.AdditionalData), nil
}

func (k *aesKey) Decrypt(ctx context.Context, req *backend.DecryptRequest) ([]byte, error) {
	if err := k.check(ctx); err != nil {
		return nil, k.errorf("decrypt", err)
	}
	if err := backend.CheckDecryptRequest(req, k.typ, k.ref.Purpose); err != nil {
		return nil, k.errorf("decrypt", err)
	}
	if len(req.AdditionalData) > MaxAESInput {
		return nil, k.errorf("decrypt", fmt.Errorf("%w: additional data larger than %d bytes", backend.ErrInvalidArgument, MaxAESInput))
	}
	ct := req.Ciphertext
	if len(ct) < backend.NonceSize+backend.TagSize || len(ct) > backend.NonceSize+MaxAESInput+backend.TagSize {
		return nil, k.errorf("decrypt", backend.ErrDecryptionFailed)
	}
	pt, err := k.aead.Open(nil, ct[:backend.NonceSize], ct[backend.NonceSize:], req.AdditionalData)
	if err != nil {
		return nil, k.errorf("decrypt", backend.ErrDecryptionFailed)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

// rsaKey is a loaded RSA2048 key.
type rsaKey struct {
	keyBase
	priv *rsa.PrivateKey
}

// pssMaxSalt is the maximum PSS salt length for SHA-256 under a 2048-bit
// modulus: emLen − hLen − 2 = 256 − 32 − 2.
const pssMaxSalt = backend.RSAModulusBits/8 - sha256.Size - 2

func (k *rsaKey) Decrypt(ctx context.Context, req *backend.DecryptRequest) ([]byte, error) {
	if err := k.check(ctx); err != nil {
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

func (k *rsaKey) Sign(ctx context.Context, req *backend.SignRequest) ([]byte, error) {
	if err := k.check(ctx); err != nil {
		return nil, k.errorf("sign", err)
	}
	if err := backend.CheckSignRequest(req, k.typ, k.ref.Purpose); err != nil {
		return nil, k.errorf("sign", err)
	}
	var sig []byte
	var err error
	if k.ref.Purpose == backend.PurposeCipher {
		sig, err = rsa.SignPSS(rand.Reader, k.priv, crypto.SHA256, req.Digest,
			&rsa.PSSOptions{SaltLength: pssMaxSalt, Hash: crypto.SHA256})
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

func (k *ecdsaKey) Sign(ctx context.Context, req *backend.SignRequest) ([]byte, error) {
	if err := k.check(ctx); err != nil {
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
