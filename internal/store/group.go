package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// Group commit. In a directory every commit costs three synced writes: the
// integrity record naming the digest it will produce (pending), Badger's
// log, and the integrity record naming it committed (each record write is
// one in-place slot write and one fdatasync, see integrity.go). Changes that arrive
// while a commit is under way do not each pay for their own: the next
// commit takes all of them as one Badger transaction, so they share the
// three syncs, and the integrity record moves from the digest before the
// group to the digest after it exactly as it does for one change. A crash
// leaves the whole group or none of it, as Badger's transaction is atomic,
// and every caller of the group is answered only after the group is
// durable and recorded.
//
// Each change still runs against the committed state and is judged alone:
// it reads through the shared transaction, but its writes are buffered
// and join the group only if its function succeeds, so a change that
// fails (a conflict, a validation error) leaves nothing behind. A change
// that reads a key an earlier change of the same group writes waits for
// the next group, so it sees that write committed with its revision: what
// it checks is always the committed state, as when commits were one at a
// time. Changes of a group share their commit's revision.
//
// The group is led by one of its callers (the one that found no commit
// under way); the others wait. A leader whose own change is done hands the
// lead to the first caller still waiting.

// groupReq is one change waiting for a group commit.
type groupReq struct {
	fn   func(*Txn) error
	err  error
	rev  int64
	done bool
	// wake receives true when this caller is to lead the next group, or
	// false when its change is done (err and rev set).
	wake chan bool
}

// grouper queues changes for the leader.
type grouper struct {
	mu      sync.Mutex
	queue   []*groupReq
	leading bool
}

// errClash ends a change's function when it reads a key an earlier change
// of the group writes: the change waits for the next group.
var errClash = errors.New("store: change waits for the next group commit")

// bufWrite is a buffered write (del: a delete).
type bufWrite struct {
	key string
	val []byte
	del bool
}

// updateGrouped runs fn in the next group commit and returns its error
// and the group's revision.
func (s *Store) updateGrouped(fn func(*Txn) error) (int64, error) {
	req := &groupReq{fn: fn, wake: make(chan bool, 1)}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, req)
	if g.leading {
		g.mu.Unlock()
		if lead := <-req.wake; !lead {
			return req.rev, req.err
		}
		g.mu.Lock()
	}
	g.leading = true
	for !req.done {
		batch := g.queue
		g.queue = nil
		g.mu.Unlock()
		retry := s.commitGroup(batch)
		g.mu.Lock()
		g.queue = append(retry, g.queue...)
	}
	if len(g.queue) > 0 {
		g.queue[0].wake <- true
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	return req.rev, req.err
}

func (r *groupReq) finish(rev int64, err error) {
	r.rev, r.err, r.done = rev, err, true
	r.wake <- false
}

// entrySize is what Badger counts against a transaction's size limit for
// one entry (its txn.checkSize): key, value, two meta bytes and ten for
// the version.
func entrySize(w bufWrite) int64 { return int64(len(w.key)+len(w.val)) + 12 }

// commitGroup commits the changes of batch that can join one group, and
// returns those that must wait for the next.
func (s *Store) commitGroup(batch []*groupReq) (retry []*groupReq) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.db.IsClosed():
		for _, r := range batch {
			r.finish(0, ErrClosed)
		}
		return nil
	case s.broken.Load():
		for _, r := range batch {
			r.finish(0, ErrBroken)
		}
		return nil
	}
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	written := map[string]bool{}
	var members []*groupReq
	var delta digest
	var size, count int64
	var records bool
	var probe string
	maxSize, maxCount := s.db.MaxBatchSize(), s.db.MaxBatchCount()
	for i, r := range batch {
		t := &Txn{txn: txn, d: &txnDelta{}, batch: written, buffered: true}
		err := r.fn(t)
		if t.clash {
			retry = append(retry, r)
			continue
		}
		if err != nil {
			r.finish(0, err)
			continue
		}
		var msize, mcount int64
		for _, w := range t.writes {
			msize += entrySize(w)
			mcount++
		}
		if len(members) > 0 && (size+msize >= maxSize || count+mcount >= maxCount) {
			retry = append(retry, r)
			continue
		}
		var applyErr error
		for _, w := range t.writes {
			if w.del {
				applyErr = txn.Delete([]byte(w.key))
			} else {
				applyErr = txn.Set([]byte(w.key), w.val)
			}
			if applyErr != nil {
				break
			}
		}
		if applyErr != nil {
			txn.Discard()
			txn = s.db.NewTransaction(true)
			if len(members) == 0 {
				// Alone, it is too big (or Badger refuses it): it fails
				// as it would have without company.
				r.finish(0, applyErr)
				continue
			}
			// Not expected (the sizes above are Badger's own): start over
			// with everything in the next group.
			retry = append(retry, members...)
			return append(append(retry, r), batch[i+1:]...)
		}
		for _, w := range t.writes {
			written[w.key] = true
			if probe == "" && !w.del {
				probe = w.key
			}
		}
		delta.xor(t.d.delta)
		size, count = size+msize, count+mcount
		records = records || t.records
		members = append(members, r)
	}
	if len(members) == 0 {
		return retry
	}
	if count == 0 {
		// Only expectations were checked: nothing to commit.
		rev := int64(s.db.MaxVersion())
		for _, r := range members {
			r.finish(rev, nil)
		}
		return retry
	}
	next := s.digest
	next.xor(delta)
	if err := recordIntegrity(s, integrity{committed: s.digest, pending: next, hasPending: true}); err != nil {
		// Nothing was committed, but the directory refuses writes (full,
		// read-only): Badger would fail next, or hang flushing on Close.
		s.broken.Store(true)
		for _, r := range members {
			r.finish(0, fmt.Errorf("%w: write integrity record: %w", ErrBroken, err))
		}
		return retry
	}
	if err := txn.Commit(); err != nil {
		switch {
		case errors.Is(err, badger.ErrDBClosed):
			err = ErrClosed
		case errors.Is(err, badger.ErrConflict), errors.Is(err, badger.ErrTxnTooBig):
		default:
			// Badger failed inside its commit: with synced writes the log
			// entry may or may not be on disk.
			s.broken.Store(true)
			err = fmt.Errorf("%w: %w: %w", ErrBroken, ErrUncertain, err)
		}
		for _, r := range members {
			r.finish(0, err)
		}
		return retry
	}
	s.digest = next
	if records {
		s.pre = nil
	}
	rev := s.committedRev(probe)
	if err := recordIntegrity(s, integrity{committed: next}); err != nil {
		// The commit stands, and the record on disk names it as pending,
		// which Open accepts; the next commit writes the record whole.
		// Reporting a failure here would make callers undo a change that
		// is durable.
		s.log.LogAttrs(context.Background(), slog.LevelError, "store: committed, but the integrity record could not be updated",
			slog.String("error", err.Error()))
	}
	for _, r := range members {
		r.finish(rev, nil)
	}
	return retry
}

// committedRev is the revision of the commit that just wrote probe (the
// caller holds mu, so no other commit came between).
func (s *Store) committedRev(probe string) int64 {
	var rev int64
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(probe))
		if err != nil {
			return err
		}
		rev = int64(item.Version())
		return nil
	})
	if err != nil || probe == "" {
		return int64(s.db.MaxVersion())
	}
	return rev
}
