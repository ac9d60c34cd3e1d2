package kms

import (
	"context"
	"fmt"

	"github.com/pocketkms/kms/token"
)

// MaxAdditionalData is the longest additionalData AppendSeal and
// AppendOpen take, in bytes (1 MiB). It travels into the backend as part
// of AES-GCM's associated data, so it is bounded like every other input.
const MaxAdditionalData = 1 << 20

// sealTag is the byte that follows the version's prefix in the AES-GCM
// associated data of AppendSeal. Encrypt's associated data is the prefix
// alone (non-convergent keys) or the prefix, one byte 1..MaxContext (the
// context's length) and the context (convergent keys), so no associated
// data of Encrypt can equal one of AppendSeal: the two never open each
// other's ciphertexts.
const sealTag = 0xFF

// aeadData is what AppendSeal and AppendOpen hand sealTo and decryptText:
// the caller's associated data, bound after the version's prefix and
// sealTag. The zero value (Encrypt, Decrypt and their Append forms) binds
// none, and the associated data is aesAD's.
type aeadData struct {
	on   bool
	data []byte
}

// gcmAD returns the AES-GCM associated data of a body of version v: aesAD
// for Encrypt and Decrypt; for AppendSeal and AppendOpen the version's
// prefix, sealTag and the caller's associated data, built in sc (which
// holds no plaintext: associated data is not secret, it travels beside
// the ciphertext).
func gcmAD(sc *scratch, s *keySnap, v *versionSnap, encCtx []byte, xad aeadData) []byte {
	if !xad.on {
		return aesAD(sc, s, v, encCtx)
	}
	ad := appendVersionAD(sc.ad[:0], s.tag, v.num)
	ad = append(ad, sealTag)
	ad = append(ad, xad.data...)
	sc.ad = ad[:0]
	return ad
}

// sealKey refuses what AppendSeal and AppendOpen do not take: keys other
// than AES256 (RSA-OAEP authenticates nothing: anyone holding the public
// key can encrypt), convergent keys (they encrypt deterministically) and
// associated data over MaxAdditionalData.
func sealKey(op string, s *keySnap, additionalData []byte) error {
	switch {
	case s.typ != AES256:
		return newErr(op, s.tag, ErrWrongKeyType, string(s.typ)+" keys do not seal with associated data; AES256 keys do")
	case s.convergent:
		return newErr(op, s.tag, ErrWrongKeyType, "convergent keys encrypt deterministically; sealing with associated data needs a non-convergent AES256 key")
	case len(additionalData) > MaxAdditionalData:
		return newErr(op, s.tag, ErrInvalidArgument, fmt.Sprintf("additional data must be at most %d bytes", MaxAdditionalData))
	}
	return nil
}

// AppendSeal encrypts plaintext (1..MaxAESPlaintext bytes) under the
// key's current version with AES-256-GCM, binding additionalData
// (0..MaxAdditionalData bytes; nil and empty are the same), and appends
// the envelope, "ncpkms:v{N}:<base64>", to dst: the authenticated
// encryption with associated data of cipher.AEAD.Seal, on a key that
// never leaves the backend. kmscrypto.AEAD is built on it.
//
// The body is nonce(12) ‖ ciphertext ‖ tag(16), as Encrypt's, but its
// AES-GCM associated data is
//
//	"pocketkms/v1" 0x00 keyTag 0x00 version(4 bytes, big-endian) 0xFF additionalData
//
// where Encrypt's is the same prefix alone (a convergent key's adds one
// byte 1..50, the context's length, and the context). The 0xFF keeps the
// two apart: Decrypt refuses AppendSeal's ciphertexts and AppendOpen
// refuses Encrypt's, both with ErrDecryptionFailed, so neither can stand
// in for the other, and no choice of encryption context can forge
// AppendSeal's associated data.
//
// Only non-convergent AES256 keys seal: another type fails with
// ErrWrongKeyType, and so does a convergent key (it encrypts
// deterministically, which an AEAD must not). Otherwise it is
// AppendEncrypt: the same key-state checks, the version's AES-GCM budget,
// usage counters, audit and observer events (as an "encrypt" operation).
// ReEncrypt cannot move a sealed ciphertext to a newer version (it does
// not have the additional data): AppendOpen and AppendSeal it again.
// dst must not overlap plaintext or additionalData. On error it returns
// nil.
func (e *Engine) AppendSeal(ctx context.Context, dst []byte, keyTag string, plaintext, additionalData []byte) ([]byte, error) {
	return onKey(e, ctx, "encrypt", keyTag, func(op string, s *keySnap) ([]byte, error) {
		return e.appendSealTo(ctx, op, s, dst, plaintext, additionalData)
	})
}

// AppendOpen decrypts a ciphertext made by AppendSeal with the version
// its envelope names, checking additionalData, and appends the plaintext
// to dst (a new, exactly sized buffer when dst is nil), as
// cipher.AEAD.Open does. Other additional data, another key, tampering
// or a ciphertext made by Encrypt fail with ErrDecryptionFailed; a
// disabled version with ErrVersionDisabled, one below the key's minimum
// decryption version with ErrVersionBelowMinimum. Key types are checked
// as AppendSeal checks them. ciphertext is only read; dst must not
// overlap it. On error it returns nil and dst's spare capacity may have
// been overwritten.
func (e *Engine) AppendOpen(ctx context.Context, dst []byte, keyTag string, ciphertext, additionalData []byte) ([]byte, error) {
	return onKey(e, ctx, "decrypt", keyTag, func(op string, s *keySnap) ([]byte, error) {
		return openText(e, ctx, op, s, dst, ciphertext, additionalData)
	})
}

// AppendSeal is Engine.AppendSeal on the token plane (permission
// Encrypt), with TokenClient's checks.
func (c TokenClient) AppendSeal(ctx context.Context, dst []byte, keyTag string, plaintext, additionalData []byte) ([]byte, error) {
	return onToken(c, ctx, "encrypt", keyTag, token.Access, token.PermEncrypt, 1, func(op string, s *keySnap, _ *token.Claims) ([]byte, error) {
		return c.e.appendSealTo(ctx, op, s, dst, plaintext, additionalData)
	})
}

// AppendOpen is Engine.AppendOpen on the token plane (permission
// Decrypt), with TokenClient's checks.
func (c TokenClient) AppendOpen(ctx context.Context, dst []byte, keyTag string, ciphertext, additionalData []byte) ([]byte, error) {
	return onToken(c, ctx, "decrypt", keyTag, token.Access, token.PermDecrypt, 1, func(op string, s *keySnap, _ *token.Claims) ([]byte, error) {
		return openText(c.e, ctx, op, s, dst, ciphertext, additionalData)
	})
}

func (e *Engine) appendSealTo(ctx context.Context, op string, s *keySnap, dst, plaintext, additionalData []byte) ([]byte, error) {
	if err := sealKey(op, s, additionalData); err != nil {
		return nil, err
	}
	return e.appendEncryptTo(ctx, op, s, dst, plaintext, nil, aeadData{on: true, data: additionalData})
}

func openText(e *Engine, ctx context.Context, op string, s *keySnap, dst, ciphertext, additionalData []byte) ([]byte, error) {
	if err := sealKey(op, s, additionalData); err != nil {
		return nil, err
	}
	return decryptText(e, ctx, op, s, dst, ciphertext, nil, aeadData{on: true, data: additionalData})
}
