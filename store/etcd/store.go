package etcdstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pocketkms/kms/store"
)

// Defaults of the options.
const (
	// DefaultTimeout bounds each request whose context has no earlier
	// deadline.
	DefaultTimeout = 10 * time.Second
	// DefaultPageSize is the number of records Load reads per request.
	DefaultPageSize = 1000
	// DefaultWatchCheck is how often Watch asks the cluster to prove the
	// watch alive (WithWatchCheck).
	DefaultWatchCheck = 2 * time.Second
	// DefaultMaxTxnOps is etcd's default --max-txn-ops, the most
	// operations of each kind (compares, writes) one transaction may hold.
	DefaultMaxTxnOps = 128
)

// metaPrefix holds the store's own bookkeeping beside the records (the
// leader election): Load and Watch pass over it.
const metaPrefix = "m/"

// Option configures a Store in New.
type Option func(*config) error

type config struct {
	timeout    time.Duration
	pageSize   int64
	watchCheck time.Duration
	maxTxnOps  int
	memberTTL  time.Duration // 0: no membership (WithoutMembership)
	memberID   string
}

// WithTimeout bounds every request to the cluster (New's check, each page
// of Load, each Apply) whose context has no earlier deadline; 0 leaves
// requests bounded by their context alone. The default is DefaultTimeout.
// An Apply that runs out of time fails with ErrUnavailable and
// store.ErrUncertain.
func WithTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return errors.New("WithTimeout: negative timeout")
		}
		c.timeout = d
		return nil
	}
}

// WithPageSize sets how many records Load reads per request (default
// DefaultPageSize). Every page is read at the revision of the first, so
// Load is one consistent snapshot whatever the size.
func WithPageSize(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return errors.New("WithPageSize: size must be at least 1")
		}
		c.pageSize = int64(n)
		return nil
	}
}

// WithWatchCheck sets how often Watch asks the cluster for a progress
// notification on its stream (default DefaultWatchCheck). A watch whose
// cluster has gone silent (every member down or cut off: etcd's client
// then waits for a connection without a word) gets no answer, and Watch
// fails with store.ErrResync after two checks; the Engine then reloads
// and counts its offline window (kms.WithStaleLimit). d must be positive.
func WithWatchCheck(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("WithWatchCheck: the interval must be positive")
		}
		c.watchCheck = d
		return nil
	}
}

// WithMaxTxnOps tells the Store the cluster's --max-txn-ops (default
// DefaultMaxTxnOps, etcd's default). A change that needs more operations
// of one kind fails with ErrChangeTooLarge before it is sent.
func WithMaxTxnOps(n int) Option {
	return func(c *config) error {
		if n < 8 {
			return errors.New("WithMaxTxnOps: at least 8 operations")
		}
		c.maxTxnOps = n
		return nil
	}
}

// Store keeps an Engine's state in etcd under a key prefix. It implements
// store.Store and store.Watcher. Make it with New.
type Store struct {
	cli    *clientv3.Client
	prefix string // ends in '/'
	end    string // the end of the prefix's range
	cfg    config

	done      chan struct{} // closed by Close
	closeOnce sync.Once

	members membership // see members.go
}

var (
	_ store.Store      = (*Store)(nil)
	_ store.Watcher    = (*Store)(nil)
	_ store.Membership = (*Store)(nil)
)

// New returns a Store keeping its records under prefix in the cluster cli
// is a client of. prefix must be non-empty and end in '/' (for example
// "pocketkms/orders/"), and no other program may write under it; Engines
// that share keys share a prefix, and Engines under different prefixes
// never see each other's keys.
//
// New makes one read under the prefix to prove that the cluster answers
// and lets this client read there, then registers the Store among the
// prefix's members (a lease and a key under <prefix>m/members/; see
// Members and WithoutMembership) and counts them; give ctx a deadline (a
// client of an unreachable cluster waits for it), or rely on
// WithTimeout. It fails with ErrUnavailable when the cluster does not
// answer in time. Close revokes the registration.
//
// The Store does not own cli: close the client after the Store (after
// Engine.Close, which closes the Store).
func New(ctx context.Context, cli *clientv3.Client, prefix string, opts ...Option) (*Store, error) {
	switch {
	case cli == nil:
		return nil, errors.New("etcdstore: nil client")
	case prefix == "" || !strings.HasSuffix(prefix, "/"):
		return nil, fmt.Errorf("etcdstore: prefix %q must be non-empty and end in '/'", prefix)
	}
	host, _ := os.Hostname()
	cfg := config{
		timeout: DefaultTimeout, pageSize: DefaultPageSize, watchCheck: DefaultWatchCheck,
		maxTxnOps: DefaultMaxTxnOps, memberTTL: DefaultMemberTTL, memberID: fmt.Sprintf("%s/%d", host, os.Getpid()),
	}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("etcdstore: %w", err)
		}
	}
	s := &Store{cli: cli, prefix: prefix, end: clientv3.GetPrefixRangeEnd(prefix), cfg: cfg, done: make(chan struct{})}
	rctx, cancel := s.request(ctx)
	defer cancel()
	if _, err := cli.Get(rctx, prefix, clientv3.WithRange(s.end), clientv3.WithLimit(1), clientv3.WithKeysOnly()); err != nil {
		return nil, fmt.Errorf("etcdstore: read under %q: %w", prefix, rpcErr(ctx, err))
	}
	if err := s.join(ctx); err != nil {
		return nil, fmt.Errorf("etcdstore: register under %q: %w", prefix+memberPrefix, rpcErr(ctx, err))
	}
	return s, nil
}

// Prefix returns the key prefix the Store's records live under.
func (s *Store) Prefix() string { return s.prefix }

// request returns the context of one request: ctx, bounded by the
// Store's timeout.
func (s *Store) request(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.cfg.timeout == 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.cfg.timeout)
}

func (s *Store) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Close stops the Store: later calls fail with store.ErrClosed and Watch
// calls in progress return it. It does not close the client. It is
// idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.leave()
	})
	return nil
}

// recordKey returns the schema key of an etcd key under the prefix.
func (s *Store) recordKey(k []byte) string { return string(k[len(s.prefix):]) }

// inSchema reports whether key is a record key of the store's schema.
func inSchema(key string) bool {
	for _, p := range []string{store.PrefixKey, store.PrefixVersion, store.PrefixName, store.PrefixGenerator, store.PrefixACL, store.PrefixHistory, store.PrefixUsage} {
		if strings.HasPrefix(key, p) && len(key) > len(p) {
			return true
		}
	}
	return false
}

// decode checks and decodes a record read under the prefix. A key outside
// the schema is another program's data: refused, never skipped.
func (s *Store) decode(key string, value []byte) (store.Record, error) {
	if !inSchema(key) {
		return nil, fmt.Errorf("%w: %q under prefix %q is not a pocketkms record; is another program writing under this prefix?", store.ErrCorrupt, key, s.prefix)
	}
	r, err := store.Decode(key, value)
	if err != nil {
		return nil, fmt.Errorf("record %q: %w", key, err)
	}
	return r, nil
}

// Load implements store.Store: one consistent read of every record under
// the prefix, in pages (WithPageSize), all at the revision of the first.
// A record that fails its frame, or a key outside the schema, fails Load
// with store.ErrCorrupt naming the key.
func (s *Store) Load(ctx context.Context) (*store.Contents, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.closed() {
		return nil, store.ErrClosed
	}
	for attempt := 1; ; attempt++ {
		c, err := s.load(ctx)
		// The revision of the first page was compacted while later pages
		// were read: read again at a newer one.
		if attempt < 3 && errors.Is(err, rpctypes.ErrCompacted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("etcdstore: load: %w", err)
		}
		return c, nil
	}
}

func (s *Store) load(ctx context.Context) (*store.Contents, error) {
	var (
		a    store.Assembler
		rev  int64
		from = s.prefix
	)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(s.end), clientv3.WithLimit(s.cfg.pageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rctx, cancel := s.request(ctx)
		resp, err := s.cli.Get(rctx, from, opts...)
		cancel()
		if err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return nil, err
			}
			return nil, rpcErr(ctx, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			key := s.recordKey(kv.Key)
			if strings.HasPrefix(key, metaPrefix) {
				continue
			}
			r, err := s.decode(key, kv.Value)
			if err != nil {
				return nil, err
			}
			a.Add(r, kv.ModRevision)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return a.Contents(rev)
}

// Apply implements store.Store with one etcd transaction: if every
// expectation holds (the record's ModRevision is the one expected, or the
// record is absent for 0), write the puts and deletes; otherwise read the
// expected records' revisions in the same transaction and report the
// first expectation that failed as a *store.ConflictError. It returns the
// transaction's revision. A request that fails in a way that may have
// come after the commit (a lost connection, a deadline) is
// store.ErrUncertain. Under the context Lead gives its job, the
// transaction also compares the leader's candidacy, and fails with
// ErrNotLeader once it is gone.
func (s *Store) Apply(ctx context.Context, c *store.Change) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if s.closed() {
		return 0, store.ErrClosed
	}
	then, err := s.ops(c)
	if err != nil {
		return 0, err
	}
	keys := make([]string, 0, len(c.Expect))
	for k := range c.Expect {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	cmps := make([]clientv3.Cmp, 0, len(keys))
	orElse := make([]clientv3.Op, 0, len(keys))
	for _, k := range keys {
		if rev := c.Expect[k]; rev == 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.prefix+k), "=", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.prefix+k), "=", rev))
		}
		orElse = append(orElse, clientv3.OpGet(s.prefix+k, clientv3.WithKeysOnly()))
	}
	f, fenced := fenceOf(ctx, s.prefix)
	if fenced {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(f.key), "=", f.rev))
		orElse = append(orElse, clientv3.OpGet(f.key, clientv3.WithKeysOnly()))
	}
	if n := max(len(cmps), len(then)); n > s.cfg.maxTxnOps {
		return 0, fmt.Errorf("etcdstore: apply: %w: %d operations, the cluster takes %d", ErrChangeTooLarge, n, s.cfg.maxTxnOps)
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(cmps...).Then(then...).Else(orElse...).Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrTooManyOps) {
			return 0, fmt.Errorf("etcdstore: apply: %w (the cluster's --max-txn-ops is below WithMaxTxnOps): %w", ErrChangeTooLarge, err)
		}
		return 0, applyErr(ctx, err)
	}
	if !resp.Succeeded {
		if fenced && !fenceHolds(f, resp.Responses[len(keys)]) {
			return 0, fmt.Errorf("etcdstore: apply: %w", ErrNotLeader)
		}
		return 0, conflict(keys, c.Expect, resp)
	}
	return resp.Header.Revision, nil
}

// ops returns the writes of c. etcd refuses a transaction that names a
// key twice, so the last put of a key wins and a put overrides a delete
// of the same key, as if the deletes ran first. Deletes of consecutive
// versions of one key become one range delete (see versionRuns), so that
// destroying a key of many versions stays one transaction well under
// --max-txn-ops.
func (s *Store) ops(c *store.Change) ([]clientv3.Op, error) {
	ops := make([]clientv3.Op, 0, len(c.Puts)+len(c.Deletes))
	at := make(map[string]int, len(c.Puts)+len(c.Deletes))
	for _, r := range c.Puts {
		k, v, err := store.Encode(r)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: apply: %w", err)
		}
		op := clientv3.OpPut(s.prefix+k, string(v))
		if i, ok := at[k]; ok {
			ops[i] = op
			continue
		}
		at[k] = len(ops)
		ops = append(ops, op)
	}
	var dels []string
	for _, k := range c.Deletes {
		if _, ok := at[k]; ok {
			continue
		}
		at[k] = len(ops)
		dels = append(dels, k)
	}
	for _, d := range versionRuns(dels) {
		if d.last == "" {
			ops = append(ops, clientv3.OpDelete(s.prefix+d.first))
		} else {
			ops = append(ops, clientv3.OpDelete(s.prefix+d.first, clientv3.WithRange(s.prefix+d.last+"\x00")))
		}
	}
	return ops, nil
}

// del is one delete: of the key first, or of every key from first to
// last included.
type del struct{ first, last string }

// versionRuns returns the deletes of keys: each run of two or more
// consecutive version numbers of one key as one range, from the first
// version's key to the last's, every other key alone. With versions
// numbered in ten fixed digits, the range holds exactly the run's keys
// (and nothing else of the schema); none of them is also put (ops leaves
// those out before), so the range overlaps no other operation.
func versionRuns(keys []string) []del {
	type ver struct {
		key string
		tag string
		n   uint64
	}
	var out []del
	var vs []ver
	for _, k := range keys {
		tag, num, ok := strings.Cut(strings.TrimPrefix(k, store.PrefixVersion), "/")
		n, err := strconv.ParseUint(num, 10, 32)
		if !ok || !strings.HasPrefix(k, store.PrefixVersion) || err != nil || len(num) != 10 || store.VersionKey(tag, uint32(n)) != k {
			out = append(out, del{first: k})
			continue
		}
		vs = append(vs, ver{k, tag, n})
	}
	slices.SortFunc(vs, func(a, b ver) int {
		if c := strings.Compare(a.tag, b.tag); c != 0 {
			return c
		}
		return cmp.Compare(a.n, b.n)
	})
	for i := 0; i < len(vs); {
		j := i + 1
		for j < len(vs) && vs[j].tag == vs[i].tag && vs[j].n == vs[j-1].n+1 {
			j++
		}
		if j-i == 1 {
			out = append(out, del{first: vs[i].key})
		} else {
			out = append(out, del{first: vs[i].key, last: vs[j-1].key})
		}
		i = j
	}
	return out
}

// fenceHolds reports whether the failed transaction's read of the
// leader's candidacy shows it still standing.
func fenceHolds(f fence, r *etcdserverpb.ResponseOp) bool {
	rr := r.GetResponseRange()
	return rr != nil && len(rr.Kvs) == 1 && rr.Kvs[0].CreateRevision == f.rev
}

// conflict names the first expectation that the failed transaction's
// reads show did not hold.
func conflict(keys []string, expect map[string]int64, resp *clientv3.TxnResponse) error {
	for i, k := range keys {
		var got int64
		if i < len(resp.Responses) {
			if rr := resp.Responses[i].GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
				got = rr.Kvs[0].ModRevision
			}
		}
		if got != expect[k] {
			return &store.ConflictError{Key: k}
		}
	}
	// Unreachable: a compare failed, so one of the reads differs.
	if len(keys) == 0 {
		return &store.ConflictError{}
	}
	return &store.ConflictError{Key: keys[0]}
}

// Watch implements store.Watcher with an etcd watch of the prefix from
// revision after+1. Events of one etcd revision (one transaction) make
// one store.Commit. Every put is checked with store.Decode: a record that
// fails its frame, or a key outside the schema, ends Watch with an error
// matching store.ErrCorrupt. Compacted history, a watch the cluster
// cancels (including for lost leadership: the watch requires a leader, so
// a member cut off from the others does not leave it waiting silently),
// a watch channel that closes, or a progress request left unanswered for
// a whole WithWatchCheck interval (a cluster gone silent) ends it with
// store.ErrResync. It returns
// ctx's error when ctx ends and store.ErrClosed when the Store is closed.
func (s *Store) Watch(ctx context.Context, after int64, fn func(store.Commit)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed() {
		return store.ErrClosed
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	ch := s.cli.Watch(wctx, s.prefix, clientv3.WithRange(s.end), clientv3.WithRev(after+1))
	// The liveness check: every tick asks for a progress notification
	// (any answer on the stream will do); a tick that finds the previous
	// one unanswered gives the watch up.
	tick := time.NewTicker(s.cfg.watchCheck)
	defer tick.Stop()
	asked, heard := false, false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return store.ErrClosed
		case <-tick.C:
			if asked && !heard {
				return fmt.Errorf("etcdstore: watch after revision %d: no answer from the cluster within %v: %w", after, s.cfg.watchCheck, store.ErrResync)
			}
			asked, heard = true, false
			// The request goes on the watch's stream (the same outgoing
			// metadata); it waits while the client reconnects, which the
			// next tick then reports.
			go func() {
				pctx, pcancel := context.WithTimeout(wctx, s.cfg.watchCheck)
				defer pcancel()
				_ = s.cli.RequestProgress(pctx)
			}()
		case wr, ok := <-ch:
			heard = true
			switch {
			case !ok && ctx.Err() != nil:
				return ctx.Err()
			case !ok:
				return fmt.Errorf("etcdstore: watch after revision %d: the watch ended: %w", after, store.ErrResync)
			case wr.Err() != nil:
				return fmt.Errorf("etcdstore: watch after revision %d: %w: %w", after, store.ErrResync, wr.Err())
			case wr.Canceled:
				return fmt.Errorf("etcdstore: watch after revision %d: cancelled by the cluster: %w", after, store.ErrResync)
			}
			commits, err := s.commits(wr.Events)
			if err != nil {
				return fmt.Errorf("etcdstore: watch: %w", err)
			}
			for _, c := range commits {
				fn(c)
				after = c.Rev
			}
		}
	}
}

// commits groups the events of one watch response into commits. etcd
// never splits one revision's events across responses (without
// fragmentation, which Watch does not ask for).
func (s *Store) commits(evs []*clientv3.Event) ([]store.Commit, error) {
	var out []store.Commit
	for _, ev := range evs {
		key := s.recordKey(ev.Kv.Key)
		if strings.HasPrefix(key, metaPrefix) {
			continue
		}
		rev := ev.Kv.ModRevision
		if len(out) == 0 || out[len(out)-1].Rev != rev {
			out = append(out, store.Commit{Rev: rev})
		}
		c := &out[len(out)-1]
		switch ev.Type {
		case clientv3.EventTypePut:
			r, err := s.decode(key, ev.Kv.Value)
			if err != nil {
				return nil, fmt.Errorf("revision %d: %w", rev, err)
			}
			c.Puts = append(c.Puts, r)
		case clientv3.EventTypeDelete:
			if !inSchema(key) {
				return nil, fmt.Errorf("revision %d: %w: %q deleted under prefix %q is not a pocketkms record", rev, store.ErrCorrupt, key, s.prefix)
			}
			c.Deletes = append(c.Deletes, key)
		}
	}
	return out, nil
}
