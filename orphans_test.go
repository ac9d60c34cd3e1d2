package kms_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/store/storetest"
)

// sweepRegistry stands for a token: the material every sweepBackend on
// it created and has not destroyed, with creation times from a clock.
type sweepRegistry struct {
	clk *fakeClock
	mu  sync.Mutex
	m   map[string]backend.Swept // handle → material
}

func newSweepRegistry(clk *fakeClock) *sweepRegistry {
	return &sweepRegistry{clk: clk, m: map[string]backend.Swept{}}
}

func (r *sweepRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// sweepBackend is a memory backend that implements backend.Sweeper over
// a sweepRegistry, as a token backend would.
type sweepBackend struct {
	*memory.Backend
	reg *sweepRegistry
}

func (b *sweepBackend) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	resp, err := b.Backend.Generate(ctx, req)
	if err == nil {
		b.reg.mu.Lock()
		b.reg.m[string(resp.Handle)] = backend.Swept{Ref: req.Ref, Type: req.Type, Created: b.reg.clk.Now()}
		b.reg.mu.Unlock()
	}
	return resp, err
}

func (b *sweepBackend) Destroy(ctx context.Context, req *backend.DestroyRequest) error {
	b.reg.mu.Lock()
	delete(b.reg.m, string(req.Handle))
	b.reg.mu.Unlock()
	return b.Backend.Destroy(ctx, req)
}

func (b *sweepBackend) Sweep(ctx context.Context, req *backend.SweepRequest) ([]backend.Swept, error) {
	if req == nil || req.CreatedBefore.IsZero() {
		return nil, backend.ErrInvalidArgument
	}
	b.reg.mu.Lock()
	defer b.reg.mu.Unlock()
	var out []backend.Swept
	for h, m := range b.reg.m {
		if m.Created.Before(req.CreatedBefore) && !slices.ContainsFunc(req.Keep, func(k []byte) bool { return bytes.Equal(k, []byte(h)) }) {
			delete(b.reg.m, h)
			out = append(out, m)
		}
	}
	return out, nil
}

// orphan creates material through the backend without committing it, as
// a process that dies right after Generate leaves it.
func orphan(t *testing.T, be backend.Backend, ref backend.KeyRef) []byte {
	t.Helper()
	resp, err := be.Generate(t.Context(), &backend.GenerateRequest{Ref: ref, Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Handle
}

func removedRefs(r *kms.SweepReport) []backend.KeyRef {
	var refs []backend.KeyRef
	for _, m := range r.Removed {
		refs = append(refs, m.Ref)
	}
	return refs
}

// TestSweepOrphans: material no record names is destroyed once older than
// the grace period; every committed version and token-signing key stays
// and keeps working; young material (a create in flight) stays.
func TestSweepOrphans(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	reg := newSweepRegistry(clk)
	be := &sweepBackend{Backend: newBackend(t, rootKey), reg: reg}
	e, err := kms.New(ctx, be, kms.WithDirectory(t.TempDir()), kms.WithClock(clk), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })

	aes := createKey(t, e, "aes", kms.AES256, false)
	ct, err := e.Encrypt(ctx, aes.Tag, []byte("kept"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.RotateKey(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	ec := createKey(t, e, "ecdsa", kms.ECDSA, false)
	sig, err := e.Sign(ctx, ec.Tag, []byte("signed"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ActivateTokenGenerator(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	committed := reg.len() // aes v1, v2, ec v1, the token-signing key

	clk.Advance(time.Hour)
	orphans := []backend.KeyRef{
		{KeyTag: aes.Tag, Version: 3, Purpose: backend.PurposeCipher},            // a rotation that died
		{KeyTag: "ab" + aes.Tag[2:], Version: 1, Purpose: backend.PurposeCipher}, // a CreateKey that died
	}
	for _, ref := range orphans {
		orphan(t, be, ref)
	}
	clk.Advance(time.Minute)

	// The orphans are a minute old: a grace of an hour keeps them, as it
	// would keep material whose commit is in flight.
	rep, err := e.SweepOrphans(ctx, time.Hour)
	if err != nil || len(rep.Removed) != 0 {
		t.Fatalf("SweepOrphans within the grace period = %v, %v; want nothing removed", removedRefs(rep), err)
	}
	clk.Advance(2 * time.Hour)
	rep, err = e.SweepOrphans(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got := removedRefs(rep)
	if len(got) != 2 || !slices.Contains(got, orphans[0]) || !slices.Contains(got, orphans[1]) {
		t.Fatalf("removed %v, want exactly %v", got, orphans)
	}
	if reg.len() != committed {
		t.Fatalf("%d pieces of material left, want the %d committed ones", reg.len(), committed)
	}
	if pt, err := e.Decrypt(ctx, aes.Tag, ct, nil); err != nil || string(pt) != "kept" {
		t.Fatalf("Decrypt after the sweep: %q, %v", pt, err)
	}
	if ok, err := e.Verify(ctx, ec.Tag, []byte("signed"), sig); err != nil || !ok {
		t.Fatalf("Verify after the sweep: %v, %v", ok, err)
	}
	if _, err := e.IssueTokens(ctx, aes.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "after sweep"}); err != nil {
		t.Fatalf("IssueTokens after the sweep: %v", err)
	}
	// Nothing left to do.
	if rep, err := e.SweepOrphans(ctx, 0); err != nil || len(rep.Removed) != 0 {
		t.Fatalf("second sweep = %v, %v", removedRefs(rep), err)
	}
	_, err = e.SweepOrphans(ctx, -time.Second)
	wantErr(t, err, kms.ErrInvalidArgument)
}

// TestSweepOrphansWithoutSweeper: a backend that keeps nothing itself
// (memory) has nothing to sweep.
func TestSweepOrphansWithoutSweeper(t *testing.T) {
	e := newEngine(t)
	createKey(t, e, "key", kms.AES256, false)
	rep, err := e.SweepOrphans(t.Context(), 0)
	if err != nil || rep == nil || len(rep.Removed) != 0 {
		t.Fatalf("SweepOrphans on a memory backend = %+v, %v; want an empty report", rep, err)
	}
}

// noFeed hides a store's change feed: the Engine on it never learns of
// other Engines' changes.
type noFeed struct{ store.Store }

// TestSweepOrphansKeepsWhatTheStoreNames: material another Engine on the
// same store committed is kept even by an Engine whose snapshots do not
// know it (no change feed; a commit this Engine could not confirm is the
// same case): SweepOrphans reads the records from the store.
func TestSweepOrphansKeepsWhatTheStoreNames(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	reg := newSweepRegistry(clk)
	m := storetest.NewMemory()
	open := func(s store.Store) *kms.Engine {
		t.Helper()
		be := &sweepBackend{Backend: newBackend(t, rootKey), reg: reg}
		e, err := kms.New(ctx, be, kms.WithStore(s), kms.WithClock(clk), kms.WithMaintenanceInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
	a := open(noFeed{m.Open()})
	b := open(m.Open())
	k := createKey(t, b, "made-by-b", kms.AES256, false)
	if _, err := a.GetKey(ctx, k.Tag); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("A knows B's key (%v): the test needs A not to", err)
	}
	clk.Advance(24 * time.Hour)
	rep, err := a.SweepOrphans(ctx, time.Hour)
	if err != nil || len(rep.Removed) != 0 {
		t.Fatalf("A's sweep removed %v (%v): B's committed material must stay", removedRefs(rep), err)
	}
	if reg.len() != 1 {
		t.Fatalf("%d pieces of material, want B's one", reg.len())
	}
}

// sweepCounter is a memory backend that pretends to keep material of its
// own, counting the sweeps asked of it.
type sweepCounter struct {
	*memory.Backend
	sweeps []time.Time
}

func (b *sweepCounter) Sweep(_ context.Context, req *backend.SweepRequest) ([]backend.Swept, error) {
	b.sweeps = append(b.sweeps, req.CreatedBefore)
	return nil, nil
}

// TestMaintainSweepsOrphansOncePerGrace: Maintain sweeps leftover backend
// material at most once per grace period, with the grace as the cutoff,
// and never with WithOrphanSweep(0).
func TestMaintainSweepsOrphansOncePerGrace(t *testing.T) {
	ctx := context.Background()
	for _, grace := range []time.Duration{0, time.Hour} {
		clk := newFakeClock()
		be := &sweepCounter{Backend: newBackend(t, rootKey)}
		e, err := kms.New(ctx, be, kms.WithClock(clk), kms.WithMaintenanceInterval(0), kms.WithOrphanSweep(grace))
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []time.Duration{0, time.Minute, 30 * time.Minute, 30 * time.Minute, time.Minute} {
			clk.Advance(step)
			if err := e.Maintain(ctx); err != nil {
				t.Fatal(err)
			}
		}
		e.Close()
		want := 0
		if grace > 0 {
			want = 2 // at the first run, and again once an hour has passed
		}
		if len(be.sweeps) != want {
			t.Fatalf("grace %v: %d sweeps, want %d", grace, len(be.sweeps), want)
		}
		if want > 0 && !be.sweeps[0].Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(-grace)) {
			t.Fatalf("the first sweep's cutoff is %v, want the clock less the grace", be.sweeps[0])
		}
	}
}
