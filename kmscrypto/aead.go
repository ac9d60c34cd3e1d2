package kmscrypto

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/envelope"
)

// MaxAEADPlaintext is the largest plaintext AEAD encrypts: the Engine's
// AES256 limit less 32 bytes. The current format does not need those 32
// bytes, but the legacy one (see [AEAD]), which AEAD still writes for a
// Client without AppendSeal and for associated data over
// kms.MaxAdditionalData, does; the limit is kept the same for both, so
// that what one AEAD accepts every AEAD accepts.
const MaxAEADPlaintext = kms.MaxAESPlaintext - sha256.Size

// sealMarker starts every AEAD ciphertext of the current format: the
// marker, then the envelope kms.Engine.AppendSeal made. A legacy
// ciphertext is a bare envelope, which starts with "ncpkms:", so it never
// starts with the marker.
const sealMarker = "aead:"

// AEAD is authenticated encryption with associated data over a
// non-convergent pocketkms AES256 key, with the method set of Tink's
// tink.AEAD and tink.AEADWithContext, for envelope encryption (a key
// encryption key). Make it with NewAEAD; it is safe for concurrent use.
//
// # Format
//
// Encrypt returns "aead:ncpkms:v{N}:<base64>": the marker "aead:" and
// the envelope of kms.Engine.AppendSeal, which seals the plaintext with
// AES-256-GCM under the key's current version and binds the associated
// data in GCM's own associated data:
//
//	"pocketkms/v1" 0x00 keyTag 0x00 version(4 bytes, big-endian) 0xFF associatedData
//
// (nil and empty associated data are the same). The body is
// nonce(12) ‖ ciphertext ‖ tag(16). The 0xFF separates it from every
// associated data kms.Engine.Encrypt uses, so an AEAD ciphertext is not an
// Engine ciphertext: Engine.Decrypt and Engine.ReEncrypt refuse it
// (kms.ErrInvalidArgument with the marker, kms.ErrDecryptionFailed
// without; ReEncrypt does not have the associated data, and must not
// drop it). To move AEAD ciphertexts to the key's current
// version after a rotation, use [AEAD.ReEncrypt] (the plaintext passes
// through this process, and is cleared) or Decrypt and Encrypt.
//
// The legacy format, which AEAD wrote before AppendSeal existed, is a
// bare envelope ("ncpkms:v{N}:<base64>") of kms.Engine.Encrypt sealing
// SHA-256(associatedData) ‖ plaintext, the digest checked in constant
// time after decryption. Decrypt reads it, so nothing stored becomes
// unreadable, and Engine.ReEncrypt still moves it to a newer version
// (it stays in the legacy format; AEAD.ReEncrypt converts it). AEAD still
// writes it in two cases, where AppendSeal cannot be used: a Client
// without AppendSeal and AppendOpen (both planes have them, so only
// another implementation of [Client]; it cannot decrypt the current
// format, and fails on it with kms.ErrInvalidArgument matching
// errors.ErrUnsupported), and associated data over kms.MaxAdditionalData
// (1 MiB).
//
// # Cost
//
// Encrypt writes the marker into a buffer sized for the whole
// ciphertext and AppendSeal appends the envelope after it; Decrypt hands
// the envelope after the marker to AppendOpen. So each allocates exactly
// what the Engine call allocates (the returned slice) and adds a prefix
// check and a length computation to it (BENCHMARKS.md).
type AEAD struct {
	ctx    context.Context
	c      Client
	ac     appendClient // c, when it has the []byte entry points
	sc     sealClient   // c, when it has AppendSeal and AppendOpen
	keyTag string
}

// appendClient is the []byte form of a Client's Encrypt and Decrypt, which
// both planes offer (kms.Engine.AppendEncrypt, kms.Engine.AppendDecrypt
// and TokenClient's): through them the legacy format converts nothing
// between strings and bytes.
type appendClient interface {
	AppendEncrypt(ctx context.Context, dst []byte, keyTag string, plaintext, encCtx []byte) ([]byte, error)
	AppendDecrypt(ctx context.Context, dst []byte, keyTag string, ciphertext, encCtx []byte) ([]byte, error)
}

// sealClient is the Engine's authenticated encryption with associated
// data, which both planes offer (kms.Engine.AppendSeal and AppendOpen,
// and TokenClient's): AEAD's current format.
type sealClient interface {
	AppendSeal(ctx context.Context, dst []byte, keyTag string, plaintext, additionalData []byte) ([]byte, error)
	AppendOpen(ctx context.Context, dst []byte, keyTag string, ciphertext, additionalData []byte) ([]byte, error)
}

var (
	_ appendClient = (*kms.Engine)(nil)
	_ appendClient = kms.TokenClient{}
	_ sealClient   = (*kms.Engine)(nil)
	_ sealClient   = kms.TokenClient{}
)

// sealedPool holds the buffers the legacy format builds
// SHA-256(ad) ‖ plaintext in. They hold plaintext, so each is cleared
// before it goes back.
var sealedPool = sync.Pool{New: func() any { return new([]byte) }}

// NewAEAD returns an AEAD for a non-convergent AES256 key, on either plane
// (c is a *kms.Engine or a kms.TokenClient).
//
// ctx is used by Encrypt and Decrypt, since tink.AEAD's methods take no
// context: once ctx is done they fail with its error. EncryptWithContext
// and DecryptWithContext use the context they are given instead.
//
// On the trusted plane NewAEAD reads the key and refuses any type but
// AES256 (kms.ErrWrongKeyType), and a convergent key
// (kms.ErrWrongKeyType): it encrypts deterministically, which an AEAD
// must not. The token plane cannot read a key, so there NewAEAD checks
// nothing and the first call fails instead, with kms.ErrWrongKeyType
// for both (AppendSeal's refusal). The token needs the Encrypt and
// Decrypt permissions.
func NewAEAD(ctx context.Context, c Client, keyTag string) (*AEAD, error) {
	const op = "new aead"
	if kr, ok := c.(keyReader); ok {
		k, err := kr.GetKey(ctx, keyTag)
		if err != nil {
			return nil, err
		}
		switch {
		case k.Type != kms.AES256:
			return nil, newErr(op, k.Tag, kms.ErrWrongKeyType, "AEAD needs an AES256 key, not "+string(k.Type), nil)
		case k.Convergent:
			return nil, newErr(op, k.Tag, kms.ErrWrongKeyType, "convergent keys encrypt deterministically; AEAD needs a non-convergent AES256 key", nil)
		}
	}
	a := &AEAD{ctx: ctx, c: c, keyTag: keyTag}
	a.ac, _ = c.(appendClient)
	a.sc, _ = c.(sealClient)
	return a, nil
}

// KeyTag returns the key's tag.
func (a *AEAD) KeyTag() string { return a.keyTag }

// Encrypt encrypts plaintext (1..MaxAEADPlaintext bytes) under the key's
// current version, binding associatedData (any length, nil and empty
// alike), with the context given to NewAEAD.
func (a *AEAD) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	return a.EncryptWithContext(a.ctx, plaintext, associatedData)
}

// Decrypt decrypts a ciphertext made by Encrypt with the same associated
// data, with the context given to NewAEAD. Any mismatch — another key,
// other associated data, tampering — is kms.ErrDecryptionFailed; a
// disabled version is kms.ErrVersionDisabled.
func (a *AEAD) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	return a.DecryptWithContext(a.ctx, ciphertext, associatedData)
}

// EncryptWithContext is Encrypt with ctx for this call (tink.AEADWithContext).
func (a *AEAD) EncryptWithContext(ctx context.Context, plaintext, associatedData []byte) ([]byte, error) {
	const op = "aead encrypt"
	if len(plaintext) == 0 || len(plaintext) > MaxAEADPlaintext {
		return nil, newErr(op, a.keyTag, kms.ErrInvalidArgument, fmt.Sprintf("plaintext must be 1..%d bytes", MaxAEADPlaintext), nil)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if a.sc != nil && len(associatedData) <= kms.MaxAdditionalData {
		// The marker, then room for the longest envelope AppendSeal can
		// append (a nine-digit version): the call's one allocation.
		dst := make([]byte, len(sealMarker), len(sealMarker)+envelope.TextLen(envelope.MaxVersion, backend.NonceSize+len(plaintext)+backend.TagSize))
		copy(dst, sealMarker)
		return a.sc.AppendSeal(ctx, dst, a.keyTag, plaintext, associatedData)
	}
	return a.encryptLegacy(ctx, op, plaintext, associatedData)
}

// encryptLegacy writes the legacy format: the envelope of
// SHA-256(associatedData) ‖ plaintext.
func (a *AEAD) encryptLegacy(ctx context.Context, op string, plaintext, associatedData []byte) ([]byte, error) {
	n := sha256.Size + len(plaintext)
	if a.ac == nil {
		sealed := make([]byte, n)
		adDigest(sealed[:sha256.Size], associatedData)
		copy(sealed[sha256.Size:], plaintext)
		ct, err := a.c.Encrypt(ctx, a.keyTag, sealed, nil)
		clear(sealed)
		if err != nil {
			return nil, err
		}
		return a.checkSealed(op, []byte(ct), n)
	}
	// The sealed text is built in a pooled buffer (cleared after use)
	// and the envelope written straight into the returned slice.
	p := sealedPool.Get().(*[]byte)
	if cap(*p) < n {
		*p = make([]byte, n, max(n, 1024))
	}
	sealed := (*p)[:n]
	adDigest(sealed[:sha256.Size], associatedData)
	copy(sealed[sha256.Size:], plaintext)
	ct, err := a.ac.AppendEncrypt(ctx, nil, a.keyTag, sealed, nil)
	clear(sealed)
	sealedPool.Put(p)
	if err != nil {
		return nil, err
	}
	return a.checkSealed(op, ct, n)
}

// checkSealed returns ct if it holds an AES-256-GCM body of n bytes.
func (a *AEAD) checkSealed(op string, ct []byte, n int) ([]byte, error) {
	if !isAESGCM(ct, n) {
		// Only an RSA2048 key, on the token plane, gets here: it
		// encrypts with RSA-OAEP, which anyone holding the public key
		// can do, so it cannot authenticate anything.
		return nil, newErr(op, a.keyTag, kms.ErrWrongKeyType, "AEAD needs an AES256 key", nil)
	}
	return ct, nil
}

// DecryptWithContext is Decrypt with ctx for this call (tink.AEADWithContext).
func (a *AEAD) DecryptWithContext(ctx context.Context, ciphertext, associatedData []byte) ([]byte, error) {
	// The common case, kept small: a ciphertext of the current format
	// and a Client that opens it.
	if a.sc != nil && len(associatedData) <= kms.MaxAdditionalData && bytes.HasPrefix(ciphertext, []byte(sealMarker)) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return a.sc.AppendOpen(ctx, nil, a.keyTag, ciphertext[len(sealMarker):], associatedData)
	}
	return a.decryptOther(ctx, ciphertext, associatedData)
}

// decryptOther is DecryptWithContext's uncommon cases: a ciphertext of
// the legacy format, or one of the current format that cannot open.
func (a *AEAD) decryptOther(ctx context.Context, ciphertext, associatedData []byte) ([]byte, error) {
	const op = "aead decrypt"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(ciphertext, []byte(sealMarker)) {
		return a.decryptLegacy(ctx, op, ciphertext, associatedData)
	}
	if a.sc == nil {
		return nil, newErr(op, a.keyTag, kms.ErrInvalidArgument, "this ciphertext needs a Client with AppendOpen (both planes have it)", errUnsupported)
	}
	// Encrypt writes the legacy format for associated data over
	// kms.MaxAdditionalData, so no marked ciphertext was made with it.
	return nil, newErr(op, a.keyTag, kms.ErrDecryptionFailed, "", nil)
}

// decryptLegacy reads the legacy format: it decrypts the envelope and
// checks the SHA-256 of associatedData that precedes the plaintext.
func (a *AEAD) decryptLegacy(ctx context.Context, op string, ciphertext, associatedData []byte) ([]byte, error) {
	var sealed []byte
	var err error
	if a.ac != nil {
		sealed, err = a.ac.AppendDecrypt(ctx, nil, a.keyTag, ciphertext, nil)
	} else {
		sealed, err = a.c.Decrypt(ctx, a.keyTag, string(ciphertext), nil)
	}
	if err != nil {
		return nil, err
	}
	var want [sha256.Size]byte
	adDigest(want[:], associatedData)
	// The layout check refuses RSA-OAEP ciphertexts (an RSA2048 key on
	// the token plane), which anyone could have made.
	if len(sealed) < sha256.Size || !isAESGCM(ciphertext, len(sealed)) ||
		!digestEqual((*[sha256.Size]byte)(sealed), &want) {
		clear(sealed)
		return nil, newErr(op, a.keyTag, kms.ErrDecryptionFailed, "", nil)
	}
	return sealed[sha256.Size:], nil
}

// ReEncrypt decrypts a ciphertext of either format made by this key and
// encrypts its plaintext again under the key's current version, in the
// current format where the Client allows it (see [AEAD] for when it
// does not): what Engine.ReEncrypt does for Engine ciphertexts, which it
// cannot do for AEAD's (it does not have the associated data). Unlike
// Engine.ReEncrypt the plaintext passes through this process; it is
// cleared before ReEncrypt returns. It needs both the Encrypt and
// Decrypt permissions on the token plane, and fails as Decrypt and
// Encrypt fail.
func (a *AEAD) ReEncrypt(ctx context.Context, ciphertext, associatedData []byte) ([]byte, error) {
	pt, err := a.DecryptWithContext(ctx, ciphertext, associatedData)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	return a.EncryptWithContext(ctx, pt, associatedData)
}

// digestEqual compares two SHA-256 digests in constant time, a word at a
// time (crypto/subtle.ConstantTimeCompare goes a byte at a time, which
// showed as 5% of a 32-byte AEAD.Decrypt).
func digestEqual(a, b *[sha256.Size]byte) bool {
	var d uint64
	for i := 0; i < sha256.Size; i += 8 {
		d |= binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:])
	}
	return subtle.ConstantTimeEq(int32(uint32(d)|uint32(d>>32)), 0) == 1
}

// adDigest writes SHA-256(ad) into dst (32 bytes).
func adDigest(dst, ad []byte) {
	if len(ad) == 0 {
		copy(dst, emptyDigest[:])
		return
	}
	d := sha256.Sum256(ad)
	copy(dst, d[:])
}

var emptyDigest = sha256.Sum256(nil)

// isAESGCM reports whether ct, a well-formed envelope the Engine made or
// accepted, holds an AES-256-GCM body for a plaintext of n bytes:
// nonce(12) ‖ ciphertext(n) ‖ tag(16). An RSA-OAEP body is always 256
// bytes, which this never equals for the n AEAD seals with an RSA2048
// key (at most 190, so 218 at most).
func isAESGCM(ct []byte, n int) bool {
	// The body starts after the colon that ends "ncpkms:v{N}"; look for
	// it from the front (the version has at most nine digits), not across
	// the whole body.
	if !bytes.HasPrefix(ct, []byte(envelope.Prefix)) {
		return false
	}
	head := ct[len(envelope.Prefix):min(len(ct), len(envelope.Prefix)+11)]
	i := bytes.IndexByte(head, ':')
	if i < 0 {
		return false
	}
	b64 := ct[len(envelope.Prefix)+i+1:]
	if len(b64) == 0 || len(b64)%4 != 0 {
		return false
	}
	body := len(b64) / 4 * 3
	if b64[len(b64)-1] == '=' {
		body--
		if b64[len(b64)-2] == '=' {
			body--
		}
	}
	return body == backend.NonceSize+n+backend.TagSize
}

// String describes the AEAD by key tag; it never shows the Client (a
// TokenClient holds a token).
func (a *AEAD) String() string { return describe("AEAD", a.keyTag, 0) }

// GoString is String.
func (a *AEAD) GoString() string { return a.String() }

// Format writes String for every verb.
func (a *AEAD) Format(f fmt.State, _ rune) { io.WriteString(f, a.String()) }
