package kms

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/keytag"
	"github.com/pocketkms/kms/internal/pubkey"
	"github.com/pocketkms/kms/internal/shred"
	badgerstore "github.com/pocketkms/kms/internal/store"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/token"
)

// KeyType is the type of a key: AES256, RSA2048 or ECDSA.
type KeyType = backend.KeyType

// The key types.
const (
	AES256  = backend.AES256
	RSA2048 = backend.RSA2048
	ECDSA   = backend.ECDSA
)

// KeyState is the state of a key.
type KeyState string

// The key states (NAVER v3 names).
const (
	// StateEnabled: the key serves every operation.
	StateEnabled KeyState = "ENABLED"
	// StateDisabled: the key serves nothing until enabled again.
	StateDisabled KeyState = "DISABLED"
	// StateRevoked: deletion was requested; the key is destroyed at its
	// DestroyAt time unless the deletion is cancelled.
	StateRevoked KeyState = "REVOKED"
)

// VersionState is the state of a key version.
type VersionState string

// The version states.
const (
	VersionEnabled  VersionState = "ENABLED"
	VersionDisabled VersionState = "DISABLED"
)

// MaxVersions is the largest number of versions a key may have.
const MaxVersions = 100

// Engine is the pocketkms key management service, in process. Create it
// with New; it is safe for concurrent use.
type Engine struct {
	be     backend.Backend
	st     store.Store
	clock  Clock
	random io.Reader
	log    *slog.Logger
	limit  ratelimit.Limit // the rate limit of keys without their own (normalized)
	// pssSalt is the salt length Verify demands of RSA2048 signatures
	// (pubkey.AnySaltLength with WithAnyPSSSaltLength).
	pssSalt int
	// tokenIDs: WithTokenIDs (every token gets a jti).
	tokenIDs bool

	keys    keyMap // key tag -> *keyEntry (keymap.go)
	limiter *ratelimit.Limiter
	tokens  *token.Cache

	seq atomic.Uint64 // the last key sequence number handed out
	// orphanGrace is WithOrphanSweep's grace (0: Maintain does not sweep);
	// lastSweep is when Maintain last swept, on the Engine's clock.
	orphanGrace time.Duration
	lastSweep   atomic.Int64
	watched     bool // the store has a change feed (store.Watcher)
	// feedLost is when (Engine clock, Unix ns) the change feed was found
	// lost, 0 while it is followed; staleLimit is WithStaleLimit. See
	// feed.go.
	feedLost   atomic.Int64
	staleLimit time.Duration
	// members is the store's count of Engines sharing it, nil if it
	// keeps none (see share.go).
	members store.Membership

	// shred holds the keys' shred keys (see shredkeys.go); nil unless the
	// store is Badger in a directory.
	shred *shred.Keys
	// bst is the Badger store in a directory (nil otherwise), rootID the
	// id of the backend's root key that picks a part of a handle sealed
	// during a root-key rotation, and rotMu serialises rotations (see
	// rootkey.go). rootID changes only under guard's write lock.
	bst    *badgerstore.Store
	rootID []byte
	rotMu  sync.Mutex

	// guard: every call holds the read lock for its whole duration and
	// checks closed; Close takes the write lock, so it waits for the calls
	// in flight, and every later call sees closed.
	guard  sync.RWMutex
	closed bool

	// Observability (audit.go, observe.go, usage.go): aud and obs are nil
	// unless WithAudit / WithObserver; usage counts every key version's use.
	aud   *auditor
	obs   Observer
	usage usageTable

	stopWork  context.CancelFunc // cancels the context of background work
	bg        sync.WaitGroup     // background work: maintenance, the change feed
	closeOnce sync.Once
	closeErr  error
}

// New opens an Engine over a backend. Without WithDirectory or WithStore
// the state is kept in memory. With a store, every key is read back, and
// the backend must be able to open the recorded key material: a backend
// with another root key (or token) fails with ErrBackendMismatch and
// changes nothing. The Engine owns the backend (and a store given with
// WithStore) once New succeeds: Close closes them. When New fails, both
// are still the caller's to close.
//
// Opening a store of 10,000 keys or more reads it on every core and then
// returns the memory the reading used to the operating system
// (runtime/debug.FreeOSMemory: one garbage collection of the process),
// so that a large Engine holds what it keeps, not what it read, where the
// heap grown for the load otherwise stayed resident until the runtime's
// scavenger returned it. For 100,000 keys that is about 140 MiB resident
// when they have only their key records, and about 225 MiB for keys made
// through CreateKey and used (history, shred keys, usage records, and
// Badger's tables mapped in by the open's read; BENCHMARKS.md).
func New(ctx context.Context, be backend.Backend, opts ...Option) (*Engine, error) {
	if be == nil {
		return nil, newErr("new", "", ErrInvalidArgument, "nil backend")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, newErr("new", "", ErrInvalidArgument, err.Error())
		}
	}
	limiter, err := ratelimit.New(ratelimit.WithClock(cfg.clock), ratelimit.WithDefaultLimit(cfg.limit))
	if err != nil {
		return nil, newErr("new", "", ErrInvalidArgument, err.Error())
	}
	cache, err := token.NewCache(cfg.cacheMax)
	if err != nil {
		return nil, newErr("new", "", ErrInvalidArgument, err.Error())
	}
	st, owned := cfg.store, false
	var bst *badgerstore.Store
	var check []byte
	if st == nil {
		if cv, ok := be.(backend.CheckValuer); ok && !cfg.inMemory {
			if check, err = cv.CheckValue(ctx); err != nil {
				return nil, backendErr("new", "", err)
			}
		}
		bst, err = badgerstore.Open(badgerstore.Options{Dir: cfg.dir, InMemory: cfg.inMemory, Logger: cfg.logger, Check: check, MinFree: cfg.minFree})
		if errors.Is(err, badgerstore.ErrCheckMismatch) {
			// The store's handles were sealed for another backend secret.
			return nil, wrapErr("new", "", ErrBackendMismatch, fmt.Errorf("%w: %w", err, backend.ErrInvalidHandle))
		}
		if err != nil {
			return nil, wrapErr("new", "", ErrInternal, err)
		}
		st, owned = bst, true
	}
	e := &Engine{
		be: be, st: st, clock: cfg.clock, random: cfg.random, log: cfg.logger,
		limit: cfg.limit, limiter: limiter, tokens: cache, pssSalt: pssSaltLength,
		orphanGrace: cfg.orphans, tokenIDs: cfg.tokenIDs, staleLimit: cfg.stale, obs: cfg.observer,
	}
	_, e.watched = st.(store.Watcher)
	if _, sys := cfg.clock.(systemClock); sys {
		e.usage.anchor.Store(newAnchor())
	}
	if m, ok := st.(store.Membership); ok {
		e.members = m
	}
	e.usage.budget, e.usage.warn = cmp.Or(cfg.budget, EncryptionBudget), cmp.Or(cfg.budgetWarn, DefaultEncryptionBudgetWarning)
	e.usage.warn = min(e.usage.warn, e.usage.budget)
	if cfg.anySalt {
		e.pssSalt = pubkey.AnySaltLength
	}
	var (
		rev    int64
		loaded int
	)
	if bst != nil && !cfg.inMemory {
		// Only a directory has files to shred: an in-memory store keeps
		// nothing, and a store given with WithStore keeps its own.
		if e.shred, err = shred.Open(cfg.dir); err != nil {
			err = wrapErr("new", "", ErrInternal, err)
		} else {
			e.migrateShred(ctx)
		}
		e.bst, e.rootID = bst, rootIDOf(check)
	}
	if err == nil {
		rev, loaded, err = e.load(ctx)
	}
	if err == nil && bst != nil && bst.CheckPending() {
		// The backend opened the store's material (or there is none):
		// from now on the directory names its root key.
		if cerr := bst.WriteCheck(); cerr != nil {
			err = wrapErr("new", "", ErrInternal, cerr)
		}
	}
	if err == nil {
		e.pruneShred(ctx)
		e.recoverRotation(ctx)
		if uerr := e.loadUsage(ctx, loaded); uerr != nil {
			err = wrapErr("new", "", ErrInternal, uerr)
		}
	}
	if err != nil {
		if e.shred != nil {
			e.shred.Close()
		}
		// The backend (and a store given to New) stay the caller's to
		// close, as on every failure.
		if owned {
			if cerr := st.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
		return nil, err
	}
	if loaded >= releaseAfterLoad {
		// What the load decoded (every record, every key's name) is
		// garbage now, and a heap sized for it stays resident until the
		// runtime's scavenger slowly returns it: return it now, at the
		// cost of one collection, so that an Engine over many keys holds
		// what it keeps, not what it read.
		debug.FreeOSMemory()
	}
	if e.obs != nil {
		e.st = observedStore{Store: st, obs: e.obs}
	}
	if cfg.audit != nil {
		e.aud = newAuditor(cfg.audit, cfg.auditOpts)
	}
	work, stop := context.WithCancel(context.Background())
	e.stopWork = stop
	e.bg.Go(func() { e.work(work, cfg.maintain) })
	if w, ok := st.(store.Watcher); ok {
		e.bg.Go(func() { e.follow(work, w, rev) })
	}
	return e, nil
}

// work runs Maintain every interval until Close cancels ctx; interval 0
// only waits. Close's cancellation also ends a Maintain in progress.
func (e *Engine) work(ctx context.Context, interval time.Duration) {
	if interval == 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := e.Maintain(ctx); err != nil && !errors.Is(err, ErrClosed) && ctx.Err() == nil {
				e.log.LogAttrs(ctx, slog.LevelWarn, "kms: background maintenance", slog.String("error", err.Error()))
			}
		}
	}
}

// releaseAfterLoad is the number of keys from which New returns the
// memory its load used to the operating system (debug.FreeOSMemory).
const releaseAfterLoad = 10000

// load builds the in-memory snapshots from the store and checks that the
// backend can open the key material. It returns the store revision read
// and the number of keys.
func (e *Engine) load(ctx context.Context) (rev int64, keys int, err error) {
	c, err := e.st.Load(ctx)
	if err != nil {
		if isContextErr(err) {
			return 0, 0, canceled("new", "", err)
		}
		return 0, 0, wrapErr("new", "", ErrInternal, err)
	}
	now := e.now()
	ents, err := e.buildSnapshots(c.Keys, now)
	if err != nil {
		return 0, 0, err
	}
	// The name index is the store's; here it only has to agree with the
	// keys (every key's name names it, and nothing else is named), or the
	// store was damaged.
	if len(c.Names) != len(ents) {
		return 0, 0, wrapErr("new", "", ErrInternal, errors.New("store: name index out of step with keys"))
	}
	errs := make([]error, len(ents))
	inParallel(len(ents), func(i int) {
		snap := ents[i].snap.Load()
		e.keys.Store(snap.tag, ents[i])
		if c.Names[lower(snap.name)] != snap.tag {
			errs[i] = wrapErr("new", snap.tag, ErrInternal, errors.New("store: name index out of step with keys"))
		}
		e.noteSeq(snap)
	})
	for _, err := range errs {
		if err != nil {
			return 0, 0, err // the first in the store's order
		}
	}
	var probe *keySnap
	for _, ent := range ents {
		// A REVOKED key past its destruction time may have lost its
		// material already (destroyLocked destroys it before deleting the
		// records), so it proves nothing about the backend.
		if snap := ent.snap.Load(); !snap.destructionDue(now) && (probe == nil || snap.seq > probe.seq) {
			probe = snap
		}
	}
	if probe != nil {
		// One load proves the backend holds this store's material; loading
		// every key here would make opening cost O(keys).
		if _, err := e.loadKey(ctx, probe, probe.current()); err != nil {
			if errors.Is(err, backend.ErrUnavailable) || isContextErr(err) {
				// A token that cannot be reached is not a wrong token.
				return 0, 0, backendErr("new", probe.tag, err)
			}
			return 0, 0, wrapErr("new", probe.tag, ErrBackendMismatch, err)
		}
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: engine opened", slog.Int("keys", len(c.Keys)))
	return c.Rev, len(c.Keys), nil
}

// loadChunk is the number of keys a goroutine building snapshots at open
// takes at a time; with fewer keys than two chunks one goroutine builds
// them all.
const loadChunk = 1024

// buildSnapshots builds the snapshot of every key read at open and opens
// its sealed handles, on as many goroutines as GOMAXPROCS allows (each key
// is independent: its records decoded, its shred key read, its handles
// unsealed). The snapshots come first, then the shred keys (all read by
// shred.Open, from one file) take the snapshots' tag strings instead of
// copies of their own (shred.Keys.ShareTags), then the handles are
// opened. An error is the first one in the store's order, as one
// goroutine building each key in turn would have met it. Each keys[i] is
// set to nil once its snapshot is built.
func (e *Engine) buildSnapshots(keys []*store.KeyData, now time.Time) ([]*keyEntry, error) {
	ents := make([]*keyEntry, len(keys))
	errs := make([]error, len(keys))
	inParallel(len(keys), func(i int) {
		// Built in the entry itself (see keyEntry.first), which is not in
		// the key table yet: openHandles below still completes it.
		ent := &keyEntry{}
		if err := fillSnap(&ent.first, keys[i]); err != nil {
			errs[i] = wrapErr("new", keys[i].Key.Tag, ErrInternal, fmt.Errorf("store: %w", err))
			return
		}
		ent.adopt()
		ents[i] = ent
		// The snapshot keeps what it needs of the decoded records (the
		// stored handles); the rest can go while the other keys are
		// built, not after all of them: a lower peak for a large store.
		keys[i] = nil
	})
	if e.shred != nil && len(keys) > 0 {
		tags := make([]string, 0, len(keys))
		for _, ent := range ents {
			if ent != nil {
				tags = append(tags, ent.first.tag)
			}
		}
		if err := e.shred.ShareTags(tags); err != nil {
			return nil, wrapErr("new", "", ErrInternal, err)
		}
	}
	inParallel(len(keys), func(i int) {
		if ents[i] == nil {
			return
		}
		if err := e.openHandles(&ents[i].first, now); err != nil {
			errs[i] = wrapErr("new", ents[i].first.tag, ErrInternal, err)
		}
	})
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return ents, nil
}

// inParallel calls f for 0..n-1 on up to GOMAXPROCS goroutines, in chunks
// of loadChunk; with fewer than two chunks, on this one.
func inParallel(n int, f func(i int)) { inParallelChunks(n, loadChunk, f) }

// inParallelChunks is inParallel in chunks of chunk.
func inParallelChunks(n, chunk int, f func(i int)) {
	workers := max(1, min(runtime.GOMAXPROCS(0), n/chunk))
	if workers == 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Go(func() {
			for {
				lo := int(next.Add(int64(chunk))) - chunk
				if lo >= n {
					return
				}
				for i := lo; i < min(lo+chunk, n); i++ {
					f(i)
				}
			}
		})
	}
	wg.Wait()
}

// enter is the one way into the Engine: every method calls it first and,
// when it succeeds, leave when done (defer). It fails with ErrClosed once
// Close has begun, and with ErrCanceled when ctx has already ended.
// Methods never enter twice (Close would deadlock on a nested read lock):
// internal helpers assume the caller has entered.
func (e *Engine) enter(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return canceled(op, "", err)
	}
	e.guard.RLock()
	if e.closed {
		e.guard.RUnlock()
		return newErr(op, "", ErrClosed, "")
	}
	return nil
}

func (e *Engine) leave() { e.guard.RUnlock() }

// Close stops the Engine: it stops background work, waits for the calls
// in flight, then closes the store and the backend; later calls fail with
// ErrClosed. It is idempotent and returns the first close's result.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.stopWork()
		e.bg.Wait()
		e.guard.Lock()
		e.closed = true
		e.guard.Unlock()
		// No call is in flight and none can start: write the usage
		// counters, then deliver the audit events still queued.
		if ferr := e.flushUsage(context.Background()); ferr != nil {
			// The counts since the last flush are lost, as in a crash.
			e.log.LogAttrs(context.Background(), slog.LevelWarn, "kms: could not write usage counters at close", slog.String("error", ferr.Error()))
		}
		if e.aud != nil {
			e.aud.close()
		}
		if err := errors.Join(e.st.Close(), e.be.Close()); err != nil {
			e.closeErr = wrapErr("close", "", ErrInternal, err)
		}
		if e.shred != nil {
			e.shred.Close()
		}
	})
	return e.closeErr
}

// lookup returns the entry and snapshot of a key on the trusted plane,
// where tags are case-insensitive as in NAVER's account-authenticated API.
func (e *Engine) lookup(op, tag string) (*keyEntry, *keySnap, error) {
	ent, ok := e.keys.Load(tag)
	if !ok {
		norm, valid := keytag.Normalize(tag)
		if !valid {
			return nil, nil, newErr(op, "", ErrInvalidArgument, "key tag must be 64 hex characters")
		}
		if ent, ok = e.keys.Load(norm); !ok {
			return nil, nil, newErr(op, norm, ErrKeyNotFound, "")
		}
	}
	s := ent.snap.Load()
	if s.state == stateDestroyed {
		// Looked up just as Maintain destroyed it.
		return nil, nil, newErr(op, s.tag, ErrKeyNotFound, "")
	}
	return ent, s, nil
}

func validTag(tag string) bool { return keytag.Valid(tag) }

func (e *Engine) now() time.Time { return e.clock.Now() }

// keyCall is the prologue of every trusted-plane method on one key: it
// enters the Engine, resolves the key and, when enabledOnly, checks it is
// ENABLED, then runs fn on the key's snapshot.
func keyCall[R any](e *Engine, ctx context.Context, op, keyTag string, enabledOnly bool, fn func(op string, s *keySnap) (R, error)) (R, error) {
	var zero R
	if err := e.enter(ctx, op); err != nil {
		return zero, err
	}
	defer e.leave()
	if !enabledOnly {
		// Reads are not audited or counted.
		_, s, err := e.lookup(op, keyTag)
		if err != nil {
			return zero, err
		}
		return fn(op, s)
	}
	start := e.startTime()
	_, s, err := e.lookup(op, keyTag)
	var r R
	switch {
	case err != nil:
	case !s.enabled():
		err = newErr(op, s.tag, ErrKeyNotEnabled, "")
	default:
		r, err = fn(op, s)
	}
	if err != nil || e.watching() {
		// The epilogue (observe.go): refusals counted, the call audited
		// and measured. Without a sink or an observer a successful call
		// pays only the test above.
		return endTrusted(e, ctx, op, keyTag, s, auditVersion(op, s), start, r, err)
	}
	return r, nil
}

// readKey runs a trusted-plane read of a key in any state.
func readKey[R any](e *Engine, ctx context.Context, op, keyTag string, fn func(op string, s *keySnap) (R, error)) (R, error) {
	return keyCall(e, ctx, op, keyTag, false, fn)
}
