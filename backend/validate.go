package backend

import (
	"crypto/sha256"
	"fmt"
)

// keyTagLen is the length of a key tag: 64 lowercase hex characters.
const keyTagLen = 64

// ValidKeyTag reports whether s is a well-formed key tag: exactly 64
// characters, each a digit or a lowercase letter a–f.
func ValidKeyTag(s string) bool {
	if len(s) != keyTagLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Validate checks that r, together with the key type and convergent flag
// of a request, names material a backend may create, load or destroy: a
// valid key tag, a version of at least 1, a known purpose and key type,
// Convergent only for AES256, and RSA2048 for PurposeTokenSigning. It
// returns nil or an error wrapping ErrInvalidArgument whose message quotes
// (truncated) the offending purpose or type and nothing else.
func (r KeyRef) Validate(typ KeyType, convergent bool) error {
	switch {
	case !ValidKeyTag(r.KeyTag):
		return fmt.Errorf("%w: key tag must be %d lowercase hex characters", ErrInvalidArgument, keyTagLen)
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

// SignAlgorithm returns the one algorithm a key of type typ made for
// purpose p signs and verifies with, or 0 if such a key does not sign.
// This is the key-separation rule every backend enforces: RSA2048 cipher
// keys use AlgRSAPSSSHA256, RSA2048 token-signing keys
// AlgRSAPKCS1v15SHA256, ECDSA keys AlgECDSAP256SHA256.
func SignAlgorithm(typ KeyType, p Purpose) Algorithm {
	switch {
	case typ == RSA2048 && p == PurposeCipher:
		return AlgRSAPSSSHA256
	case typ == RSA2048 && p == PurposeTokenSigning:
		return AlgRSAPKCS1v15SHA256
	case typ == ECDSA && p == PurposeCipher:
		return AlgECDSAP256SHA256
	}
	return 0
}

// CheckSignRequest checks a Sign request to a key of type typ made for
// purpose p: req is not nil, its digest is 32 bytes, and its algorithm is
// SignAlgorithm(typ, p). It returns nil or an error wrapping
// ErrInvalidArgument.
func CheckSignRequest(req *SignRequest, typ KeyType, p Purpose) error {
	if req == nil {
		return fmt.Errorf("%w: nil request", ErrInvalidArgument)
	}
	return checkSign(req.Algorithm, req.Digest, typ, p)
}

// CheckVerifyRequest checks a Verify request to a key of type typ made for
// purpose p as CheckSignRequest checks a Sign request: req is not nil, its
// digest is 32 bytes, and its algorithm is SignAlgorithm(typ, p). It
// returns nil or an error wrapping ErrInvalidArgument. VerifyWithPublicKey
// checks the rest (the salt length).
func CheckVerifyRequest(req *VerifyRequest, typ KeyType, p Purpose) error {
	if req == nil {
		return fmt.Errorf("%w: nil request", ErrInvalidArgument)
	}
	return checkSign(req.Algorithm, req.Digest, typ, p)
}

func checkSign(a Algorithm, digest []byte, typ KeyType, p Purpose) error {
	if len(digest) != sha256.Size {
		return fmt.Errorf("%w: digest must be %d bytes", ErrInvalidArgument, sha256.Size)
	}
	if want := SignAlgorithm(typ, p); want == 0 || a != want {
		if typ == ECDSA {
			return fmt.Errorf("%w: algorithm %v does not fit an ECDSA key", ErrInvalidArgument, a)
		}
		return fmt.Errorf("%w: algorithm %v does not fit a %s %s key", ErrInvalidArgument, a, truncate(string(typ)), truncate(string(p)))
	}
	return nil
}

// CheckEncryptRequest checks an Encrypt request to a key of type typ made
// for purpose p: req is not nil, the key encrypts (AES256 and RSA2048
// cipher keys; token-signing keys do not), and an RSA2048 request carries
// no additional data. Size limits are the backend's to check. It returns
// nil or an error wrapping ErrInvalidArgument.
func CheckEncryptRequest(req *EncryptRequest, typ KeyType, p Purpose) error {
	if req == nil {
		return fmt.Errorf("%w: nil request", ErrInvalidArgument)
	}
	return checkCipher("encrypt", "encryption", typ, p, req.AdditionalData)
}

// CheckDecryptRequest checks a Decrypt request to a key of type typ made
// for purpose p as CheckEncryptRequest checks an Encrypt request. It
// returns nil or an error wrapping ErrInvalidArgument; it never judges the
// ciphertext, whose failures are the backend's to report as
// ErrDecryptionFailed.
func CheckDecryptRequest(req *DecryptRequest, typ KeyType, p Purpose) error {
	if req == nil {
		return fmt.Errorf("%w: nil request", ErrInvalidArgument)
	}
	return checkCipher("decrypt", "decryption", typ, p, req.AdditionalData)
}

func checkCipher(verb, noun string, typ KeyType, p Purpose, additionalData []byte) error {
	switch {
	case p == PurposeTokenSigning:
		return fmt.Errorf("%w: token-signing keys do not %s", ErrInvalidArgument, verb)
	case p != PurposeCipher || (typ != AES256 && typ != RSA2048):
		return fmt.Errorf("%w: %s %s keys do not %s", ErrInvalidArgument, truncate(string(typ)), truncate(string(p)), verb)
	case typ == RSA2048 && len(additionalData) != 0:
		return fmt.Errorf("%w: rsa %s takes no additional data", ErrInvalidArgument, noun)
	}
	return nil
}
