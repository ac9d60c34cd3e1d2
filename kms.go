package kms

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pocketkms/kms/acl"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/pubkey"
	"github.com/pocketkms/kms/internal/store"
	"github.com/pocketkms/kms/ratelimit"
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
	st     *store.Store
	clock  Clock
	random io.Reader
	log    *slog.Logger

	keys    sync.Map // key tag -> *keyEntry
	limiter *ratelimit.Limiter
	tokens  *token.Cache

	// createMu serialises operations on the name index (create, rename).
	createMu sync.Mutex
	names    map[string]string // lower-case name -> tag; guarded by createMu
	seq      uint64            // last key sequence number; guarded by createMu

	stopWork chan struct{} // closed by Close to stop the background worker
	workDone chan struct{} // closed when the worker has stopped

	active    atomic.Int64
	closed    atomic.Bool
	idle      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// keyEntry is the mutable cell of one key: a lock for mutations and the
// current immutable snapshot for readers.
type keyEntry struct {
	tag  string
	mu   sync.Mutex
	snap atomic.Pointer[keySnap]
}

// keySnap is an immutable view of a key. Readers never lock it.
type keySnap struct {
	rec      store.KeyRecord
	typ      KeyType
	versions []*versionSnap // versions[i].num == i+1
	gen      *genSnap       // token generator; nil until first activated
	acl      acl.List       // IP allow-list as entered
	aclM     *acl.Matcher   // compiled once per change
}

// clone returns a shallow copy to modify and publish.
func (s *keySnap) clone() *keySnap {
	c := *s
	return &c
}

func (s *keySnap) current() *versionSnap { return s.versions[len(s.versions)-1] }

func (s *keySnap) version(n uint32) *versionSnap {
	if n == 0 || int(n) > len(s.versions) {
		return nil
	}
	return s.versions[n-1]
}

// versionSnap is an immutable view of a version. Its loaded backend key
// is shared by every snapshot that contains the version.
type versionSnap struct {
	rec store.VersionRecord
	ad  []byte           // associated-data prefix: binds key tag and version
	pub crypto.PublicKey // rec.PublicKey parsed; nil for AES256
	lk  *lazyKey
}

// lazyKey loads a backend key on first use and keeps it.
type lazyKey struct {
	mu sync.Mutex
	k  atomic.Pointer[backend.Key]
}

func (e *Engine) loadKey(ctx context.Context, s *keySnap, v *versionSnap) (backend.Key, error) {
	if k := v.lk.k.Load(); k != nil {
		return *k, nil
	}
	v.lk.mu.Lock()
	defer v.lk.mu.Unlock()
	if k := v.lk.k.Load(); k != nil {
		return *k, nil
	}
	k, err := e.be.Load(ctx, &backend.LoadRequest{
		Ref:        backend.KeyRef{KeyTag: s.rec.Tag, Version: v.rec.Version, Purpose: backend.PurposeCipher},
		Type:       s.typ,
		Convergent: s.rec.Convergent,
		Handle:     v.rec.Handle,
	})
	if err != nil {
		return nil, err
	}
	v.lk.k.Store(&k)
	return k, nil
}

// New opens an Engine over a backend. Without WithDirectory the state is
// kept in memory. With a directory, every key is read back, and the backend
// must be able to open the recorded key material: a backend with another
// root key (or token) fails with ErrBackendMismatch and changes nothing.
// The Engine owns the backend once New succeeds (Close closes it); when New
// fails, the backend is still the caller's to close.
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
	st, err := store.Open(store.Options{Dir: cfg.dir, InMemory: cfg.inMemory, Logger: cfg.logger})
	if err != nil {
		return nil, wrapErr("new", "", ErrInternal, err)
	}
	e := &Engine{
		be: be, st: st, clock: cfg.clock, random: cfg.random, log: cfg.logger,
		limiter: limiter, tokens: cache,
		names: map[string]string{},
		idle:  make(chan struct{}, 1),
	}
	if err := e.load(ctx); err != nil {
		// The backend stays the caller's to close, as on every failure.
		if cerr := st.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	e.stopWork, e.workDone = make(chan struct{}), make(chan struct{})
	go e.work(cfg.maintain)
	return e, nil
}

// work runs Maintain every interval until Close; interval 0 only waits.
func (e *Engine) work(interval time.Duration) {
	defer close(e.workDone)
	if interval == 0 {
		<-e.stopWork
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-e.stopWork:
			return
		case <-t.C:
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-e.stopWork:
					cancel()
				case <-ctx.Done():
				}
			}()
			if err := e.Maintain(ctx); err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, context.Canceled) {
				e.log.LogAttrs(ctx, slog.LevelWarn, "kms: background maintenance", slog.String("error", err.Error()))
			}
			cancel()
		}
	}
}

// load builds the in-memory snapshots from the store and checks that the
// backend can open the key material.
func (e *Engine) load(ctx context.Context) error {
	c, err := e.st.Load()
	if err != nil {
		return wrapErr("new", "", ErrInternal, err)
	}
	var probe *keySnap
	for i := range c.Keys {
		rec := c.Keys[i]
		vrecs := c.Versions[rec.Tag]
		snap, err := buildSnap(rec, vrecs)
		if err != nil {
			return wrapErr("new", rec.Tag, ErrInternal, err)
		}
		if g, ok := c.Generators[rec.Tag]; ok {
			if snap.gen, err = newGenSnap(g); err != nil {
				return wrapErr("new", rec.Tag, ErrInternal, err)
			}
		}
		if a, ok := c.ACLs[rec.Tag]; ok {
			l, err := acl.ParseState(acl.State{Enabled: a.Enabled, Entries: a.Entries})
			if err != nil {
				return wrapErr("new", rec.Tag, ErrInternal, err)
			}
			snap.acl, snap.aclM = l, l.Compile()
		}
		if rl := rec.RateLimit; rl != nil {
			if err := e.limiter.SetLimit(rec.Tag, limitOf(rl)); err != nil {
				return wrapErr("new", rec.Tag, ErrInternal, err)
			}
		}
		ent := &keyEntry{tag: rec.Tag}
		ent.snap.Store(snap)
		e.keys.Store(rec.Tag, ent)
		if rec.Seq > e.seq {
			e.seq = rec.Seq
		}
		// A REVOKED key past its destruction time may have lost its
		// material already (destroyLocked destroys it before deleting the
		// records), so it proves nothing about the backend.
		due := KeyState(rec.State) == StateRevoked && rec.DestroyAt <= e.now().UnixMilli()
		if !due && (probe == nil || rec.Seq > probe.rec.Seq) {
			probe = snap
		}
	}
	for tag := range c.Generators {
		if _, ok := e.keys.Load(tag); !ok {
			return wrapErr("new", tag, ErrInternal, errors.New("store: token generator of a missing key"))
		}
	}
	for tag := range c.ACLs {
		if _, ok := e.keys.Load(tag); !ok {
			return wrapErr("new", tag, ErrInternal, errors.New("store: ip acl of a missing key"))
		}
	}
	for name, tag := range c.Names {
		v, ok := e.keys.Load(tag)
		if !ok || lower(v.(*keyEntry).snap.Load().rec.Name) != name {
			return wrapErr("new", tag, ErrInternal, errors.New("store: name index out of step with keys"))
		}
		e.names[name] = tag
	}
	if len(e.names) != len(c.Keys) {
		return wrapErr("new", "", ErrInternal, errors.New("store: a key is missing from the name index"))
	}
	if probe != nil {
		// One load proves the backend holds this store's material; loading
		// every key here would make opening cost O(keys).
		if _, err := e.loadKey(ctx, probe, probe.current()); err != nil {
			return wrapErr("new", probe.rec.Tag, ErrBackendMismatch, err)
		}
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, "kms: engine opened", slog.Int("keys", len(c.Keys)))
	return nil
}

func buildSnap(rec store.KeyRecord, vrecs []store.VersionRecord) (*keySnap, error) {
	typ := KeyType(rec.Type)
	if !typ.Valid() {
		return nil, fmt.Errorf("unknown key type %q", rec.Type)
	}
	if len(vrecs) == 0 || int(rec.CurrentVersion) != len(vrecs) {
		return nil, fmt.Errorf("key has %d version records, current version %d", len(vrecs), rec.CurrentVersion)
	}
	s := &keySnap{rec: rec, typ: typ, aclM: acl.List{}.Compile()}
	for i, vr := range vrecs {
		if vr.Version != uint32(i+1) {
			return nil, fmt.Errorf("version records out of sequence at %d", vr.Version)
		}
		v := newVersionSnap(rec.Tag, vr)
		if err := v.checkPublic(typ); err != nil {
			return nil, err
		}
		s.versions = append(s.versions, v)
	}
	return s, nil
}

func newVersionSnap(tag string, vr store.VersionRecord) *versionSnap {
	v := &versionSnap{rec: vr, ad: versionAD(tag, vr.Version), lk: &lazyKey{}}
	// A public key that does not parse leaves pub nil: checkPublic refuses
	// it when the key is read back, and Verify and Encrypt answer
	// ErrInternal for a nil one (pubkey.ErrInvalidKey), never panic.
	v.pub, _ = pubkey.Parse(vr.PublicKey)
	return v
}

// checkPublic fails unless the version's stored public key parsed and is
// the one a key of type typ has (none for AES256).
func (v *versionSnap) checkPublic(typ KeyType) error {
	if v.pub == nil && len(v.rec.PublicKey) != 0 {
		return fmt.Errorf("version %d: public key does not parse", v.rec.Version)
	}
	if err := pubkey.Check(typ, v.pub); err != nil {
		return fmt.Errorf("version %d: %w", v.rec.Version, err)
	}
	return nil
}

// versionAD is the associated data every AES-GCM body of a version is
// bound to: "pocketkms/v1" ‖ 0 ‖ keyTag ‖ 0 ‖ uint32be(version).
func versionAD(tag string, version uint32) []byte {
	ad := make([]byte, 0, 12+1+len(tag)+1+4+1)
	ad = append(ad, "pocketkms/v1"...)
	ad = append(ad, 0)
	ad = append(ad, tag...)
	ad = append(ad, 0, byte(version>>24), byte(version>>16), byte(version>>8), byte(version))
	return ad
}

// enter registers an in-flight call; it fails once the Engine is closed.
func (e *Engine) enter() bool {
	e.active.Add(1)
	if e.closed.Load() {
		e.leave()
		return false
	}
	return true
}

func (e *Engine) leave() {
	if e.active.Add(-1) == 0 && e.closed.Load() {
		select {
		case e.idle <- struct{}{}:
		default:
		}
	}
}

// Close stops the Engine: later calls fail with ErrClosed, calls in flight
// finish first, then the store and the backend are closed. It is
// idempotent and returns the first close's result.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		close(e.stopWork)
		<-e.workDone
		for e.active.Load() != 0 {
			select {
			case <-e.idle:
			case <-time.After(10 * time.Millisecond):
			}
		}
		errs := []error{e.st.Close(), e.be.Close()}
		if err := errors.Join(errs...); err != nil {
			e.closeErr = wrapErr("close", "", ErrInternal, err)
		}
	})
	return e.closeErr
}

// lookup returns the entry and snapshot of a key on any plane.
func (e *Engine) lookup(op, tag string) (*keyEntry, *keySnap, error) {
	v, ok := e.keys.Load(tag)
	if !ok {
		norm, valid := normalizeTag(tag)
		if !valid {
			return nil, nil, newErr(op, "", ErrInvalidArgument, "key tag must be 64 hex characters")
		}
		if v, ok = e.keys.Load(norm); !ok {
			return nil, nil, newErr(op, norm, ErrKeyNotFound, "")
		}
	}
	ent := v.(*keyEntry)
	s := ent.snap.Load()
	if s.rec.State == stateDestroyed {
		// Looked up just as Maintain destroyed it.
		return nil, nil, newErr(op, s.rec.Tag, ErrKeyNotFound, "")
	}
	return ent, s, nil
}

// normalizeTag lower-cases a 64-hex-digit key tag; trusted-plane tags are
// case-insensitive as in NAVER's account-authenticated API.
func normalizeTag(tag string) (string, bool) {
	if len(tag) != 64 {
		return "", false
	}
	b := []byte(tag)
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			b[i] = c + ('a' - 'A')
		default:
			return "", false
		}
	}
	return string(b), true
}

func (e *Engine) now() time.Time { return e.clock.Now() }

// readKey runs a trusted-plane read of a key in any state: it registers
// the call (ErrClosed once closed), resolves the key, then runs fn.
func readKey[R any](e *Engine, op, keyTag string, fn func(op string, s *keySnap) (R, error)) (R, error) {
	var zero R
	if !e.enter() {
		return zero, newErr(op, "", ErrClosed, "")
	}
	defer e.leave()
	_, s, err := e.lookup(op, keyTag)
	if err != nil {
		return zero, err
	}
	return fn(op, s)
}
