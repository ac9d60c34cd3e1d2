package softhsm

import "errors"

// Errors of this package, besides the backend package's sentinels that
// every method wraps. Messages name modules, tokens, keys and operations,
// never a PIN, key material or plaintext.
var (
	// ErrInvalidConfig: a Config or pkcs11 URI is malformed or incomplete.
	ErrInvalidConfig = errors.New("softhsm: invalid configuration")
	// ErrTokenNotFound: no initialised token matches the configured label
	// and serial number.
	ErrTokenNotFound = errors.New("softhsm: token not found")
	// ErrIncorrectPIN: the token refused the user PIN (or the PIN differs
	// from the one another Backend of this process logged in with).
	ErrIncorrectPIN = errors.New("softhsm: incorrect PIN")
)
