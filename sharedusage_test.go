package kms_test

// Usage counts and the AES-GCM encryption budget with several Engines on
// one shared store: flushes add each Engine's delta to the shared record
// with an optimistic read-modify-write, so no count is lost and the
// budget holds for the cluster (within the documented overshoot).

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/store/storetest"
)

// sharedEncryptions reads the store's usage record of tag: version 1's
// encryptions.
func sharedEncryptions(t *testing.T, rr store.RevReader, tag string) uint64 {
	t.Helper()
	r, _, err := rr.ReadRev(context.Background(), store.UsageKey(tag))
	if err != nil {
		t.Fatal(err)
	}
	ur, ok := r.(*store.UsageRecord)
	if !ok || len(ur.Versions) == 0 {
		return 0
	}
	return ur.Versions[0].Encryptions
}

func usageOf(t *testing.T, e *kms.Engine, tag string) uint64 {
	t.Helper()
	u, err := e.KeyUsage(context.Background(), tag)
	if err != nil {
		t.Fatal(err)
	}
	return u.Versions[0].Encryptions
}

func TestSharedUsageBudget(t *testing.T) {
	const budget = 400
	ctx := context.Background()
	clk := newFakeClock()
	m, es := sharedEngines(t, 2, kms.WithClock(clk), kms.WithEncryptionBudgetForTest(budget), kms.WithEncryptionBudgetWarning(budget/2))
	a, b := es[0], es[1]
	k, err := a.CreateKey(ctx, kms.CreateKeyRequest{Name: "budgeted", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the key reaches B", func() bool { _, err := b.GetKey(ctx, k.Tag); return err == nil })

	// Concurrent encryptions on both Engines, with flushes of both
	// interleaved (and racing each other: real conflicts).
	const workers, each = 4, 25
	var wg sync.WaitGroup
	var failed atomic.Int32
	stop := make(chan struct{})
	var fw sync.WaitGroup
	for _, e := range es {
		fw.Add(1)
		go func() {
			defer fw.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := e.Maintain(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
						failed.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	close(stop)
	fw.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d encryptions failed", failed.Load())
	}
	for _, e := range []*kms.Engine{a, b} {
		if err := e.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
	}
	const first = 2 * workers * each
	rr := m.Open()
	if got := sharedEncryptions(t, rr, k.Tag); got != first {
		t.Fatalf("store counts %d encryptions, made %d", got, first)
	}
	if gb := usageOf(t, b, k.Tag); gb != first {
		t.Fatalf("B's KeyUsage after its flush: %d, want %d", gb, first)
	}
	// A flush after a use reads the shared total.
	if _, err := a.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if ga := usageOf(t, a, k.Tag); ga != first+1 {
		t.Fatalf("A's KeyUsage after its flush: %d, want %d", ga, first+1)
	}

	// A spends the rest of the budget and is refused past it.
	for i := first + 1; i < budget; i++ {
		if _, err := a.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
			t.Fatalf("A's encryption %d: %v", i+1, err)
		}
	}
	if _, err := a.Encrypt(ctx, k.Tag, []byte("x"), nil); !errors.Is(err, kms.ErrEncryptionBudget) {
		t.Fatalf("A past the budget: %v", err)
	}
	// B has not seen A's encryptions yet: it may make one (the
	// documented overshoot of one flush interval).
	if _, err := b.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sharedEncryptions(t, rr, k.Tag); got != budget+1 {
		t.Fatalf("store counts %d encryptions, made %d", got, budget+1)
	}
	// After its flush B sees the shared total and refuses.
	if _, err := b.Encrypt(ctx, k.Tag, []byte("x"), nil); !errors.Is(err, kms.ErrEncryptionBudget) {
		t.Fatalf("B past the shared budget: %v", err)
	}
	if u, err := b.KeyUsage(ctx, k.Tag); err != nil || u.Versions[0].BudgetLeft != 0 || u.Versions[0].Encryptions != budget+1 {
		t.Fatalf("B's KeyUsage = %+v, %v", u, err)
	}
	if got := sharedEncryptions(t, rr, k.Tag); got != budget+1 {
		t.Fatalf("a refusal was counted: store %d", got)
	}
}

// conflictStore fails the next `inject` commits that write usage records
// with a ConflictError, as if another Engine had written them first.
type conflictStore struct {
	*storetest.MemoryHandle
	inject atomic.Int32
}

func (s *conflictStore) Apply(ctx context.Context, c *store.Change) (int64, error) {
	for _, r := range c.Puts {
		if _, ok := r.(*store.UsageRecord); ok && s.inject.Load() > 0 {
			s.inject.Add(-1)
			return 0, &store.ConflictError{Key: r.StoreKey()}
		}
	}
	return s.MemoryHandle.Apply(ctx, c)
}

func TestSharedUsageConflictRetried(t *testing.T) {
	ctx := context.Background()
	m := storetest.NewMemory()
	cs := &conflictStore{MemoryHandle: m.Open()}
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStore(cs), kms.WithMaintenanceInterval(0), kms.WithClock(newFakeClock()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "conflicted", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	encrypt := func(n int) {
		for range n {
			if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	rr := m.Open()
	encrypt(5)
	cs.inject.Store(1)
	if err := e.Maintain(ctx); err != nil {
		t.Fatalf("one conflict is retried: %v", err)
	}
	if got := sharedEncryptions(t, rr, k.Tag); got != 5 || cs.inject.Load() != 0 {
		t.Fatalf("store counts %d after a retried conflict (injections left %d), want 5", got, cs.inject.Load())
	}
	// Conflicts past the retries: the flush fails, the delta stays pending.
	encrypt(3)
	cs.inject.Store(1000)
	if err := e.Maintain(ctx); err == nil || !strings.Contains(err.Error(), "conflict") {
		t.Fatalf("Maintain with endless conflicts = %v", err)
	}
	if got := sharedEncryptions(t, rr, k.Tag); got != 5 {
		t.Fatalf("store counts %d, want 5 until a flush lands", got)
	}
	if got := usageOf(t, e, k.Tag); got != 8 {
		t.Fatalf("KeyUsage = %d, want 8", got)
	}
	cs.inject.Store(0)
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sharedEncryptions(t, rr, k.Tag); got != 8 {
		t.Fatalf("store counts %d after the pending delta landed, want 8", got)
	}
	if got := usageOf(t, e, k.Tag); got != 8 {
		t.Fatalf("KeyUsage = %d, want 8 (counted twice?)", got)
	}
}

// TestKeyUsageBadgerFlushes: on the default store (Badger, a RevReader
// whose revisions are Badger versions), flushes add deltas with
// expectations across Maintain, Close and reopen, counting each
// encryption once.
func TestKeyUsageBadgerFlushes(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	open := func() *kms.Engine {
		e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := open()
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "badgerusage", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(0)
	for round := range 3 {
		for range 3 {
			if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
				t.Fatal(err)
			}
			want++
		}
		if err := e.Maintain(ctx); err != nil {
			t.Fatalf("round %d: Maintain: %v", round, err)
		}
		if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		want++
		if err := e.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		e = open()
		if got := usageOf(t, e, k.Tag); got != want {
			t.Fatalf("round %d: reopened usage %d, want %d", round, got, want)
		}
	}
	e.Close()
}

// revCounting is a store that counts its ReadRev calls, with a change
// feed (Watch) or without one.
type revCounting struct {
	*storetest.MemoryHandle
	reads atomic.Int64
}

func (s *revCounting) ReadRev(ctx context.Context, key string) (store.Record, int64, error) {
	s.reads.Add(1)
	return s.MemoryHandle.ReadRev(ctx, key)
}

// revCountingNoFeed hides the handle's Watch: a store only one Engine uses.
type revCountingNoFeed struct {
	store.Store
	c *revCounting
}

func (s revCountingNoFeed) ReadRev(ctx context.Context, key string) (store.Record, int64, error) {
	return s.c.ReadRev(ctx, key)
}

// TestIdleUsageRefreshNeedsFeed: a flush re-reads the usage records of
// keys used within the last minute but not since the last flush only on a
// store other Engines can share (one with a change feed); on a store
// without one (the Engine's own Badger directory) it would only read back
// what this Engine wrote, which after a use of every one of 100,000 keys
// cost a second at Close.
func TestIdleUsageRefreshNeedsFeed(t *testing.T) {
	ctx := context.Background()
	for _, feed := range []bool{true, false} {
		t.Run(map[bool]string{true: "feed", false: "no-feed"}[feed], func(t *testing.T) {
			c := &revCounting{MemoryHandle: storetest.NewMemory().Open()}
			var st store.Store = c
			if !feed {
				st = revCountingNoFeed{Store: c.MemoryHandle, c: c}
			}
			if _, watches := st.(store.Watcher); watches != feed {
				t.Fatalf("the store has a feed: %v, want %v", watches, feed)
			}
			e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStore(st), kms.WithMaintenanceInterval(0))
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			const n = 5
			for i := range n {
				k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "idle-" + string(rune('a'+i)), Type: kms.AES256})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.Maintain(ctx); err != nil { // flushes the uses
				t.Fatal(err)
			}
			before := c.reads.Load()
			if err := e.Maintain(ctx); err != nil { // nothing used since
				t.Fatal(err)
			}
			got := c.reads.Load() - before
			if want := map[bool]int64{true: n, false: 0}[feed]; got != want {
				t.Fatalf("the idle flush read %d usage records, want %d", got, want)
			}
		})
	}
}
