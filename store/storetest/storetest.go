// Package storetest is the conformance suite every store.Store must pass,
// and Memory, a shared in-memory store with a change feed for tests that
// run several Engines in one process.
//
// A store's test calls Run once:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return mystore.Open(...) })
//	}
//
// open must return a new, empty store for each call; Run closes it. If the
// store implements store.Watcher, the change feed is checked too.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms/store"
)

func tag(n int) string { return fmt.Sprintf("%064x", n) }

func keyRec(n int, name string) *store.KeyRecord {
	return &store.KeyRecord{Tag: tag(n), Name: name, Type: "AES256", State: "ENABLED", Seq: uint64(n), CreatedAt: 1, StateChangedAt: 1, CurrentVersion: 1}
}

func versionRec(n int, v uint32) *store.VersionRecord {
	return &store.VersionRecord{Tag: tag(n), Version: v, State: "ENABLED", CreatedAt: 1, Handle: []byte{byte(n), byte(v)}}
}

// create is the change that creates key n named name.
func create(n int, name string) *store.Change {
	return (&store.Change{}).
		Put(keyRec(n, name), versionRec(n, 1), &store.NameRecord{Name: strings.ToLower(name), Tag: tag(n)}).
		Expecting(store.KeyKey(tag(n)), 0).
		Expecting(store.NameKey(name), 0)
}

// Run runs the conformance suite on stores made by open.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	fresh := func(t *testing.T) store.Store {
		t.Helper()
		s := open(t)
		t.Cleanup(func() { s.Close() })
		return s
	}
	load := func(t *testing.T, s store.Store) *store.Contents {
		t.Helper()
		c, err := s.Load(ctx)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		return c
	}

	t.Run("AuxiliaryRecords", func(t *testing.T) { runAuxiliary(t, fresh) })

	t.Run("Empty", func(t *testing.T) {
		c := load(t, fresh(t))
		if len(c.Keys) != 0 || len(c.Names) != 0 || c.Rev < 0 {
			t.Fatalf("empty store loads %d keys, %d names, rev %d", len(c.Keys), len(c.Names), c.Rev)
		}
	})

	t.Run("ApplyThenLoad", func(t *testing.T) {
		s := fresh(t)
		before := load(t, s).Rev
		rev, err := s.Apply(ctx, create(1, "Orders"))
		if err != nil {
			t.Fatal(err)
		}
		if rev <= before {
			t.Fatalf("commit revision %d not after %d", rev, before)
		}
		c := load(t, s)
		if len(c.Keys) != 1 || c.Rev < rev {
			t.Fatalf("loaded %d keys at rev %d after commit %d", len(c.Keys), c.Rev, rev)
		}
		kd := c.Keys[0]
		if kd.Rev != rev || kd.Key != *keyRec(1, "Orders") || len(kd.Versions) != 1 || string(kd.Versions[0].Handle) != string(versionRec(1, 1).Handle) {
			t.Fatalf("loaded %+v", kd)
		}
		if c.Names["orders"] != tag(1) || len(c.Names) != 1 {
			t.Fatalf("names %v", c.Names)
		}
	})

	t.Run("RevisionsGrow", func(t *testing.T) {
		s := fresh(t)
		var last int64
		for i := 1; i <= 5; i++ {
			rev, err := s.Apply(ctx, create(i, fmt.Sprintf("key%d", i)))
			if err != nil {
				t.Fatal(err)
			}
			if rev <= last {
				t.Fatalf("commit %d has revision %d, not after %d", i, rev, last)
			}
			last = rev
		}
		for _, kd := range load(t, s).Keys {
			if kd.Rev <= 0 || kd.Rev > last {
				t.Fatalf("key record revision %d outside 1..%d", kd.Rev, last)
			}
		}
	})

	t.Run("ConflictWritesNothing", func(t *testing.T) {
		s := fresh(t)
		rev, err := s.Apply(ctx, create(1, "one"))
		if err != nil {
			t.Fatal(err)
		}
		for name, c := range map[string]*store.Change{
			"stale revision": (&store.Change{}).Put(keyRec(1, "one"), versionRec(1, 2)).Expecting(store.KeyKey(tag(1)), rev-1),
			"exists":         (&store.Change{}).Put(versionRec(1, 2)).Expecting(store.KeyKey(tag(1)), 0),
			"name taken":     create(2, "ONE"),
			"absent":         (&store.Change{}).Put(keyRec(3, "three")).Expecting(store.KeyKey(tag(3)), 7),
		} {
			_, err := s.Apply(ctx, c)
			var ce *store.ConflictError
			if !errors.Is(err, store.ErrConflict) || !errors.As(err, &ce) {
				t.Fatalf("%s: Apply = %v, want a *store.ConflictError", name, err)
			}
			if _, ok := c.Expect[ce.Key]; !ok {
				t.Fatalf("%s: conflict names %q, which the change did not expect", name, ce.Key)
			}
		}
		c := load(t, s)
		if len(c.Keys) != 1 || len(c.Keys[0].Versions) != 1 || c.Keys[0].Rev != rev || len(c.Names) != 1 {
			t.Fatalf("a refused change wrote something: %+v", c.Keys[0])
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s := fresh(t)
		rev, err := s.Apply(ctx, create(1, "gone"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Apply(ctx, (&store.Change{}).
			Delete(store.KeyKey(tag(1)), store.VersionKey(tag(1), 1), store.NameKey("gone"), store.ACLKey(tag(1))).
			Expecting(store.KeyKey(tag(1)), rev)); err != nil {
			t.Fatal(err)
		}
		if c := load(t, s); len(c.Keys) != 0 || len(c.Names) != 0 {
			t.Fatalf("after delete: %d keys, %d names", len(c.Keys), len(c.Names))
		}
		// The name is free again.
		if _, err := s.Apply(ctx, create(2, "GONE")); err != nil {
			t.Fatalf("name not released: %v", err)
		}
	})

	t.Run("OrphanRecordIsCorrupt", func(t *testing.T) {
		s := fresh(t)
		if _, err := s.Apply(ctx, (&store.Change{}).Put(versionRec(9, 1))); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(ctx); !errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("Load with a version of a missing key = %v, want ErrCorrupt", err)
		}
	})

	t.Run("OneCreateWinsAName", func(t *testing.T) {
		s := fresh(t)
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { _, errs[i] = s.Apply(ctx, create(i+1, "contested")) })
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("a losing create failed with %v, want ErrConflict", err)
			}
		}
		if c := load(t, s); won != 1 || len(c.Keys) != 1 {
			t.Fatalf("%d creates won, %d keys stored; want exactly one", won, len(c.Keys))
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		s := fresh(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Apply(cctx, create(1, "late")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Apply with a cancelled context = %v", err)
		}
		if c := load(t, s); len(c.Keys) != 0 {
			t.Fatal("a cancelled Apply wrote")
		}
	})

	t.Run("Close", func(t *testing.T) {
		s := open(t)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := s.Apply(ctx, create(1, "closed")); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("Apply after Close = %v, want ErrClosed", err)
		}
	})

	t.Run("Watch", func(t *testing.T) {
		s := fresh(t)
		w, ok := s.(store.Watcher)
		if !ok {
			t.Skip("the store has no change feed (store.Watcher)")
		}
		start := load(t, s).Rev
		r1, err := s.Apply(ctx, create(1, "w1"))
		if err != nil {
			t.Fatal(err)
		}
		r2, err := s.Apply(ctx, (&store.Change{}).Delete(store.NameKey("w1")).Put(&store.NameRecord{Name: "w2", Tag: tag(1)}))
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var got []store.Commit
		err = w.Watch(wctx, start, func(c store.Commit) {
			got = append(got, c)
			if c.Rev >= r2 {
				cancel()
			}
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Watch ended with %v, want the context's error", err)
		}
		if len(got) != 2 || got[0].Rev != r1 || got[1].Rev != r2 {
			t.Fatalf("watched commits %+v, want revisions %d and %d", got, r1, r2)
		}
		if len(got[0].Puts) != 3 || len(got[1].Deletes) != 1 || got[1].Deletes[0] != store.NameKey("w1") {
			t.Fatalf("watched commits carry the wrong records: %+v", got)
		}
		// From the latest revision, nothing more arrives until a commit.
		wctx2, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel2()
		n := 0
		if err := w.Watch(wctx2, r2, func(store.Commit) { n++ }); !errors.Is(err, context.DeadlineExceeded) || n != 0 {
			t.Fatalf("Watch from the head delivered %d commits, ended with %v", n, err)
		}
	})
}
