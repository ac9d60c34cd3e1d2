package pubkey

import "errors"

// Sentinel errors. The Engine checks its arguments and every stored public
// key before it calls this package, so for the Engine either error is an
// internal error, never the caller's.
var (
	// ErrInvalidKey: the public key is not an RSA-2048 or P-256 key, or
	// not the one a key type or operation needs.
	ErrInvalidKey = errors.New("pubkey: invalid public key")
	// ErrInvalidArgument: a digest that is not 32 bytes, a negative salt
	// length, or a plaintext too long for RSA-OAEP.
	ErrInvalidArgument = errors.New("pubkey: invalid argument")
)
