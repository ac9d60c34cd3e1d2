package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// electionPrefix is where Lead's candidates register, under the store's
// bookkeeping prefix.
const electionPrefix = metaPrefix + "leader/"

// DefaultLeaseTTL is how long after its last keep-alive a leader that
// died is replaced.
const DefaultLeaseTTL = 10 * time.Second

// LeadOption configures Lead.
type LeadOption func(*leadConfig) error

type leadConfig struct {
	ttl time.Duration
	id  string
}

// WithLeaseTTL sets the lease of a leader's candidacy, in whole seconds
// (default DefaultLeaseTTL): a leader whose process dies, or that loses
// the cluster, is replaced this long after its last keep-alive.
func WithLeaseTTL(d time.Duration) LeadOption {
	return func(c *leadConfig) error {
		if d < time.Second || d%time.Second != 0 {
			return errors.New("WithLeaseTTL: the lease must be whole seconds, at least one")
		}
		c.ttl = d
		return nil
	}
}

// WithCandidateID sets the value a candidate announces in the election
// (default: host name and process id), for operators reading etcd.
func WithCandidateID(id string) LeadOption {
	return func(c *leadConfig) error {
		if id == "" {
			return errors.New("WithCandidateID: empty id")
		}
		c.id = id
		return nil
	}
}

// Lead runs job, every interval, on exactly one of the processes that
// call Lead with clients of one cluster and the same prefix: the one
// elected (go.etcd.io/etcd/client/v3/concurrency, a session lease and an
// election under <prefix>m/leader/). The others wait and take over when
// the leader stops or dies. It is how replicas run the Engine's
// background work once: open every Engine with
// kms.WithMaintenanceInterval(0) and call, on each replica,
//
//	go etcdstore.Lead(ctx, cli, prefix, time.Minute, func(ctx context.Context) {
//		if err := e.Maintain(ctx); err != nil {
//			log.Printf("maintenance: %v", err)
//		}
//	})
//
// job gets a context that ends when the leadership does (the lease is
// lost, the candidacy is removed, ctx ends); it should return soon after.
// That context also fences the leader's writes: an Apply made with it (the
// Engine passes Maintain's context down to its commits) commits only
// while the candidacy that won still stands, and fails with
// ErrNotLeader, writing nothing, once a successor may have been elected;
// a leader that was paused or cut off cannot overwrite its successor's
// work. Work done outside the store before the commit (destroying backend
// material) is not fenced: see the package documentation's # Limitations.
//
// Lead runs until ctx ends, then resigns so a successor takes over at
// once, and returns ctx's error. It retries a cluster that does not
// answer, every second or so. It fails at once only on bad arguments.
func Lead(ctx context.Context, cli *clientv3.Client, prefix string, interval time.Duration, job func(context.Context), opts ...LeadOption) error {
	switch {
	case cli == nil:
		return errors.New("etcdstore: Lead: nil client")
	case prefix == "" || !strings.HasSuffix(prefix, "/"):
		return fmt.Errorf("etcdstore: Lead: prefix %q must be non-empty and end in '/'", prefix)
	case interval <= 0:
		return errors.New("etcdstore: Lead: the interval must be positive")
	case job == nil:
		return errors.New("etcdstore: Lead: nil job")
	}
	host, _ := os.Hostname()
	cfg := leadConfig{ttl: DefaultLeaseTTL, id: fmt.Sprintf("%s/%d", host, os.Getpid())}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return fmt.Errorf("etcdstore: %w", err)
		}
	}
	for ctx.Err() == nil {
		if err := leadOnce(ctx, cli, prefix, interval, job, cfg); err != nil && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return ctx.Err()
}

// leadOnce campaigns with a new session, and runs job while elected. It
// returns when the leadership or the session ends.
func leadOnce(ctx context.Context, cli *clientv3.Client, prefix string, interval time.Duration, job func(context.Context), cfg leadConfig) error {
	// The session outlives ctx so that its Close can still revoke the
	// lease: a successor then takes over at once instead of after the TTL.
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(int(cfg.ttl/time.Second)), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return err
	}
	defer sess.Close()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	el := concurrency.NewElection(sess, prefix+electionPrefix)
	if err := el.Campaign(cctx, cfg.id); err != nil {
		return err
	}
	// Elected. The leadership lasts while the candidacy's key stands.
	lctx, lcancel := context.WithCancel(withFence(cctx, fence{prefix: prefix, key: el.Key(), rev: el.Rev()}))
	defer lcancel()
	go watchCandidacy(lctx, cli, el.Key(), el.Rev(), lcancel)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		job(lctx)
		select {
		case <-lctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// watchCandidacy ends the leadership (stop) when the candidacy's key is
// deleted or can no longer be watched.
func watchCandidacy(ctx context.Context, cli *clientv3.Client, key string, rev int64, stop context.CancelFunc) {
	defer stop()
	for wr := range cli.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithRev(rev+1)) {
		if wr.Err() != nil || wr.Canceled {
			return
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return
			}
		}
	}
}

// fence is an elected leader's candidacy: Apply made under it commits only
// while the key still has the create revision it won with.
type fence struct {
	prefix, key string
	rev         int64
}

type fenceKey struct{}

func withFence(ctx context.Context, f fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// fenceOf returns the fence ctx carries for a store under prefix.
func fenceOf(ctx context.Context, prefix string) (fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(fence)
	return f, ok && f.prefix == prefix
}
