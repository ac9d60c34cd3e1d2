package store

import "errors"

// Sentinel errors of the store.
var (
	// ErrCorrupt: a record failed its checksum or could not be decoded.
	ErrCorrupt = errors.New("store: corrupt record")
	// ErrNameTaken: the key name index already holds the name.
	ErrNameTaken = errors.New("store: key name taken")
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("store: record not found")
	// ErrSchemaTooNew: the directory was written by a newer schema.
	ErrSchemaTooNew = errors.New("store: schema newer than this build")
	// ErrBroken: a commit failed inside Badger (disk full, I/O error); the
	// store refuses writes until it is reopened. Reads keep working.
	ErrBroken = errors.New("store: storage failed; reopen to recover")
	// ErrNoSpace: the file system is nearly full; the change was refused
	// before it reached Badger.
	ErrNoSpace = errors.New("store: not enough free space")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
)
