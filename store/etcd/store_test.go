package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pocketkms/kms/internal/etcdtest"
	"github.com/pocketkms/kms/store"
	etcdstore "github.com/pocketkms/kms/store/etcd"
	"github.com/pocketkms/kms/store/storetest"
)

// The package's tests share one cluster (etcdtest.Members() members),
// started by the first test that needs it and stopped by TestMain; tests
// that kill members or stop the cluster start their own.
var (
	sharedOnce    sync.Once
	sharedCluster *etcdtest.Cluster
	sharedErr     error
	sharedDir     string
	prefixSeq     atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedCluster != nil {
		sharedCluster.Close()
	}
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

// shared returns the package's shared cluster.
func shared(t testing.TB) *etcdtest.Cluster {
	t.Helper()
	sharedOnce.Do(func() {
		sharedDir, sharedErr = os.MkdirTemp("", "etcdstore-test-")
		if sharedErr == nil {
			sharedCluster, sharedErr = etcdtest.New(sharedDir, etcdtest.Members())
		}
	})
	if sharedErr != nil {
		t.Fatalf("shared cluster: %v", sharedErr)
	}
	return sharedCluster
}

// freshPrefix returns a prefix no other test uses.
func freshPrefix(t *testing.T) string {
	return fmt.Sprintf("test/%s/%d/", strings.ReplaceAll(t.Name(), "/", "."), prefixSeq.Add(1))
}

func newStore(t *testing.T, cli *clientv3.Client, prefix string, opts ...etcdstore.Option) *etcdstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := etcdstore.New(ctx, cli, prefix, opts...)
	if err != nil {
		t.Fatalf("etcdstore.New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func tag(n int) string { return fmt.Sprintf("%064x", n) }

func createKey(n int, name string) *store.Change {
	return (&store.Change{}).
		Put(&store.KeyRecord{Tag: tag(n), Name: name, Type: "AES256", State: "ENABLED", Seq: uint64(n), CreatedAt: 1, StateChangedAt: 1, CurrentVersion: 1},
			&store.VersionRecord{Tag: tag(n), Version: 1, State: "ENABLED", CreatedAt: 1, Handle: []byte{byte(n)}},
			&store.NameRecord{Name: strings.ToLower(name), Tag: tag(n)}).
		Expecting(store.KeyKey(tag(n)), 0).
		Expecting(store.NameKey(name), 0)
}

func TestConformance(t *testing.T) {
	cli := shared(t).Client(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return newStore(t, cli, freshPrefix(t))
	})
}

// TestConformancePaged runs the suite with a page size of one record, so
// every Load reads many pages at one revision.
func TestConformancePaged(t *testing.T) {
	if testing.Short() {
		t.Skip("the paged run repeats the suite")
	}
	cli := shared(t).Client(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return newStore(t, cli, freshPrefix(t), etcdstore.WithPageSize(1))
	})
}

func TestNewRefusesBadArguments(t *testing.T) {
	cli := shared(t).Client(t)
	ctx := context.Background()
	for name, prefix := range map[string]string{"empty": "", "no slash": "pocketkms", "slash inside only": "a/b"} {
		if _, err := etcdstore.New(ctx, cli, prefix); err == nil {
			t.Errorf("%s: New accepted prefix %q", name, prefix)
		}
	}
	if _, err := etcdstore.New(ctx, nil, "p/"); err == nil {
		t.Error("New accepted a nil client")
	}
	for name, o := range map[string]etcdstore.Option{"timeout": etcdstore.WithTimeout(-1), "page": etcdstore.WithPageSize(0)} {
		if _, err := etcdstore.New(ctx, cli, "p/", o); err == nil {
			t.Errorf("%s: New accepted a bad option", name)
		}
	}
}

// TestPrefixesIsolated: two stores on one cluster under different prefixes
// see neither each other's records nor each other's commits.
func TestPrefixesIsolated(t *testing.T) {
	ctx := context.Background()
	cli := shared(t).Client(t)
	base := freshPrefix(t)
	a := newStore(t, cli, base+"a/")
	b := newStore(t, cli, base+"ab/") // "a/" is not a prefix of "ab/"
	start, err := b.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, createKey(1, "only-a")); err != nil {
		t.Fatal(err)
	}
	// The same tag and name under b's prefix: no conflict with a.
	rb, err := b.Apply(ctx, createKey(1, "only-a"))
	if err != nil {
		t.Fatalf("b's create conflicts with a's records: %v", err)
	}
	rb2, err := b.Apply(ctx, createKey(2, "only-b"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := a.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ca.Keys) != 1 || ca.Names["only-a"] != tag(1) || len(ca.Names) != 1 {
		t.Fatalf("a loads %d keys, names %v", len(ca.Keys), ca.Names)
	}
	// b's feed carries b's commits only.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var revs []int64
	err = b.Watch(wctx, start.Rev, func(c store.Commit) {
		revs = append(revs, c.Rev)
		if c.Rev >= rb2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || len(revs) != 2 || revs[0] != rb || revs[1] != rb2 {
		t.Fatalf("b's feed: revisions %v (want %d, %d), %v", revs, rb, rb2, err)
	}
}

// TestWatchCompacted: a watch from a revision the cluster compacted away
// fails with store.ErrResync, and a Load gives the revision to go on from.
func TestWatchCompacted(t *testing.T) {
	ctx := context.Background()
	cli := shared(t).Client(t)
	s := newStore(t, cli, freshPrefix(t))
	c, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, createKey(1, "before")); err != nil {
		t.Fatal(err)
	}
	head, err := s.Apply(ctx, createKey(2, "head"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, head, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n := 0
	err = s.Watch(wctx, c.Rev, func(store.Commit) { n++ })
	if !errors.Is(err, store.ErrResync) || n != 0 {
		t.Fatalf("Watch from a compacted revision: %v after %d commits, want ErrResync", err, n)
	}
	c2, err := s.Load(ctx)
	if err != nil || len(c2.Keys) != 2 || c2.Rev < head {
		t.Fatalf("Load after compaction: %v keys at rev %v, %v", c2, head, err)
	}
	// From the reloaded revision the feed works again.
	r3, err := s.Apply(ctx, createKey(3, "after"))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Watch(wctx, c2.Rev, func(c store.Commit) {
		if c.Rev == r3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch after reload: %v", err)
	}
}

// TestForeignKey: a key under the prefix that is not a pocketkms record
// (another program's data) fails Load and the feed with ErrCorrupt naming
// it; the store's own bookkeeping (m/) is passed over.
func TestForeignKey(t *testing.T) {
	ctx := context.Background()
	cli := shared(t).Client(t)
	prefix := freshPrefix(t)
	s := newStore(t, cli, prefix)
	if _, err := s.Apply(ctx, createKey(1, "mine")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, prefix+"m/leader/1234", "bookkeeping"); err != nil {
		t.Fatal(err)
	}
	c, err := s.Load(ctx)
	if err != nil || len(c.Keys) != 1 {
		t.Fatalf("Load with bookkeeping beside the records: %v", err)
	}
	if _, err := cli.Put(ctx, prefix+"config/app.yaml", "listen: :8080"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Load(ctx)
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), `"config/app.yaml"`) {
		t.Fatalf("Load with a foreign key = %v, want ErrCorrupt naming the key", err)
	}
	t.Logf("Load: %v", err)

	// The feed refuses a foreign key as it arrives.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Watch(wctx, c.Rev, func(store.Commit) {}) }()
	if err := <-errc; !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Watch over a foreign key = %v, want ErrCorrupt", err)
	}
}

// TestDamagedFrame: a record whose frame fails (a flipped byte, a record
// copied under another key) is ErrCorrupt on Load and on the feed.
func TestDamagedFrame(t *testing.T) {
	ctx := context.Background()
	cli := shared(t).Client(t)
	for name, damage := range map[string]func(prefix string, raw []byte) (string, string){
		"flipped byte": func(prefix string, raw []byte) (string, string) {
			b := append([]byte(nil), raw...)
			b[len(b)/2] ^= 0x01
			return prefix + store.KeyKey(tag(1)), string(b)
		},
		"moved": func(prefix string, raw []byte) (string, string) {
			return prefix + store.KeyKey(tag(2)), string(raw)
		},
		"truncated": func(prefix string, raw []byte) (string, string) {
			return prefix + store.KeyKey(tag(1)), string(raw[:3])
		},
	} {
		t.Run(name, func(t *testing.T) {
			prefix := freshPrefix(t)
			s := newStore(t, cli, prefix)
			rev, err := s.Apply(ctx, createKey(1, "framed"))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := cli.Get(ctx, prefix+store.KeyKey(tag(1)))
			if err != nil || len(resp.Kvs) != 1 {
				t.Fatalf("raw read: %v", err)
			}
			k, v := damage(prefix, resp.Kvs[0].Value)
			if _, err := cli.Put(ctx, k, v); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Load(ctx); !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("Load = %v, want ErrCorrupt", err)
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := s.Watch(wctx, rev, func(store.Commit) {}); !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("Watch = %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestApplyNamesEveryKeyOnce: a change that puts a key twice, or puts and
// deletes one, is one valid transaction (etcd refuses a key named twice):
// the last put wins over earlier puts and over deletes.
func TestApplyNamesEveryKeyOnce(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, shared(t).Client(t), freshPrefix(t))
	c := createKey(1, "twice")
	c.Put(&store.NameRecord{Name: "twice", Tag: tag(1)}).Delete(store.NameKey("twice"), store.ACLKey(tag(1)))
	if _, err := s.Apply(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx)
	if err != nil || got.Names["twice"] != tag(1) {
		t.Fatalf("Load: %v, %v", got, err)
	}
}

// TestWatchGroupsOneTransaction: the records of one Apply arrive as one
// commit at the Apply's revision, the Store's own and other writers'.
func TestWatchGroupsOneTransaction(t *testing.T) {
	ctx := context.Background()
	cli := shared(t).Client(t)
	prefix := freshPrefix(t)
	s := newStore(t, cli, prefix)
	other := newStore(t, shared(t).Client(t), prefix)
	c, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	got := make(chan store.Commit, 10)
	done := make(chan error, 1)
	go func() { done <- s.Watch(wctx, c.Rev, func(c store.Commit) { got <- c }) }()
	r1, err := other.Apply(ctx, createKey(1, "grouped"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-got:
		if c.Rev != r1 || len(c.Puts) != 3 || len(c.Deletes) != 0 {
			t.Fatalf("commit %+v, want 3 puts at %d", c, r1)
		}
	case err := <-done:
		t.Fatalf("Watch ended: %v", err)
	}
	s.Close()
	if err := <-done; !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Watch after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Load(ctx); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Load after Close = %v, want ErrClosed", err)
	}
}

// TestClusterDown: with no member reachable, New, Load and Apply return
// within their deadline with ErrUnavailable (Apply also ErrUncertain);
// nothing hangs.
func TestClusterDown(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	s := newStore(t, cli, "down/")
	c.Close()

	check := func(what string, err error, took time.Duration, uncertain bool) {
		t.Helper()
		if !errors.Is(err, etcdstore.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s on a cluster that is down = %v, want ErrUnavailable", what, err)
		}
		if errors.Is(err, store.ErrUncertain) != uncertain {
			t.Errorf("%s: ErrUncertain is %v, want %v (%v)", what, !uncertain, uncertain, err)
		}
		if took > 3*time.Second {
			t.Errorf("%s took %v with a 500ms deadline", what, took)
		}
	}
	deadline := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 500*time.Millisecond)
	}

	ctx, cancel := deadline()
	start := time.Now()
	_, err := etcdstore.New(ctx, cli, "down/")
	check("New", err, time.Since(start), false)
	cancel()

	ctx, cancel = deadline()
	start = time.Now()
	_, err = s.Load(ctx)
	check("Load", err, time.Since(start), false)
	cancel()

	ctx, cancel = deadline()
	start = time.Now()
	_, err = s.Apply(ctx, createKey(1, "lost"))
	check("Apply", err, time.Since(start), true)
	cancel()

	// The Store's own timeout bounds a request whose context has none.
	s2, err := etcdstore.New(context.Background(), cli, "down/", etcdstore.WithTimeout(300*time.Millisecond))
	if err == nil {
		s2.Close()
	}
	if !errors.Is(err, etcdstore.ErrUnavailable) {
		t.Errorf("New with WithTimeout on a cluster that is down = %v", err)
	}
}
