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
// AES256 limit less the 32 bytes that bind the associated data.
const MaxAEADPlaintext = kms.MaxAESPlaintext - sha256.Size

// AEAD is authenticated encryption with associated data over a
// non-convergent pocketkms AES256 key, with the method set of Tink's
// tink.AEAD and tink.AEADWithContext, for envelope encryption (a key
// encryption key). Make it with NewAEAD; it is safe for concurrent use.
//
// # Format
//
// Encrypt seals SHA-256(associatedData) ‖ plaintext with kms.Engine.Encrypt
// and returns the Engine's ciphertext string as bytes,
// "ncpkms:v{N}:<base64>". The Engine's AES-256-GCM authenticates the whole
// sealed text (and the key tag and version), so the associated data is
// bound as firmly as GCM binds its own; Decrypt compares the digest in
// constant time and fails with kms.ErrDecryptionFailed when it differs.
// The Engine ignores an encryption context for non-convergent keys, which
// is why the associated data travels inside the sealed text rather than
// as a context. The ciphertext is an ordinary Engine ciphertext:
// Engine.ReEncrypt moves it to the key's current version and it still
// decrypts with the same associated data.
//
// # Cost
//
// Both planes offer []byte entry points (kms.Engine.AppendEncrypt and
// AppendDecrypt, and TokenClient's), and AEAD uses them when its Client
// has them: it then allocates exactly what the Engine call allocates
// (the returned slice), builds the sealed text in a pooled buffer that it
// clears after use, and converts nothing between strings and bytes.
// What remains is SHA-256 of the associated data (precomputed when it is
// empty), copying the plaintext, and 32 more bytes through AES-GCM
// (BENCHMARKS.md). Another Client goes through Encrypt and Decrypt with
// the same format.
type AEAD struct {
	ctx    context.Context
	c      Client
	ac     appendClient // c, when it has the []byte entry points
	keyTag string
}

// appendClient is the []byte form of a Client's Encrypt and Decrypt, which
// both planes offer (kms.Engine.AppendEncrypt, kms.Engine.AppendDecrypt
// and TokenClient's): through them AEAD converts nothing between strings
// and bytes.
type appendClient interface {
	AppendEncrypt(ctx context.Context, dst []byte, keyTag string, plaintext, encCtx []byte) ([]byte, error)
	AppendDecrypt(ctx context.Context, dst []byte, keyTag string, ciphertext, encCtx []byte) ([]byte, error)
}

var (
	_ appendClient = (*kms.Engine)(nil)
	_ appendClient = kms.TokenClient{}
)

// sealedPool holds the buffers AEAD builds SHA-256(ad) ‖ plaintext in.
// They hold plaintext, so each is cleared before it goes back.
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
// nothing and the first call fails instead: a convergent key with
// kms.ErrInvalidArgument (it needs a context), another type with
// kms.ErrWrongKeyType. The token needs the Encrypt and Decrypt
// permissions.
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
	const op = "aead decrypt"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
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
