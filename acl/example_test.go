package acl_test

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/pocketkms/kms/acl"
)

func Example() {
	// A new key: disabled, no entries. Enable it and allow two ranges.
	l, err := acl.List{}.WithEnabled(true).Add([]string{"10.3.0.1/24", "192.168.*.1"})
	if err != nil {
		panic(err)
	}
	// Publish the compiled matcher; the hot path only loads it.
	var current atomic.Pointer[acl.Matcher]
	current.Store(l.Compile())

	for _, s := range []string{"10.3.0.77", "::ffff:192.168.5.1", "192.168.5.2", "2001:db8::1"} {
		fmt.Println(s, current.Load().Allow(netip.MustParseAddr(s)))
	}
	fmt.Println(l.Entries())
	// Output:
	// 10.3.0.77 true
	// ::ffff:192.168.5.1 true
	// 192.168.5.2 false
	// 2001:db8::1 false
	// [10.3.0.1/24 192.168.*.1]
}

func ExampleList_Add() {
	_, err := acl.List{}.Add([]string{"10.0.0.1", "010.0.0.2", "2001:DB8::1", "10.0.0.*/24"})
	var ee *acl.EntryError
	if errors.As(err, &ee) {
		for _, p := range ee.Problems {
			fmt.Printf("%d %q: %s\n", p.Index, p.Entry, p.Reason)
		}
	}
	fmt.Println(errors.Is(err, acl.ErrInvalidEntry))
	// Output:
	// 1 "010.0.0.2": octet "010" has a leading zero
	// 2 "2001:DB8::1": IPv6 address not in canonical form; write "2001:db8::1"
	// 3 "10.0.0.*/24": '*' cannot be combined with a '/' prefix length
	// true
}

func ExampleList_Remove() {
	l, _ := acl.List{}.Add([]string{"10.0.0.1", "10.0.0.1/32"})
	_, err := l.Remove([]string{"10.0.0.1", "10.0.0.2", "10.0.0.3"})
	fmt.Println(err)
	l, _ = l.Remove([]string{"10.0.0.1"})
	fmt.Println(l.Entries())
	// Output:
	// acl: entry not found: [1] "10.0.0.2": not in the list; [2] "10.0.0.3": not in the list
	// [10.0.0.1/32]
}

func ExampleParseState() {
	l, _ := acl.List{}.WithEnabled(true).Add([]string{"2001:db8::/32", "10.0.0.0/8"})
	stored := l.State() // persist this

	loaded, err := acl.ParseState(stored)
	if err != nil {
		panic(err)
	}
	fmt.Println(loaded.Enabled(), loaded.Entries())
	// Output:
	// true [10.0.0.0/8 2001:db8::/32]
}
