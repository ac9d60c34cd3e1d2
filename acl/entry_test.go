package acl

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseEntryAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		kind kind
	}{
		{"ipv4 address", "10.0.0.1", kindAddr},
		{"ipv4 zero octets", "10.0.0.0", kindAddr},
		{"ipv4 broadcast", "255.255.255.255", kindAddr},
		{"ipv4 /32", "10.0.0.1/32", kindPrefix},
		{"ipv4 /8", "10.0.0.0/8", kindPrefix},
		{"ipv4 host bits kept", "10.3.0.1/24", kindPrefix},
		{"ipv4 /0", "0.0.0.0/0", kindPrefix},
		{"ipv4 /0 with host bits", "10.1.2.3/0", kindPrefix},
		{"unspecified prefix not only unspecified", "0.0.0.0/31", kindPrefix},
		{"wildcard last", "10.0.0.*", kindWildcard},
		{"wildcard middle", "10.*.0.*", kindWildcard},
		{"wildcard first", "*.0.0.1", kindWildcard},
		{"wildcard all", "*.*.*.*", kindWildcard},
		{"ipv6 address", "2001:db8::1", kindAddr},
		{"ipv6 loopback", "::1", kindAddr},
		{"ipv6 link-local without zone", "fe80::1", kindAddr},
		{"ipv6 full", "1:2:3:4:5:6:7:8", kindAddr},
		{"ipv6 ipv4-compatible", "::a00:1", kindAddr},
		{"ipv6 prefix", "2001:db8::/32", kindPrefix},
		{"ipv6 host bits kept", "2001:db8::1/64", kindPrefix},
		{"ipv6 /0", "::/0", kindPrefix},
		{"ipv6 /128", "2001:db8::1/128", kindPrefix},
		{"ipv6 longest", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", kindPrefix},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseEntry(tt.in)
			if err != nil {
				t.Fatalf("ParseEntry(%q): %v", tt.in, err)
			}
			if got := e.String(); got != tt.in {
				t.Errorf("String() = %q, want %q", got, tt.in)
			}
			if got := e.format(); got != tt.in {
				t.Errorf("format() = %q, want %q", got, tt.in)
			}
			if e.kind != tt.kind {
				t.Errorf("kind = %d, want %d", e.kind, tt.kind)
			}
		})
	}
}

func TestParseEntryRejects(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		reason string // substring of the reason
	}{
		{"empty", "", "empty"},
		{"too long", strings.Repeat("1", 65), "longer than 64"},
		{"leading space", " 10.0.0.1", "whitespace"},
		{"trailing newline", "10.0.0.1\n", "whitespace"},
		{"inner tab", "10.0.0.1\t/8", "whitespace"},
		{"nbsp", "10.0.0.1\u00a0", "non-ASCII"},
		{"nul", "10.0.0.1\x00", `unexpected character '\x00'`},
		{"hostname", "example.com", `unexpected character 'x'`},
		{"range", "10.0.0.1-10.0.0.9", `unexpected character '-'`},
		{"plus in bits", "10.0.0.0/+8", `unexpected character '+'`},
		{"zone", "fe80::1%eth0", "zones"},
		{"zone in prefix", "fe80::1%eth0/64", "zones"},
		{"leading zero octet", "010.0.0.1", `octet "010" has a leading zero`},
		{"leading zero last octet", "10.0.0.01", `octet "01" has a leading zero`},
		{"octet 256", "10.0.0.256", `octet "256" is out of range`},
		{"octet huge", "10.0.0.99999999999999999999", "out of range"},
		{"three octets", "10.0.1", "want 4 dot-separated octets, found 3"},
		{"five octets", "10.0.0.1.1", "found 5"},
		{"empty octet", "10..0.1", "octet 2 is empty"},
		{"trailing dot", "10.0.0.", "octet 4 is empty"},
		{"hex octet", "10.0.0.a", `octet "a" is not a decimal number`},
		{"missing bits", "10.0.0.0/", "missing prefix length"},
		{"bits 33", "10.0.0.0/33", `prefix length "33" is out of range 0..32`},
		{"bits leading zero", "10.0.0.0/08", `prefix length "08" has a leading zero`},
		{"bits hex", "10.0.0.0/a", "not a decimal number"},
		{"two slashes", "10.0.0.0/8/8", "more than one '/'"},
		{"star and slash", "10.0.0.*/24", "'*' cannot be combined"},
		{"star in ipv6", "2001:db8::*", "only in IPv4"},
		{"star mixed", "10.0.0.1*", `octet "1*" mixes '*'`},
		{"double star", "10.0.0.**", `octet "**" mixes '*'`},
		{"star three octets", "10.*.*", "want 4 dot-separated octets"},
		{"unspecified v4", "0.0.0.0", `write "0.0.0.0/0"`},
		{"unspecified v4 /32", "0.0.0.0/32", "unspecified"},
		{"unspecified v6", "::", `write "::/0"`},
		{"unspecified v6 /128", "::/128", "unspecified"},
		{"ipv6 upper case", "2001:DB8::1", `not in canonical form; write "2001:db8::1"`},
		{"ipv6 leading zeros", "2001:0db8::1", `write "2001:db8::1"`},
		{"ipv6 uncompressed", "2001:db8:0:0:0:0:0:1", `write "2001:db8::1"`},
		{"ipv6 prefix non-canonical", "2001:DB8::/32", `write "2001:db8::/32"`},
		{"ipv6 embedded ipv4", "::1.2.3.4", `write "::102:304"`},
		{"ipv6 bad", "2001:db8:::1", "not a valid IPv6 address"},
		{"ipv6 bits 129", "2001:db8::/129", "out of range 0..128"},
		{"ipv6 bits leading zero", "2001:db8::/064", "leading zero"},
		{"ipv4-mapped", "::ffff:10.0.0.1", `IPv4-mapped IPv6 entries are not allowed (callers are matched as IPv4); write "10.0.0.1"`},
		{"ipv4-mapped hex", "::ffff:a00:1", `write "10.0.0.1"`},
		{"ipv4-mapped prefix", "::ffff:10.0.0.0/104", `write "10.0.0.0/8"`},
		{"ipv4-mapped wide prefix", "::ffff:0.0.0.0/80", "IPv4-mapped"},
		{"port", "10.0.0.1:80", "not a valid IPv6 address"},
		{"bracketed", "[::1]", `unexpected character '['`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseEntry(tt.in)
			if err == nil {
				t.Fatalf("ParseEntry(%q) = %q, want error", tt.in, e)
			}
			if !errors.Is(err, ErrInvalidEntry) {
				t.Errorf("error %v does not match ErrInvalidEntry", err)
			}
			var ee *EntryError
			if !errors.As(err, &ee) || len(ee.Problems) != 1 {
				t.Fatalf("error %#v is not an *EntryError with one problem", err)
			}
			p := ee.Problems[0]
			if p.Entry != tt.in || p.Index != 0 {
				t.Errorf("problem = %+v, want entry %q at 0", p, tt.in)
			}
			if !strings.Contains(p.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", p.Reason, tt.reason)
			}
			if !strings.HasPrefix(err.Error(), "acl: ") {
				t.Errorf("message %q lacks the package prefix", err)
			}
			if e != (Entry{}) {
				t.Errorf("entry = %#v, want zero on error", e)
			}
		})
	}
}

func TestParseEntriesReportsEveryBadEntry(t *testing.T) {
	in := []string{"10.0.0.1", "010.0.0.1", "2001:db8::/32", "", "10.0.0.*/8", "1.2.3.4"}
	got, err := ParseEntries(in)
	if got != nil {
		t.Errorf("entries = %v, want nil on error", got)
	}
	var ee *EntryError
	if !errors.As(err, &ee) || !errors.Is(err, ErrInvalidEntry) {
		t.Fatalf("err = %v, want *EntryError matching ErrInvalidEntry", err)
	}
	want := []struct {
		index int
		entry string
	}{{1, "010.0.0.1"}, {3, ""}, {4, "10.0.0.*/8"}}
	if len(ee.Problems) != len(want) {
		t.Fatalf("problems = %+v, want %d", ee.Problems, len(want))
	}
	for i, w := range want {
		if p := ee.Problems[i]; p.Index != w.index || p.Entry != w.entry || p.Reason == "" {
			t.Errorf("problem %d = %+v, want index %d entry %q", i, p, w.index, w.entry)
		}
	}
	msg := err.Error()
	for _, s := range []string{`[1] "010.0.0.1"`, `[3] ""`, `[4] "10.0.0.*/8"`} {
		if !strings.Contains(msg, s) {
			t.Errorf("message %q does not name %s", msg, s)
		}
	}

	ok, err := ParseEntries([]string{"10.0.0.1", "::1"})
	if err != nil || len(ok) != 2 || ok[0].String() != "10.0.0.1" || ok[1].String() != "::1" {
		t.Errorf("ParseEntries(valid) = %v, %v", ok, err)
	}
}

func TestEntryErrorMessageIsBounded(t *testing.T) {
	var ps []Problem
	for i := range 25 {
		ps = append(ps, Problem{Index: i, Entry: strings.Repeat("x", 1000), Reason: "bad"})
	}
	msg := (&EntryError{Err: ErrInvalidEntry, Problems: ps}).Error()
	if !strings.HasPrefix(msg, "acl: invalid entry: [0] ") || !strings.HasSuffix(msg, "; and 15 more") {
		t.Errorf("message = %q", msg)
	}
	if len(msg) > 1200 {
		t.Errorf("message is %d bytes long", len(msg))
	}
	if got := (&EntryError{}).Error(); got != "acl: refused entries" {
		t.Errorf("zero EntryError message = %q", got)
	}
}

func TestEntryContains(t *testing.T) {
	tests := []struct {
		entry string
		in    []string
		out   []string
	}{
		{"10.0.0.1", []string{"10.0.0.1", "::ffff:10.0.0.1"}, []string{"10.0.0.2", "::a00:1", "2001:db8::1"}},
		{"10.0.0.1/32", []string{"10.0.0.1"}, []string{"10.0.0.0"}},
		{"10.3.0.1/24", []string{"10.3.0.0", "10.3.0.1", "10.3.0.255"}, []string{"10.3.1.0", "10.2.255.255"}},
		{"0.0.0.0/0", []string{"1.2.3.4", "255.255.255.255", "::ffff:1.2.3.4"}, []string{"0.0.0.0", "::1", "::ffff:0.0.0.0"}},
		{"10.*.0.*", []string{"10.0.0.0", "10.255.0.255", "10.7.0.9"}, []string{"10.0.1.0", "11.0.0.0"}},
		{"*.*.*.*", []string{"1.1.1.1"}, []string{"0.0.0.0", "::1"}},
		{"2001:db8::1/64", []string{"2001:db8::", "2001:db8::ffff:ffff:ffff:ffff"}, []string{"2001:db8:0:1::", "10.0.0.1"}},
		{"fe80::1", []string{"fe80::1"}, []string{"fe80::1%eth0"}},
		{"::/0", []string{"::1", "2001:db8::1"}, []string{"::", "10.0.0.1", "::ffff:10.0.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.entry, func(t *testing.T) {
			e := mustEntry(t, tt.entry)
			for _, s := range tt.in {
				if !e.Contains(netip.MustParseAddr(s)) {
					t.Errorf("%q does not contain %s", tt.entry, s)
				}
			}
			for _, s := range tt.out {
				if e.Contains(netip.MustParseAddr(s)) {
					t.Errorf("%q contains %s", tt.entry, s)
				}
			}
			if e.Contains(netip.Addr{}) {
				t.Errorf("%q contains the zero Addr", tt.entry)
			}
		})
	}
	if (Entry{}).Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Error("the zero Entry contains an address")
	}
}

func mustEntry(t testing.TB, s string) Entry {
	t.Helper()
	e, err := ParseEntry(s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// FuzzParseEntry checks the canonical-form property: an entry parses only
// if formatting it gives the input back, and it agrees with net/netip on
// what a canonical address or prefix is.
func FuzzParseEntry(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "10.3.0.1/24", "10.*.0.*", "2001:db8::1/64", "::ffff:10.0.0.1",
		"010.0.0.1", "2001:DB8::1", "fe80::1%eth0", "0.0.0.0", "", " 1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEntry(s)
		if err != nil {
			var ee *EntryError
			if !errors.As(err, &ee) || !errors.Is(err, ErrInvalidEntry) || len(ee.Problems) != 1 ||
				ee.Problems[0].Entry != s || ee.Problems[0].Reason == "" {
				t.Fatalf("ParseEntry(%q): malformed error %#v", s, err)
			}
			// What netip calls canonical, unzoned, unmapped and not only
			// the unspecified address must be accepted.
			if !strings.Contains(s, "*") && netipCanonical(s) {
				t.Fatalf("ParseEntry(%q) refused a canonical netip form: %v", s, err)
			}
			return
		}
		if e.String() != s || e.format() != s {
			t.Fatalf("ParseEntry(%q): String %q, format %q", s, e.String(), e.format())
		}
		again, err := ParseEntry(e.String())
		if err != nil || again != e {
			t.Fatalf("re-parse of %q: %#v, %v", s, again, err)
		}
		if strings.Contains(s, "*") {
			if strings.ContainsAny(s, "/:") || e.kind != kindWildcard {
				t.Fatalf("wildcard %q parsed as %#v", s, e)
			}
			return
		}
		if !netipCanonical(s) {
			t.Fatalf("ParseEntry accepted %q, which net/netip does not print back", s)
		}
	})
}

// netipCanonical reports whether net/netip parses s as an unzoned address or
// prefix, not IPv4-mapped and not only the unspecified address, and prints
// it back unchanged.
func netipCanonical(s string) bool {
	var a netip.Addr
	bits := -1
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.String() != s {
			return false
		}
		a, bits = p.Addr(), p.Bits()
	} else {
		var err error
		if a, err = netip.ParseAddr(s); err != nil || a.String() != s {
			return false
		}
		bits = a.BitLen()
	}
	if a.Zone() != "" || a.Is4In6() {
		return false
	}
	return !(a.IsUnspecified() && bits == a.BitLen())
}
