package acl

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// MaxEntryLen is the longest entry ParseEntry accepts, in bytes. The longest
// valid entry, a fully written IPv6 prefix such as
// "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", has 43.
const MaxEntryLen = 64

type kind uint8

const (
	kindAddr     kind = iota + 1 // a single address: 10.0.0.1, 2001:db8::1
	kindPrefix                   // a CIDR prefix, host bits kept: 10.3.0.1/24
	kindWildcard                 // an IPv4 address with '*' octets: 10.*.0.*
)

// Entry is one parsed allow-list entry. It keeps the text exactly as it was
// entered; String gives it back. Entries are comparable with ==; two entries
// are equal exactly when their texts are. The zero Entry is not a valid
// entry and contains no address.
type Entry struct {
	text string
	kind kind
	// prefix is the address (with its full bit length) for kindAddr and the
	// prefix as written, host bits kept, for kindPrefix.
	prefix netip.Prefix
	// mask has 0xff in each fixed octet and 0x00 in each '*' octet; value is
	// the fixed octets (zero under the '*' octets). kindWildcard only.
	mask, value uint32
}

// ParseEntry parses one allow-list entry. It accepts:
//
//   - an IPv4 address in dotted decimal: "10.0.0.1";
//   - an IPv4 CIDR prefix, length 0..32: "10.0.0.0/8"; host bits are allowed
//     and kept as written ("10.3.0.1/24" stays "10.3.0.1/24"), matching uses
//     the masked network;
//   - an IPv4 address with one or more '*' octets, each matching 0..255:
//     "10.*.0.*" ('*' cannot be combined with '/');
//   - an IPv6 address or CIDR prefix, length 0..128, in the canonical form of
//     RFC 5952 as net/netip prints it: "2001:db8::1", "2001:db8::/32".
//
// It refuses, with a reason: the empty string, anything longer than
// MaxEntryLen bytes, whitespace and any other character outside
// [0-9A-Fa-f.:/*], IPv4 octets with a leading zero ("010.0.0.1") or above
// 255, prefix lengths with a leading zero or sign, IPv6 zones
// ("fe80::1%eth0"), IPv6 text not in canonical form ("2001:DB8::1",
// "2001:0db8::1"; the reason names the canonical spelling), IPv4-mapped IPv6
// entries ("::ffff:10.0.0.1"; the reason names the IPv4 form), and entries
// that match only the unspecified address ("0.0.0.0", "::", "0.0.0.0/32"),
// which no caller can have. So an accepted entry always formats back to the
// exact input.
//
// The error is an *EntryError matching ErrInvalidEntry, with one Problem.
func ParseEntry(s string) (Entry, error) {
	e, reason := parseEntry(s)
	if reason != "" {
		return Entry{}, &EntryError{Err: ErrInvalidEntry, Problems: []Problem{{Index: 0, Entry: s, Reason: reason}}}
	}
	return e, nil
}

// ParseEntries parses every string in ss with ParseEntry. When any is
// invalid it returns nil and one *EntryError, matching ErrInvalidEntry, that
// lists every invalid entry with its index and reason.
func ParseEntries(ss []string) ([]Entry, error) {
	out := make([]Entry, len(ss))
	var bad []Problem
	for i, s := range ss {
		e, reason := parseEntry(s)
		if reason != "" {
			bad = append(bad, Problem{Index: i, Entry: s, Reason: reason})
			continue
		}
		out[i] = e
	}
	if bad != nil {
		return nil, &EntryError{Err: ErrInvalidEntry, Problems: bad}
	}
	return out, nil
}

// String returns the entry exactly as it was entered.
func (e Entry) String() string { return e.text }

// Contains reports whether the caller address addr is matched by this one
// entry, under the rules of an enabled Matcher: addr is unmapped first
// (::ffff:10.0.0.1 is matched as 10.0.0.1), and an invalid, zoned or
// unspecified addr is never contained. It is the slow reference for
// Matcher.Allow, which is equivalent to Contains over all entries of an
// enabled List.
func (e Entry) Contains(addr netip.Addr) bool {
	addr, ok := callerAddr(addr)
	if !ok {
		return false
	}
	switch e.kind {
	case kindAddr:
		return e.prefix.Addr() == addr
	case kindPrefix:
		return e.prefix.Contains(addr)
	case kindWildcard:
		return addr.Is4() && addr4(addr)&e.mask == e.value
	}
	return false
}

// callerAddr normalises a caller address for matching: it refuses the zero
// Addr, zoned addresses and the unspecified address, and unmaps
// IPv4-mapped IPv6 addresses.
func callerAddr(addr netip.Addr) (netip.Addr, bool) {
	if !addr.IsValid() || addr.Zone() != "" {
		return netip.Addr{}, false
	}
	addr = addr.Unmap()
	if addr.IsUnspecified() {
		return netip.Addr{}, false
	}
	return addr, true
}

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// format builds the text of e from its parsed parts. parseEntry accepts s
// only when format gives s back, which is what makes the stored text
// canonical.
func (e Entry) format() string {
	switch e.kind {
	case kindAddr:
		return e.prefix.Addr().String()
	case kindPrefix:
		return e.prefix.String()
	case kindWildcard:
		var b strings.Builder
		for i := range 4 {
			if i > 0 {
				b.WriteByte('.')
			}
			shift := uint(24 - 8*i)
			if (e.mask>>shift)&0xff == 0 {
				b.WriteByte('*')
			} else {
				b.WriteString(strconv.Itoa(int((e.value >> shift) & 0xff)))
			}
		}
		return b.String()
	}
	return ""
}

// parseEntry returns the entry, or a non-empty reason why s is refused.
func parseEntry(s string) (Entry, string) {
	if s == "" {
		return Entry{}, "empty entry"
	}
	if len(s) > MaxEntryLen {
		return Entry{}, fmt.Sprintf("longer than %d bytes", MaxEntryLen)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ', c >= '\t' && c <= '\r':
			return Entry{}, "contains whitespace"
		case c == '%':
			return Entry{}, "IPv6 zones are not allowed"
		case c >= 0x80:
			return Entry{}, "contains a non-ASCII character"
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F',
			c == '.', c == ':', c == '/', c == '*':
		default:
			return Entry{}, fmt.Sprintf("unexpected character %q", rune(c))
		}
	}
	addrPart, bitsPart, hasSlash := strings.Cut(s, "/")
	if strings.Contains(bitsPart, "/") {
		return Entry{}, "more than one '/'"
	}
	var e Entry
	var reason string
	switch {
	case strings.Contains(s, "*"):
		if hasSlash {
			return Entry{}, "'*' cannot be combined with a '/' prefix length"
		}
		if strings.Contains(s, ":") {
			return Entry{}, "'*' is allowed only in IPv4 entries"
		}
		e, reason = parseWildcard(s)
	case strings.Contains(addrPart, ":"):
		e, reason = parseIPv6(addrPart, bitsPart, hasSlash)
	default:
		e, reason = parseIPv4(addrPart, bitsPart, hasSlash)
	}
	if reason != "" {
		return Entry{}, reason
	}
	if e.kind != kindWildcard {
		if p := e.prefix; p.Addr().IsUnspecified() && p.Bits() == p.Addr().BitLen() {
			all := "0.0.0.0/0"
			if p.Addr().Is6() {
				all = "::/0"
			}
			return Entry{}, fmt.Sprintf("matches only the unspecified address, which no caller has (to allow every address write %q)", all)
		}
	}
	if f := e.format(); f != s {
		// Unreachable for IPv4 (parseIPv4 is strict); IPv6 is checked in
		// parseIPv6. Kept so that the canonical-form property holds by
		// construction.
		return Entry{}, fmt.Sprintf("not in canonical form; write %q", f)
	}
	e.text = s
	return e, ""
}

func parseIPv4(addrPart, bitsPart string, hasSlash bool) (Entry, string) {
	v, _, reason := parseOctets(addrPart, false)
	if reason != "" {
		return Entry{}, reason
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	a := netip.AddrFrom4(b)
	if !hasSlash {
		return Entry{kind: kindAddr, prefix: netip.PrefixFrom(a, 32)}, ""
	}
	bits, reason := parseBits(bitsPart, 32)
	if reason != "" {
		return Entry{}, reason
	}
	return Entry{kind: kindPrefix, prefix: netip.PrefixFrom(a, bits)}, ""
}

func parseWildcard(s string) (Entry, string) {
	v, mask, reason := parseOctets(s, true)
	if reason != "" {
		return Entry{}, reason
	}
	return Entry{kind: kindWildcard, mask: mask, value: v}, ""
}

// parseOctets parses four dot-separated decimal octets, 0..255 without
// leading zeros; with star, an octet may also be "*". It returns the value
// (zero under '*' octets) and the mask (0xff per fixed octet).
func parseOctets(s string, star bool) (value, mask uint32, reason string) {
	if n := strings.Count(s, ".") + 1; n != 4 {
		return 0, 0, fmt.Sprintf("want 4 dot-separated octets, found %d", n)
	}
	for i := range 4 {
		var p string
		p, s, _ = strings.Cut(s, ".")
		value <<= 8
		mask <<= 8
		switch {
		case p == "":
			return 0, 0, fmt.Sprintf("octet %d is empty", i+1)
		case star && p == "*":
			continue
		case strings.Contains(p, "*"):
			return 0, 0, fmt.Sprintf("octet %q mixes '*' with other characters", p)
		case !isDecimal(p):
			return 0, 0, fmt.Sprintf("octet %q is not a decimal number", p)
		case len(p) > 1 && p[0] == '0':
			return 0, 0, fmt.Sprintf("octet %q has a leading zero", p)
		}
		n, err := strconv.Atoi(p)
		if err != nil || n > 255 {
			return 0, 0, fmt.Sprintf("octet %q is out of range 0..255", p)
		}
		value |= uint32(n)
		mask |= 0xff
	}
	return value, mask, ""
}

// parseBits parses a prefix length 0..max written in plain decimal.
func parseBits(s string, max int) (int, string) {
	switch {
	case s == "":
		return 0, "missing prefix length after '/'"
	case !isDecimal(s):
		return 0, fmt.Sprintf("prefix length %q is not a decimal number", s)
	case len(s) > 1 && s[0] == '0':
		return 0, fmt.Sprintf("prefix length %q has a leading zero", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > max {
		return 0, fmt.Sprintf("prefix length %q is out of range 0..%d", s, max)
	}
	return n, ""
}

func parseIPv6(addrPart, bitsPart string, hasSlash bool) (Entry, string) {
	a, err := netip.ParseAddr(addrPart)
	if err != nil || !a.Is6() {
		return Entry{}, "not a valid IPv6 address"
	}
	bits := 128
	if hasSlash {
		var reason string
		if bits, reason = parseBits(bitsPart, 128); reason != "" {
			return Entry{}, reason
		}
	}
	if a.Is4In6() {
		if bits >= 96 {
			v4 := a.Unmap().String()
			if hasSlash {
				v4 += "/" + strconv.Itoa(bits-96)
			}
			return Entry{}, fmt.Sprintf("IPv4-mapped IPv6 entries are not allowed (callers are matched as IPv4); write %q", v4)
		}
		return Entry{}, "IPv4-mapped IPv6 entries are not allowed (callers are matched as IPv4)"
	}
	if c := a.String(); c != addrPart {
		if hasSlash {
			c += "/" + bitsPart
		}
		return Entry{}, fmt.Sprintf("IPv6 address not in canonical form; write %q", c)
	}
	if !hasSlash {
		return Entry{kind: kindAddr, prefix: netip.PrefixFrom(a, 128)}, ""
	}
	return Entry{kind: kindPrefix, prefix: netip.PrefixFrom(a, bits)}, ""
}

func isDecimal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
