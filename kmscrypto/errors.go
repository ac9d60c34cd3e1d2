package kmscrypto

import (
	"errors"
	"net/http"

	"github.com/pocketkms/kms"
)

// ErrVersionNotCurrent is the cause inside the *kms.Error (kind
// kms.ErrInvalidState) that a Signer returns once the key has been
// rotated after the Signer was made: the key now signs with a version
// whose public key is not the Signer's Public, so the signature would not
// verify. Make a new Signer (and certificate) for the new version.
var ErrVersionNotCurrent = errors.New("kmscrypto: the key's current version is not the signer's")

// The NAVER code and HTTP status of each kms sentinel this package
// returns itself, as the Engine's own errors carry them.
var classes = map[error]struct {
	code   string
	status int
}{
	kms.ErrInvalidArgument:  {"InvalidParameter", http.StatusBadRequest},
	kms.ErrWrongKeyType:     {"InvalidParameter", http.StatusBadRequest},
	kms.ErrDecryptionFailed: {"InvalidParameter", http.StatusBadRequest},
	kms.ErrInvalidState:     {"InvalidState", http.StatusConflict},
}

// newErr returns a *kms.Error of the given kind, so that errors of this
// package match the kms sentinels with errors.Is exactly as the Engine's
// do. cause may be nil.
func newErr(op, keyTag string, kind error, detail string, cause error) *kms.Error {
	c := classes[kind]
	return &kms.Error{Op: op, KeyTag: keyTag, Code: c.code, Status: c.status, Kind: kind, Detail: detail, Err: cause}
}

// errUnsupported is the cause of refusals of a scheme the key cannot do.
var errUnsupported = errors.ErrUnsupported
