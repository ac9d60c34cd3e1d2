package etcdstore_test

// Several Engines, each with its own client, store and memory backend
// under one root key, on one etcd cluster: the replicas of an application.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/etcdtest"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/store"
	etcdstore "github.com/pocketkms/kms/store/etcd"
)

// rootKey is the memory backend's root key every replica shares.
var rootKey = []byte("0123456789abcdef0123456789abcdef")

// newEngine opens an Engine on the cluster under prefix, with a client of
// its own, closed (Engine first, then client) in t.Cleanup.
func newEngine(t *testing.T, c *etcdtest.Cluster, prefix string) *kms.Engine {
	t.Helper()
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := etcdstore.New(ctx, cli, prefix)
	if err != nil {
		t.Fatal(err)
	}
	be, err := memory.New(rootKey)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kms.New(ctx, be, kms.WithStore(st), kms.WithMaintenanceInterval(0))
	if err != nil {
		st.Close()
		be.Close()
		t.Fatalf("kms.New: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Engine.Close: %v", err)
		}
	})
	return e
}

func newEngines(t *testing.T, c *etcdtest.Cluster, n int, prefix string) []*kms.Engine {
	t.Helper()
	es := make([]*kms.Engine, n)
	for i := range es {
		es[i] = newEngine(t, c, prefix)
	}
	return es
}

// within polls cond every 200µs until it holds or limit passes, and
// returns how long it took.
func within(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("not within %v: %s", limit, what)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return time.Since(start)
}

// keyView is everything an Engine tells about one key.
type keyView struct {
	Key       *kms.Key
	Versions  []kms.KeyVersion
	ACL       *kms.ACL
	Generator *kms.TokenGenerator
	Limit     *kms.KeyRateLimit
}

func viewKey(ctx context.Context, e *kms.Engine, tag string) (keyView, error) {
	var v keyView
	var errs [5]error
	v.Key, errs[0] = e.GetKey(ctx, tag)
	v.Versions, errs[1] = e.ListKeyVersions(ctx, tag)
	v.ACL, errs[2] = e.GetKeyACL(ctx, tag)
	v.Generator, errs[3] = e.GetTokenGenerator(ctx, tag)
	v.Limit, errs[4] = e.GetKeyRateLimit(ctx, tag)
	return v, errors.Join(errs[:]...)
}

// view is an Engine's whole view, as JSON for comparison, in tag order
// (ListKeys orders by creation sequence, which keys created at once on
// different Engines may share).
func view(ctx context.Context, e *kms.Engine) (string, error) {
	var all []keyView
	for page := 0; ; page++ {
		p, err := e.ListKeys(ctx, kms.ListKeysRequest{PageNo: page, PageSize: 200})
		if err != nil {
			return "", err
		}
		for _, k := range p.Keys {
			v, err := viewKey(ctx, e, k.Tag)
			if err != nil {
				return "", err
			}
			all = append(all, v)
		}
		if (page+1)*200 >= p.TotalCount {
			break
		}
	}
	slices.SortFunc(all, func(x, y keyView) int { return strings.Compare(x.Key.Tag, y.Key.Tag) })
	b, err := json.Marshal(all)
	return string(b), err
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// TestEnginesShareChanges: on a 3-member cluster, three Engines: a key
// created on A reaches B and C; a token generator rotated on A refuses
// the old token on C within 1 s; 100 changes on A reach B and C with a
// p99 delay under 1 s (logged with the p50).
func TestEnginesShareChanges(t *testing.T) {
	ctx := context.Background()
	c := shared(t)
	es := newEngines(t, c, 3, freshPrefix(t))
	a, b, cc := es[0], es[1], es[2]

	k, err := a.CreateKey(ctx, kms.CreateKeyRequest{Name: "replicated", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	d := within(t, time.Second, "the new key reaches B and C", func() bool {
		_, errB := b.GetKey(ctx, k.Tag)
		_, errC := cc.GetKey(ctx, k.Tag)
		return errB == nil && errC == nil
	})
	t.Logf("create reached B and C in %v", d)
	ct, err := a.Encrypt(ctx, k.Tag, []byte("from A"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := cc.Decrypt(ctx, k.Tag, ct, nil); err != nil || string(pt) != "from A" {
		t.Fatalf("C decrypts A's ciphertext: %q, %v", pt, err)
	}

	// A token issued on A works on C until A rotates the generator.
	if _, err := a.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := a.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	caller := netip.MustParseAddr("127.0.0.1")
	within(t, time.Second, "the generator reaches C", func() bool {
		_, err := cc.WithToken(set.Access, caller).Encrypt(ctx, k.Tag, []byte("x"), nil)
		return err == nil
	})
	if _, err := a.RotateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	d = within(t, time.Second, "the rotated generator refuses the old token on C", func() bool {
		_, err := cc.WithToken(set.Access, caller).Encrypt(ctx, k.Tag, []byte("x"), nil)
		return errors.Is(err, kms.ErrTokenInvalid)
	})
	t.Logf("generator rotation refused the old token on C after %v", d)

	// 100 changes of every kind on A; each waits until B's and C's view of
	// the key equals A's.
	const n = 100
	delays := make([]time.Duration, 0, n)
	commits := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		var err error
		switch i % 10 {
		case 0:
			memo := fmt.Sprintf("change %d", i)
			_, err = a.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{Memo: &memo})
		case 1:
			_, err = a.AddAllowedIPs(ctx, k.Tag, []string{fmt.Sprintf("10.0.%d.0/24", i)})
		case 2, 7:
			_, err = a.RotateTokenGenerator(ctx, k.Tag)
		case 3, 8:
			_, err = a.DisableKey(ctx, k.Tag)
		case 4, 9:
			_, err = a.EnableKey(ctx, k.Tag)
		case 5:
			_, err = a.RotateKey(ctx, k.Tag)
		case 6:
			_, err = a.SetKeyACLEnabled(ctx, k.Tag, i%20 == 6)
		}
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		acked := time.Now()
		commits = append(commits, acked.Sub(start))
		want, err := viewKey(ctx, a, k.Tag)
		if err != nil {
			t.Fatal(err)
		}
		wantJSON, _ := json.Marshal(want)
		for !sameKey(ctx, b, k.Tag, wantJSON) || !sameKey(ctx, cc, k.Tag, wantJSON) {
			if time.Since(acked) > 5*time.Second {
				t.Fatalf("change %d did not reach B and C within 5s", i)
			}
			time.Sleep(200 * time.Microsecond)
		}
		delays = append(delays, time.Since(acked))
	}
	p50, p99 := percentile(delays, 0.50), percentile(delays, 0.99)
	t.Logf("%d members, %d changes: commit p50 %v p99 %v; propagation to both other Engines after the ack: p50 %v p99 %v max %v",
		c.Size(), n, percentile(commits, 0.5), percentile(commits, 0.99), p50, p99, slices.Max(delays))
	if p99 >= time.Second {
		t.Errorf("propagation p99 %v, want under 1s", p99)
	}
}

func sameKey(ctx context.Context, e *kms.Engine, tag string, want []byte) bool {
	v, err := viewKey(ctx, e, tag)
	if err != nil {
		return false
	}
	got, _ := json.Marshal(v)
	return string(got) == string(want)
}

// TestEnginesCreateRace: creates of one name on three Engines at once:
// exactly one wins, the others fail with ErrAlreadyExists.
func TestEnginesCreateRace(t *testing.T) {
	ctx := context.Background()
	es := newEngines(t, shared(t), 3, freshPrefix(t))
	for round := range 10 {
		name := fmt.Sprintf("race%d", round)
		var wg sync.WaitGroup
		errs := make([]error, len(es))
		tags := make([]string, len(es))
		for i, e := range es {
			wg.Go(func() {
				k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: name, Type: kms.AES256})
				if err == nil {
					tags[i] = k.Tag
				}
				errs[i] = err
			})
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won >= 0:
				t.Fatalf("round %d: Engines %d and %d both created %q", round, won, i, name)
			case err == nil:
				won = i
			case !errors.Is(err, kms.ErrAlreadyExists):
				t.Fatalf("round %d: a losing create failed with %v, want ErrAlreadyExists", round, err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: no create won: %v", round, errs)
		}
		for _, e := range es {
			within(t, 5*time.Second, "the winner reaches every Engine", func() bool {
				k, err := e.GetKey(ctx, tags[won])
				return err == nil && k.Name == name
			})
		}
	}
}

// TestEnginesNoLostUpdate: three Engines rotating one key at once lose no
// rotation: every call lands or fails with ErrConflict (after the Engine
// decided again on the winner's state), and the versions stored are the
// ones acknowledged.
func TestEnginesNoLostUpdate(t *testing.T) {
	ctx := context.Background()
	es := newEngines(t, shared(t), 3, freshPrefix(t))
	k, err := es[0].CreateKey(ctx, kms.CreateKeyRequest{Name: "contended", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		within(t, 5*time.Second, "the key reaches every Engine", func() bool { _, err := e.GetKey(ctx, k.Tag); return err == nil })
	}
	var (
		mu      sync.Mutex
		landed  = []uint32{1}
		refused int
		wg      sync.WaitGroup
	)
	for _, e := range es {
		wg.Go(func() {
			for range 10 {
				v, err := e.RotateKey(ctx, k.Tag)
				mu.Lock()
				switch {
				case err == nil:
					landed = append(landed, v.Version)
				case errors.Is(err, kms.ErrConflict):
					refused++
				default:
					t.Errorf("rotate: %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(landed)
	for i, v := range landed {
		if v != uint32(i+1) {
			t.Fatalf("acknowledged versions %v: not 1..%d", landed, len(landed))
		}
	}
	t.Logf("%d rotations landed, %d refused after losing races", len(landed)-1, refused)
	for i, e := range es {
		within(t, 5*time.Second, fmt.Sprintf("Engine %d has every rotation", i), func() bool {
			vs, err := e.ListKeyVersions(ctx, k.Tag)
			return err == nil && len(vs) == len(landed)
		})
	}
}

// TestEngineClusterDownAtStart: kms.New on a store whose cluster is down
// returns an error within the caller's deadline instead of hanging.
func TestEngineClusterDownAtStart(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	st, err := etcdstore.New(context.Background(), cli, "down/")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c.Close()
	be, err := memory.New(rootKey)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	e, err := kms.New(ctx, be, kms.WithStore(st))
	took := time.Since(start)
	if err == nil {
		e.Close()
		t.Fatal("kms.New succeeded with the cluster down")
	}
	if !errors.Is(err, etcdstore.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("kms.New = %v, want ErrUnavailable and the deadline", err)
	}
	if took > 3*time.Second {
		t.Errorf("kms.New took %v with a 1s deadline", took)
	}
	t.Logf("kms.New failed after %v: %v", took, err)
}

// model is what the workload knows of one key from acknowledged changes,
// each checked against the store at the end. It holds only facts that a
// stale Engine cannot fake: changes that always write (a new version, a
// new allow-list entry, a unique memo, name or rate limit, a generator
// rotation) conflict on a stale snapshot and are decided again on the
// fresh one, while "set to what it already is" changes (enable, disable,
// activate, deactivate, the allow-list switch) are acknowledged without a
// write when the Engine's snapshot already shows the state asked for, so
// they prove nothing about the store when another Engine's change is
// still on its way (see the package documentation's # Concurrency).
type model struct {
	tag      string
	versions []uint32 // every acknowledged rotation: never lost
	ips      []string // every acknowledged allow-list entry: never removed
	// The last acknowledged value of each kind of always-writing change;
	// nil after a change of that kind whose outcome was uncertain (or, for
	// the generator, after any other generator change).
	name, memo *string
	genID      *string
	limit      *ratelimit.Limit
}

// workload counts what happened in TestEnginesMixedWorkload.
type workload struct {
	acked, refused, conflicts, unseen, uncertain atomic.Int64
}

// TestEnginesMixedWorkload: 1,000 mixed changes (100 under -short) through
// random Engines, from three workers at once; with 3 members, the leader
// is killed a third of the way in and restarted at two thirds. Then every
// Engine's view equals what a fresh Engine loads, and no acknowledged
// change is lost.
func TestEnginesMixedWorkload(t *testing.T) {
	ctx := context.Background()
	members, n := 3, 1000
	if testing.Short() {
		members, n = 1, 100
	}
	c := etcdtest.Start(t, members)
	prefix := "mixed/"
	es := newEngines(t, c, 3, prefix)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	var (
		done    atomic.Int64
		w       workload
		wg      sync.WaitGroup
		mu      sync.Mutex
		models  []*model
		pending []string // names of creates whose outcome is unknown
	)
	const workers = 3
	start := time.Now()
	for wk := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(wk)))
			var mine []*model
			for i := 0; done.Add(1) <= int64(n); i++ {
				e := es[rng.IntN(len(es))]
				uniq := fmt.Sprintf("w%dc%d", wk, i)
				if len(mine) < 4 || rng.IntN(20) == 0 {
					k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: uniq, Type: []kms.KeyType{kms.AES256, kms.ECDSA}[rng.IntN(2)]})
					switch outcome(t, &w, err) {
					case acked:
						empty := ""
						mine = append(mine, &model{tag: k.Tag, versions: []uint32{1}, name: &k.Name, memo: &empty, genID: &empty})
					case uncertain:
						mu.Lock()
						pending = append(pending, uniq)
						mu.Unlock()
					}
					continue
				}
				change(ctx, t, &w, rng, e, mine[rng.IntN(len(mine))], wk, i)
			}
			mu.Lock()
			models = append(models, mine...)
			mu.Unlock()
		})
	}
	if members == 3 {
		wg.Go(func() { killLeader(t, c, &done, n) })
	}
	wg.Wait()
	t.Logf("%d changes in %v: %d acknowledged, %d refused by state, %d lost races, %d on a key the Engine had not seen yet, %d uncertain",
		n, time.Since(start).Round(time.Millisecond), w.acked.Load(), w.refused.Load(), w.conflicts.Load(), w.unseen.Load(), w.uncertain.Load())

	// Every Engine converges on what a fresh Engine loads.
	fresh := newEngine(t, c, prefix)
	want, err := view(ctx, fresh)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		start := time.Now()
		for {
			got, err := view(ctx, e)
			if err == nil && got == want {
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("Engine %d's view differs from the store's after 10s (%v):\n%s\nstore:\n%s", i, err, got, want)
			}
			time.Sleep(time.Millisecond)
		}
		t.Logf("Engine %d equal to the store's view after %v", i, time.Since(start))
	}

	// No acknowledged change is lost.
	checked := 0
	known := map[string]bool{}
	for _, m := range models {
		known[m.tag] = true
		got, err := viewKey(ctx, fresh, m.tag)
		if err != nil {
			t.Errorf("acknowledged key %s: %v", m.tag, err)
			continue
		}
		var stored []uint32
		for _, v := range got.Versions {
			stored = append(stored, v.Version)
		}
		for _, v := range m.versions {
			checked++
			if !slices.Contains(stored, v) || got.Key.CurrentVersion < v {
				t.Errorf("key %s: acknowledged version %d lost (stored %v, current %d)", m.tag, v, stored, got.Key.CurrentVersion)
			}
		}
		for _, ip := range m.ips {
			checked++
			if !slices.Contains(got.ACL.Entries, ip) {
				t.Errorf("key %s: acknowledged allow-list entry %s lost", m.tag, ip)
			}
		}
		for what, pair := range map[string][2]*string{"name": {m.name, &got.Key.Name}, "memo": {m.memo, &got.Key.Memo}, "generator id": {m.genID, &got.Generator.ID}} {
			if pair[0] != nil {
				checked++
				if *pair[0] != *pair[1] {
					t.Errorf("key %s: stored %s %q, acknowledged %q", m.tag, what, *pair[1], *pair[0])
				}
			}
		}
		if m.limit != nil {
			checked++
			if !got.Limit.Own || got.Limit.Limit != *m.limit {
				t.Errorf("key %s: stored limit %+v, acknowledged %+v", m.tag, got.Limit, m.limit)
			}
		}
	}
	// Keys nobody acknowledged may exist only from uncertain creates.
	page, err := fresh.ListKeys(ctx, kms.ListKeysRequest{PageSize: 200})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range page.Keys {
		if !known[k.Tag] && !slices.Contains(pending, k.Name) {
			t.Errorf("stored key %s (%s) was neither acknowledged nor uncertain", k.Tag, k.Name)
		}
	}
	t.Logf("%d keys, %d acknowledged facts checked against the store", len(models), checked)
}

// killLeader kills the cluster's leader when a third of the changes are
// done and restarts it at two thirds.
func killLeader(t *testing.T, c *etcdtest.Cluster, done *atomic.Int64, n int) {
	for done.Load() < int64(n/3) {
		time.Sleep(time.Millisecond)
	}
	leader := leaderIndex(t, c)
	start := time.Now()
	c.Kill(leader)
	t.Logf("killed member %d (the leader) after %d changes, in %v", leader, done.Load(), time.Since(start))
	for done.Load() < int64(2*n/3) {
		time.Sleep(time.Millisecond)
	}
	if err := c.Restart(leader); err != nil {
		t.Errorf("restart: %v", err)
		return
	}
	t.Logf("restarted member %d after %d changes", leader, done.Load())
}

// leaderIndex returns the index of the member that leads the cluster.
func leaderIndex(t *testing.T, c *etcdtest.Cluster) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cli, err := etcdtest.NewClient(c.Endpoints()...)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer cli.Close()
	for i := range c.Size() {
		st, err := cli.Status(ctx, c.Endpoint(i))
		if err == nil && st.Leader == st.Header.MemberId {
			return i
		}
	}
	return 0
}

// The outcomes of a change.
const (
	acked     = "acked"
	refused   = "refused"
	uncertain = "uncertain"
)

// outcome classifies the result of a change.
func outcome(t *testing.T, w *workload, err error) string {
	switch {
	case err == nil:
		w.acked.Add(1)
		return acked
	case errors.Is(err, store.ErrUncertain) || errors.Is(err, etcdstore.ErrUnavailable):
		w.uncertain.Add(1)
		return uncertain
	case errors.Is(err, kms.ErrConflict):
		w.conflicts.Add(1)
		return refused
	case errors.Is(err, kms.ErrKeyNotFound):
		// A key created through another Engine a moment ago: the feed
		// has not brought it to this one yet.
		w.unseen.Add(1)
		return refused
	case errors.Is(err, kms.ErrInvalidState), errors.Is(err, kms.ErrKeyNotEnabled),
		errors.Is(err, kms.ErrVersionLimit), errors.Is(err, kms.ErrAlreadyExists):
		w.refused.Add(1)
		return refused
	}
	t.Errorf("unexpected error: %v", err)
	return refused
}

// change makes one random change to m's key through e and updates m;
// worker wk's change i makes unique values from (wk, i).
func change(ctx context.Context, t *testing.T, w *workload, rng *rand.Rand, e *kms.Engine, m *model, wk, i int) {
	uniq := fmt.Sprintf("w%dc%d", wk, i)
	var (
		err   error
		after func() // records an acknowledged change in m
		lost  func() // forgets what an uncertain change may have overwritten
	)
	switch rng.IntN(10) {
	case 0:
		var k *kms.Key
		k, err = e.UpdateKey(ctx, m.tag, kms.UpdateKeyRequest{Memo: &uniq})
		after, lost = func() { m.memo = &k.Memo }, func() { m.memo = nil }
	case 1:
		var k *kms.Key
		k, err = e.UpdateKey(ctx, m.tag, kms.UpdateKeyRequest{Name: &uniq})
		after, lost = func() { m.name = &k.Name }, func() { m.name = nil }
	case 2:
		if rng.IntN(2) == 0 {
			_, err = e.DisableKey(ctx, m.tag)
		} else {
			_, err = e.EnableKey(ctx, m.tag)
		}
	case 3:
		if rng.IntN(2) == 0 {
			_, err = e.RequestKeyDeletion(ctx, m.tag)
		} else {
			_, err = e.CancelKeyDeletion(ctx, m.tag)
		}
	case 4:
		var v *kms.KeyVersion
		v, err = e.RotateKey(ctx, m.tag)
		after = func() { m.versions = append(m.versions, v.Version) }
	case 5:
		_, err = e.SetKeyACLEnabled(ctx, m.tag, rng.IntN(2) == 0)
	case 6:
		ip := fmt.Sprintf("10.%d.%d.%d", wk, i/256, i%256)
		_, err = e.AddAllowedIPs(ctx, m.tag, []string{ip})
		after = func() { m.ips = append(m.ips, ip) }
	case 7:
		var g *kms.TokenGenerator
		g, err = e.RotateTokenGenerator(ctx, m.tag)
		after, lost = func() { m.genID = &g.ID }, func() { m.genID = nil }
	case 8:
		if rng.IntN(2) == 0 {
			_, err = e.ActivateTokenGenerator(ctx, m.tag)
		} else {
			_, err = e.DeactivateTokenGenerator(ctx, m.tag)
		}
		// Either may be acknowledged without a write (see model).
		if err == nil {
			m.genID = nil
		}
		lost = func() { m.genID = nil }
	case 9:
		l := ratelimit.Limit{Rate: float64(1 + wk*100_000 + i), Burst: 1 + rng.IntN(500)}
		err = e.SetKeyRateLimit(ctx, m.tag, l)
		after, lost = func() { m.limit = &l }, func() { m.limit = nil }
	}
	switch outcome(t, w, err) {
	case acked:
		if after != nil {
			after()
		}
	case uncertain:
		if lost != nil {
			lost()
		}
	}
}
