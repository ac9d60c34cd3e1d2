package backend

import (
	"crypto/sha256"
	"fmt"

	"github.com/pocketkms/kms/internal/keytag"
)

// ValidKeyTag reports whether s is a well-formed key tag: exactly 64
// characters, each a digit or a lowercase letter a–f. It is the module's
// one validator (internal/keytag), exported for backends.
func ValidKeyTag(s string) bool { return keytag.Valid(s) }

// Validate checks that r, together with the key type and convergent flag
// of a request, names material a backend may create, load or destroy: a
// valid key tag, a version of at least 1, a known purpose and key type,
// Convergent only for AES256, and RSA2048 for PurposeTokenSigning. It
// returns nil or an error wrapping ErrInvalidArgument whose message quotes
// (truncated) the offending purpose or type and nothing else.
func (r KeyRef) Validate(typ KeyType, convergent bool) error {
	switch {
	case !ValidKeyTag(r.KeyTag):
		return fmt.Errorf("%w: key tag must be %d lowercase hex characters", ErrInvalidArgument, keytag.Len)
	case r.Version < 1:
		return fmt.Errorf("%w: version must be at least 1", ErrInvalidArgument)
	case !r.Purpose.Valid():
		return fmt.Errorf("%w: unknown purpose %q", ErrInvalidArgument, truncate(string(r.Purpose)))
	case !typ.Valid():
		return fmt.Errorf("%w: unknown key type %q", ErrInvalidArgument, truncate(string(typ)))
	case convergent && typ != AES256:
		return fmt.Errorf("%w: only AES256 keys can be convergent", ErrInvalidArgument)
	case r.Purpose == PurposeTokenSigning && typ != RSA2048:
		return fmt.Errorf("%w: token-signing keys must be RSA2048", ErrInvalidArgument)
	}
	return nil
}

// String names r for errors and logs, as "key <tag> v<version>
// (<purpose>)". Key tags, versions and purposes are not secret; a key tag
// or purpose that is not valid is quoted and truncated, so a
// caller-supplied value can neither forge nor flood a message.
func (r KeyRef) String() string {
	tag := r.KeyTag
	if !ValidKeyTag(tag) {
		tag = fmt.Sprintf("%q", truncate(tag))
	}
	purpose := string(r.Purpose)
	if !r.Purpose.Valid() {
		purpose = fmt.Sprintf("%q", truncate(purpose))
	}
	return fmt.Sprintf("key %s v%d (%s)", tag, r.Version, purpose)
}

// truncate shortens caller-supplied identifiers that go into messages.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// CheckSignRequest checks a Sign request to a key of type typ made for
// purpose p: req is not nil, its digest is 32 bytes, the key signs
// (RSA2048 keys of either purpose, ECDSA cipher keys), and its
// PSSSaltLength is 0..MaxPSSSaltLength for an RSA2048 cipher key and 0
// for any other. The key's type and purpose then fix the algorithm:
// RSASSA-PSS for RSA2048 cipher keys, RSASSA-PKCS1-v1_5 for token-signing
// keys, ECDSA for ECDSA keys. It returns nil or an error wrapping
// ErrInvalidArgument.
func CheckSignRequest(req *SignRequest, typ KeyType, p Purpose) error {
	switch {
	case req == nil:
		return fmt.Errorf("%w: nil request", ErrInvalidArgument)
	case len(req.Digest) != sha256.Size:
		return fmt.Errorf("%w: digest must be %d bytes", ErrInvalidArgument, sha256.Size)
	case !p.Valid() || (typ != RSA2048 && (typ != ECDSA || p != PurposeCipher)):
		return fmt.Errorf("%w: %s %s keys do not sign", ErrInvalidArgument, truncate(string(typ)), truncate(string(p)))
	case req.PSSSaltLength == 0:
	case typ != RSA2048 || p != PurposeCipher:
		return fmt.Errorf("%w: %s %s keys do not sign RSASSA-PSS and take no salt length", ErrInvalidArgument, truncate(string(typ)), truncate(string(p)))
	case req.PSSSaltLength < 0 || req.PSSSaltLength > MaxPSSSaltLength:
		return fmt.Errorf("%w: PSS salt length must be 1..%d bytes, or 0 for the maximum", ErrInvalidArgument, MaxPSSSaltLength)
	}
	return nil
}

// CheckEncryptRequest checks an Encrypt request to a key of type typ made
// for purpose p: req is not nil and the key encrypts (AES256 cipher keys
// only; the Engine encrypts RSA-OAEP itself). Size limits are the
// backend's to check. It returns nil or an error wrapping
// ErrInvalidArgument.
func CheckEncryptRequest(req *EncryptRequest, typ KeyType, p Purpose) error {
	switch {
	case req == nil:
		return fmt.Errorf("%w: nil request", ErrInvalidArgument)
	case p == PurposeTokenSigning:
		return fmt.Errorf("%w: token-signing keys do not encrypt", ErrInvalidArgument)
	case p != PurposeCipher || typ != AES256:
		return fmt.Errorf("%w: %s %s keys do not encrypt", ErrInvalidArgument, truncate(string(typ)), truncate(string(p)))
	}
	return nil
}

// CheckDecryptRequest checks a Decrypt request to a key of type typ made
// for purpose p: req is not nil, the key decrypts (AES256 and RSA2048
// cipher keys; token-signing keys do not), and an RSA2048 request carries
// no additional data. It returns nil or an error wrapping
// ErrInvalidArgument; it never judges the ciphertext, whose failures are
// the backend's to report as ErrDecryptionFailed.
func CheckDecryptRequest(req *DecryptRequest, typ KeyType, p Purpose) error {
	switch {
	case req == nil:
		return fmt.Errorf("%w: nil request", ErrInvalidArgument)
	case p == PurposeTokenSigning:
		return fmt.Errorf("%w: token-signing keys do not decrypt", ErrInvalidArgument)
	case p != PurposeCipher || (typ != AES256 && typ != RSA2048):
		return fmt.Errorf("%w: %s %s keys do not decrypt", ErrInvalidArgument, truncate(string(typ)), truncate(string(p)))
	case typ == RSA2048 && len(req.AdditionalData) != 0:
		return fmt.Errorf("%w: rsa decryption takes no additional data", ErrInvalidArgument)
	}
	return nil
}
