package shred

import "errors"

// Sentinel errors of the package. None carries key bytes or a handle.
var (
	// ErrCorrupt: a shred key file failed its frame (magic, version,
	// length or CRC-32C, which covers the key tag the file is named
	// after). The key in it is never used.
	ErrCorrupt = errors.New("shred: key file damaged")
	// ErrExists: Create was asked for a tag that already has a shred key.
	// Replacing it would shred the material it guards.
	ErrExists = errors.New("shred: a shred key exists for this tag")
	// ErrDeleted: the Key was deleted (or its Keys closed); it wraps and
	// unwraps nothing any more.
	ErrDeleted = errors.New("shred: key deleted")
	// ErrClosed: the Keys were closed.
	ErrClosed = errors.New("shred: closed")
	// ErrUnwrap: a wrapped handle did not open under the key for the
	// binding given (another key, another tag, purpose or version, or
	// altered bytes). One opaque error for every cause.
	ErrUnwrap = errors.New("shred: wrapped handle does not open")
	// ErrInvalidTag: the tag is not 64 lowercase hex characters.
	ErrInvalidTag = errors.New("shred: invalid key tag")
)
