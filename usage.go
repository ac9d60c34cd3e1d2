package kms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pocketkms/kms/store"
)

// EncryptionBudget is the most AES-GCM encryptions one version of a
// (non-convergent) AES256 key makes: with random 96-bit nonces, NIST SP
// 800-38D §8.3 bounds the invocations of one key at 2^32. An encryption
// past it fails with ErrEncryptionBudget; the version still decrypts.
const EncryptionBudget uint64 = 1 << 32

// DefaultEncryptionBudgetWarning is when the Engine warns about a
// version's encryption budget by default: at three quarters of it.
const DefaultEncryptionBudgetWarning = EncryptionBudget / 4 * 3

// WithEncryptionBudgetWarning sets after how many AES-GCM encryptions of
// one key version (1..EncryptionBudget) the Engine warns: it logs at
// level Warn, sends an audit event (op "encryption budget warning",
// PlaneSystem) and, if the key has auto-rotation on, the next Maintain
// rotates it (the background worker runs Maintain every interval), so
// that new encryptions use a fresh version long before the budget runs
// out. A key without auto-rotation keeps the version until someone
// rotates it, and encryptions past the budget fail with
// ErrEncryptionBudget. The default is DefaultEncryptionBudgetWarning.
func WithEncryptionBudgetWarning(n uint64) Option {
	return func(c *config) error {
		if n == 0 || n > EncryptionBudget {
			return errors.New("WithEncryptionBudgetWarning: the threshold must be 1..2^32")
		}
		c.budgetWarn = n
		return nil
	}
}

// VersionUsage is the use made of one key version since it was made, as
// this Engine sees it: the shared total as of its last flush plus its own
// calls since (see Engine.KeyUsage).
type VersionUsage struct {
	Version       uint32
	Encryptions   uint64
	Decryptions   uint64
	Signatures    uint64
	Verifications uint64
	// Refusals counts calls refused for the caller (see ResultRefused),
	// charged to the key's current version when the call was refused.
	Refusals uint64
	// LastUse is the last counted use or refusal (zero: none), to the
	// millisecond. Under the system clock it is the monotonic time since
	// a wall-clock reading at most a minute old, so a step of the wall
	// clock shows in it within a minute.
	LastUse time.Time
	// BudgetLeft is how many AES-GCM encryptions the version may still
	// make (non-convergent AES256 keys; 0 for other keys).
	BudgetLeft uint64
}

// KeyUsage is a key's usage counters, one entry per version.
type KeyUsage struct {
	KeyTag   string
	Versions []VersionUsage
}

// KeyUsage returns a key's usage counters per version: encryptions (each
// item of a batch counts; a re-encryption counts one decryption and one
// encryption; CreateCustomKey one encryption), decryptions, signatures,
// verifications (matching or not), refusals, and the last use. Counting
// costs a few atomic operations per call and no store write: the Engine
// writes the counters to the store (one usage record per key used since
// the last write) every maintenance run and at Close, and reads them back
// when it opens, so a crash loses at most the counts since the last
// Maintain (one WithMaintenanceInterval). AES-GCM encryptions are counted
// before they are made, so the budget is never overrun in a running
// Engine; a crash can lose the counts of one interval, which is why the
// warning comes well before the budget. Keys never used cost nothing.
//
// With a store shared by several Engines (store/etcd), each flush adds
// the Engine's counts since its last flush to the shared usage record with
// an optimistic read-modify-write (a conflict re-reads and retries; a
// delta not written stays pending, never lost), and moves the Engine's
// counters to the shared total it read. The counts are then global, and
// so is the budget, with a bounded overshoot: between two flushes an
// Engine checks the budget against the shared total as of its last flush
// plus its own calls, so the cluster can make at most (number of
// Engines) × (encryptions of one Engine between two successful flushes,
// normally one maintenance interval) beyond the budget: each Engine may
// go on until its next flush shows it the others' counts. The default
// warning at three quarters leaves 2^30 for that and for rotation to take
// over; a lower WithEncryptionBudgetWarning leaves more. An Engine reads
// a key's shared record when it flushes its own counts of the key, and at
// every following flush while the key's last known use (by any Engine) is
// less than a minute old; a key idle longer is read again at the first
// flush after it uses it. The store must implement store.RevReader
// (Badger, store/etcd, storetest.Memory do); on another store the Engine
// writes its own totals (last writer wins), which only suits a store
// owned by one process.
func (e *Engine) KeyUsage(ctx context.Context, keyTag string) (*KeyUsage, error) {
	return readKey(e, ctx, "get key usage", keyTag, func(op string, s *keySnap) (*KeyUsage, error) {
		out := &KeyUsage{KeyTag: s.tag, Versions: make([]VersionUsage, len(s.versions))}
		ku := s.u
		for i, v := range s.versions {
			vu := VersionUsage{Version: v.num}
			if ku != nil {
				if c := ku.version(v.num); c != nil {
					vu.Encryptions, vu.Decryptions = c.enc.Load(), c.dec.Load()
					vu.Signatures, vu.Verifications, vu.Refusals = c.sign.Load(), c.verify.Load(), c.refused.Load()
					vu.LastUse = msTime(c.last.Load())
				}
			}
			if s.budgeted() {
				vu.BudgetLeft = e.usage.budget - min(vu.Encryptions, e.usage.budget)
			}
			out.Versions[i] = vu
		}
		return out, nil
	})
}

// budgeted reports whether the key's encryptions spend the GCM budget:
// AES256 with random nonces (a convergent key's nonce is derived).
func (s *keySnap) budgeted() bool { return s.typ == AES256 && !s.convergent }

// usageTable holds the counters of the keys used since the Engine opened
// (or whose counters the store held): nothing for keys never used.
type usageTable struct {
	// The counters themselves live in each key's entry (keyEntry.usage).
	budget, warn uint64
	// rotations counts keys whose budget warning asks Maintain to rotate.
	rotations atomic.Int32
	// flushMu serializes flushes; it guards keyUsage's sync.
	flushMu sync.Mutex
	// anchor is the clock reading touch counts from under the system
	// clock (see useMs); nil under a clock given with WithClock.
	anchor atomic.Pointer[clockAnchor]
}

// clockAnchor is one time.Now reading, wall and monotonic.
type clockAnchor struct {
	t  time.Time
	ns int64 // t.UnixNano()
}

// reanchorAfter is how old useMs lets its anchor get.
const reanchorAfter = time.Minute

// useMs returns the time of a use, in Unix milliseconds, for the usage
// counters' LastUse. Under the system clock it adds the monotonic time
// elapsed since an anchor (time.Since: one clock read, where time.Now
// takes two, about 30 ns of an Encrypt's 1.2 µs on this project's VM) to
// the anchor's wall-clock time, and takes a new anchor once the old one
// is a minute old: a step of the wall clock (NTP) reaches LastUse within
// a minute. Under a clock given with WithClock it asks that clock.
func (e *Engine) useMs() int64 {
	a := e.usage.anchor.Load()
	if a == nil {
		return e.now().UnixMilli()
	}
	d := time.Since(a.t)
	if d < 0 || d >= reanchorAfter {
		n := newAnchor()
		e.usage.anchor.Store(n) // a race stores some fresh anchor: any is right
		return n.ns / int64(time.Millisecond)
	}
	return (a.ns + int64(d)) / int64(time.Millisecond)
}

func newAnchor() *clockAnchor {
	t := time.Now()
	return &clockAnchor{t: t, ns: t.UnixNano()}
}

type keyUsage struct {
	mu sync.Mutex
	// n is the number of versions counted: versions 1..n have counters.
	// Version 1's are held inline (most keys never rotate), the others
	// in more (index: version - 2), which is stored before n grows.
	n     atomic.Uint32
	v1    verUsage
	more  atomic.Pointer[[]*verUsage]
	dirty atomic.Bool // counted since the last flush
	// rotate is the version whose budget warning asks for a rotation
	// (0: none).
	rotate atomic.Uint32
	// sync is what the key's counters were last flushed against; nil
	// until the key's usage record was first read or written (most keys
	// of a large store never are while it is open: 80 bytes per key
	// saved). Guarded by usageTable.flushMu.
	sync *usageSync
}

// usageSync is a key's counters' relation to its usage record in the
// store. Guarded by usageTable.flushMu.
type usageSync struct {
	// shared is the store's usage record as last read or written, at
	// revision rev (revKnown: rev is worth expecting).
	shared   []store.VersionUsageRecord
	rev      int64
	revKnown bool
	// recent: flushed at the last flush; the next one, if the key was
	// not used meanwhile, reads the shared record to refresh the view.
	recent bool
	// base (index version - 1) is the part of the counters that the
	// shared record held when last read or written: the counters minus
	// base are the counts not yet flushed. A version beyond it has a
	// zero base.
	base []verCounts
}

// syncState returns the key's usageSync, made on first use. The caller
// holds usageTable.flushMu.
func (k *keyUsage) syncState() *usageSync {
	if k.sync == nil {
		k.sync = &usageSync{}
	}
	return k.sync
}

// baseOf returns the base of version index i (version i+1), for writing.
func (s *usageSync) baseOf(i int) *verCounts {
	if i >= len(s.base) {
		s.base = append(s.base, make([]verCounts, i+1-len(s.base))...)
	}
	return &s.base[i]
}

// baseAt returns the base of version index i (zero if none).
func (s *usageSync) baseAt(i int) verCounts {
	if s == nil || i >= len(s.base) {
		return verCounts{}
	}
	return s.base[i]
}

type verUsage struct {
	enc, dec, sign, verify, refused atomic.Uint64
	last                            atomic.Int64 // Unix ms
	warned                          atomic.Bool
}

// usageOf returns the counters of the key tag, or nil when there is no
// such key.
func (e *Engine) usageOf(tag string) *keyUsage {
	if v, ok := e.keys.Load(tag); ok {
		return &v.usage
	}
	return nil
}

// rangeUsage calls f with every key's tag and counters until f returns
// false.
func (e *Engine) rangeUsage(f func(tag string, k *keyUsage) bool) {
	e.keys.Range(func(tag string, ent *keyEntry) bool {
		return f(tag, &ent.usage)
	})
}

// version returns the counters of version n, or nil.
func (k *keyUsage) version(n uint32) *verUsage {
	switch {
	case n == 0 || n > k.n.Load():
		return nil
	case n == 1:
		return &k.v1
	}
	return (*k.more.Load())[n-2]
}

// all returns the counters of every version counted, index version - 1.
func (k *keyUsage) all() []*verUsage {
	n := k.n.Load()
	if n == 0 {
		return nil
	}
	vs := make([]*verUsage, 0, n)
	vs = append(vs, &k.v1)
	if n > 1 {
		vs = append(vs, (*k.more.Load())[:n-1]...)
	}
	return vs
}

// counters returns the counters of version n, made on first use.
func (k *keyUsage) counters(n uint32) *verUsage {
	if c := k.version(n); c != nil {
		return c
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if n > k.n.Load() {
		if n > 1 {
			var vs []*verUsage
			if p := k.more.Load(); p != nil {
				vs = *p
			}
			if int(n-1) > len(vs) {
				grown := make([]*verUsage, n-1)
				copy(grown, vs)
				for i := len(vs); i < int(n-1); i++ {
					grown[i] = &verUsage{}
				}
				k.more.Store(&grown)
			}
		}
		k.n.Store(n)
	}
	return k.version(n)
}

// touch marks a use at now.
func (e *Engine) touch(k *keyUsage, c *verUsage) {
	// One write per millisecond at most: calls from many cores on one key
	// then share the cache line for reading.
	if ms := e.useMs(); c.last.Load() != ms {
		c.last.Store(ms)
	}
	if !k.dirty.Load() {
		k.dirty.Store(true)
	}
}

type useKind int

const (
	useDecrypt useKind = iota
	useSign
	useVerify
	useEncryptUnbudgeted // RSA-OAEP, convergent AES
)

// use counts one successful use of version v of s.
func (e *Engine) use(s *keySnap, v uint32, kind useKind) {
	k := s.u
	if k == nil {
		return // a snapshot no entry holds: nothing to count against
	}
	c := k.counters(v)
	switch kind {
	case useDecrypt:
		c.dec.Add(1)
	case useSign:
		c.sign.Add(1)
	case useVerify:
		c.verify.Add(1)
	case useEncryptUnbudgeted:
		c.enc.Add(1)
	}
	e.touch(k, c)
}

// spendEncryption counts one encryption under version v of s before it
// is made. For a budgeted key it fails with ErrEncryptionBudget once the
// version has made EncryptionBudget encryptions, and warns once when the
// warning threshold is reached.
func (e *Engine) spendEncryption(ctx context.Context, op string, s *keySnap, v uint32) error {
	if !s.budgeted() {
		e.use(s, v, useEncryptUnbudgeted)
		return nil
	}
	k := s.u
	if k == nil {
		return nil
	}
	c := k.counters(v)
	n := c.enc.Add(1)
	if n > e.usage.budget {
		c.enc.Add(^uint64(0))
		return newErr(op, s.tag, ErrEncryptionBudget, fmt.Sprintf("version %d made %d encryptions", v, e.usage.budget))
	}
	e.touch(k, c)
	if n >= e.usage.warn && !c.warned.Load() && c.warned.CompareAndSwap(false, true) {
		e.budgetWarning(ctx, s, k, v, n)
	}
	return nil
}

// budgetWarning reports that version v of s reached the warning threshold
// and, with auto-rotation on, asks Maintain to rotate the key.
func (e *Engine) budgetWarning(ctx context.Context, s *keySnap, k *keyUsage, v uint32, n uint64) {
	rotate := s.rare().rotation.enabled
	e.log.LogAttrs(ctx, slog.LevelWarn, "kms: key version near its AES-GCM encryption budget",
		slog.String("keyTag", s.tag), slog.Uint64("version", uint64(v)), slog.Uint64("encryptions", n),
		slog.Uint64("budget", e.usage.budget), slog.Bool("autoRotation", rotate))
	if rotate && k.rotate.Swap(v) == 0 {
		e.usage.rotations.Add(1)
	}
	if e.aud != nil {
		// Fail-closed auditing cannot fail this call for a warning.
		_ = e.aud.send(ctx, AuditEvent{Time: e.now(), KeyTag: s.tag, Version: v, Op: "encryption budget warning",
			Plane: PlaneSystem, Caller: systemCaller, Result: ResultOK})
	}
}

// refused counts a refused call against the key's current version.
func (e *Engine) refusedUse(s *keySnap) {
	k := s.u
	if k == nil {
		return
	}
	c := k.counters(s.current().num)
	c.refused.Add(1)
	e.touch(k, c)
}

// systemCaller names the Engine's own background work in events.
const systemCaller = "maintenance"

// budgetRotations rotates the keys whose encryption budget warning asked
// for it, if the version warned about is still current and the key still
// has auto-rotation on. The caller has entered the Engine.
func (e *Engine) budgetRotations(ctx context.Context) error {
	if e.usage.rotations.Load() == 0 {
		return nil
	}
	var errs []error
	e.keys.Range(func(_ string, ent *keyEntry) bool {
		k := &ent.usage
		ver := k.rotate.Load()
		if ver == 0 {
			return true
		}
		if err := e.budgetRotate(ctx, ent, ver); err != nil {
			errs = append(errs, err)
			return true
		}
		if k.rotate.CompareAndSwap(ver, 0) {
			e.usage.rotations.Add(-1)
		}
		return true
	})
	return errors.Join(errs...)
}

func (e *Engine) budgetRotate(ctx context.Context, ent *keyEntry, ver uint32) error {
	const op = "auto-rotate key"
	ent.mu.Lock()
	defer ent.mu.Unlock()
	s := ent.snap.Load()
	if s.state == stateDestroyed || !s.enabled() || !s.rare().rotation.enabled || s.current().num != ver {
		return nil // rotated, disabled or turned off meanwhile
	}
	sctx := withPlane(ctx, PlaneSystem, systemCaller, noAddr)
	start := e.startTime()
	r, err := updateLocked(e, sctx, op, ent, e.rotation(sctx, op))
	if e.watching() {
		_, err = endTrusted(e, sctx, op, s.tag, s, resultVersion(r), start, r, err)
	}
	if err == nil {
		e.log.LogAttrs(ctx, slog.LevelInfo, "kms: key rotated before its encryption budget ran out", slog.String("keyTag", s.tag))
	}
	return err
}

// usageRefreshWindow: on a shared store (one with a change feed), a flush
// reads the shared usage record of every key last used (by any Engine, as
// far as this one knows) within this window, even if this Engine made no
// call on it since its last flush, so that its view catches up with the
// others' counts. Before
// it, such a key was read only while the record kept changing between two
// flushes, and a change after one quiet flush went unseen until the key
// was used here again (TestSharedUsageBudget, about one run in five).
const usageRefreshWindow = time.Minute

// usedSince reports whether a version's last use is at or after ms (Unix
// milliseconds).
func (k *keyUsage) usedSince(ms int64) bool {
	n := k.n.Load()
	if n == 0 {
		return false
	}
	if k.v1.last.Load() >= ms {
		return true
	}
	if n > 1 {
		for _, c := range (*k.more.Load())[:n-1] {
			if c.last.Load() >= ms {
				return true
			}
		}
	}
	return false
}

// usageFlushChunk bounds the usage records one flush commit writes.
const usageFlushChunk = 64

// usageFlushRetries bounds how often one flush commit is read again and
// retried after a conflict (another Engine wrote one of its usage records
// first). The counts of a commit that still conflicts stay pending for
// the next flush: they are never lost.
const usageFlushRetries = 8

// flushUsage adds the counts made since the last flush to the store's
// usage records of every key used since then.
//
// On a store that implements store.RevReader (Badger, store/etcd,
// storetest.Memory) each record is updated with an optimistic
// read-modify-write: the Engine writes the shared record as it last read
// it plus its own delta (its counts since the last successful flush),
// expecting the revision it read; on a conflict it reads the record again
// and retries (usageFlushRetries times), and a delta not written stays
// pending. So Engines sharing a store add up their counts, and each one's
// view (KeyUsage, the budget check) is refreshed to the shared total at
// every flush of the key. Other stores (owned by one process) get the
// Engine's totals written over the record.
func (e *Engine) flushUsage(ctx context.Context) error {
	e.usage.flushMu.Lock()
	defer e.usage.flushMu.Unlock()
	type dirtyKey struct {
		tag string
		k   *keyUsage
	}
	var keys, idle []dirtyKey
	rr, shared := e.revReader()
	// Only a store with a change feed can have other Engines writing
	// to it (without one they would not see each other's keys either):
	// on any other, such as the Engine's own Badger directory, re-reading
	// idle keys would only read back what this Engine wrote (at Close
	// after every one of 100,000 keys was used, about a second).
	refresh := shared && e.watched
	cutoff := e.now().Add(-usageRefreshWindow).UnixMilli()
	e.rangeUsage(func(tag string, k *keyUsage) bool {
		if !k.dirty.Load() {
			if refresh && (k.sync != nil && k.sync.recent || k.usedSince(cutoff)) {
				if k.sync != nil {
					k.sync.recent = false
				}
				idle = append(idle, dirtyKey{tag, k})
			}
			return true
		}
		k.dirty.Store(false)
		keys = append(keys, dirtyKey{tag, k})
		return true
	})
	var errs []error
	if refresh {
		// Keys flushed last time but not used since: read what the
		// other Engines counted, so that KeyUsage and the budget check
		// see it here too.
		for _, d := range idle {
			r, rev, err := rr.ReadRev(ctx, store.UsageKey(d.tag))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			ur, _ := r.(*store.UsageRecord)
			d.k.setShared(ur, rev)
			// Keep reading while other Engines keep counting.
			d.k.sync.recent = d.k.refresh()
		}
	}
	for len(keys) > 0 {
		n := min(len(keys), usageFlushChunk)
		chunk := keys[:n]
		keys = keys[n:]
		var err error
		if shared {
			tags := make([]string, n)
			ks := make([]*keyUsage, n)
			for i, d := range chunk {
				tags[i], ks[i] = d.tag, d.k
			}
			err = e.flushShared(ctx, rr, tags, ks)
		} else {
			c := &store.Change{}
			for _, d := range chunk {
				c.Put(d.k.record(d.tag))
			}
			_, err = e.st.Apply(ctx, c)
		}
		if err != nil {
			errs = append(errs, err)
			for _, d := range chunk {
				d.k.dirty.Store(true) // the delta stays pending: write it next time
			}
		}
	}
	if len(errs) > 0 {
		return wrapErr("flush usage", "", ErrInternal, errors.Join(errs...))
	}
	return nil
}

// flushShared adds the pending deltas of keys to their shared usage
// records in one commit, retrying after conflicts. The caller holds
// usage.flushMu.
func (e *Engine) flushShared(ctx context.Context, rr store.RevReader, tags []string, keys []*keyUsage) error {
	for attempt := 0; ; attempt++ {
		for i, k := range keys {
			if k.sync != nil && k.sync.revKnown {
				continue
			}
			loaded := k.sync == nil && !e.watched
			r, rev, err := rr.ReadRev(ctx, store.UsageKey(tags[i]))
			if err != nil {
				return err
			}
			ur, _ := r.(*store.UsageRecord)
			k.setShared(ur, rev)
			if loaded && ur != nil {
				// What loadUsage put in the counters (see there).
				for _, vr := range k.sync.shared {
					*k.sync.baseOf(int(vr.Version - 1)) = countsOf(vr)
				}
			}
		}
		c := &store.Change{}
		recs := make([]*store.UsageRecord, len(keys))
		curs := make([][]verCounts, len(keys))
		for i, k := range keys {
			recs[i], curs[i] = k.merged(tags[i])
			c.Put(recs[i])
			c.Expecting(store.UsageKey(tags[i]), k.sync.rev)
		}
		rev, err := e.st.Apply(ctx, c)
		if err == nil {
			for i, k := range keys {
				k.written(recs[i], curs[i], rev)
				k.sync.recent = true
			}
			return nil
		}
		for _, k := range keys {
			k.sync.revKnown = false // read them all again: a commit may have landed
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= usageFlushRetries {
			return err
		}
	}
}

// verCounts is a snapshot of one version's counters.
type verCounts struct {
	enc, dec, sign, verify, refused uint64
	last                            int64
}

// countsOf is a version's counts as a usage record holds them.
func countsOf(vr store.VersionUsageRecord) verCounts {
	return verCounts{vr.Encryptions, vr.Decryptions, vr.Signatures, vr.Verifications, vr.Refusals, vr.LastUse}
}

func (c *verUsage) snapshot() verCounts {
	return verCounts{c.enc.Load(), c.dec.Load(), c.sign.Load(), c.verify.Load(), c.refused.Load(), c.last.Load()}
}

// setShared records the shared usage record as read at rev (nil: none),
// and makes counters for the versions it counts, so that the budget
// check sees them once they are merged.
func (k *keyUsage) setShared(r *store.UsageRecord, rev int64) {
	s := k.syncState()
	s.shared = nil
	if r != nil {
		for _, vr := range r.Versions {
			if vr.Version == 0 || vr.Version > MaxVersions {
				continue
			}
			k.counters(vr.Version)
			s.shared = append(s.shared, vr)
		}
	}
	s.rev, s.revKnown = rev, true
}

// merged returns the shared record plus the counts made since the last
// flush, and the counters' snapshot it used. Counters only grow, except
// that a refused encryption takes its count back, so a delta may be
// negative: the arithmetic is signed and the sum never below zero.
func (k *keyUsage) merged(tag string) (*store.UsageRecord, []verCounts) {
	r := &store.UsageRecord{Tag: tag}
	vs := k.all()
	if vs == nil {
		return r, nil
	}
	cur := make([]verCounts, len(vs))
	for i, c := range vs {
		cur[i] = c.snapshot()
		var sh store.VersionUsageRecord
		if k.sync != nil {
			for _, s := range k.sync.shared {
				if int(s.Version) == i+1 {
					sh = s
				}
			}
		}
		b := k.sync.baseAt(i)
		r.Versions = append(r.Versions, store.VersionUsageRecord{
			Version:       uint32(i + 1),
			Encryptions:   addDelta(sh.Encryptions, cur[i].enc, b.enc),
			Decryptions:   addDelta(sh.Decryptions, cur[i].dec, b.dec),
			Signatures:    addDelta(sh.Signatures, cur[i].sign, b.sign),
			Verifications: addDelta(sh.Verifications, cur[i].verify, b.verify),
			Refusals:      addDelta(sh.Refusals, cur[i].refused, b.refused),
			LastUse:       max(sh.LastUse, cur[i].last),
		})
	}
	return r, cur
}

// addDelta is shared + (cur - base), in signed arithmetic, at least 0.
func addDelta(shared, cur, base uint64) uint64 {
	d := int64(cur - base)
	if d < 0 && uint64(-d) > shared {
		return 0
	}
	return shared + uint64(d)
}

// written moves the counters to the record committed at rev: each one
// gains what other Engines counted (counts made since the snapshot cur
// are kept), and the record becomes the new base.
func (k *keyUsage) written(r *store.UsageRecord, cur []verCounts, rev int64) {
	s := k.syncState()
	vs := k.all()
	for i, vr := range r.Versions {
		if i >= len(cur) {
			break
		}
		c := vs[i]
		c.enc.Add(vr.Encryptions - cur[i].enc)
		c.dec.Add(vr.Decryptions - cur[i].dec)
		c.sign.Add(vr.Signatures - cur[i].sign)
		c.verify.Add(vr.Verifications - cur[i].verify)
		c.refused.Add(vr.Refusals - cur[i].refused)
		for {
			l := c.last.Load()
			if l >= vr.LastUse || c.last.CompareAndSwap(l, vr.LastUse) {
				break
			}
		}
		*s.baseOf(i) = countsOf(vr)
	}
	s.shared = r.Versions
	s.rev, s.revKnown = rev, true
}

// refresh moves the counters to the shared record as last read, keeping
// the counts not flushed yet, and reports whether the record had changed.
func (k *keyUsage) refresh() bool {
	vs := k.all()
	if vs == nil || k.sync == nil {
		return false
	}
	changed := false
	for _, vr := range k.sync.shared {
		c := vs[vr.Version-1]
		b := k.sync.baseOf(int(vr.Version - 1))
		if vr.Encryptions != b.enc || vr.Decryptions != b.dec || vr.Signatures != b.sign ||
			vr.Verifications != b.verify || vr.Refusals != b.refused {
			changed = true
		}
		c.enc.Add(vr.Encryptions - b.enc)
		c.dec.Add(vr.Decryptions - b.dec)
		c.sign.Add(vr.Signatures - b.sign)
		c.verify.Add(vr.Verifications - b.verify)
		c.refused.Add(vr.Refusals - b.refused)
		for {
			l := c.last.Load()
			if l >= vr.LastUse || c.last.CompareAndSwap(l, vr.LastUse) {
				break
			}
		}
		*b = countsOf(vr)
	}
	return changed
}

// revReader returns the Engine's store as a store.RevReader, if it is one.
func (e *Engine) revReader() (store.RevReader, bool) {
	st := e.st
	if o, ok := st.(observedStore); ok {
		st = o.Store
	}
	r, ok := st.(store.RevReader)
	return r, ok
}

func (k *keyUsage) record(tag string) *store.UsageRecord {
	r := &store.UsageRecord{Tag: tag}
	if vs := k.all(); vs != nil {
		for i, c := range vs {
			r.Versions = append(r.Versions, store.VersionUsageRecord{
				Version: uint32(i + 1), Encryptions: c.enc.Load(), Decryptions: c.dec.Load(),
				Signatures: c.sign.Load(), Verifications: c.verify.Load(), Refusals: c.refused.Load(),
				LastUse: c.last.Load(),
			})
		}
	}
	return r
}

// loadUsage reads the usage records back when the Engine opens; records
// of keys that no longer exist (a flush that raced a destruction) are
// deleted.
func (e *Engine) loadUsage(ctx context.Context, keys int) error {
	rg, ok := e.ranger()
	if !ok {
		return nil
	}
	// A large store's records are read and applied on every core, in
	// parts split by the tag's first hex digit (the first part from the
	// prefix itself, the last to its end: together the whole prefix);
	// each key's record is in one part, so the parts touch different
	// counters.
	bounds := []string{store.PrefixUsage, prefixEnd(store.PrefixUsage)}
	if keys >= usageSplitFrom {
		bounds = bounds[:1]
		for _, d := range "123456789abcdef" {
			bounds = append(bounds, store.PrefixUsage+string(d))
		}
		bounds = append(bounds, prefixEnd(store.PrefixUsage))
	}
	parts := len(bounds) - 1
	stales := make([][]string, parts)
	errs := make([]error, parts)
	inParallelChunks(parts, 1, func(i int) {
		stales[i], errs[i] = e.loadUsageRange(ctx, rg, bounds[i], bounds[i+1])
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	stale := slices.Concat(stales...)
	if len(stale) > 0 {
		if _, err := e.st.Apply(ctx, (&store.Change{}).Delete(stale...)); err != nil {
			e.log.LogAttrs(ctx, slog.LevelWarn, "kms: could not delete usage records of destroyed keys", slog.String("error", err.Error()))
		}
	}
	return nil
}

// usageSplitFrom is the number of keys from which loadUsage reads in
// parts (a variable for the tests).
var usageSplitFrom = releaseAfterLoad

// loadUsageRange applies the usage records in [from, to) and returns the
// store keys of those whose key no longer exists.
func (e *Engine) loadUsageRange(ctx context.Context, rg store.Ranger, from, to string) ([]string, error) {
	recs, err := rg.Range(ctx, from, to, 0, false)
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, r := range recs {
		ur, ok := r.(*store.UsageRecord)
		if !ok {
			continue
		}
		k := e.usageOf(ur.Tag)
		if k == nil {
			stale = append(stale, ur.StoreKey())
			continue
		}
		for _, vr := range ur.Versions {
			if vr.Version == 0 || vr.Version > MaxVersions {
				continue
			}
			c := k.counters(vr.Version)
			c.enc.Store(vr.Encryptions)
			c.dec.Store(vr.Decryptions)
			c.sign.Store(vr.Signatures)
			c.verify.Store(vr.Verifications)
			c.refused.Store(vr.Refusals)
			c.last.Store(vr.LastUse)
			if e.watched {
				*k.syncState().baseOf(int(vr.Version - 1)) = countsOf(vr)
			}
		}
		if e.watched {
			k.syncState().shared = ur.Versions
		}
		// On a store without a change feed no other Engine writes this
		// record, so the counters just loaded stay what it holds until
		// this Engine writes it: the key's first flush reads it again and
		// takes it as the base then (flushShared). Keeping no flush state
		// for it meanwhile saves three objects (176 bytes) per key that
		// has a record, which on a store whose 100,000 keys were all used
		// is about a sixth of the heap an open leaves.
	}
	return stale, nil
}

// prefixEnd is the first key after every key starting with p.
func prefixEnd(p string) string {
	b := []byte(p)
	b[len(b)-1]++
	return string(b)
}
