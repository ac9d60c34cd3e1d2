package kms

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pocketkms/kms/store"
)

// The change feed. A store shared by several processes implements
// store.Watcher; the Engine then follows it from the revision it loaded
// and applies every commit to its snapshots, so a change made through one
// Engine holds on every other. The Engine's own commits come back on the
// feed too and are skipped: the snapshot already carries their revision.
// Badger, owned by one process, has no feed.

// resyncDelay is how long the Engine waits before reloading after the
// feed failed, so a store that is down is not hammered.
const resyncDelay = 200 * time.Millisecond

// follow applies the store's change feed until ctx ends: it watches from
// rev and, when the feed is lost (store.ErrResync, or any other failure),
// reloads everything and watches again from the reloaded revision.
func (e *Engine) follow(ctx context.Context, w store.Watcher, rev int64) {
	for ctx.Err() == nil {
		err := w.Watch(ctx, rev, func(c store.Commit) {
			e.applyCommit(ctx, c)
			rev = c.Rev
		})
		if ctx.Err() != nil {
			return
		}
		e.feedLost.CompareAndSwap(0, max(1, e.now().UnixNano()))
		e.log.LogAttrs(ctx, slog.LevelWarn, "kms: change feed lost; reloading", slog.String("error", errString(err)))
		for ctx.Err() == nil {
			r, err := e.reload(ctx)
			if err == nil {
				rev = r
				e.feedLost.Store(0)
				e.log.LogAttrs(ctx, slog.LevelInfo, "kms: reloaded; following the change feed again")
				break
			}
			e.log.LogAttrs(ctx, slog.LevelWarn, "kms: reload after a lost change feed failed", slog.String("error", err.Error()))
			select {
			case <-ctx.Done():
			case <-time.After(resyncDelay):
			}
		}
	}
}

// checkFeed is the bounded offline window (WithStaleLimit): it fails
// with ErrStale once the change feed has been lost for longer than the
// limit. While the feed is followed it is one atomic load.
func (e *Engine) checkFeed(op string) error {
	lost := e.feedLost.Load()
	if lost == 0 || e.now().UnixNano()-lost <= int64(e.staleLimit) {
		return nil
	}
	return newErr(op, "", ErrStale, "token-plane calls are refused until the Engine follows its store again")
}

// FeedLost reports whether the Engine has lost its shared store's change
// feed (the watch broke and reloading has not succeeded yet) and, if so,
// since when on the Engine's clock. An Engine on a store without a feed
// (Badger) never loses it. Past WithStaleLimit, token-plane calls fail
// with ErrStale; a readiness probe can use it to take a replica out of
// rotation earlier.
func (e *Engine) FeedLost() (since time.Time, lost bool) {
	lost0 := e.feedLost.Load()
	if lost0 == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, lost0), true
}

func errString(err error) string {
	if err == nil {
		return "feed ended"
	}
	return err.Error()
}

// applyCommit applies one commit of the feed, key by key.
func (e *Engine) applyCommit(ctx context.Context, c store.Commit) {
	type delta struct {
		puts    []store.Record
		deleted bool
	}
	byTag := map[string]*delta{}
	get := func(tag string) *delta {
		d := byTag[tag]
		if d == nil {
			d = &delta{}
			byTag[tag] = d
		}
		return d
	}
	for _, r := range c.Puts {
		if _, isName := r.(*store.NameRecord); isName || store.IsAuxiliary(r) {
			continue // names are the store's to enforce; history and usage build no snapshot
		}
		d := get(r.KeyTag())
		d.puts = append(d.puts, r)
	}
	for _, key := range c.Deletes {
		if tag, ok := keyRecordTag(key); ok {
			get(tag).deleted = true
		}
	}
	for tag, d := range byTag {
		if err := e.applyKey(tag, c.Rev, d.puts, d.deleted); err != nil {
			// A commit this Engine cannot apply means its view can no
			// longer be trusted for that key: drop the key until a reload
			// reads it whole, rather than serve it stale.
			e.log.LogAttrs(ctx, slog.LevelError, "kms: cannot apply a change from the store; key unavailable until reload",
				slog.String("keyTag", tag), slog.String("error", err.Error()))
			if ent, ok := e.keys.Load(tag); ok {
				ent.mu.Lock()
				if s := ent.snap.Load(); s.state != stateDestroyed {
					e.forget(ent, s)
				}
				ent.mu.Unlock()
			}
		}
	}
}

// keyRecordTag returns the tag of a key record's store key.
func keyRecordTag(key string) (string, bool) {
	if len(key) <= len(store.PrefixKey) || key[:len(store.PrefixKey)] != store.PrefixKey {
		return "", false
	}
	return key[len(store.PrefixKey):], true
}

// applyKey applies one key's part of a commit at revision rev.
func (e *Engine) applyKey(tag string, rev int64, puts []store.Record, deleted bool) error {
	ent, ok := e.keys.Load(tag)
	if !ok {
		if deleted {
			return nil
		}
		ns, err := e.overlay(&store.KeyData{}, rev, puts)
		if err != nil {
			return err
		}
		if ent, ok = e.keys.LoadOrStore(tag, newEntry(ns)); !ok {
			e.noteSeq(ns)
			return nil
		}
		// Created here meanwhile: apply to that entry below.
	}
	ent.mu.Lock()
	defer ent.mu.Unlock()
	old := ent.snap.Load()
	if old.rev >= rev {
		return nil // this Engine's own commit, or an older one
	}
	if old.state == stateDestroyed {
		return nil
	}
	if deleted {
		e.forget(ent, old)
		return nil
	}
	ns, err := e.overlay(old.data(), rev, puts)
	if err != nil {
		return err
	}
	e.replace(ent, old, ns)
	return nil
}

// overlay builds the snapshot of kd with the records of a commit at
// revision rev written over it.
func (e *Engine) overlay(kd *store.KeyData, rev int64, puts []store.Record) (*keySnap, error) {
	for _, r := range puts {
		switch r := r.(type) {
		case *store.KeyRecord:
			kd.Key, kd.Rev = *r, rev
		case *store.VersionRecord:
			if i := int(r.Version) - 1; i >= 0 && i < len(kd.Versions) {
				kd.Versions[i] = *r
			} else {
				kd.Versions = append(kd.Versions, *r)
			}
		case *store.GeneratorRecord:
			kd.Generator = r
		case *store.ACLRecord:
			kd.ACL = r
		}
	}
	return e.snapOpened(kd)
}

// snapOpened is snapFromData with the key's handles opened (see
// openHandles).
func (e *Engine) snapOpened(kd *store.KeyData) (*keySnap, error) {
	s, err := snapFromData(kd)
	if err != nil {
		return nil, err
	}
	if err := e.openHandles(s, e.now()); err != nil {
		return nil, err
	}
	return s, nil
}

// replace publishes ns in place of old (the caller holds ent.mu), keeping
// what old had loaded and dropping cached tokens of a replaced generator.
func (e *Engine) replace(ent *keyEntry, old, ns *keySnap) {
	ns.keepLoaded(old)
	if old.gen.isActive() && (!ns.gen.isActive() || ns.gen.id != old.gen.id) {
		e.tokens.DeleteGenerator(old.gen.id)
	}
	e.noteSeq(ns)
	ent.publish(ns)
}

// noteSeq keeps the Engine's sequence counter above every key it knows;
// sequence numbers only order ListKeys.
func (e *Engine) noteSeq(s *keySnap) {
	for {
		cur := e.seq.Load()
		if s.seq <= cur || e.seq.CompareAndSwap(cur, s.seq) {
			return
		}
	}
}

// data returns the records s was built from.
func (s *keySnap) data() *store.KeyData {
	kd := &store.KeyData{Rev: s.rev, Key: *s.keyRecord()}
	for i := range s.versions {
		kd.Versions = append(kd.Versions, *s.versions[i].record(s.tag))
	}
	if s.gen != nil {
		kd.Generator = s.gen.record(s.tag)
	}
	if a := s.rare().acl; a.Enabled() || a.Len() > 0 {
		kd.ACL = aclRecord(s.tag, a)
	}
	return kd
}

// keepLoaded carries loaded backend keys over from old wherever the
// material is the same, so a change elsewhere does not reload them.
func (s *keySnap) keepLoaded(old *keySnap) {
	for i := range s.versions {
		v := &s.versions[i]
		if i < len(old.versions) && string(old.versions[i].stored) == string(v.stored) {
			v.lk = old.versions[i].lk
		}
	}
	if s.gen != nil && old.gen != nil && s.gen.generation == old.gen.generation && string(s.gen.stored) == string(old.gen.stored) {
		s.gen.lk = old.gen.lk
	}
}

// reload reads the whole store again and replaces every snapshot, after
// the change feed was lost. It returns the revision to follow from.
func (e *Engine) reload(ctx context.Context) (int64, error) {
	c, err := e.st.Load(ctx)
	if err != nil {
		return 0, err
	}
	seen := make(map[string]bool, len(c.Keys))
	var errs []error
	for _, kd := range c.Keys {
		tag := kd.Key.Tag
		seen[tag] = true
		ns, err := e.snapOpened(kd)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ent, loaded := e.keys.LoadOrStore(tag, newEntry(ns))
		if !loaded {
			e.noteSeq(ns)
			continue
		}
		ent.mu.Lock()
		if old := ent.snap.Load(); old.state != stateDestroyed && old.rev <= ns.rev {
			e.replace(ent, old, ns)
		}
		ent.mu.Unlock()
	}
	e.keys.Range(func(k string, ent *keyEntry) bool {
		if !seen[k] {
			ent.mu.Lock()
			// A key created here after the load began is newer than it.
			if s := ent.snap.Load(); s.state != stateDestroyed && s.rev <= c.Rev {
				e.forget(ent, s)
			}
			ent.mu.Unlock()
		}
		return true
	})
	if len(errs) > 0 {
		return 0, errors.Join(errs...)
	}
	return c.Rev, nil
}
