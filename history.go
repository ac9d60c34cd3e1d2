package kms

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/pocketkms/kms/store"
)

// KeyHistoryRetention is how many history entries a key keeps: each
// change writes one and deletes the one KeyHistoryRetention older, in
// the same commit.
const KeyHistoryRetention = 100

// KeyHistoryEntry is one management change of a key (NAVER's usage
// history): written in the same store commit as the change itself, so a
// change is never without its entry nor an entry without its change.
type KeyHistoryEntry struct {
	// Seq numbers the key's changes from 1, without gaps.
	Seq  uint64
	Time time.Time
	// Op is the operation ("create key", "rotate key", "update key",
	// "issue tokens", "auto-rotate key", ...).
	Op string
	// Version is the version the change made or changed (0: the key as a
	// whole).
	Version uint32
	Plane   Plane
	// Caller is WithCaller's identity (trusted plane), the token's subject
	// (token renewals) or "maintenance" (PlaneSystem).
	Caller string
	// Addr is the caller's address for token renewals.
	Addr netip.Addr
	// State is the key's state after the change.
	State KeyState
}

// KeyHistoryPage is a page of a key's history, newest first.
type KeyHistoryPage struct {
	Entries    []KeyHistoryEntry
	PageNo     int
	PageSize   int
	TotalCount int
}

// ListKeyHistory returns a page of a key's management history, newest
// first: pageNo from 0, pageSize 1..100 (0 means 20). Only successful
// changes are recorded in the store (refusals and cipher calls go to the
// audit sink, WithAudit), and only the newest KeyHistoryRetention of
// them. A destroyed key's history is deleted right after its records
// (in commits of at most 100 deletions); the audit sink's "destroy key"
// event is what remains of it. It needs a store that implements
// store.Ranger (Badger, store/etcd and storetest.Memory do); others fail
// with ErrInternal.
func (e *Engine) ListKeyHistory(ctx context.Context, keyTag string, pageNo, pageSize int) (*KeyHistoryPage, error) {
	return readKey(e, ctx, "list key history", keyTag, func(op string, s *keySnap) (*KeyHistoryPage, error) {
		if pageSize == 0 {
			pageSize = 20
		}
		if pageNo < 0 || pageSize < 1 || pageSize > 100 {
			return nil, newErr(op, s.tag, ErrInvalidArgument, "pageNo must be 0 or more and pageSize 1..100")
		}
		rg, ok := e.ranger()
		if !ok {
			return nil, wrapErr(op, s.tag, ErrInternal, errNoRanger)
		}
		newest := s.histSeq
		oldest := uint64(1)
		if newest > KeyHistoryRetention {
			oldest = newest - KeyHistoryRetention + 1
		}
		page := &KeyHistoryPage{PageNo: pageNo, PageSize: pageSize, Entries: []KeyHistoryEntry{}}
		if newest == 0 {
			return page, nil
		}
		page.TotalCount = int(newest - oldest + 1)
		skip := uint64(pageNo) * uint64(pageSize)
		if skip >= uint64(page.TotalCount) {
			return page, nil
		}
		hi := newest - skip // the newest entry of the page
		recs, err := rg.Range(ctx, store.HistoryKey(s.tag, oldest), store.HistoryKey(s.tag, hi+1), pageSize, true)
		if err != nil {
			if isContextErr(err) {
				return nil, canceled(op, s.tag, err)
			}
			return nil, wrapErr(op, s.tag, ErrInternal, err)
		}
		for _, r := range recs {
			if h, ok := r.(*store.HistoryRecord); ok {
				page.Entries = append(page.Entries, historyEntry(h))
			}
		}
		return page, nil
	})
}

func historyEntry(h *store.HistoryRecord) KeyHistoryEntry {
	en := KeyHistoryEntry{Seq: h.Seq, Time: msTime(h.Time), Op: h.Op, Version: h.Version,
		Plane: Plane(h.Plane), Caller: h.Caller, State: KeyState(h.State)}
	if a, err := netip.ParseAddr(h.Addr); err == nil {
		en.Addr = a
	}
	return en
}

// addHistory adds to c the history entry of op changing the key from old
// (nil when it is created) to next, and the deletion of the entry that
// falls out of retention; it numbers next's history.
func addHistory(ctx context.Context, c *store.Change, op string, old, next *keySnap, now time.Time) {
	var seq uint64 = 1
	if old != nil {
		seq = old.histSeq + 1
	}
	next.histSeq = seq
	ci := callerOf(ctx)
	h := &store.HistoryRecord{Tag: next.tag, Seq: seq, Time: timeMs(now), Op: op, Version: changedVersion(old, next),
		Plane: string(ci.plane), Caller: ci.id, State: string(next.state)}
	if ci.addr.IsValid() {
		h.Addr = ci.addr.String()
	}
	c.Put(h)
	if seq > KeyHistoryRetention {
		c.Delete(store.HistoryKey(next.tag, seq-KeyHistoryRetention))
	}
}

// changedVersion is the version a change made (a rotation) or changed
// (a version's state); 0 when it changed the key as a whole.
func changedVersion(old, next *keySnap) uint32 {
	if old == nil || len(next.versions) > len(old.versions) {
		return next.current().num
	}
	for i := range next.versions {
		if v := &next.versions[i]; !v.same(&old.versions[i]) {
			return v.num
		}
	}
	return 0
}

// dropHistory deletes a destroyed key's history, after its records. A
// failure (or a crash before it) leaves entries no key names; they hold
// no secret, nothing lists them, and the log says so.
func (e *Engine) dropHistory(ctx context.Context, s *keySnap) {
	if s.histSeq == 0 {
		return
	}
	oldest := uint64(1)
	if s.histSeq > KeyHistoryRetention {
		oldest = s.histSeq - KeyHistoryRetention + 1
	}
	const chunk = 100
	for lo := oldest; lo <= s.histSeq; lo += chunk {
		c := &store.Change{}
		for seq := lo; seq < lo+chunk && seq <= s.histSeq; seq++ {
			c.Delete(store.HistoryKey(s.tag, seq))
		}
		if _, err := e.st.Apply(ctx, c); err != nil {
			e.log.LogAttrs(ctx, slog.LevelWarn, "kms: could not delete a destroyed key's history",
				slog.String("keyTag", s.tag), slog.String("error", err.Error()))
			return
		}
	}
}
