package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// memberPrefix is where each Store registers, under the store's
// bookkeeping prefix: <prefix>m/members/<lease id>, with its lease.
const memberPrefix = metaPrefix + "members/"

// DefaultMemberTTL is the lease of a Store's registration: a process that
// dies stops counting this long after its last keep-alive.
const DefaultMemberTTL = 5 * time.Second

// WithMemberTTL sets the lease of the Store's registration among the
// members of its prefix, in whole seconds (default DefaultMemberTTL).
// A process that dies without closing its Store keeps counting for up to
// this long: the others then each enforce a smaller share of the rate
// limits than they could.
func WithMemberTTL(d time.Duration) Option {
	return func(c *config) error {
		if d < time.Second || d%time.Second != 0 {
			return errors.New("WithMemberTTL: the lease must be whole seconds, at least one")
		}
		c.memberTTL = d
		return nil
	}
}

// WithoutMembership keeps the Store out of the count of members (see
// Members): for a process that opens an Engine on the prefix but serves
// no token-plane calls (an administration tool), which would otherwise
// shrink every serving Engine's share of the rate limits while it runs.
// Members then still counts the others.
func WithoutMembership() Option {
	return func(c *config) error {
		c.memberTTL = 0
		return nil
	}
}

// WithMemberID sets the value the Store's registration holds (default:
// host name and process id), for operators reading etcd.
func WithMemberID(id string) Option {
	return func(c *config) error {
		if id == "" {
			return errors.New("WithMemberID: empty id")
		}
		c.memberID = id
		return nil
	}
}

// membership is a Store's registration and its count of the members.
type membership struct {
	n      atomic.Int64       // live registrations seen (0 before the first count)
	lease  atomic.Int64       // this Store's lease, 0 when none
	stop   context.CancelFunc // ends the background work (Close)
	wg     sync.WaitGroup
	joined bool
}

// Members implements store.Membership: the number of Stores registered
// under the prefix with a live lease, this one included, as last seen
// (at least 1). Each Engine enforces 1/Members of a key's token-plane
// rate limit. The count follows a watch: a Store that registers or
// closes is counted or dropped within milliseconds, one whose process
// died when its lease expires (WithMemberTTL). While the cluster cannot
// be reached the last count stands.
func (s *Store) Members() int {
	return int(max(1, s.members.n.Load()))
}

// join registers the Store (unless WithoutMembership) and counts the
// members once, then leaves the rest to the background: keeping the
// lease alive, registering again if it is lost, following the count.
func (s *Store) join(ctx context.Context) error {
	var (
		set map[string]bool
		rev int64
		err error
	)
	if s.cfg.memberTTL > 0 {
		if err = s.register(ctx); err != nil {
			return err
		}
	}
	if set, rev, err = s.countMembers(ctx); err != nil {
		s.revoke()
		return err
	}
	bg, stop := context.WithCancel(context.Background())
	s.members.stop, s.members.joined = stop, true
	s.members.wg.Go(func() { s.followMembers(bg, set, rev) })
	return nil
}

// register grants a lease, writes the registration under it and keeps it
// alive until the lease is lost or the Store closes.
func (s *Store) register(ctx context.Context) error {
	rctx, cancel := s.request(ctx)
	defer cancel()
	lease, err := s.cli.Grant(rctx, int64(s.cfg.memberTTL/time.Second))
	if err != nil {
		return err
	}
	key := fmt.Sprintf("%s%s%016x", s.prefix, memberPrefix, int64(lease.ID))
	if _, err := s.cli.Put(rctx, key, s.cfg.memberID, clientv3.WithLease(lease.ID)); err != nil {
		s.cli.Revoke(context.WithoutCancel(rctx), lease.ID)
		return err
	}
	s.members.lease.Store(int64(lease.ID))
	return nil
}

// countMembers reads the registrations: the set of their keys and the
// revision read at.
func (s *Store) countMembers(ctx context.Context) (map[string]bool, int64, error) {
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.prefix+memberPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, 0, err
	}
	set := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		set[string(kv.Key)] = true
	}
	s.members.n.Store(int64(len(set)))
	return set, resp.Header.Revision, nil
}

// followMembers keeps the registration alive and the count current until
// ctx ends, starting from a count of set at revision rev.
func (s *Store) followMembers(ctx context.Context, set map[string]bool, rev int64) {
	for ctx.Err() == nil {
		s.followRound(ctx, set, rev)
		// Something broke (the lease expired, the watch failed): wait a
		// moment, register again if needed, count again.
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			if s.cfg.memberTTL > 0 && s.members.lease.Load() == 0 {
				if s.register(ctx) != nil {
					continue
				}
			}
			var err error
			if set, rev, err = s.countMembers(ctx); err == nil {
				break
			}
		}
	}
}

// followRound keeps the lease alive and applies the registrations'
// events until either fails.
func (s *Store) followRound(ctx context.Context, set map[string]bool, rev int64) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ka <-chan *clientv3.LeaseKeepAliveResponse
	if id := s.members.lease.Load(); id != 0 {
		var err error
		if ka, err = s.cli.KeepAlive(rctx, clientv3.LeaseID(id)); err != nil {
			s.members.lease.Store(0)
			return
		}
	}
	wch := s.cli.Watch(clientv3.WithRequireLeader(rctx), s.prefix+memberPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ka:
			if !ok {
				// The lease expired (or was revoked): register again.
				s.members.lease.Store(0)
				return
			}
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil || wr.Canceled {
				return
			}
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if !strings.HasPrefix(k, s.prefix+memberPrefix) {
					continue
				}
				if ev.Type == clientv3.EventTypePut {
					set[k] = true
				} else {
					delete(set, k)
				}
			}
			s.members.n.Store(int64(len(set)))
		}
	}
}

// leave stops the background work and revokes the registration, so the
// other members stop counting this one at once.
func (s *Store) leave() {
	if s.members.joined {
		s.members.stop()
		s.members.wg.Wait()
	}
	s.revoke()
}

// revoke revokes the Store's lease, if any, waiting at most a second.
func (s *Store) revoke() {
	id := s.members.lease.Swap(0)
	if id == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.cli.Revoke(ctx, clientv3.LeaseID(id))
}
