package acl

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Limits of a List and of the calls that change or read it.
const (
	// MaxEntries is the most entries one List may hold. NAVER documents
	// that a per-key maximum exists but not its value; pocketkms allows
	// 1,000. The limit applies to the list after a change, so re-adding
	// entries a full list already holds still succeeds as a no-op.
	MaxEntries = 1000
	// MaxEntriesPerCall is the most entries one Add or Remove may name
	// (NAVER: 1..100).
	MaxEntriesPerCall = 100
	// DefaultPageSize is the page size Page uses when asked for size 0.
	DefaultPageSize = 20
	// MaxPageSize is the largest page size Page accepts.
	MaxPageSize = 200
	// MaxPageNo is the largest page number Page accepts; pageNo × pageSize
	// must also not exceed math.MaxInt32 (NAVER pagination rules).
	MaxPageNo = math.MaxInt32 - 1
)

// List is the IP access-control state of one key: an enabled flag and the
// allowed entries, exactly as entered, without duplicates. It is an
// immutable value: Add, Remove and WithEnabled return a new List and never
// change the one they are called on, so a List may be shared between
// goroutines freely. Compile turns it into the Matcher that checks caller
// addresses.
//
// The zero List is the state of a new key: disabled, with no entries, so
// every address may call. Enabled with no entries, no address may call.
type List struct {
	enabled bool
	entries []Entry // sorted by text, no duplicates, never modified in place
}

// State is the exported, storable form of a List. Load it back with
// ParseState, which validates it again.
type State struct {
	// Enabled reports whether the allow-list is enforced.
	Enabled bool `json:"enabled"`
	// Entries are the allowed entries exactly as entered, sorted by string
	// ascending.
	Entries []string `json:"entries"`
}

// ParseState validates a stored State and returns its List. Every entry is
// parsed again with ParseEntry; it fails with an *EntryError matching
// ErrInvalidEntry listing every invalid or duplicated entry, or with
// ErrTooManyEntries when there are more than MaxEntries. The entries need
// not be sorted.
func ParseState(s State) (List, error) {
	if len(s.Entries) > MaxEntries {
		return List{}, fmt.Errorf("%w: stored list has %d entries, the limit is %d", ErrTooManyEntries, len(s.Entries), MaxEntries)
	}
	entries, err := ParseEntries(s.Entries)
	if err != nil {
		return List{}, err
	}
	seen := make(map[string]struct{}, len(entries))
	var dup []Problem
	for i, e := range entries {
		if _, ok := seen[e.text]; ok {
			dup = append(dup, Problem{Index: i, Entry: e.text, Reason: "duplicate entry"})
			continue
		}
		seen[e.text] = struct{}{}
	}
	if dup != nil {
		return List{}, &EntryError{Err: ErrInvalidEntry, Problems: dup}
	}
	slices.SortFunc(entries, compareEntries)
	return List{enabled: s.Enabled, entries: entries}, nil
}

// State returns the storable form of l. Its Entries slice is a new one,
// never nil.
func (l List) State() State {
	return State{Enabled: l.enabled, Entries: l.Entries()}
}

// Enabled reports whether the allow-list is enforced.
func (l List) Enabled() bool { return l.enabled }

// WithEnabled returns a copy of l with the enabled flag set to enabled. The
// entries are kept either way.
func (l List) WithEnabled(enabled bool) List {
	l.enabled = enabled
	return l
}

// Len returns the number of entries.
func (l List) Len() int { return len(l.entries) }

// Entries returns the entries as entered, sorted by string ascending (byte
// order), in a new slice that is never nil.
func (l List) Entries() []string {
	out := make([]string, len(l.entries))
	for i, e := range l.entries {
		out[i] = e.text
	}
	return out
}

// Has reports whether l holds exactly the entry text s.
func (l List) Has(s string) bool {
	_, ok := l.index(s)
	return ok
}

func (l List) index(s string) (int, bool) {
	return slices.BinarySearchFunc(l.entries, s, func(e Entry, s string) int {
		return strings.Compare(e.text, s)
	})
}

// Add returns l with the given entries added, keeping the enabled flag.
// Entries are stored exactly as given; an entry the list already holds, or
// one named twice, is added once and adding it again is a no-op (so
// "10.0.0.1" and "10.0.0.1/32" are two entries). The call must name 1 to
// MaxEntriesPerCall entries (else ErrInvalidArgument). Every entry is
// validated first, and an *EntryError matching ErrInvalidEntry lists every
// invalid one. A result of more than MaxEntries entries fails with
// ErrTooManyEntries. On any error Add returns l unchanged.
func (l List) Add(entries []string) (List, error) {
	if err := checkCall("add", len(entries)); err != nil {
		return l, err
	}
	parsed, err := ParseEntries(entries)
	if err != nil {
		return l, err
	}
	add := parsed[:0]
	for _, e := range parsed {
		if !l.Has(e.text) {
			add = append(add, e)
		}
	}
	slices.SortFunc(add, compareEntries)
	add = slices.CompactFunc(add, func(a, b Entry) bool { return a.text == b.text })
	if len(add) == 0 {
		return l, nil
	}
	if n := len(l.entries) + len(add); n > MaxEntries {
		return l, fmt.Errorf("%w: adding %d new entries to %d would make %d, the limit is %d",
			ErrTooManyEntries, len(add), len(l.entries), n, MaxEntries)
	}
	merged := make([]Entry, 0, len(l.entries)+len(add))
	i, j := 0, 0
	for i < len(l.entries) && j < len(add) {
		if l.entries[i].text < add[j].text {
			merged = append(merged, l.entries[i])
			i++
		} else {
			merged = append(merged, add[j])
			j++
		}
	}
	merged = append(merged, l.entries[i:]...)
	merged = append(merged, add[j:]...)
	return List{enabled: l.enabled, entries: merged}, nil
}

// Remove returns l without the given entries, keeping the enabled flag.
// Only exact strings match: "10.0.0.1" does not remove "10.0.0.1/32". The
// call must name 1 to MaxEntriesPerCall entries (else ErrInvalidArgument)
// and every entry must be valid (else an *EntryError matching
// ErrInvalidEntry lists every invalid one). Removal is all or nothing: if
// any entry is absent, Remove fails with an *EntryError matching
// ErrEntryNotFound that lists every absent entry, and removes nothing. As in
// NAVER, removing from an empty list succeeds without checking presence.
// Naming an entry twice is allowed. On any error Remove returns l unchanged.
func (l List) Remove(entries []string) (List, error) {
	if err := checkCall("remove", len(entries)); err != nil {
		return l, err
	}
	if _, err := ParseEntries(entries); err != nil {
		return l, err
	}
	if len(l.entries) == 0 {
		return l, nil
	}
	drop := make(map[string]struct{}, len(entries))
	var missing []Problem
	for i, s := range entries {
		if !l.Has(s) {
			missing = append(missing, Problem{Index: i, Entry: s, Reason: "not in the list"})
		}
		drop[s] = struct{}{}
	}
	if missing != nil {
		return l, &EntryError{Err: ErrEntryNotFound, Problems: missing}
	}
	kept := make([]Entry, 0, len(l.entries)-len(drop))
	for _, e := range l.entries {
		if _, ok := drop[e.text]; !ok {
			kept = append(kept, e)
		}
	}
	return List{enabled: l.enabled, entries: kept}, nil
}

// Page returns one page of the entries in the order of Entries: page pageNo
// (0-based, at most MaxPageNo) of pageSize entries (1..MaxPageSize; 0 means
// DefaultPageSize). pageNo × pageSize must not exceed math.MaxInt32. A page
// past the end is empty. The slice is new and never nil. Out-of-range
// arguments fail with ErrInvalidArgument.
func (l List) Page(pageNo, pageSize int) ([]string, error) {
	if pageSize == 0 {
		pageSize = DefaultPageSize
	}
	switch {
	case pageNo < 0 || pageNo > MaxPageNo:
		return nil, fmt.Errorf("%w: page number %d is out of range 0..%d", ErrInvalidArgument, pageNo, MaxPageNo)
	case pageSize < 1 || pageSize > MaxPageSize:
		return nil, fmt.Errorf("%w: page size %d is out of range 1..%d", ErrInvalidArgument, pageSize, MaxPageSize)
	case int64(pageNo)*int64(pageSize) > math.MaxInt32:
		return nil, fmt.Errorf("%w: page number %d times page size %d exceeds %d", ErrInvalidArgument, pageNo, pageSize, math.MaxInt32)
	}
	start := pageNo * pageSize
	if start >= len(l.entries) {
		return []string{}, nil
	}
	end := min(start+pageSize, len(l.entries))
	out := make([]string, 0, end-start)
	for _, e := range l.entries[start:end] {
		out = append(out, e.text)
	}
	return out, nil
}

func checkCall(op string, n int) error {
	if n < 1 || n > MaxEntriesPerCall {
		return fmt.Errorf("%w: %s takes 1..%d entries per call, got %d", ErrInvalidArgument, op, MaxEntriesPerCall, n)
	}
	return nil
}

func compareEntries(a, b Entry) int { return strings.Compare(a.text, b.text) }
