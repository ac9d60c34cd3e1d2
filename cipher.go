package kms

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/envelope"
	"github.com/pocketkms/kms/internal/pubkey"
)

// Size limits, as NAVER documents them (spec §4).
const (
	// MaxAESPlaintext is the largest AES256 plaintext, in bytes.
	MaxAESPlaintext = 32768
	// MaxRSAPlaintext is the largest RSA2048 plaintext, in bytes.
	MaxRSAPlaintext = backend.RSAOAEPMaxPlaintext
	// MaxContext is the largest encryption context, in bytes.
	MaxContext = 50
	// MaxSignData is the largest message Sign and Verify take, in bytes.
	MaxSignData = 8192
	// MaxCiphertextLength is the longest ciphertext or signature string.
	MaxCiphertextLength = 43746

	maxAESBody = MaxAESPlaintext + backend.NonceSize + backend.TagSize
	rsaBody    = 256
)

// CustomKeyRequest configures CreateCustomKey.
type CustomKeyRequest struct {
	// Bits is the data key size: 128, 256 or 512 (0 means 256).
	Bits int
	// RequestPlainKey also returns the plaintext data key.
	RequestPlainKey bool
	// Context is the encryption context; required for convergent keys.
	Context []byte
}

// CustomKey is a data key made by CreateCustomKey. Plaintext is a secret:
// String, GoString, Format, MarshalJSON and LogValue all redact it, for
// values and pointers alike; clear it when done. (fmt cannot call methods
// on a value held in an unexported struct field, so do not keep a
// CustomKey in one if that struct is ever printed.)
type CustomKey struct {
	// Ciphertext is the data key encrypted under the key's current version.
	Ciphertext string
	// Plaintext is the data key, only when requested.
	Plaintext []byte
	// KeyVersion is the version that encrypted it.
	KeyVersion uint32
}

// String describes the data key without its plaintext.
func (c CustomKey) String() string {
	return fmt.Sprintf("CustomKey{Ciphertext:%q KeyVersion:%d Plaintext:[REDACTED %d bytes]}", c.Ciphertext, c.KeyVersion, len(c.Plaintext))
}

// GoString is String.
func (c CustomKey) GoString() string { return c.String() }

// Format writes String for every verb, so no verb prints the plaintext.
func (c CustomKey) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// MarshalJSON encodes the ciphertext and version only.
func (c CustomKey) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Ciphertext string `json:"ciphertext"`
		KeyVersion uint32 `json:"keyVersion"`
	}{c.Ciphertext, c.KeyVersion})
}

// LogValue logs the ciphertext and version only.
func (c CustomKey) LogValue() slog.Value {
	return slog.GroupValue(slog.String("ciphertext", c.Ciphertext), slog.Int("keyVersion", int(c.KeyVersion)))
}

// onKey runs a trusted-plane cipher operation: it registers the call
// (ErrClosed once closed), resolves the key and checks it is ENABLED, then
// runs fn on the key's snapshot.
func onKey[R any](e *Engine, ctx context.Context, op, keyTag string, fn func(op string, s *keySnap) (R, error)) (R, error) {
	return keyCall(e, ctx, op, keyTag, true, fn)
}

// aesAD returns the associated data of an AES body: the version's prefix,
// plus the context for convergent keys. NAVER ignores the context of
// non-convergent keys, so it is not bound there.
// It is built in sc.ad, which the caller must not keep past sc.
func aesAD(sc *scratch, s *keySnap, v *versionSnap, encCtx []byte) []byte {
	ad := appendVersionAD(sc.ad[:0], s.tag, v.num)
	if s.convergent {
		ad = append(ad, byte(len(encCtx)))
		ad = append(ad, encCtx...)
	}
	sc.ad = ad[:0]
	return ad
}

func checkContext(op string, s *keySnap, encCtx []byte) error {
	if !s.convergent {
		return nil
	}
	if len(encCtx) == 0 || len(encCtx) > MaxContext {
		return newErr(op, s.tag, ErrInvalidArgument, fmt.Sprintf("convergent keys need a context of 1..%d bytes", MaxContext))
	}
	return nil
}

// Encrypt encrypts plaintext under the key's current version and returns
// "ncpkms:v{N}:<base64>". AES256 takes 1..32768 bytes, RSA2048 1..190.
// encCtx is required (1..50 bytes) for convergent keys and ignored
// otherwise, as NAVER does.
func (e *Engine) Encrypt(ctx context.Context, keyTag string, plaintext, encCtx []byte) (string, error) {
	return onKey(e, ctx, "encrypt", keyTag, func(op string, s *keySnap) (string, error) {
		return e.encrypt(ctx, op, s, plaintext, encCtx)
	})
}

func (e *Engine) encrypt(ctx context.Context, op string, s *keySnap, plaintext, encCtx []byte) (string, error) {
	sc := getScratch()
	defer putScratch(sc)
	// The body is sealed into the scratch buffer and encoded from there
	// into the string's own memory: the call's one allocation.
	var text string
	_, err := e.sealTo(ctx, op, s, sc, plaintext, encCtx, aeadData{}, func(v uint32, body []byte) []byte {
		text = envelope.Format(v, body)
		return nil
	})
	return text, err
}

// sealTo encrypts plaintext under the key's current version and hands the
// version and body to out, returning what out returns. An AES256 body is
// sealed into sc, which out must not keep. xad is AppendSeal's associated
// data (seal.go; the zero value for Encrypt).
func (e *Engine) sealTo(ctx context.Context, op string, s *keySnap, sc *scratch, plaintext, encCtx []byte, xad aeadData, out func(uint32, []byte) []byte) ([]byte, error) {
	tag := s.tag
	v := s.current()
	switch s.typ {
	case AES256:
		if len(plaintext) == 0 || len(plaintext) > MaxAESPlaintext {
			return nil, newErr(op, tag, ErrInvalidArgument, fmt.Sprintf("plaintext must be 1..%d bytes", MaxAESPlaintext))
		}
		if err := checkContext(op, s, encCtx); err != nil {
			return nil, err
		}
	case RSA2048:
		if len(plaintext) == 0 || len(plaintext) > MaxRSAPlaintext {
			return nil, newErr(op, tag, ErrInvalidArgument, fmt.Sprintf("plaintext must be 1..%d bytes for RSA2048", MaxRSAPlaintext))
		}
		// RSA-OAEP needs no secret: it runs on the version's public key,
		// with no backend call.
		body, err := pubkey.EncryptOAEP(v.pubKey(), plaintext)
		if err != nil {
			return nil, wrapErr(op, tag, ErrInternal, err)
		}
		e.use(s, v.num, useEncryptUnbudgeted)
		return out(v.num, body), nil
	default:
		return nil, newErr(op, tag, ErrWrongKeyType, string(s.typ)+" keys do not encrypt")
	}
	if err := e.spendEncryption(ctx, op, s, v.num); err != nil {
		return nil, err // the version's AES-GCM budget (usage.go)
	}
	k, err := e.loadKey(ctx, s, v)
	if err != nil {
		return nil, backendErr(op, tag, err)
	}
	req := backend.EncryptRequest{Plaintext: plaintext, AdditionalData: gcmAD(sc, s, v, encCtx, xad)}
	ae, ok := k.(backend.AppendEncrypter)
	if !ok {
		r := req // only this path's request escapes
		body, err := k.(backend.Encrypter).Encrypt(ctx, &r)
		if err != nil {
			return nil, backendErr(op, tag, err)
		}
		return out(v.num, body), nil
	}
	sc.reserve(backend.NonceSize + len(plaintext) + backend.TagSize)
	body, err := ae.EncryptAppend(ctx, sc.buf[:0], req)
	if err != nil {
		return nil, backendErr(op, tag, err)
	}
	sc.buf = body[:0]
	return out(v.num, body), nil
}

// Decrypt decrypts a ciphertext made by Encrypt (or ReEncrypt) with the
// version its prefix names. encCtx must be the context used to encrypt
// (convergent keys). Any mismatch or tampering fails with ErrDecryptionFailed.
func (e *Engine) Decrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) ([]byte, error) {
	return onKey(e, ctx, "decrypt", keyTag, func(op string, s *keySnap) ([]byte, error) {
		return e.decrypt(ctx, op, s, ciphertext, encCtx)
	})
}

func (e *Engine) decrypt(ctx context.Context, op string, s *keySnap, ciphertext string, encCtx []byte) ([]byte, error) {
	return decryptText(e, ctx, op, s, nil, ciphertext, encCtx, aeadData{})
}

// decryptText decrypts an envelope held in a string or a []byte and
// appends the plaintext to dst (a fresh, exactly sized buffer when dst is
// nil). The body is decoded into a pooled scratch buffer, which holds
// only ciphertext, and opened from there straight into dst. xad is
// AppendOpen's associated data (seal.go; the zero value for Decrypt).
func decryptText[T string | []byte](e *Engine, ctx context.Context, op string, s *keySnap, dst []byte, ciphertext T, encCtx []byte, xad aeadData) ([]byte, error) {
	tag := s.tag
	if err := cipherKeyType(op, s, "decrypt"); err != nil {
		return nil, err
	}
	v, err := textVersion(op, s, ciphertext)
	if err != nil {
		return nil, err
	}
	if v.num < s.minDecrypt {
		return nil, newErr(op, tag, ErrVersionBelowMinimum, fmt.Sprintf("version %d; the minimum is %d", v.num, s.minDecrypt))
	}
	maxBody := maxAESBody
	if s.typ == RSA2048 {
		maxBody = rsaBody
	}
	sc := getScratch()
	defer putScratch(sc)
	var body []byte
	switch c := any(ciphertext).(type) {
	case string:
		_, body, err = envelope.AppendParse(sc.buf[:0], c, maxBody)
	case []byte:
		_, body, err = envelope.AppendParseBytes(sc.buf[:0], c, maxBody)
	}
	if err != nil {
		return nil, newErr(op, tag, ErrInvalidArgument, "malformed ciphertext")
	}
	sc.buf = body[:0]
	req := backend.DecryptRequest{Ciphertext: body}
	if s.typ == AES256 {
		if err := checkContext(op, s, encCtx); err != nil {
			return nil, err
		}
		req.AdditionalData = gcmAD(sc, s, v, encCtx, xad)
	}
	k, err := e.loadKey(ctx, s, v)
	if err != nil {
		return nil, backendErr(op, tag, err)
	}
	if ad, ok := k.(backend.AppendDecrypter); ok {
		pt, err := ad.DecryptAppend(ctx, dst, req)
		if err != nil {
			return nil, backendErr(op, tag, err)
		}
		if pt == nil {
			pt = []byte{}
		}
		e.use(s, v.num, useDecrypt)
		return pt, nil
	}
	r := req // only this path's request escapes
	pt, err := k.(backend.Decrypter).Decrypt(ctx, &r)
	if err != nil {
		return nil, backendErr(op, tag, err)
	}
	e.use(s, v.num, useDecrypt)
	if dst == nil {
		return pt, nil
	}
	dst = append(dst, pt...)
	clear(pt)
	return dst, nil
}

// envelopeVersion reads the version of a ciphertext or signature and
// checks that it exists and is enabled.
func (e *Engine) envelopeVersion(op string, s *keySnap, text string) (*versionSnap, error) {
	return textVersion(op, s, text)
}

func textVersion[T string | []byte](op string, s *keySnap, text T) (*versionSnap, error) {
	tag := s.tag
	if len(text) > MaxCiphertextLength {
		return nil, newErr(op, tag, ErrInvalidArgument, fmt.Sprintf("longer than %d characters", MaxCiphertextLength))
	}
	n, err := envelope.Version(text)
	if err != nil {
		return nil, newErr(op, tag, ErrInvalidArgument, "not of the form ncpkms:v{N}:<base64>")
	}
	v := s.version(n)
	if v == nil {
		return nil, newErr(op, tag, ErrVersionNotFound, fmt.Sprintf("version %d", n))
	}
	if v.state != VersionEnabled {
		return nil, newErr(op, tag, ErrVersionDisabled, fmt.Sprintf("version %d", n))
	}
	return v, nil
}

// ReEncrypt decrypts a ciphertext and encrypts it again under the key's
// current version, without the plaintext leaving the Engine. A ciphertext
// already at the current version gets a fresh encryption.
func (e *Engine) ReEncrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) (string, error) {
	return onKey(e, ctx, "re-encrypt", keyTag, func(op string, s *keySnap) (string, error) {
		return e.reEncrypt(ctx, op, s, ciphertext, encCtx)
	})
}

func (e *Engine) reEncrypt(ctx context.Context, op string, s *keySnap, ciphertext string, encCtx []byte) (string, error) {
	pt, err := e.decrypt(ctx, op, s, ciphertext, encCtx)
	if err != nil {
		return "", err
	}
	defer clear(pt)
	return e.encrypt(ctx, op, s, pt, encCtx)
}

// CreateCustomKey makes a random data key of 128, 256 or 512 bits and
// returns it encrypted under the key's current version (AES256 or
// RSA2048), and in plaintext only when RequestPlainKey is set. pocketkms
// does not store data keys.
func (e *Engine) CreateCustomKey(ctx context.Context, keyTag string, req CustomKeyRequest) (*CustomKey, error) {
	return onKey(e, ctx, "create custom key", keyTag, func(op string, s *keySnap) (*CustomKey, error) {
		return e.createCustomKey(ctx, op, s, req)
	})
}

func (e *Engine) createCustomKey(ctx context.Context, op string, s *keySnap, req CustomKeyRequest) (*CustomKey, error) {
	tag := s.tag
	bits := req.Bits
	if bits == 0 {
		bits = 256
	}
	if bits != 128 && bits != 256 && bits != 512 {
		return nil, newErr(op, tag, ErrInvalidArgument, "bits must be 128, 256 or 512")
	}
	if s.typ != AES256 && s.typ != RSA2048 {
		return nil, newErr(op, tag, ErrWrongKeyType, string(s.typ)+" keys do not encrypt")
	}
	dk := make([]byte, bits/8)
	if _, err := io.ReadFull(e.random, dk); err != nil {
		return nil, wrapErr(op, tag, ErrInternal, fmt.Errorf("read random data key: %w", err))
	}
	ct, err := e.encrypt(ctx, op, s, dk, req.Context)
	if err != nil {
		clear(dk)
		return nil, err
	}
	out := &CustomKey{Ciphertext: ct, KeyVersion: s.current().num}
	if req.RequestPlainKey {
		out.Plaintext = dk
	} else {
		clear(dk)
	}
	return out, nil
}

// Sign signs data (1..8192 bytes, the message itself, hashed with
// SHA-256) with the key's current version: RSA-PSS for RSA2048, DER ECDSA
// for ECDSA. It returns "ncpkms:v{N}:<base64 signature>".
func (e *Engine) Sign(ctx context.Context, keyTag string, data []byte) (string, error) {
	return onKey(e, ctx, "sign", keyTag, func(op string, s *keySnap) (string, error) {
		return e.sign(ctx, op, s, data)
	})
}

// signKeyType fails for key types that neither sign nor verify; the key
// type fixes the algorithm (RSA2048: RSASSA-PSS, ECDSA: DER ECDSA).
func signKeyType(op string, s *keySnap, verb string) error {
	if s.typ != RSA2048 && s.typ != ECDSA {
		return newErr(op, s.tag, ErrWrongKeyType, string(s.typ)+" keys do not "+verb)
	}
	return nil
}

func (e *Engine) sign(ctx context.Context, op string, s *keySnap, data []byte) (string, error) {
	tag := s.tag
	if err := signKeyType(op, s, "sign"); err != nil {
		return "", err
	}
	if len(data) == 0 || len(data) > MaxSignData {
		return "", newErr(op, tag, ErrInvalidArgument, fmt.Sprintf("data must be 1..%d bytes", MaxSignData))
	}
	digest := sha256.Sum256(data)
	sig, v, err := e.signCurrent(ctx, op, s, digest[:], 0)
	if err != nil {
		return "", err
	}
	return envelope.Format(v, sig), nil
}

// signCurrent signs a SHA-256 digest with the key's current version in
// the backend and names the version. salt is the RSASSA-PSS salt length
// for RSA2048 (backend.SignRequest.PSSSaltLength: 0 for the maximum, as
// Sign and NAVER use); it must be 0 for ECDSA.
func (e *Engine) signCurrent(ctx context.Context, op string, s *keySnap, digest []byte, salt int) ([]byte, uint32, error) {
	v := s.current()
	k, err := e.loadKey(ctx, s, v)
	if err != nil {
		return nil, 0, backendErr(op, s.tag, err)
	}
	sig, err := k.(backend.Signer).Sign(ctx, &backend.SignRequest{Digest: digest, PSSSaltLength: salt})
	if err != nil {
		return nil, 0, backendErr(op, s.tag, err)
	}
	e.use(s, v.num, useSign)
	return sig, v.num, nil
}

// Verify checks a signature made by Sign over data, with the version its
// prefix names. A signature that does not match answers (false, nil); for
// RSA2048 that includes an RSASSA-PSS signature whose salt is not the 222
// bytes the key signs with (see WithAnyPSSSaltLength). As
// on NAVER, an RSA signature that is not 256 bytes is a mismatch, and an
// ECDSA signature that is not DER is ErrInvalidArgument; an unknown
// version is ErrVersionNotFound and a disabled one ErrVersionDisabled.
func (e *Engine) Verify(ctx context.Context, keyTag string, data []byte, signature string) (bool, error) {
	return onKey(e, ctx, "verify", keyTag, func(op string, s *keySnap) (bool, error) {
		return e.verify(ctx, op, s, data, signature)
	})
}

func (e *Engine) verify(ctx context.Context, op string, s *keySnap, data []byte, signature string) (bool, error) {
	tag := s.tag
	if err := signKeyType(op, s, "verify"); err != nil {
		return false, err
	}
	if len(data) == 0 || len(data) > MaxSignData {
		return false, newErr(op, tag, ErrInvalidArgument, fmt.Sprintf("data must be 1..%d bytes", MaxSignData))
	}
	v, err := e.envelopeVersion(op, s, signature)
	if err != nil {
		return false, err
	}
	// envelopeVersion bounded the text at MaxCiphertextLength, which
	// bounds the body too; an RSA body of any other length than 256 bytes
	// is a mismatch, not malformed input.
	_, sig, err := envelope.Parse(signature, 0)
	if err != nil {
		return false, newErr(op, tag, ErrInvalidArgument, "malformed signature")
	}
	switch s.typ {
	case RSA2048:
		if len(sig) != rsaBody {
			return false, nil
		}
	case ECDSA:
		if !isDERSignature(sig) {
			return false, newErr(op, tag, ErrInvalidArgument, "signature is not a DER ECDSA signature")
		}
	}
	// Verification needs no secret: it runs on the version's public key,
	// with no backend call.
	digest := sha256.Sum256(data)
	var ok bool
	if s.typ == RSA2048 {
		ok, err = pubkey.VerifyPSS(v.pubKey(), digest[:], sig, e.pssSalt)
	} else {
		ok, err = pubkey.Verify(v.pubKey(), digest[:], sig)
	}
	if err != nil {
		return false, wrapErr(op, tag, ErrInternal, err)
	}
	e.use(s, v.num, useVerify)
	return ok, nil
}

// isDERSignature reports whether sig is exactly the DER of an ECDSA
// signature, SEQUENCE { r INTEGER, s INTEGER }. encoding/asn1 alone would
// accept trailing elements inside the SEQUENCE; encoding the parsed value
// again and comparing refuses them, and any other non-canonical form.
func isDERSignature(sig []byte) bool {
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(sig, &rs); err != nil || len(rest) != 0 {
		return false
	}
	again, err := asn1.Marshal(rs)
	return err == nil && bytes.Equal(again, sig)
}

// GetPublicKey returns the PEM ("PUBLIC KEY", SubjectPublicKeyInfo) public
// key of an RSA2048 or ECDSA key version; version 0 means the current one.
// A disabled version's public key is refused.
func (e *Engine) GetPublicKey(ctx context.Context, keyTag string, version uint32) (string, error) {
	return onKey(e, ctx, "get public key", keyTag, func(op string, s *keySnap) (string, error) {
		return publicKeyPEM(op, s, version)
	})
}

func publicKeyPEM(op string, s *keySnap, version uint32) (string, error) {
	tag := s.tag
	if s.typ == AES256 {
		return "", newErr(op, tag, ErrWrongKeyType, "AES256 keys have no public key")
	}
	v := s.current()
	if version != 0 {
		if v = s.version(version); v == nil {
			return "", newErr(op, tag, ErrVersionNotFound, fmt.Sprintf("version %d", version))
		}
	}
	if v.state != VersionEnabled {
		return "", newErr(op, tag, ErrVersionDisabled, fmt.Sprintf("version %d", v.num))
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: v.der()})), nil
}
