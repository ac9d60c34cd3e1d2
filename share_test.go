package kms_test

// Cluster-wide rate limits: on a store that counts its Engines
// (store.Membership), each of N Engines enforces 1/N of a key's limit, so
// that together they admit the key's limit under even load.

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/store/storetest"
)

// countedStore is a shared Memory handle that reports a member count.
type countedStore struct {
	*storetest.MemoryHandle
	n *atomic.Int64
}

func (c countedStore) Members() int { return int(c.n.Load()) }

var _ store.Membership = countedStore{}

// admitted runs even load on the key through every Engine's token plane,
// each Engine trying one call every `every` of simulated time for
// `span`, and returns how many calls each admitted.
func admitted(t *testing.T, clk *fakeClock, es []*kms.Engine, tag, tok string, span, every time.Duration) []int {
	t.Helper()
	ctx := context.Background()
	got := make([]int, len(es))
	caller := netip.MustParseAddr("10.0.0.9")
	for elapsed := time.Duration(0); elapsed < span; elapsed += every {
		for i, e := range es {
			_, err := e.WithToken(tok, caller).GetPublicKey(ctx, tag, 0)
			switch {
			case err == nil:
				got[i]++
			case !errors.Is(err, kms.ErrRateLimited):
				t.Fatalf("engine %d: %v", i, err)
			}
		}
		clk.Advance(every)
	}
	return got
}

func sum(xs []int) int {
	s := 0
	for _, x := range xs {
		s += x
	}
	return s
}

func TestRateLimitSharedAcrossEngines(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	m := storetest.NewMemory()
	var n atomic.Int64
	n.Store(3)
	es := make([]*kms.Engine, 3)
	for i := range es {
		e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStore(countedStore{m.Open(), &n}), kms.WithMaintenanceInterval(0), kms.WithClock(clk))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		es[i] = e
	}
	k, err := es[0].CreateKey(ctx, kms.CreateKeyRequest{Name: "limited", Type: kms.ECDSA})
	if err != nil {
		t.Fatal(err)
	}
	const rate, burst = 100, 100
	if err := es[0].SetKeyRateLimit(ctx, k.Tag, ratelimit.Limit{Rate: rate, Burst: burst}); err != nil {
		t.Fatal(err)
	}
	if _, err := es[0].ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := es[0].IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		eventually(t, "the generator reaches every Engine", func() bool {
			g, err := e.GetTokenGenerator(ctx, k.Tag)
			return err == nil && g.Status == kms.GeneratorActive
		})
	}
	// The key's limit over a span, once the bursts are spent: its rate
	// for the span. (The first second also admits the bursts: with the
	// batch floor each Engine's is max(burst/N, 100); see share.go.)
	const span, every = 10 * time.Second, 5 * time.Millisecond // each Engine tries 200/s
	want := rate * span.Seconds()
	within10 := func(got int) bool { return math.Abs(float64(got)-want) <= 0.1*want }
	warm := func(es []*kms.Engine) { admitted(t, clk, es, k.Tag, set.Access, 2*time.Second, every) }

	// Even load on three Engines: the key's limit in total.
	warm(es)
	got := admitted(t, clk, es, k.Tag, set.Access, span, every)
	t.Logf("even load, 3 members: admitted %v = %d (limit %.0f)", got, sum(got), want)
	if !within10(sum(got)) {
		t.Fatalf("even load: %d admitted in total, want %.0f ±10%%", sum(got), want)
	}
	// All the load on one Engine: it admits its share only (the documented
	// cost of static shares under uneven load).
	warm(es[:1])
	one := admitted(t, clk, es[:1], k.Tag, set.Access, span, every)
	if share := want / 3; math.Abs(float64(one[0])-share) > 0.1*share {
		t.Fatalf("one Engine under all the load admitted %d, want its share %.0f ±10%%", one[0], share)
	}
	// A store that counts one member (or none): each Engine enforces the
	// whole limit, so three admit three times it.
	n.Store(1)
	warm(es)
	got = admitted(t, clk, es, k.Tag, set.Access, span, every)
	if sum(got) < int(2.5*want) {
		t.Fatalf("one member counted: %d admitted in total, want about 3×%.0f", sum(got), want)
	}
	// The burst share never drops below a full batch.
	n.Store(10)
	clk.Advance(2 * time.Second)
	items := make([]kms.EncryptItem, kms.MaxBatchItems)
	k2, set2 := tokenKey(t, es[0], "batch", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	for i := range items {
		items[i] = kms.EncryptItem{Plaintext: []byte("x")}
	}
	if _, err := es[0].WithToken(set2.Access, netip.MustParseAddr("10.0.0.9")).BatchEncrypt(ctx, k2.Tag, items); err != nil {
		t.Fatalf("a full batch with 10 members: %v", err)
	}
}

// countingStore counts the calls that reach a shared store.
type countingStore struct {
	countedStore
	calls *atomic.Int64
}

func (c countingStore) Load(ctx context.Context) (*store.Contents, error) {
	c.calls.Add(1)
	return c.countedStore.Load(ctx)
}

func (c countingStore) Apply(ctx context.Context, ch *store.Change) (int64, error) {
	c.calls.Add(1)
	return c.countedStore.Apply(ctx, ch)
}

// TestHotPathNeverCallsStore: cipher calls on both planes, on an Engine
// sharing its store with others (three members counted), never reach the
// store: they are served from snapshots, so an etcd-backed Engine's hot
// path costs what a Badger-backed one's does.
func TestHotPathNeverCallsStore(t *testing.T) {
	ctx := context.Background()
	var n, calls atomic.Int64
	n.Store(3)
	st := countingStore{countedStore{storetest.NewMemory().Open(), &n}, &calls}
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStore(st), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	k, set := tokenKey(t, e, "hot", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	before := calls.Load()
	tc := e.WithToken(set.Access, netip.MustParseAddr("10.0.0.2"))
	for range 100 {
		ct, err := e.Encrypt(ctx, k.Tag, []byte("hot"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tc.Decrypt(ctx, k.Tag, ct, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := calls.Load() - before; got != 0 {
		t.Fatalf("200 cipher calls made %d store calls", got)
	}
}
