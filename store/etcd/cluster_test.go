package etcdstore_test

// The rest of issue #16 on a real etcd: the bounded offline window,
// rate limits shared by the registered members, and changes larger than
// etcd's transaction limit.

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/etcdtest"
	"github.com/pocketkms/kms/internal/testclock"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/store"
	etcdstore "github.com/pocketkms/kms/store/etcd"
)

// openEngine opens an Engine on st with the given options, closed in
// t.Cleanup.
func openEngine(t *testing.T, st *etcdstore.Store, opts ...kms.Option) *kms.Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	be, err := memory.New(rootKey)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kms.New(ctx, be, append([]kms.Option{kms.WithStore(st), kms.WithMaintenanceInterval(0)}, opts...)...)
	if err != nil {
		st.Close()
		be.Close()
		t.Fatalf("kms.New: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// tokenKey creates a key with an active generator on e and returns it
// with an access token for every permission.
func tokenKey(t *testing.T, e *kms.Engine, name string, typ kms.KeyType) (*kms.Key, string) {
	t.Helper()
	ctx := context.Background()
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: name, Type: typ})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	return k, set.Access
}

var caller = netip.MustParseAddr("10.0.0.5")

// TestOfflineWindow: an Engine whose only etcd member is killed keeps
// serving token-plane calls for its stale limit, then refuses them with
// ErrStale (trusted calls keep serving), and serves them again once the
// member is back and the Engine has reloaded.
func TestOfflineWindow(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.Start(t, 1)
	clk := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := newStore(t, c.Client(t), freshPrefix(t), etcdstore.WithWatchCheck(100*time.Millisecond), etcdstore.WithTimeout(time.Second))
	const limit = time.Minute
	e := openEngine(t, st, kms.WithClock(clk), kms.WithStaleLimit(limit))
	k, tok := tokenKey(t, e, "offline", kms.AES256)
	tokenCall := func() error {
		_, err := e.WithToken(tok, caller).Encrypt(ctx, k.Tag, []byte("x"), nil)
		return err
	}
	if err := tokenCall(); err != nil {
		t.Fatal(err)
	}

	c.Kill(0)
	start := time.Now()
	within(t, 10*time.Second, "the Engine notices the cluster is gone", func() bool { _, lost := e.FeedLost(); return lost })
	t.Logf("feed loss noticed %v after the kill (watch check 100ms)", time.Since(start).Round(time.Millisecond))
	clk.Advance(limit)
	if err := tokenCall(); err != nil {
		t.Fatalf("within the limit: %v", err)
	}
	clk.Advance(time.Second)
	if err := tokenCall(); !errors.Is(err, kms.ErrStale) {
		t.Fatalf("past the limit: %v, want ErrStale", err)
	}
	if _, err := e.Encrypt(ctx, k.Tag, []byte("trusted"), nil); err != nil {
		t.Fatalf("trusted call while offline: %v", err)
	}

	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	within(t, 30*time.Second, "the Engine follows again", func() bool { _, lost := e.FeedLost(); return !lost })
	if err := tokenCall(); err != nil {
		t.Fatalf("after the cluster came back: %v", err)
	}
}

// TestRateLimitClusterWide: three Engines, each with its store
// registered under the prefix, share a key's limit: under even load they
// admit the key's rate within ±10% in total (a fake clock drives the
// limiters). A member that closes, or whose process dies (its lease
// expires), stops counting.
func TestRateLimitClusterWide(t *testing.T) {
	ctx := context.Background()
	c := shared(t)
	prefix := freshPrefix(t)
	clk := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var sts []*etcdstore.Store
	var es []*kms.Engine
	for range 3 {
		st := newStore(t, c.Client(t), prefix)
		sts = append(sts, st)
		es = append(es, openEngine(t, st, kms.WithClock(clk)))
	}
	members := func(want int) func() bool {
		return func() bool {
			for _, st := range sts {
				if st.Members() != want {
					return false
				}
			}
			return true
		}
	}
	within(t, 5*time.Second, "every store counts 3 members", members(3))

	k, tok := tokenKey(t, es[0], "limited", kms.ECDSA)
	const rate = 90
	if err := es[0].SetKeyRateLimit(ctx, k.Tag, ratelimit.Limit{Rate: rate, Burst: rate}); err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		within(t, 5*time.Second, "the limit reaches every Engine", func() bool {
			l, err := e.GetKeyRateLimit(ctx, k.Tag)
			return err == nil && l.Own
		})
	}
	// Even load: every Engine tries a call every 5 ms of simulated time
	// (200/s each); after 2 s the bursts are spent, then 10 s are counted.
	run := func(es []*kms.Engine, span time.Duration) int {
		n := 0
		for elapsed := time.Duration(0); elapsed < span; elapsed += 5 * time.Millisecond {
			for _, e := range es {
				_, err := e.WithToken(tok, caller).GetPublicKey(ctx, k.Tag, 0)
				switch {
				case err == nil:
					n++
				case !errors.Is(err, kms.ErrRateLimited):
					t.Fatal(err)
				}
			}
			clk.Advance(5 * time.Millisecond)
		}
		return n
	}
	run(es, 2*time.Second)
	const span = 10 * time.Second
	want := rate * span.Seconds()
	got := run(es, span)
	t.Logf("3 Engines under even load admitted %d in %v (the key's rate: %.0f)", got, span, want)
	if math.Abs(float64(got)-want) > 0.1*want {
		t.Fatalf("admitted %d, want %.0f ±10%%", got, want)
	}

	// One Engine closes: its registration is revoked at once, and the two
	// left share the limit between them.
	es[2].Close()
	within(t, 5*time.Second, "the others count 2 members", func() bool { return sts[0].Members() == 2 && sts[1].Members() == 2 })
	run(es[:2], 2*time.Second)
	if got := run(es[:2], span); math.Abs(float64(got)-want) > 0.1*want {
		t.Fatalf("two Engines admitted %d, want %.0f ±10%%", got, want)
	}

	// A process that dies without closing: its lease expires after the
	// TTL and the others stop counting it.
	cli, err := c.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := etcdstore.New(dctx, cli, prefix, etcdstore.WithMemberTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	within(t, 5*time.Second, "the newcomer is counted", func() bool { return sts[0].Members() == 3 })
	cli.Close() // the keep-alives stop, as a killed process's would
	start := time.Now()
	within(t, 10*time.Second, "the dead member's lease expires", func() bool { return sts[0].Members() == 2 })
	t.Logf("a dead member stopped counting %v after its client closed (TTL 1s)", time.Since(start).Round(time.Millisecond))
}

// TestWithoutMembership: a Store opened WithoutMembership is not counted
// but counts the others.
func TestWithoutMembership(t *testing.T) {
	c := shared(t)
	prefix := freshPrefix(t)
	a := newStore(t, c.Client(t), prefix)
	b := newStore(t, c.Client(t), prefix, etcdstore.WithoutMembership())
	within(t, 5*time.Second, "both see one member", func() bool { return a.Members() == 1 && b.Members() == 1 })
	newStore(t, c.Client(t), prefix)
	within(t, 5*time.Second, "both see two members", func() bool { return a.Members() == 2 && b.Members() == 2 })
}

// TestManyVersionsOneTransaction: a change deleting 139 of a key's 140
// versions with its other records (144 operations as one delete per
// record: more than etcd's default --max-txn-ops of 128) is one
// transaction: runs of
// consecutive versions go as one range delete, which deletes exactly
// them. A change needing more operations than the cluster takes fails
// with ErrChangeTooLarge, writing nothing.
func TestManyVersionsOneTransaction(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, shared(t).Client(t), freshPrefix(t))
	const versions = 140
	for _, n := range []int{1, 2} {
		c := createKey(n, "many"+string(rune('0'+n)))
		if _, err := s.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
		for lo := 2; lo <= versions; lo += 60 {
			c := &store.Change{}
			for v := lo; v < lo+60 && v <= versions; v++ {
				c.Put(&store.VersionRecord{Tag: tag(n), Version: uint32(v), State: "ENABLED", CreatedAt: 1, Handle: []byte{byte(v)}})
			}
			if _, err := s.Apply(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	before, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rev1 int64
	for _, kd := range before.Keys {
		if len(kd.Versions) != versions {
			t.Fatalf("key %s has %d versions, want %d", kd.Key.Tag, len(kd.Versions), versions)
		}
		if kd.Key.Tag == tag(1) {
			rev1 = kd.Rev
		}
	}

	// Key 1: every version but 61 deleted (two runs, 1-60 and 62-140),
	// with its other records, in one change; key 2 untouched.
	c := &store.Change{}
	for v := 1; v <= versions; v++ {
		if v != 61 {
			c.Delete(store.VersionKey(tag(1), uint32(v)))
		}
	}
	c.Delete(store.NameKey("many1"), store.GeneratorKey(tag(1)), store.ACLKey(tag(1))).
		Put(&store.KeyRecord{Tag: tag(1), Name: "many1", Type: "AES256", State: "REVOKED", Seq: 1, CreatedAt: 1, StateChangedAt: 2, CurrentVersion: 61}).
		Put(&store.NameRecord{Name: "many1", Tag: tag(1)}).
		Expecting(store.KeyKey(tag(1)), rev1)
	if _, err := s.Apply(ctx, c); err != nil {
		t.Fatalf("a change deleting %d versions: %v", versions-1, err)
	}
	after, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, kd := range after.Keys {
		switch kd.Key.Tag {
		case tag(1):
			if len(kd.Versions) != 1 || kd.Versions[0].Version != 61 {
				t.Fatalf("key 1 kept %d versions, want version 61 alone", len(kd.Versions))
			}
		case tag(2):
			if len(kd.Versions) != versions {
				t.Fatalf("key 2 has %d versions after key 1's change, want %d", len(kd.Versions), versions)
			}
		}
	}
	if after.Names["many1"] != tag(1) {
		t.Fatal("the name put in the same change as its delete was lost")
	}

	// More operations than the cluster takes: refused before sending.
	big := &store.Change{}
	for v := 1; v <= 130; v++ {
		big.Put(&store.VersionRecord{Tag: tag(2), Version: uint32(200 + v), State: "ENABLED", CreatedAt: 1, Handle: []byte{1}})
	}
	if _, err := s.Apply(ctx, big); !errors.Is(err, etcdstore.ErrChangeTooLarge) || errors.Is(err, store.ErrUncertain) {
		t.Fatalf("a change of 130 puts: %v, want ErrChangeTooLarge", err)
	}
	// A Store told a larger limit than the cluster's sends it, and the
	// cluster's refusal is reported alike.
	s2 := newStore(t, shared(t).Client(t), freshPrefix(t), etcdstore.WithMaxTxnOps(1000))
	if _, err := s2.Apply(ctx, big); !errors.Is(err, etcdstore.ErrChangeTooLarge) || errors.Is(err, store.ErrUncertain) {
		t.Fatalf("a change of 130 puts the cluster refused: %v, want ErrChangeTooLarge", err)
	}
}

// TestDestroyMaxVersions: an Engine on etcd destroys a key of
// kms.MaxVersions versions, and the destruction reaches another Engine.
func TestDestroyMaxVersions(t *testing.T) {
	ctx := context.Background()
	c := shared(t)
	prefix := freshPrefix(t)
	clk := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a := openEngine(t, newStore(t, c.Client(t), prefix), kms.WithClock(clk))
	b := openEngine(t, newStore(t, c.Client(t), prefix), kms.WithClock(clk))
	k, err := a.CreateKey(ctx, kms.CreateKeyRequest{Name: "hundred", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	for range kms.MaxVersions - 1 {
		if _, err := a.RotateKey(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay + time.Second)
	if err := a.Maintain(ctx); err != nil {
		t.Fatalf("destroying a key of %d versions: %v", kms.MaxVersions, err)
	}
	within(t, 5*time.Second, "the destruction reaches B", func() bool {
		_, err := b.GetKey(ctx, k.Tag)
		return errors.Is(err, kms.ErrKeyNotFound)
	})
	resp, err := c.Client(t).Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if k := string(kv.Key); !containsMeta(k, prefix) {
			t.Errorf("left under the prefix: %s", k)
		}
	}
}

func containsMeta(key, prefix string) bool {
	return len(key) > len(prefix)+2 && key[len(prefix):len(prefix)+2] == "m/"
}
