package store

import (
	"errors"

	kstore "github.com/pocketkms/kms/store"
)

// Sentinel errors of the store.
var (
	// ErrCorrupt: a record failed its checksum or could not be decoded.
	ErrCorrupt = kstore.ErrCorrupt
	// ErrNameTaken: the key name index already holds the name.
	ErrNameTaken = errors.New("store: key name taken")
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("store: record not found")
	// ErrSchemaTooNew: the directory was written by a newer schema.
	ErrSchemaTooNew = errors.New("store: schema newer than this build")
	// ErrBroken: a commit failed inside Badger (disk full, I/O error), or
	// the directory refused the integrity record before a commit. The
	// store refuses writes and Load from then on (Badger's memtable may be
	// gone; the Engine serves from its snapshots meanwhile). Badger is
	// left open (closing it would make it write again), so the directory
	// stays locked until the process exits: restart to recover.
	ErrBroken = errors.New("store: storage failed; restart the process to recover")
	// ErrUncertain, always with ErrBroken: Badger failed while committing,
	// and the change may or may not be on disk. The next open reads which.
	ErrUncertain = kstore.ErrUncertain
	// ErrInUse: the directory is already open in this process.
	ErrInUse = errors.New("store: directory already open in this process")
	// ErrLocked: a read-only open found the directory locked by a writer
	// in another process.
	ErrLocked = errors.New("store: directory in use by another process")
	// ErrNoSpace: the file system is nearly full; the change was refused
	// before it reached Badger.
	ErrNoSpace = errors.New("store: not enough free space")
	// ErrClosed: the store was closed.
	ErrClosed = kstore.ErrClosed
)
