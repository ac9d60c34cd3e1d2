package acl

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestMatcherAllow(t *testing.T) {
	tests := []struct {
		name    string
		entries []string
		allow   []string
		deny    []string
	}{
		{
			name:  "empty denies everyone",
			allow: nil,
			deny:  []string{"10.0.0.1", "127.0.0.1", "::1", "255.255.255.255"},
		},
		{
			name:    "address and /32",
			entries: []string{"10.0.0.1", "10.0.0.9/32"},
			allow:   []string{"10.0.0.1", "10.0.0.9", "::ffff:10.0.0.1"},
			deny:    []string{"10.0.0.0", "10.0.0.2", "10.0.0.8", "10.0.0.10", "::a00:1", "::ffff:10.0.0.1%eth0"},
		},
		{
			name:    "host bits kept but matched by network",
			entries: []string{"10.3.0.1/24", "172.16.5.5/12"},
			allow:   []string{"10.3.0.0", "10.3.0.255", "10.3.0.77", "172.16.0.0", "172.31.255.255", "::ffff:172.20.1.1"},
			deny:    []string{"10.3.1.0", "10.2.255.255", "172.15.255.255", "172.32.0.0"},
		},
		{
			name:    "adjacent prefixes merge",
			entries: []string{"10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24"},
			allow:   []string{"10.0.0.0", "10.0.0.127", "10.0.0.128", "10.0.1.255"},
			deny:    []string{"9.255.255.255", "10.0.2.0"},
		},
		{
			name:    "wildcards",
			entries: []string{"10.*.0.*", "*.1.2.3", "192.168.*.1", "1.2.3.*"},
			allow:   []string{"10.0.0.0", "10.255.0.255", "10.9.0.7", "0.1.2.3", "255.1.2.3", "192.168.77.1", "1.2.3.0", "1.2.3.255", "::ffff:10.1.0.1"},
			deny:    []string{"10.0.1.0", "11.0.0.0", "1.1.2.4", "192.168.77.2", "192.169.0.1", "1.2.4.0"},
		},
		{
			name:    "wildcard inside a prefix",
			entries: []string{"10.0.0.0/8", "10.*.0.1", "11.*.0.1"},
			allow:   []string{"10.1.2.3", "11.7.0.1"},
			deny:    []string{"11.7.0.2", "12.0.0.1"},
		},
		{
			name:    "all ipv4 wildcards",
			entries: []string{"*.*.*.*"},
			allow:   []string{"1.1.1.1", "255.255.255.255", "::ffff:8.8.8.8"},
			deny:    []string{"0.0.0.0", "::1", "2001:db8::1", "::ffff:0.0.0.0"},
		},
		{
			name:    "ipv4 /0",
			entries: []string{"10.1.2.3/0"},
			allow:   []string{"1.1.1.1", "255.255.255.255", "0.0.0.1"},
			deny:    []string{"0.0.0.0", "::1"},
		},
		{
			name:    "ipv6 address and prefixes",
			entries: []string{"2001:db8::1/64", "fe80::1", "2001:db8:ffff::/48"},
			allow:   []string{"2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", "fe80::1", "2001:db8:ffff:1::1"},
			deny:    []string{"2001:db8:0:1::", "fe80::2", "fe80::1%eth0", "2001:db9::", "10.0.0.1", "2001:db8:fffe::1"},
		},
		{
			name:    "ipv6 /0",
			entries: []string{"::/0"},
			allow:   []string{"::1", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
			deny:    []string{"::", "10.0.0.1", "::ffff:10.0.0.1", "fe80::1%eth0"},
		},
		{
			name:    "top of the address spaces",
			entries: []string{"255.255.255.255", "255.255.255.254/32", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/128"},
			allow:   []string{"255.255.255.255", "255.255.255.254", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"},
			deny:    []string{"255.255.255.253", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd"},
		},
		{
			name:    "both families",
			entries: []string{"0.0.0.0/0", "::/0"},
			allow:   []string{"1.2.3.4", "::1", "::ffff:1.2.3.4"},
			deny:    []string{"0.0.0.0", "::", "::ffff:0.0.0.0", "fe80::1%eth0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := List{}.WithEnabled(true)
			if len(tt.entries) > 0 {
				l = mustAdd(t, l, tt.entries...)
			}
			m := l.Compile()
			if !m.Enabled() || m.Len() != len(tt.entries) {
				t.Errorf("Enabled() = %v, Len() = %d", m.Enabled(), m.Len())
			}
			for _, s := range tt.allow {
				a := netip.MustParseAddr(s)
				if !m.Allow(a) {
					t.Errorf("Allow(%s) = false, want true", s)
				}
				if !refAllow(true, tt.entries, a) {
					t.Errorf("reference disagrees on %s", s)
				}
			}
			for _, s := range append(tt.deny, "0.0.0.0", "::", "::ffff:0.0.0.0") {
				a := netip.MustParseAddr(s)
				if m.Allow(a) {
					t.Errorf("Allow(%s) = true, want false", s)
				}
				if refAllow(true, tt.entries, a) {
					t.Errorf("reference disagrees on %s", s)
				}
			}
			if m.Allow(netip.Addr{}) {
				t.Error("Allow(zero Addr) = true")
			}
			// Disabled, the same entries allow everyone, even odd addresses.
			d := l.WithEnabled(false).Compile()
			if d.Enabled() || d.Len() != 0 {
				t.Errorf("disabled: Enabled() = %v, Len() = %d", d.Enabled(), d.Len())
			}
			for _, s := range append(append(tt.allow, tt.deny...), "0.0.0.0", "::", "fe80::1%eth0") {
				if !d.Allow(netip.MustParseAddr(s)) {
					t.Errorf("disabled: Allow(%s) = false", s)
				}
			}
			if !d.Allow(netip.Addr{}) {
				t.Error("disabled: Allow(zero Addr) = false")
			}
		})
	}
}

func TestMatcherFailsClosed(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.1")
	var nilM *Matcher
	if nilM.Allow(a) || !nilM.Enabled() || nilM.Len() != 0 {
		t.Error("nil Matcher does not deny")
	}
	if (&Matcher{}).Allow(a) || !(&Matcher{}).Enabled() {
		t.Error("zero Matcher does not deny")
	}
	var p atomic.Pointer[Matcher]
	if p.Load().Allow(a) {
		t.Error("unset atomic.Pointer[Matcher] allows")
	}
}

func TestMatcherCompilesCompactly(t *testing.T) {
	l := mustAdd(t, List{}.WithEnabled(true),
		"10.0.0.0/8", "10.1.0.0/16", "10.*.0.1", "10.2.3.*", // all inside 10/8
		"12.0.0.0/25", "12.0.0.128/25", // adjacent
		"13.*.0.1", "14.*.0.1", "*.5.5.5", // two masks
		"2001:db8::/32", "2001:db8::1", "2001:db9::/32") // IPv6 adjacent
	m := l.Compile()
	if len(m.v4lo) != 2 || m.v4lo[0] != 10<<24 || m.v4hi[0] != 10<<24|0xffffff || m.v4lo[1] != 12<<24 || m.v4hi[1] != 12<<24|0xff {
		t.Errorf("v4 ranges = %v %v", m.v4lo, m.v4hi)
	}
	if len(m.v4groups) != 2 || m.v4groups[0].set.n != 2 || m.v4groups[1].set.n != 1 {
		t.Errorf("v4 groups = %+v", m.v4groups)
	}
	if len(m.v6lo) != 1 {
		t.Errorf("v6 ranges = %v %v", m.v6lo, m.v6hi)
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	m := benchList(t, 1000).Compile()
	for _, s := range []string{"10.0.0.1", "203.0.113.9", "2001:db8::1", "::ffff:10.0.0.1"} {
		a := netip.MustParseAddr(s)
		if n := testing.AllocsPerRun(100, func() { m.Allow(a) }); n != 0 {
			t.Errorf("Allow(%s) allocates %v times", s, n)
		}
	}
}

// refAllow is the brute-force reference for Matcher.Allow, written from the
// entry texts without the package's parser.
func refAllow(enabled bool, entries []string, addr netip.Addr) bool {
	if !enabled {
		return true
	}
	if !addr.IsValid() || addr.Zone() != "" {
		return false
	}
	addr = addr.Unmap()
	if addr.IsUnspecified() {
		return false
	}
	for _, s := range entries {
		switch {
		case strings.Contains(s, "*"):
			if !addr.Is4() {
				continue
			}
			b := addr.As4()
			ok := true
			for i, o := range strings.Split(s, ".") {
				if o != "*" && o != strconv.Itoa(int(b[i])) {
					ok = false
				}
			}
			if ok {
				return true
			}
		case strings.Contains(s, "/"):
			if netip.MustParsePrefix(s).Masked().Contains(addr) {
				return true
			}
		default:
			if netip.MustParseAddr(s) == addr {
				return true
			}
		}
	}
	return false
}

// byteSource hands out bytes of data, then zeros.
type byteSource struct{ data []byte }

func (b *byteSource) next() byte {
	if len(b.data) == 0 {
		return 0
	}
	c := b.data[0]
	b.data = b.data[1:]
	return c
}

// octet returns a byte biased to edge values.
func (b *byteSource) octet() byte {
	c := b.next()
	if c&0x80 != 0 {
		return [...]byte{0, 1, 2, 10, 127, 128, 254, 255}[c&7]
	}
	return c
}

func (b *byteSource) addr4() [4]byte {
	return [4]byte{b.octet(), b.octet(), b.octet(), b.octet()}
}

func (b *byteSource) addr16() [16]byte {
	var a [16]byte
	a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
	if b.next()&1 == 0 {
		a[0], a[1] = b.octet(), b.octet()
	}
	a[7], a[8], a[14], a[15] = b.octet(), b.octet(), b.octet(), b.octet()
	return a
}

// genEntries builds up to 60 entries of every kind from src; it returns
// them as generated (possibly invalid or repeated) strings.
func genEntries(src *byteSource) []string {
	n := int(src.next() % 61)
	out := make([]string, 0, n)
	for range n {
		switch src.next() % 6 {
		case 0:
			out = append(out, netip.AddrFrom4(src.addr4()).String())
		case 1:
			out = append(out, netip.PrefixFrom(netip.AddrFrom4(src.addr4()), int(src.next()%33)).String())
		case 2, 3:
			a := src.addr4()
			stars := src.next()
			var parts []string
			for i, o := range a {
				if stars&(1<<i) != 0 {
					parts = append(parts, "*")
				} else {
					parts = append(parts, strconv.Itoa(int(o)))
				}
			}
			out = append(out, strings.Join(parts, "."))
		case 4:
			out = append(out, netip.AddrFrom16(src.addr16()).String())
		case 5:
			out = append(out, netip.PrefixFrom(netip.AddrFrom16(src.addr16()), int(src.next()%129)).String())
		}
	}
	return out
}

// genAddrs builds caller addresses from src: mostly near the entries, some
// random, and the special ones.
func genAddrs(src *byteSource, entries []Entry) []netip.Addr {
	out := []netip.Addr{{}, netip.IPv4Unspecified(), netip.IPv6Unspecified(),
		netip.MustParseAddr("::ffff:0.0.0.0"), netip.MustParseAddr("fe80::1%eth0")}
	n := 8 + int(src.next()%32)
	for range n {
		var a netip.Addr
		if len(entries) > 0 && src.next()%4 != 0 {
			e := entries[int(src.next())%len(entries)]
			if e.kind == kindWildcard {
				var b [4]byte
				for i := range b {
					b[i] = byte(e.value>>(24-8*i)) | ^byte(e.mask>>(24-8*i))&src.octet()
				}
				a = netip.AddrFrom4(b)
			} else {
				a = e.prefix.Addr()
			}
		} else if src.next()&1 == 0 {
			a = netip.AddrFrom4(src.addr4())
		} else {
			a = netip.AddrFrom16(src.addr16())
		}
		// Perturb: keep, ±1, flip one bit.
		b := a.AsSlice()
		switch src.next() % 4 {
		case 1:
			for i := len(b) - 1; i >= 0; i-- {
				b[i]++
				if b[i] != 0 {
					break
				}
			}
		case 2:
			for i := len(b) - 1; i >= 0; i-- {
				b[i]--
				if b[i] != 0xff {
					break
				}
			}
		case 3:
			k := int(src.next()) % (8 * len(b))
			b[k/8] ^= 1 << (k % 8)
		}
		a, _ = netip.AddrFromSlice(b)
		out = append(out, a)
		if a.Is4() && src.next()%4 == 0 {
			out = append(out, netip.AddrFrom16(a.As16())) // IPv4-mapped
		}
	}
	return out
}

// checkMatcher compiles the entries that parse from data and compares Allow
// with Entry.Contains and with refAllow for addresses drawn from data.
func checkMatcher(t *testing.T, data []byte) {
	src := &byteSource{data: data}
	enabled := src.next()%8 != 0
	var list List
	var kept []string
	for _, s := range genEntries(src) {
		if _, err := ParseEntry(s); err != nil {
			continue
		}
		l, err := list.Add([]string{s})
		if err != nil {
			t.Fatalf("Add(%q): %v", s, err)
		}
		list = l
		kept = append(kept, s)
	}
	list = list.WithEnabled(enabled)
	m := list.Compile()
	entries, err := ParseEntries(list.Entries())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range genAddrs(src, entries) {
		want := refAllow(enabled, kept, a)
		if got := m.Allow(a); got != want {
			t.Fatalf("Allow(%v) = %v, reference %v; enabled %v, entries %q", a, got, want, enabled, list.Entries())
		}
		if enabled {
			hit := false
			for _, e := range entries {
				hit = hit || e.Contains(a)
			}
			if hit != want {
				t.Fatalf("Entry.Contains over the list = %v for %v, reference %v; entries %q", hit, a, want, list.Entries())
			}
		}
	}
}

func TestMatcherAgainstReference(t *testing.T) {
	// A deterministic stream: the same inputs every run.
	var state uint64 = 0x9e3779b97f4a7c15
	nextByte := func() byte {
		state ^= state << 13
		state ^= state >> 7
		state ^= state << 17
		return byte(state >> 24)
	}
	for i := range 3000 {
		data := make([]byte, 64+i%512)
		for j := range data {
			data[j] = nextByte()
		}
		checkMatcher(t, data)
		if t.Failed() {
			return
		}
	}
}

func FuzzMatcher(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x01\x10\x00\x0a\x00\x00\x01\x01\x0a\x03\x00\x01\x18\x02\x0a\x00\x00\x00\x05"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkMatcher(t, data)
	})
}

func TestConcurrentAllowAndPublish(t *testing.T) {
	// Every published matcher allows inside 10.0.0.0/8 and denies
	// 172.16.0.1; whether 192.168.7.1 is allowed changes with each publish.
	base := mustAdd(t, List{}.WithEnabled(true), "10.0.0.0/8", "2001:db8::/32")
	var current atomic.Pointer[Matcher]
	current.Store(base.Compile())
	in, out, flip := netip.MustParseAddr("10.9.8.7"), netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("192.168.7.1")
	in6 := netip.MustParseAddr("::ffff:10.1.1.1")

	var stop atomic.Bool
	var wg sync.WaitGroup
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	var flipped [2]atomic.Int64
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				m := current.Load()
				if !m.Allow(in) || !m.Allow(in6) {
					t.Error("an allowed address was denied")
					return
				}
				if m.Allow(out) {
					t.Error("a denied address was allowed")
					return
				}
				if m.Allow(flip) {
					flipped[1].Add(1)
				} else {
					flipped[0].Add(1)
				}
			}
		})
	}
	l := base
	for i := range 2000 {
		var err error
		if i%2 == 0 {
			l, err = l.Add([]string{"192.168.*.1", fmt.Sprintf("10.%d.0.1/32", i%256)})
		} else {
			l, err = l.Remove([]string{"192.168.*.1"})
		}
		if err != nil {
			t.Fatal(err)
		}
		current.Store(l.Compile())
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("flip address denied %d times, allowed %d times", flipped[0].Load(), flipped[1].Load())
}
