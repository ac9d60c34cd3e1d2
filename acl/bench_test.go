package acl

import (
	"fmt"
	"net/netip"
	"testing"
)

// benchList returns an enabled List of n mixed entries (n a multiple of 10):
// 40% IPv4 addresses, 20% IPv4 prefixes /8../30 with host bits, 20% IPv4
// wildcards over four non-contiguous masks, 10% IPv6 addresses and 10% IPv6
// prefixes. The addresses used by the benchmarks are placed by hand.
func benchList(tb testing.TB, n int) List {
	tb.Helper()
	var s []string
	for i := range n * 4 / 10 {
		s = append(s, fmt.Sprintf("10.%d.%d.%d", i%7, i/7%256, (i*37)%256))
	}
	for i := range n * 2 / 10 {
		s = append(s, fmt.Sprintf("%d.%d.%d.1/%d", 20+i%150, (i*13)%256, i%256, 8+i%23))
	}
	wild := []string{"172.%d.%d.*", "%d.*.1.%d", "*.%d.%d.9", "192.%d.*.%d"}
	for i := range n * 2 / 10 {
		s = append(s, fmt.Sprintf(wild[i%4], 16+i/4%16, (i*11)%256))
	}
	for i := range n / 10 {
		s = append(s, netip.MustParseAddr(fmt.Sprintf("2001:db8:%x::%x", i%16, i)).String())
	}
	for i := range n / 10 {
		s = append(s, netip.MustParsePrefix(fmt.Sprintf("2001:db8:1%x:%x::/%d", i%16, i, 48+i%17)).String())
	}
	// Entries the benchmark addresses hit, replacing the last few.
	s = append(s[:len(s)-3], "198.51.100.7", "192.31.*.5", "2001:db8:ffff::/48")
	l := List{}.WithEnabled(true)
	for len(s) > 0 {
		k := min(len(s), MaxEntriesPerCall)
		var err error
		if l, err = l.Add(s[:k]); err != nil {
			tb.Fatal(err)
		}
		s = s[k:]
	}
	return l
}

var benchAddrs = []struct{ name, addr string }{
	{"v4-hit-addr", "198.51.100.7"},
	{"v4-hit-wildcard", "192.31.77.5"},
	{"v4-miss", "203.0.113.9"},
	{"v4-mapped-hit", "::ffff:198.51.100.7"},
	{"v6-hit", "2001:db8:ffff::1"},
	{"v6-miss", "2001:db9::1"},
}

var sink bool

func BenchmarkAllow(b *testing.B) {
	for _, n := range []int{10, 1000} {
		l := benchList(b, n)
		m := l.Compile()
		for _, tc := range benchAddrs {
			a := netip.MustParseAddr(tc.addr)
			want := refAllow(true, l.Entries(), a)
			if m.Allow(a) != want {
				b.Fatalf("Allow(%s) disagrees with the reference", a)
			}
			b.Run(fmt.Sprintf("%d/%s", l.Len(), tc.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					sink = m.Allow(a)
				}
			})
		}
	}
}

// BenchmarkAllowDisabled is the cost when the ACL is off.
func BenchmarkAllowDisabled(b *testing.B) {
	m := benchList(b, 1000).WithEnabled(false).Compile()
	a := netip.MustParseAddr("203.0.113.9")
	b.ReportAllocs()
	for b.Loop() {
		sink = m.Allow(a)
	}
}

// BenchmarkNetipPrefixContains is the raw baseline: one prefix check.
func BenchmarkNetipPrefixContains(b *testing.B) {
	p := netip.MustParsePrefix("10.3.0.0/24")
	a := netip.MustParseAddr("10.3.0.77")
	b.ReportAllocs()
	for b.Loop() {
		sink = p.Contains(a)
	}
}

// BenchmarkNaiveLoop is what Compile saves: Entry.Contains over every entry,
// for an address no entry holds.
func BenchmarkNaiveLoop(b *testing.B) {
	entries, err := ParseEntries(benchList(b, 1000).Entries())
	if err != nil {
		b.Fatal(err)
	}
	a := netip.MustParseAddr("203.0.113.9")
	b.ReportAllocs()
	for b.Loop() {
		hit := false
		for _, e := range entries {
			if e.Contains(a) {
				hit = true
				break
			}
		}
		sink = hit
	}
}

func BenchmarkCompile(b *testing.B) {
	l := benchList(b, 1000)
	b.ReportAllocs()
	for b.Loop() {
		_ = l.Compile()
	}
}

// BenchmarkAdd adds 100 new entries to a list of 900.
func BenchmarkAdd(b *testing.B) {
	l := benchList(b, 1000)
	all := l.Entries()
	base, err := l.Remove(all[:100])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := base.Add(all[:100]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseEntry(b *testing.B) {
	for _, s := range []string{"10.3.0.1/24", "10.*.0.*", "2001:db8::1/64"} {
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseEntry(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
