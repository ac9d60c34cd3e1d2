//go:build cgo

package softhsm

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/internal/redact"
)

var (
	_ backend.Encrypter = (*aesKey)(nil)
	_ backend.Decrypter = (*aesKey)(nil)
	_ backend.Decrypter = (*rsaKey)(nil)
	_ backend.Signer    = (*rsaKey)(nil)
	_ backend.Signer    = (*ecdsaKey)(nil)
)

var nativeEndian = binary.NativeEndian

// rsaSize is the size of an RSA-2048 block.
const rsaSize = backend.RSAModulusBits / 8

// sha256DigestInfo is the DER prefix of a SHA-256 DigestInfo (RFC 8017
// §9.2, note 1), which CKM_RSA_PKCS signs in front of the digest.
var sha256DigestInfo = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

// keyBase is embedded in every loaded key: the object handles it was
// resolved to once, at Load, and never searches again. Its formatting
// methods (from redact.Text) are promoted to the key types: a key prints
// its type, KeyRef and token, never material or object handles.
type keyBase struct {
	redact.Text
	b   *Backend
	set *objectSet
	ref backend.KeyRef
	typ backend.KeyType
}

func newKeyBase(b *Backend, set *objectSet, ref backend.KeyRef, typ backend.KeyType) keyBase {
	return keyBase{
		Text: redact.Text(fmt.Sprintf("softhsm.Key{%s %s, material in %s}", typ, ref, b.desc)),
		b:    b, set: set, ref: ref, typ: typ,
	}
}

// Ref returns the KeyRef the material was created for.
func (k *keyBase) Ref() backend.KeyRef { return k.ref }

// Type returns the key type.
func (k *keyBase) Type() backend.KeyType { return k.typ }

func (k *keyBase) errorf(op string, err error) error {
	return fmt.Errorf("softhsm: %s %s: %w", op, k.ref, err)
}

// check returns ErrClosed after the backend's Close, ErrKeyNotFound after
// Destroy, or the context's error.
func (k *keyBase) check(ctx context.Context) error {
	if err := k.b.check(ctx); err != nil {
		return err
	}
	if k.set.gone.Load() {
		return backend.ErrKeyNotFound
	}
	return nil
}

// do runs fn with the key's object handles of the current epoch on a
// pool session. After a lost session or login it recovers the token and
// runs fn once more; after an invalid object handle it finds the objects
// again by CKA_ID and label and runs fn once more. Every key operation
// (encrypt, decrypt, sign) creates nothing, so repeating it is safe.
func (k *keyBase) do(ctx context.Context, fn func(s pkcs11.SessionHandle, r *resolved) error) error {
	var r *resolved
	return k.b.do(ctx, func(s pkcs11.SessionHandle) error {
		var err error
		if r, err = k.b.tok.current(s, k.set); err != nil {
			r = nil
			return err
		}
		return fn(s, r)
	}, func() {
		if r != nil {
			k.b.tok.invalidate(k.set, r)
		}
	})
}

// opErr maps the error of a token operation that is not a decryption.
func (k *keyBase) opErr(op string, err error) error { return k.errorf(op, objErr(err)) }

// decryptErr maps the error of a token decryption: every failure that is
// not about the key, the session or the context is ErrDecryptionFailed,
// with no detail (SoftHSM2 reports a GCM tag mismatch as
// CKR_GENERAL_ERROR).
func (k *keyBase) decryptErr(err error) error {
	var rv pkcs11.Error
	switch {
	case !errors.As(err, &rv):
		return k.errorf("decrypt", objErr(err)) // ErrClosed, context errors, a lost login
	case isStale(err), isUnavailable(err), sessionBroken(err):
		return k.errorf("decrypt", objErr(err))
	}
	return k.errorf("decrypt", backend.ErrDecryptionFailed)
}

// aesKey is a loaded AES256 key.
type aesKey struct {
	keyBase
}

// Encrypt encrypts with CKM_AES_GCM in the token under a random nonce,
// or under the convergent nonce computed in the token.
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
	p := k.b.mod.Ctx
	var out []byte
	err := k.do(ctx, func(s pkcs11.SessionHandle, r *resolved) error {
		nonce := make([]byte, backend.NonceSize)
		if r.mac != 0 {
			// The convergent nonce is the HMAC-SHA256, computed in the
			// token, of backend.ConvergentNonceMessage: the construction
			// of backend.ConvergentNonce.
			msg := backend.ConvergentNonceMessage(req.AdditionalData, req.Plaintext)
			defer clear(msg)
			if err := p.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}, r.mac); err != nil {
				return err
			}
			mac, err := p.Sign(s, msg)
			if err != nil {
				return err
			}
			if len(mac) != sha256.Size {
				return errors.New("token returned an HMAC of the wrong size")
			}
			copy(nonce, mac)
		} else if _, err := rand.Read(nonce); err != nil {
			return err
		}
		params := pkcs11.NewGCMParams(nonce, req.AdditionalData, 8*backend.TagSize)
		defer params.Free()
		if err := p.EncryptInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, r.primary); err != nil {
			return err
		}
		ct, err := p.Encrypt(s, req.Plaintext)
		if err != nil {
			return err
		}
		if len(ct) != len(req.Plaintext)+backend.TagSize {
			return errors.New("token returned a ciphertext of the wrong size")
		}
		out = make([]byte, 0, backend.NonceSize+len(ct))
		out = append(append(out, nonce...), ct...)
		return nil
	})
	if err != nil {
		return nil, k.opErr("encrypt", err)
	}
	return out, nil
}

// Decrypt decrypts with CKM_AES_GCM in the token; every failure that is
// not about the key, the session or the context is
// backend.ErrDecryptionFailed.
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
	p := k.b.mod.Ctx
	var pt []byte
	err := k.do(ctx, func(s pkcs11.SessionHandle, r *resolved) error {
		params := pkcs11.NewGCMParams(ct[:backend.NonceSize], req.AdditionalData, 8*backend.TagSize)
		defer params.Free()
		if err := p.DecryptInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, r.primary); err != nil {
			return err
		}
		var err error
		pt, err = p.Decrypt(s, ct[backend.NonceSize:])
		return err
	})
	if err != nil {
		return nil, k.decryptErr(err)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

// rsaKey is a loaded RSA2048 key.
type rsaKey struct {
	keyBase
}

// Decrypt decrypts RSA-OAEP-SHA256. SoftHSM2 2.6 decrypts OAEP with SHA-1
// only, so the token does the raw RSA decryption (CKM_RSA_X_509) and
// oaepDecode the EME-OAEP decoding, in constant time.
func (k *rsaKey) Decrypt(ctx context.Context, req *backend.DecryptRequest) ([]byte, error) {
	if err := k.check(ctx); err != nil {
		return nil, k.errorf("decrypt", err)
	}
	if err := backend.CheckDecryptRequest(req, k.typ, k.ref.Purpose); err != nil {
		return nil, k.errorf("decrypt", err)
	}
	// RFC 8017 §7.1.2 step 1.b: the ciphertext must be k bytes.
	if len(req.Ciphertext) != rsaSize {
		return nil, k.errorf("decrypt", backend.ErrDecryptionFailed)
	}
	p := k.b.mod.Ctx
	var em []byte
	err := k.do(ctx, func(s pkcs11.SessionHandle, r *resolved) error {
		if err := p.DecryptInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_X_509, nil)}, r.primary); err != nil {
			return err
		}
		var err error
		em, err = p.Decrypt(s, req.Ciphertext)
		return err
	})
	if err != nil {
		return nil, k.decryptErr(err)
	}
	defer clear(em)
	if len(em) > rsaSize {
		return nil, k.errorf("decrypt", backend.ErrDecryptionFailed)
	}
	// I2OSP to exactly k bytes (a module may drop leading zeros).
	full := make([]byte, rsaSize)
	defer clear(full)
	copy(full[rsaSize-len(em):], em)
	msg, ok := oaepDecode(full, rsaSize)
	if !ok {
		return nil, k.errorf("decrypt", backend.ErrDecryptionFailed)
	}
	return append([]byte{}, msg...), nil
}

// Sign signs the digest in the token: CKM_RSA_PKCS_PSS (SHA-256,
// MGF1-SHA256, sLen the request's PSSSaltLength, 222 bytes when it is 0)
// for cipher keys, CKM_RSA_PKCS over the SHA-256 DigestInfo for
// token-signing keys.
func (k *rsaKey) Sign(ctx context.Context, req *backend.SignRequest) ([]byte, error) {
	if err := k.check(ctx); err != nil {
		return nil, k.errorf("sign", err)
	}
	if err := backend.CheckSignRequest(req, k.typ, k.ref.Purpose); err != nil {
		return nil, k.errorf("sign", err)
	}
	var mech *pkcs11.Mechanism
	var data []byte
	if k.ref.Purpose == backend.PurposeCipher {
		salt := req.PSSSaltLength
		if salt == 0 {
			salt = backend.MaxPSSSaltLength
		}
		mech = pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, uint(salt)))
		data = req.Digest
	} else {
		mech = pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)
		data = append(append(make([]byte, 0, len(sha256DigestInfo)+sha256.Size), sha256DigestInfo...), req.Digest...)
	}
	sig, err := k.sign(ctx, mech, data)
	if err != nil {
		return nil, k.opErr("sign", err)
	}
	if len(sig) != rsaSize {
		return nil, k.errorf("sign", errors.New("token returned a signature of the wrong size"))
	}
	return sig, nil
}

func (k *keyBase) sign(ctx context.Context, mech *pkcs11.Mechanism, data []byte) ([]byte, error) {
	p := k.b.mod.Ctx
	var sig []byte
	err := k.do(ctx, func(s pkcs11.SessionHandle, r *resolved) error {
		if err := p.SignInit(s, []*pkcs11.Mechanism{mech}, r.primary); err != nil {
			return err
		}
		var err error
		sig, err = p.Sign(s, data)
		return err
	})
	return sig, err
}

// ecdsaKey is a loaded ECDSA P-256 key.
type ecdsaKey struct {
	keyBase
}

// Sign signs the digest in the token with CKM_ECDSA, which returns r ‖ s,
// and encodes the signature in ASN.1 DER.
func (k *ecdsaKey) Sign(ctx context.Context, req *backend.SignRequest) ([]byte, error) {
	if err := k.check(ctx); err != nil {
		return nil, k.errorf("sign", err)
	}
	if err := backend.CheckSignRequest(req, k.typ, k.ref.Purpose); err != nil {
		return nil, k.errorf("sign", err)
	}
	raw, err := k.sign(ctx, pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil), req.Digest)
	if err != nil {
		return nil, k.opErr("sign", err)
	}
	if len(raw) != 64 {
		return nil, k.errorf("sign", errors.New("token returned a signature of the wrong size"))
	}
	sig, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])})
	if err != nil {
		return nil, k.errorf("sign", err)
	}
	return sig, nil
}
