package acl

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
)

// Matcher is the compiled form of a List: it answers, for a caller address,
// whether the list lets it call. It is immutable and lock-free, safe for
// concurrent use by any number of goroutines, and meant to be published
// through an atomic.Pointer[Matcher] and replaced (never changed) when the
// List changes. Allow does not allocate.
//
// A nil *Matcher and the zero Matcher deny every address (they behave like
// an enabled, empty List); only Compile makes a Matcher that allows.
type Matcher struct {
	allowAll bool // compiled from a disabled List

	// IPv4: sorted, disjoint, non-adjacent closed ranges [v4lo[i], v4hi[i]]
	// from addresses, prefixes and wildcards whose '*' octets are all
	// trailing; then the other wildcards, one hash set of values per mask.
	v4lo, v4hi []uint32
	v4groups   []maskGroup

	// IPv6: sorted, disjoint, non-adjacent closed ranges.
	v6lo, v6hi []u128

	entries int
}

// Compile builds the Matcher of l. Call it once per change of the List and
// publish the result; a Matcher never changes. The Matcher of a disabled
// List allows every address, including the zero netip.Addr; deciding which
// callers reach the check at all is left to the caller of Allow.
func (l List) Compile() *Matcher {
	if !l.enabled {
		return &Matcher{allowAll: true}
	}
	m := &Matcher{entries: len(l.entries)}
	var r4 []range32
	var r6 []range128
	groups := map[uint32][]uint32{}
	for _, e := range l.entries {
		switch e.kind {
		case kindAddr, kindPrefix:
			p := e.prefix.Masked()
			if p.Addr().Is4() {
				lo := addr4(p.Addr())
				r4 = append(r4, range32{lo, lo | ^uint32(0)>>p.Bits()})
			} else {
				lo := addr16(p.Addr())
				r6 = append(r6, range128{lo, lo.or(hostMask128(p.Bits()))})
			}
		case kindWildcard:
			if inv := ^e.mask; inv&(inv+1) == 0 {
				// All '*' octets trailing: a contiguous range.
				r4 = append(r4, range32{e.value, e.value | inv})
			} else {
				groups[e.mask] = append(groups[e.mask], e.value)
			}
		}
	}
	r4 = mergeRanges(r4, func(a, b uint32) int { return cmp.Compare(a, b) },
		func(hi, lo uint32) bool { return hi != ^uint32(0) && hi+1 < lo })
	for _, r := range r4 {
		m.v4lo = append(m.v4lo, r.lo)
		m.v4hi = append(m.v4hi, r.hi)
	}
	r6 = mergeRanges(r6, u128.cmp, func(hi, lo u128) bool { return !hi.isMax() && hi.inc().less(lo) })
	for _, r := range r6 {
		m.v6lo = append(m.v6lo, r.lo)
		m.v6hi = append(m.v6hi, r.hi)
	}
	for mask, values := range groups {
		// Drop wildcards wholly inside one range: a range is contiguous, so
		// it covers the pattern when it holds its lowest and highest member.
		values = slices.DeleteFunc(values, func(v uint32) bool {
			i, ok := findRange(m.v4lo, m.v4hi, v)
			return ok && v|^mask <= m.v4hi[i]
		})
		if len(values) > 0 {
			m.v4groups = append(m.v4groups, maskGroup{mask: mask, set: newU32Set(values)})
		}
	}
	// Largest group first: a hit returns sooner on average.
	slices.SortFunc(m.v4groups, func(a, b maskGroup) int {
		if c := cmp.Compare(b.set.n, a.set.n); c != 0 {
			return c
		}
		return cmp.Compare(a.mask, b.mask)
	})
	return m
}

// Allow reports whether a caller at addr may use the key. With a Matcher
// compiled from a disabled List it returns true for every addr. Otherwise it
// returns true exactly when addr is contained in at least one entry (see
// Entry.Contains): an IPv4-mapped IPv6 addr (::ffff:10.0.0.1) is matched as
// its IPv4 form; IPv4 entries never match IPv6 callers nor the reverse; and
// an invalid (zero), zoned or unspecified (0.0.0.0, ::) addr is denied. A
// nil Matcher denies every addr. Allow does not allocate and takes no lock.
func (m *Matcher) Allow(addr netip.Addr) bool {
	if m == nil {
		return false
	}
	if m.allowAll {
		return true
	}
	addr, ok := callerAddr(addr)
	if !ok {
		return false
	}
	if addr.Is4() {
		x := addr4(addr)
		if _, ok := findRange(m.v4lo, m.v4hi, x); ok {
			return true
		}
		for i := range m.v4groups {
			g := &m.v4groups[i]
			if g.set.has(x & g.mask) {
				return true
			}
		}
		return false
	}
	x := addr16(addr)
	lo, hi := 0, len(m.v6lo)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if !x.less(m.v6lo[h]) {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo > 0 && !m.v6hi[lo-1].less(x)
}

// Enabled reports whether m enforces an allow-list, that is whether it was
// compiled from an enabled List (or is nil or the zero Matcher).
func (m *Matcher) Enabled() bool { return m == nil || !m.allowAll }

// Len returns the number of entries m was compiled from; 0 for the Matcher
// of a disabled List.
func (m *Matcher) Len() int {
	if m == nil {
		return 0
	}
	return m.entries
}

// findRange returns the index of the range holding x, if one does.
func findRange(los, his []uint32, x uint32) (int, bool) {
	lo, hi := 0, len(los)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if los[h] <= x {
			lo = h + 1
		} else {
			hi = h
		}
	}
	if lo > 0 && x <= his[lo-1] {
		return lo - 1, true
	}
	return 0, false
}

type rangeOf[T any] struct{ lo, hi T }

type (
	range32  = rangeOf[uint32]
	range128 = rangeOf[u128]
)

// mergeRanges sorts rs and merges overlapping and adjacent ranges.
// apart(hi, lo) reports whether a range ending at hi and one starting at lo
// (lo ≥ the first range's lo) are neither overlapping nor adjacent.
func mergeRanges[T any](rs []rangeOf[T], compare func(a, b T) int, apart func(hi, lo T) bool) []rangeOf[T] {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b rangeOf[T]) int { return compare(a.lo, b.lo) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if apart(last.hi, r.lo) {
			out = append(out, r)
			continue
		}
		if compare(r.hi, last.hi) > 0 {
			last.hi = r.hi
		}
	}
	return out
}

// u128 is an IPv6 address as a 128-bit unsigned number.
type u128 struct{ hi, lo uint64 }

func addr16(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// hostMask128 has the low 128-bits bits set.
func hostMask128(bits int) u128 {
	if bits >= 64 {
		return u128{0, ^uint64(0) >> (bits - 64)}
	}
	return u128{^uint64(0) >> bits, ^uint64(0)}
}

func (a u128) or(b u128) u128 { return u128{a.hi | b.hi, a.lo | b.lo} }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) cmp(b u128) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

func (a u128) isMax() bool { return a.hi == ^uint64(0) && a.lo == ^uint64(0) }

func (a u128) inc() u128 {
	lo, carry := bits.Add64(a.lo, 1, 0)
	return u128{a.hi + carry, lo}
}

// maskGroup holds the wildcard entries sharing one mask: a caller x matches
// one of them when x&mask is in set.
type maskGroup struct {
	mask uint32
	set  u32set
}

// u32set is an open-addressing hash set of uint32 values with linear
// probing and a load factor of at most one half. A slot holds 1<<32|v, or 0
// when empty.
type u32set struct {
	slots []uint64
	shift uint
	n     int
}

func newU32Set(values []uint32) u32set {
	size := 2
	for size < 2*len(values) {
		size <<= 1
	}
	s := u32set{slots: make([]uint64, size), shift: uint(32 - bits.TrailingZeros(uint(size)))}
	for _, v := range values {
		want := uint64(v) | 1<<32
		i := s.slot(v)
		for s.slots[i] != 0 && s.slots[i] != want {
			i = (i + 1) & (len(s.slots) - 1)
		}
		if s.slots[i] == 0 {
			s.slots[i] = want
			s.n++
		}
	}
	return s
}

// slot is Fibonacci hashing: the top bits of v × 2^32/φ.
func (s *u32set) slot(v uint32) int { return int((v * 0x9E3779B1) >> s.shift) }

func (s *u32set) has(v uint32) bool {
	want := uint64(v) | 1<<32
	mask := len(s.slots) - 1
	for i := s.slot(v); ; i = (i + 1) & mask {
		switch s.slots[i] {
		case want:
			return true
		case 0:
			return false
		}
	}
}
