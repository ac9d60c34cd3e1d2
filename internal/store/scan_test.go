package store

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/dgraph-io/badger/v4"
	kstore "github.com/pocketkms/kms/store"
)

// TestScanParallelMatchesOnePass: the scan Open runs on several goroutines
// for a large store reads exactly what one pass reads — the same digest,
// the same keys with the same records, the same names — however many
// goroutines share it, for keys of every first digit, names that start
// with any character, and the auxiliary records (history, usage) that
// only the digest counts. A record that fails to decode is reported as
// one pass reports it: the first in key order.
func TestScanParallelMatchesOnePass(t *testing.T) {
	s := openT(t, t.TempDir())
	ctx := context.Background()
	names := []string{"orders", "Zeta", "0-first", "~tilde", "한글", "g/not-a-tag", "a", "k"}
	c := &kstore.Change{}
	for i := range 64 {
		tag := fmt.Sprintf("%x%063x", i%16, i) // every first digit, four times
		k := kstore.KeyRecord{Tag: tag, Name: fmt.Sprintf("%s-%d", names[i%len(names)], i), Type: "AES256", State: "ENABLED",
			Seq: uint64(i + 1), CreatedAt: 1700000000000, CurrentVersion: uint32(1 + i%3)}
		c.Put(&k, &kstore.NameRecord{Name: k.Name, Tag: tag})
		for v := range k.CurrentVersion {
			c.Put(&kstore.VersionRecord{Tag: tag, Version: v + 1, State: "ENABLED", CreatedAt: 1700000000000, Handle: []byte{byte(i), byte(v)}})
		}
		if i%5 == 0 {
			c.Put(&kstore.ACLRecord{Tag: tag, Enabled: true, Entries: []string{"10.0.0.1"}})
		}
		if i%7 == 0 {
			c.Put(&kstore.GeneratorRecord{Tag: tag, ID: fmt.Sprint("gen-", i)})
		}
		if i%3 == 0 {
			c.Put(&kstore.HistoryRecord{Tag: tag, Seq: 1},
				&kstore.UsageRecord{Tag: tag, Versions: []kstore.VersionUsageRecord{{Version: 1, Encryptions: uint64(i)}}})
		}
	}
	if _, err := s.Apply(ctx, c); err != nil {
		t.Fatal(err)
	}
	wantD, wantPre, err := scanContent(s.db, true) // a small store: one pass
	if err != nil || wantPre.err != nil {
		t.Fatalf("one pass: %v, %v", err, wantPre.err)
	}
	if len(wantPre.c.Keys) != 64 || len(wantPre.c.Names) != 64 {
		t.Fatalf("one pass read %d keys and %d names, want 64 and 64", len(wantPre.c.Keys), len(wantPre.c.Names))
	}
	sorted := func(c *kstore.Contents) []*kstore.KeyData {
		ks := slices.Clone(c.Keys)
		slices.SortFunc(ks, func(a, b *kstore.KeyData) int { return cmp.Compare(a.Key.Tag, b.Key.Tag) })
		return ks
	}
	for w := 1; w <= scanDigits; w++ {
		d, pre, err := scanParallel(s.db, true, w)
		if err != nil || pre.err != nil {
			t.Fatalf("%d goroutines: %v, %v", w, err, pre.err)
		}
		if d != wantD {
			t.Fatalf("%d goroutines: digest differs from one pass's", w)
		}
		if !reflect.DeepEqual(sorted(pre.c), sorted(wantPre.c)) || !reflect.DeepEqual(pre.c.Names, wantPre.c.Names) {
			t.Fatalf("%d goroutines: contents differ from one pass's", w)
		}
		if d2, _, err := scanParallel(s.db, false, w); err != nil || d2 != wantD {
			t.Fatalf("%d goroutines, digest only: %v", w, err)
		}
	}

	// Damage two version records, each its own way: the one earlier in
	// key order is reported.
	damage := func(key string, cut bool) {
		t.Helper()
		if err := s.db.Update(func(txn *badger.Txn) error {
			item, err := txn.Get([]byte(key))
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if cut {
				v = v[:1]
			} else {
				v[len(v)-1] ^= 1
			}
			return txn.Set([]byte(key), v)
		}); err != nil {
			t.Fatal(err)
		}
	}
	damage(kstore.VersionKey(fmt.Sprintf("%x%063x", 9, 9), 1), true)
	_, cutPre, err := scanContent(s.db, true)
	if err != nil || cutPre.err == nil {
		t.Fatalf("one pass over a cut record: %v, %v", err, cutPre.err)
	}
	damage(kstore.VersionKey(fmt.Sprintf("%x%063x", 3, 3), 1), false)
	_, onePre, err := scanContent(s.db, true)
	if err != nil || onePre.err == nil {
		t.Fatalf("one pass over a damaged record: %v, %v", err, onePre.err)
	}
	if onePre.err.Error() == cutPre.err.Error() {
		t.Fatalf("the two damages read alike (%v): the test cannot tell which is reported", onePre.err)
	}
	for _, w := range []int{2, 3, 16} {
		_, pre, err := scanParallel(s.db, true, w)
		if err != nil || pre.err == nil || pre.err.Error() != onePre.err.Error() {
			t.Fatalf("%d goroutines over damaged records: %v, %v; one pass: %v", w, err, pre.err, onePre.err)
		}
	}
}

// TestScanRangesCoverOnce: the goroutines' ranges, put together, cover the
// key space once, and every key of a tag falls in the same goroutine's.
func TestScanRangesCoverOnce(t *testing.T) {
	for n := 1; n <= scanDigits; n++ {
		var all []keyRange
		owner := map[string]int{}
		for i, rs := range scanRanges(n) {
			all = append(all, rs...)
			for _, r := range rs {
				owner[string(r.start)] = i
			}
		}
		slices.SortFunc(all, func(a, b keyRange) int { return bytes.Compare(a.start, b.start) })
		if len(all[0].start) != 0 || all[len(all)-1].end != nil {
			t.Fatalf("n=%d: the ranges do not start at the beginning or end at the end", n)
		}
		for i := 1; i < len(all); i++ {
			if !bytes.Equal(all[i-1].end, all[i].start) {
				t.Fatalf("n=%d: gap or overlap between %q and %q", n, all[i-1].end, all[i].start)
			}
		}
		whose := func(key string) int {
			i, _ := slices.BinarySearchFunc(all, []byte(key), func(r keyRange, k []byte) int {
				if bytes.Compare(r.start, k) > 0 {
					return 1
				}
				if r.end != nil && bytes.Compare(r.end, k) <= 0 {
					return -1
				}
				return 0
			})
			return owner[string(all[i].start)]
		}
		for _, tag := range []string{"0000", "5abc", "9fff", "a000", "ffff"} {
			w := whose(kstore.KeyKey(tag))
			for _, k := range []string{kstore.VersionKey(tag, 1), kstore.GeneratorKey(tag), kstore.ACLKey(tag)} {
				if got := whose(k); got != w {
					t.Fatalf("n=%d: %s goes to goroutine %d, its key record to %d", n, k, got, w)
				}
			}
		}
	}
}
