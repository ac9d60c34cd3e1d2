// Package acl implements the per-key IP allow-list of NAVER Cloud KMS: the
// list of addresses, CIDR prefixes and '*' patterns from which a key's
// token-authenticated operations may be called, stored exactly as entered
// and compiled into a fast, immutable matcher.
//
// Start with List, an immutable value holding the enabled flag and the
// entries. The zero List is the state of a new key (disabled: everyone may
// call). Change it with WithEnabled, Add and Remove, which return a new List;
// read it with Entries or Page; store it as a State and load it back with
// ParseState. After each change call Compile and publish the resulting
// *Matcher, whose Allow answers for one caller address:
//
//	l, err := acl.List{}.WithEnabled(true).Add([]string{"10.0.0.0/8", "192.168.*.1"})
//	if err != nil { ... } // an *acl.EntryError naming every bad entry
//	var current atomic.Pointer[acl.Matcher]
//	current.Store(l.Compile())
//	...
//	if !current.Load().Allow(callerAddr) { /* 403 AccessDenied */ }
//
// ParseEntry documents the entry grammar. Beyond NAVER, which accepts IPv4
// only, IPv6 addresses and prefixes are accepted in canonical form.
//
// Rules taken from NAVER: enabled with no entries denies everyone; disabled
// allows everyone; entries are stored as entered ("10.0.0.1" and
// "10.0.0.1/32" are two entries, "10.3.0.1/24" keeps its host bits but
// matches 10.3.0.0/24); re-adding an entry is a no-op; removal is by exact
// string and all-or-nothing, except that removing from an empty list always
// succeeds; 1..100 entries per call; listing is sorted by string ascending
// and paged (page numbers from 0, size 1..200, default 20).
//
// # Concurrency
//
// List, Entry and Matcher values are immutable and safe for concurrent use;
// a State is plain data owned by whoever holds it. Serialising changes to one key's List (read,
// change, store, publish) is the caller's job, for example under a per-key
// lock. Matcher.Allow takes no lock and does not allocate; a Matcher is
// meant to sit in an atomic.Pointer and be replaced as a whole.
//
// # Security
//
// The allow-list is only as good as the caller address passed to Allow: take
// it from the connection, not from a header such as X-Forwarded-For unless a
// trusted proxy sets it. When the list is enabled, Allow denies the zero
// netip.Addr, zoned addresses (fe80::1%eth0) and the unspecified addresses
// 0.0.0.0 and ::, and matches an IPv4-mapped IPv6 address (::ffff:10.0.0.1)
// as its IPv4 form, so a caller reaching a dual-stack listener meets the
// IPv4 entries exactly as on an IPv4 listener. IPv4 entries never match IPv6 callers and IPv6 entries never
// match IPv4 callers: "0.0.0.0/0" opens the key to all IPv4 addresses only,
// "::/0" to all IPv6 addresses only. Entries that could only mislead are
// refused: IPv4-mapped IPv6 entries (write the IPv4 form) and entries
// matching only the unspecified address ("0.0.0.0" is not "any"). A nil or
// zero Matcher denies everyone (fails closed). Error messages quote
// offending entries with %q, so they are safe to log.
//
// # Limitations
//
// A list holds at most MaxEntries (1,000) entries; NAVER has a limit but
// does not publish it. There are allow entries only, no deny entries; no
// host names, no address ranges such as "10.0.0.1-10.0.0.9", no '*' in IPv6
// entries. IPv6 entries must be in the canonical form net/netip prints
// (lower case, zeros compressed as RFC 5952 says), because entries are
// stored as entered and must format back to the same text; other spellings
// are refused with the canonical one in the reason. Removal is by exact
// text, so "10.0.0.1/32" does not remove "10.0.0.1".
package acl
