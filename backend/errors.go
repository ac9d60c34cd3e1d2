package backend

import "errors"

// Sentinel errors of the SPI. Backends wrap them (fmt.Errorf("...: %w",
// ErrX)) so callers match with errors.Is. Messages never carry key
// material, plaintext or handles.
var (
	// ErrInvalidArgument: the request is malformed (wrong type, size, algorithm).
	ErrInvalidArgument = errors.New("backend: invalid argument")
	// ErrInvalidHandle: a handle is malformed, was made for another KeyRef or
	// type, or was sealed under another root key.
	ErrInvalidHandle = errors.New("backend: invalid key handle")
	// ErrKeyNotFound: the material behind a handle no longer exists.
	ErrKeyNotFound = errors.New("backend: key material not found")
	// ErrDecryptionFailed: authentication, padding or format failure while
	// decrypting. Deliberately carries no detail.
	ErrDecryptionFailed = errors.New("backend: decryption failed")
	// ErrClosed: the backend was closed.
	ErrClosed = errors.New("backend: closed")
	// ErrUnavailable: the backend cannot be reached, or lost its session
	// or login and could not get it back. It says nothing about the key
	// material or the request, which may succeed when retried later.
	ErrUnavailable = errors.New("backend: unavailable (cannot be reached or lost its session); retry")
	// ErrUnsupported: the backend lacks a capability. It wraps
	// errors.ErrUnsupported.
	ErrUnsupported = unsupported{}
)

type unsupported struct{}

func (unsupported) Error() string { return "backend: unsupported operation" }
func (unsupported) Unwrap() error { return errors.ErrUnsupported }
