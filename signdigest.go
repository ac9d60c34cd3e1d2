package kms

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/token"
)

// pssSaltLength is the salt length of RSA2048 signatures made by Sign and
// the only one Verify accepts by default: the largest one SHA-256 allows
// under a 2048-bit modulus (256 - 32 - 2).
const pssSaltLength = backend.MaxPSSSaltLength

// SignDigest signs a SHA-256 digest the caller computed, with the key's
// current version, and returns the raw signature and the version that
// made it. It is Sign for adapters that receive a digest rather than the
// message, such as a crypto.Signer: Sign hashes its data itself. For
// ECDSA, and for RSA2048 with the default salt, the signature is what
// Sign would put in its envelope for a message with this digest:
// RSASSA-PSS (SHA-256, MGF1-SHA256, 222-byte salt) or ASN.1 DER ECDSA,
// and Verify accepts it as "ncpkms:v{version}:" followed by its base64.
//
// opts names the scheme, as crypto.Signer's opts do, and anything but the
// key's own scheme is refused rather than signed another way:
//
//   - RSA2048: *rsa.PSSOptions with Hash crypto.SHA256 and SaltLength
//     rsa.PSSSaltLengthAuto or 222 (the maximum salt, as Sign uses), or
//     rsa.PSSSaltLengthEqualsHash or 32 (a salt as long as the hash, what
//     TLS 1.3 and X.509 RSASSA-PSS ask for). Every other length is
//     refused, and so is PKCS #1 v1.5 (any opts that is not
//     *rsa.PSSOptions).
//   - ECDSA: opts whose HashFunc is crypto.SHA256, not *rsa.PSSOptions.
//
// A signature with a 32-byte salt is for consumers that verify with the
// public key (crypto/rsa, crypto/x509, crypto/tls): Verify, like NAVER,
// accepts only the 222-byte salt and answers false for it unless the
// Engine was made WithAnyPSSSaltLength.
//
// The digest must be 32 bytes. Every refusal is ErrInvalidArgument; one
// that asks for a scheme, salt length or hash the key cannot do also
// matches errors.ErrUnsupported. An AES256 key is ErrWrongKeyType.
func (e *Engine) SignDigest(ctx context.Context, keyTag string, digest []byte, opts crypto.SignerOpts) ([]byte, uint32, error) {
	r, err := onKey(e, ctx, "sign digest", keyTag, func(op string, s *keySnap) (digestSig, error) {
		return e.signDigest(ctx, op, s, digest, opts)
	})
	return r.sig, r.version, err
}

// SignDigest is Engine.SignDigest on the token plane (permission Sign).
func (c TokenClient) SignDigest(ctx context.Context, keyTag string, digest []byte, opts crypto.SignerOpts) ([]byte, uint32, error) {
	r, err := onToken(c, ctx, "sign digest", keyTag, token.Access, token.PermSign, 1, func(op string, s *keySnap, _ *token.Claims) (digestSig, error) {
		return c.e.signDigest(ctx, op, s, digest, opts)
	})
	return r.sig, r.version, err
}

type digestSig struct {
	sig     []byte
	version uint32
}

func (e *Engine) signDigest(ctx context.Context, op string, s *keySnap, digest []byte, opts crypto.SignerOpts) (digestSig, error) {
	if err := signKeyType(op, s, "sign"); err != nil {
		return digestSig{}, err
	}
	salt, cerr := checkDigestOpts(op, s, digest, opts)
	if cerr != nil {
		return digestSig{}, cerr
	}
	sig, v, err := e.signCurrent(ctx, op, s, digest, salt)
	return digestSig{sig: sig, version: v}, err
}

// checkDigestOpts fails closed: only the key's one scheme passes. It
// returns the backend.SignRequest.PSSSaltLength to sign with: 0 (the
// maximum) or sha256.Size for RSA2048, 0 for ECDSA.
func checkDigestOpts(op string, s *keySnap, digest []byte, opts crypto.SignerOpts) (int, *Error) {
	unsupported := func(detail string) *Error {
		err := newErr(op, s.tag, ErrInvalidArgument, detail)
		err.Err = errors.ErrUnsupported
		return err
	}
	pss, isPSS := opts.(*rsa.PSSOptions)
	if opts == nil || (isPSS && pss == nil) {
		return 0, newErr(op, s.tag, ErrInvalidArgument, "nil signer options")
	}
	salt := 0
	switch s.typ {
	case RSA2048:
		if !isPSS {
			return 0, unsupported("RSA2048 keys sign RSASSA-PSS only: opts must be *rsa.PSSOptions")
		}
		switch pss.SaltLength {
		case rsa.PSSSaltLengthAuto, pssSaltLength:
		case rsa.PSSSaltLengthEqualsHash, sha256.Size:
			salt = sha256.Size
		default:
			return 0, unsupported(fmt.Sprintf("RSA2048 keys sign with the maximum salt, %d bytes (PSSSaltLengthAuto), or one as long as the hash, %d bytes (PSSSaltLengthEqualsHash), not %d", pssSaltLength, sha256.Size, pss.SaltLength))
		}
	case ECDSA:
		if isPSS {
			return 0, newErr(op, s.tag, ErrInvalidArgument, "ECDSA keys take crypto.SHA256, not *rsa.PSSOptions")
		}
	}
	if h := opts.HashFunc(); h != crypto.SHA256 {
		return 0, unsupported(fmt.Sprintf("the hash must be SHA-256, not %v", h))
	}
	if len(digest) != sha256.Size {
		return 0, newErr(op, s.tag, ErrInvalidArgument, fmt.Sprintf("the digest must be %d bytes", sha256.Size))
	}
	return salt, nil
}
