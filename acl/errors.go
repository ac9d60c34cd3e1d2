package acl

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors of the package. Every error returned by acl matches exactly
// one of them through errors.Is. Messages name the offending entries (client
// input, never secret) quoted with %q, so they are safe to log.
var (
	// ErrInvalidEntry reports an entry that is not a valid allow-list entry
	// (see ParseEntry for the grammar). It is returned as an *EntryError that
	// lists every invalid entry of the call.
	ErrInvalidEntry = errors.New("acl: invalid entry")
	// ErrEntryNotFound reports that List.Remove was asked to remove entries
	// the list does not hold. It is returned as an *EntryError that lists
	// every missing entry; nothing was removed.
	ErrEntryNotFound = errors.New("acl: entry not found")
	// ErrTooManyEntries reports that a list would hold more than MaxEntries
	// entries; nothing was changed.
	ErrTooManyEntries = errors.New("acl: too many entries")
	// ErrInvalidArgument reports a call-level argument out of range: the
	// number of entries in one call (1..MaxEntriesPerCall), or a page number
	// or page size.
	ErrInvalidArgument = errors.New("acl: invalid argument")
)

// maxProblemsShown bounds how many problems EntryError.Error spells out.
const maxProblemsShown = 10

// maxEntryShown bounds how many bytes of one entry an error message quotes.
const maxEntryShown = 48

// EntryError reports every refused entry of one call. Its Err field is the
// class (ErrInvalidEntry or ErrEntryNotFound), so errors.Is(err,
// ErrInvalidEntry) works on the whole error; Problems carries the details,
// for example to fill per-field errors of an HTTP answer.
type EntryError struct {
	// Err is the class of the error: ErrInvalidEntry or ErrEntryNotFound.
	Err error
	// Problems lists the refused entries in the order they were given.
	Problems []Problem
}

// Problem is one refused entry of an EntryError.
type Problem struct {
	// Index is the position of the entry in the slice passed to the call.
	Index int
	// Entry is the entry exactly as given.
	Entry string
	// Reason says why the entry was refused, for example
	// `octet "010" has a leading zero`.
	Reason string
}

// Error returns "acl: invalid entry: [i] "entry": reason; ..." (or "acl:
// entry not found: ..."), spelling out at most ten problems and quoting at
// most 48 bytes of each entry.
func (e *EntryError) Error() string {
	var b strings.Builder
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("acl: refused entries")
	}
	for i, p := range e.Problems {
		if i == maxProblemsShown {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-i)
			break
		}
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		s := p.Entry
		if len(s) > maxEntryShown {
			s = s[:maxEntryShown] + "..."
		}
		fmt.Fprintf(&b, "[%d] %q: %s", p.Index, s, p.Reason)
	}
	return b.String()
}

// Unwrap returns e.Err, so that errors.Is matches the class sentinel.
func (e *EntryError) Unwrap() error { return e.Err }
