package etcdstore_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/testclock"
	etcdstore "github.com/pocketkms/kms/store/etcd"
)

// candidate is one process calling Lead.
type candidate struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan error
	runs   atomic.Int64
}

// TestLeadOneAtATime: of three candidates exactly one runs the job; when
// it resigns another takes over at once, and when its process dies (its
// client goes without resigning) another takes over after the lease.
func TestLeadOneAtATime(t *testing.T) {
	c := shared(t)
	prefix := freshPrefix(t)
	var running atomic.Int32
	cands := make([]*candidate, 3)
	for i := range cands {
		cli, err := c.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cd := &candidate{cli: cli, cancel: cancel, done: make(chan error, 1)}
		cands[i] = cd
		go func() {
			cd.done <- etcdstore.Lead(ctx, cli, prefix, 10*time.Millisecond, func(ctx context.Context) {
				if running.Add(1) != 1 {
					t.Error("two leaders ran the job at once")
				}
				cd.runs.Add(1)
				time.Sleep(2 * time.Millisecond)
				running.Add(-1)
			}, etcdstore.WithLeaseTTL(time.Second))
		}()
		t.Cleanup(func() {
			cancel()
			<-cd.done
			cli.Close()
		})
	}
	leader := func(exclude ...*candidate) *candidate {
		t.Helper()
		before := make([]int64, len(cands))
		for i, cd := range cands {
			before[i] = cd.runs.Load()
		}
		time.Sleep(200 * time.Millisecond)
		var l *candidate
		for i, cd := range cands {
			if cd.runs.Load() > before[i] {
				if l != nil {
					t.Fatal("two candidates ran the job in one window")
				}
				l = cd
			}
		}
		return l
	}
	var first *candidate
	start := time.Now()
	for first == nil && time.Since(start) < 10*time.Second {
		first = leader()
	}
	if first == nil {
		t.Fatal("no candidate was elected within 10s")
	}

	// The leader resigns (its ctx ends): another takes over at once.
	first.cancel()
	if err := <-first.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Lead returned %v, want the context's error", err)
	}
	first.done <- context.Canceled // for the cleanup
	start = time.Now()
	var second *candidate
	for second == nil && time.Since(start) < 5*time.Second {
		second = leader()
	}
	if second == nil || second == first {
		t.Fatal("no successor after the leader resigned")
	}
	t.Logf("successor after a resignation ran within %v", time.Since(start).Round(time.Millisecond))

	// The new leader's process dies: its client goes, its lease stays
	// until the TTL (1s) runs out.
	second.cli.Close()
	start = time.Now()
	var third *candidate
	for (third == nil || third == second) && time.Since(start) < 10*time.Second {
		third = leader()
	}
	if third == nil || third == second || third == first {
		t.Fatal("no successor after the leader died")
	}
	t.Logf("successor after the leader died ran within %v (lease 1s)", time.Since(start).Round(time.Millisecond))
}

// TestLeadMaintainsOnce: three Engines with maintenance under Lead: a key
// due for auto-rotation is rotated once, and not again when the leader
// changes.
func TestLeadMaintainsOnce(t *testing.T) {
	bg := context.Background()
	c := shared(t)
	prefix := freshPrefix(t)
	clk := testclock.New(time.Now())
	var engines []*kms.Engine
	var maintained [3]atomic.Int64
	var cancels [3]context.CancelFunc
	for i := range 3 {
		cli := c.Client(t)
		st, err := etcdstore.New(bg, cli, prefix)
		if err != nil {
			t.Fatal(err)
		}
		be, err := memory.New(rootKey)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kms.New(bg, be, kms.WithStore(st), kms.WithMaintenanceInterval(0), kms.WithClock(clk))
		if err != nil {
			t.Fatal(err)
		}
		engines = append(engines, e)
		ctx, cancel := context.WithCancel(bg)
		cancels[i] = cancel
		done := make(chan error, 1)
		go func() {
			done <- etcdstore.Lead(ctx, cli, prefix, 10*time.Millisecond, func(ctx context.Context) {
				if err := e.Maintain(ctx); err != nil && ctx.Err() == nil {
					t.Errorf("Engine %d: Maintain: %v", i, err)
				}
				maintained[i].Add(1)
			}, etcdstore.WithLeaseTTL(time.Second))
		}()
		t.Cleanup(func() {
			cancel()
			<-done
			e.Close()
		})
	}
	k, err := engines[0].CreateKey(bg, kms.CreateKeyRequest{Name: "autorotated", Type: kms.AES256, AutoRotation: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range engines {
		within(t, 5*time.Second, "the key reaches every Engine", func() bool { _, err := e.GetKey(bg, k.Tag); return err == nil })
	}
	clk.Advance(kms.DefaultRotationPeriodDays*24*time.Hour + time.Minute)
	for _, e := range engines {
		within(t, 5*time.Second, "the leader rotates the key and every Engine sees it", func() bool {
			got, err := e.GetKey(bg, k.Tag)
			return err == nil && got.CurrentVersion == 2
		})
	}
	var leader int
	for i := range maintained {
		if maintained[i].Load() > maintained[leader].Load() {
			leader = i
		}
	}
	// The leader resigns; the successor's maintenance finds nothing due.
	cancels[leader]()
	before := [3]int64{}
	for i := range maintained {
		before[i] = maintained[i].Load()
	}
	within(t, 5*time.Second, "a successor runs maintenance", func() bool {
		for i := range maintained {
			if i != leader && maintained[i].Load() > before[i]+5 {
				return true
			}
		}
		return false
	})
	for i, e := range engines {
		got, err := e.GetKey(bg, k.Tag)
		if err != nil || got.CurrentVersion != 2 {
			t.Fatalf("Engine %d: version %d after the leader changed (%v), want 2", i, got.CurrentVersion, err)
		}
	}
}

func TestLeadRefusesBadArguments(t *testing.T) {
	cli := shared(t).Client(t)
	ctx := context.Background()
	job := func(context.Context) {}
	for name, err := range map[string]error{
		"nil client": etcdstore.Lead(ctx, nil, "p/", time.Second, job),
		"prefix":     etcdstore.Lead(ctx, cli, "p", time.Second, job),
		"interval":   etcdstore.Lead(ctx, cli, "p/", 0, job),
		"nil job":    etcdstore.Lead(ctx, cli, "p/", time.Second, nil),
		"ttl":        etcdstore.Lead(ctx, cli, "p/", time.Second, job, etcdstore.WithLeaseTTL(1500*time.Millisecond)),
		"id":         etcdstore.Lead(ctx, cli, "p/", time.Second, job, etcdstore.WithCandidateID("")),
	} {
		if err == nil || errors.Is(err, context.Canceled) {
			t.Errorf("%s: Lead = %v, want an argument error", name, err)
		}
	}
}
