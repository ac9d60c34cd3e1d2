package kmscrypto

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"fmt"
	"io"

	"github.com/pocketkms/kms"
)

// Signer is a crypto.Signer over a pocketkms RSA2048 or ECDSA key, pinned
// to the version that was current when it was made. Make it with
// NewSigner; it is safe for concurrent use.
type Signer struct {
	ctx     context.Context
	c       Client
	keyTag  string
	version uint32
	pub     crypto.PublicKey
}

var _ crypto.Signer = (*Signer)(nil)

// NewSigner returns a crypto.Signer for an RSA2048 or ECDSA key, on
// either plane (c is a *kms.Engine or a kms.TokenClient). It reads the
// key's current version and that version's public key, which Public
// returns from then on.
//
// ctx is used by NewSigner and by every later Sign, since crypto.Signer's
// Sign takes no context: once ctx is done, Sign fails with its error.
// Pass a context that lives as long as the Signer (often
// context.Background()).
//
// On the token plane the token needs the GetPublicKey permission for
// NewSigner (which makes up to nine calls, see the package
// documentation) and the Sign permission for Sign. An AES256 key fails
// with kms.ErrWrongKeyType.
func NewSigner(ctx context.Context, c Client, keyTag string) (*Signer, error) {
	v, pub, err := publicKey(ctx, "new signer", c, keyTag, 0)
	if err != nil {
		return nil, err
	}
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return nil, newErr("new signer", keyTag, kms.ErrWrongKeyType, fmt.Sprintf("public key of type %T", pub), nil)
	}
	return &Signer{ctx: ctx, c: c, keyTag: keyTag, version: v, pub: pub}, nil
}

// Public returns the public key of the Signer's version: *rsa.PublicKey
// or *ecdsa.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// KeyTag returns the key's tag.
func (s *Signer) KeyTag() string { return s.keyTag }

// Version returns the key version the Signer signs with.
func (s *Signer) Version() uint32 { return s.version }

// Sign signs a SHA-256 digest with the key (kms.Engine.SignDigest); rand
// is ignored, the backend draws the randomness. opts must be the key's
// own scheme:
//
//   - RSA2048: *rsa.PSSOptions{Hash: crypto.SHA256} with SaltLength
//     rsa.PSSSaltLengthAuto or 222 (the maximum salt, as Engine.Sign
//     signs), or rsa.PSSSaltLengthEqualsHash or 32 (a salt as long as the
//     hash: what x509.CreateCertificate asks for with
//     x509.SHA256WithRSAPSS, and TLS 1.3). Other salt lengths and PKCS #1
//     v1.5 (opts crypto.SHA256) are refused (see Limitations in the
//     package documentation).
//   - ECDSA: crypto.SHA256; the signature is ASN.1 DER.
//
// Refusals are kms.ErrInvalidArgument, also matching
// errors.ErrUnsupported when the scheme, salt length or hash is one the
// key cannot do. When the key has been rotated since NewSigner, Sign
// fails with kms.ErrInvalidState and ErrVersionNotCurrent, since the
// signature would not verify with Public.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	sig, v, err := s.c.SignDigest(s.ctx, s.keyTag, digest, opts)
	if err != nil {
		return nil, err
	}
	if v != s.version {
		return nil, newErr("sign", s.keyTag, kms.ErrInvalidState,
			fmt.Sprintf("the key signs with version %d, the signer's public key is version %d", v, s.version), ErrVersionNotCurrent)
	}
	return sig, nil
}

// String describes the Signer by key tag and version; it never shows the
// Client (a TokenClient holds a token).
func (s *Signer) String() string { return describe("Signer", s.keyTag, s.version) }

// GoString is String.
func (s *Signer) GoString() string { return s.String() }

// Format writes String for every verb.
func (s *Signer) Format(f fmt.State, _ rune) { io.WriteString(f, s.String()) }
