package store

import (
	"runtime"
	"sync"

	"github.com/dgraph-io/badger/v4"
	kstore "github.com/pocketkms/kms/store"
)

// Opening reads every record twice over in one pass: for the content
// digest and for the first Load. A large store is read by several
// goroutines at once, each over its own share of the key space:
//
//   - Every key of the schema that belongs to a key is "<letter>/<tag>…",
//     and a tag starts with a hex digit, so the ranges "<letter>/<d>" up
//     to "<letter>/<d+1>" (d one of 0–f), for every letter, split them
//     by the tag's first digit. A goroutine takes every letter's range
//     of its digits: all the records of one key (k/, v/, g/, a/) reach the
//     same goroutine, whose Assembler groups them as one pass would.
//   - Everything else (the gaps between those ranges: the schema record,
//     names that start with another character) goes to the first
//     goroutine. Together the ranges cover the whole key space once.
//
// The digest is a XOR, so the goroutines' digests combine in any order;
// their Contents are concatenated (the order of Contents.Keys was never
// defined), and a record that fails to decode is the first in key order,
// as one pass finds it.

// scanParallelFrom is the store size (Badger's LSM tree, bytes) from which
// Open's scan runs on more than one goroutine.
const scanParallelFrom = 1 << 20

// scanDigits is the number of first-digit classes the key space is split
// into; goroutines take them in turn.
const scanDigits = 16

// keyRange is [start, end); an empty end is the end of the key space.
type keyRange struct{ start, end []byte }

// scanRanges returns the ranges of each of n goroutines (n ≤ scanDigits);
// one goroutine reads the whole key space as one range.
func scanRanges(n int) [][]keyRange {
	if n == 1 {
		return [][]keyRange{{{nil, nil}}}
	}
	const hex = "0123456789abcdef"
	out := make([][]keyRange, n)
	var prev []byte // end of the last digit range: the next gap starts here
	for letter := byte('a'); letter <= 'z'; letter++ {
		at := func(c byte) []byte { return []byte{letter, '/', c} }
		out[0] = append(out[0], keyRange{prev, at('0')})
		for d := range scanDigits {
			end := at('g') // after 'f'
			if d+1 < scanDigits {
				end = at(hex[d+1])
			}
			out[d%n] = append(out[d%n], keyRange{at(hex[d]), end})
		}
		prev = at('g')
	}
	out[0] = append(out[0], keyRange{prev, nil})
	return out
}

// scanPart is what one goroutine read.
type scanPart struct {
	d       digest
	a       kstore.Assembler
	errKey  []byte // key of the first record that failed to decode
	err     error  // its error
	readErr error  // Badger's
}

// scanParallel is scanContent on n goroutines (one: a single pass), each
// in its own read-only transaction (opened before any of them reads;
// Open runs before any commit, so they all read the same state).
func scanParallel(db *badger.DB, assemble bool, n int) (digest, *preload, error) {
	parts := make([]scanPart, n)
	txns := make([]*badger.Txn, n)
	for i := range txns {
		txns[i] = db.NewTransaction(false)
		defer txns[i].Discard()
	}
	var wg sync.WaitGroup
	for i, rs := range scanRanges(n) {
		wg.Go(func() { parts[i].scan(txns[i], rs, assemble) })
	}
	wg.Wait()
	var d digest
	var pre *preload
	if assemble {
		pre = &preload{}
	}
	var first *scanPart
	for i := range parts {
		p := &parts[i]
		if p.readErr != nil {
			return d, nil, p.readErr
		}
		d.xor(p.d)
		if p.err != nil && (first == nil || string(p.errKey) < string(first.errKey)) {
			first = p
		}
	}
	if !assemble {
		return d, nil, nil
	}
	if first != nil {
		pre.err = first.err
		return d, pre, nil
	}
	if n == 1 {
		pre.c, pre.err = parts[0].a.Contents(0)
		return d, pre, nil
	}
	c := &kstore.Contents{Names: map[string]string{}}
	for i := range parts {
		pc, err := parts[i].a.Contents(0)
		if err != nil {
			pre.err = err
			return d, pre, nil
		}
		c.Keys = append(c.Keys, pc.Keys...)
		for name, tag := range pc.Names {
			c.Names[name] = tag
		}
	}
	pre.c = c
	return d, pre, nil
}

// scan reads the ranges rs.
func (p *scanPart) scan(txn *badger.Txn, rs []keyRange, assemble bool) {
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
	defer it.Close()
	for _, r := range rs {
		for it.Seek(r.start); it.Valid(); it.Next() {
			item := it.Item()
			key := item.Key()
			if r.end != nil && string(key) >= string(r.end) {
				break
			}
			if err := item.Value(func(val []byte) error {
				p.d.xor(recordDigest(key, val))
				if assemble && p.err == nil && isRecordKey(key) {
					rec, err := kstore.Decode(string(key), val)
					if err != nil {
						p.errKey, p.err = append([]byte(nil), key...), err
						return nil
					}
					p.a.Add(rec, int64(item.Version()))
				}
				return nil
			}); err != nil {
				p.readErr = err
				return
			}
		}
	}
}

// scanWorkers is how many goroutines scan a store of lsm bytes.
func scanWorkers(lsm int64) int {
	if lsm < scanParallelFrom {
		return 1
	}
	return min(runtime.GOMAXPROCS(0), scanDigits)
}
