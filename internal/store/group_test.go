package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	kstore "github.com/pocketkms/kms/store"
)

// TestGroupCommitConcurrent: writers committing at once (so their changes
// share group commits) lose no update and break no expectation. Each
// writer creates keys of its own, claims names some of which another
// writer claims too, and increments a shared counter key by
// read-modify-write under an expectation of the revision it read. Then:
// every acknowledged create is there, each contested name has exactly one
// owner, the counter equals the number of increments that succeeded, and
// the directory reopens (its integrity record matches the content).
func TestGroupCommitConcurrent(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tag := func(w, i int) string { return fmt.Sprintf("%02x%062x", w, i) }
	counter := sampleKey(tag(0xff, 0))
	counter.Seq = 0
	if _, err := s.Apply(ctx, (&kstore.Change{}).Put(&counter)); err != nil {
		t.Fatal(err)
	}
	const writers, rounds = 6, 25
	var increments, conflicts atomic.Int64
	nameOwners := make([][]string, rounds)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				k := sampleKey(tag(w, i))
				k.Name = fmt.Sprintf("n%d", i) // contested by every writer
				c := (&kstore.Change{}).Put(&k, &kstore.NameRecord{Name: k.Name, Tag: k.Tag}).
					Expecting(kstore.NameKey(k.Name), 0).Expecting(kstore.KeyKey(k.Tag), 0)
				_, err := s.Apply(ctx, c)
				var ce *kstore.ConflictError
				switch {
				case err == nil:
					mu.Lock()
					nameOwners[i] = append(nameOwners[i], k.Tag)
					mu.Unlock()
				case errors.As(err, &ce):
				default:
					t.Errorf("create: %v", err)
					return
				}
				r, rev, err := s.Get(kstore.KeyKey(counter.Tag))
				if err != nil {
					t.Errorf("get counter: %v", err)
					return
				}
				next := *r.(*kstore.KeyRecord)
				next.Seq++
				_, err = s.Apply(ctx, (&kstore.Change{}).Put(&next).Expecting(kstore.KeyKey(counter.Tag), rev))
				switch {
				case err == nil:
					increments.Add(1)
				case errors.Is(err, kstore.ErrConflict):
					conflicts.Add(1)
				default:
					t.Errorf("increment: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d increments, %d refused by their expectation", increments.Load(), conflicts.Load())
	for i, owners := range nameOwners {
		if len(owners) != 1 {
			t.Errorf("name n%d was given to %d keys", i, len(owners))
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("reopen after concurrent commits: %v", err)
	}
	defer s.Close()
	c, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byTag := map[string]*kstore.KeyData{}
	for _, kd := range c.Keys {
		byTag[kd.Key.Tag] = kd
	}
	for i, owners := range nameOwners {
		if len(owners) == 1 && (byTag[owners[0]] == nil || c.Names[fmt.Sprintf("n%d", i)] != owners[0]) {
			t.Errorf("acknowledged key %s (name n%d) is missing after reopening", owners[0], i)
		}
	}
	if got := byTag[counter.Tag].Key.Seq; got != uint64(increments.Load()) {
		t.Errorf("counter is %d after %d acknowledged increments: an update was lost", got, increments.Load())
	}
}
