package store

import "errors"

// Sentinel errors every Store implementation uses, so the Engine can act
// on them whatever holds its state. Implementations wrap them with
// details and may add errors of their own.
var (
	// ErrConflict: a Change's expectations did not hold (a record was
	// changed, created or removed since it was read). Nothing was written;
	// re-read and retry, or report it.
	ErrConflict = errors.New("store: conflicting change")
	// ErrCorrupt: a record failed its frame or its checksum, or the
	// store's content is inconsistent.
	ErrCorrupt = errors.New("store: corrupt record")
	// ErrUncertain: the store failed while committing and cannot tell
	// whether the change landed (a torn local commit, a lost connection
	// after the request was sent). Callers must not undo side effects that
	// only make sense if the change is absent, such as destroying new key
	// material; the next Load, or the change feed, tells the truth.
	ErrUncertain = errors.New("store: the change may or may not have been committed")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrResync: a Watcher can no longer deliver every change after the
	// revision asked for (the history was compacted, or the stream broke
	// in a way that may have lost events). The caller must Load again.
	ErrResync = errors.New("store: change feed lost; reload")
)

// ConflictError is the error of a Change whose expectation on the record
// under Key did not hold. It matches ErrConflict.
type ConflictError struct {
	// Key is the record key whose revision was not the one expected.
	Key string
}

// Error names the record key (record keys hold no secret).
func (e *ConflictError) Error() string { return "store: conflicting change: " + e.Key }

// Is reports whether target is ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }
