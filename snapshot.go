package kms

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pocketkms/kms/acl"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/pubkey"
	"github.com/pocketkms/kms/internal/shred"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/store"
)

// keyEntry is the mutable cell of one key: a lock for mutations and the
// current immutable snapshot for readers.
type keyEntry struct {
	mu   sync.Mutex
	snap atomic.Pointer[keySnap]
	// usage holds the key's use counters (usage.go) for as long as the
	// entry lives: no table of its own to look up on every call, and no
	// objects of its own per key for the collector to walk.
	usage keyUsage
	// first is the entry's first snapshot, and lk1 the lazy key of its
	// version 1 when that is its only version (newEntry): one object per
	// key where there were three, for the collector to mark, and for a
	// call on a key not in the caches one dependent load fewer. Like
	// every published snapshot, first is never written once published;
	// a change publishes another one (and first stays, unused, for as
	// long as the entry: one snapshot's worth per changed key).
	first keySnap
	lk1   lazyKey
}

// newEntry returns a new entry publishing a copy of s, an unpublished
// snapshot whose lazy keys nothing else holds.
func newEntry(s *keySnap) *keyEntry {
	ent := &keyEntry{}
	ent.first = *s
	ent.adopt()
	return ent
}

// adopt points the first snapshot's only version at the entry's own
// copy of it and lazy key, and publishes it.
func (ent *keyEntry) adopt() {
	f := &ent.first
	if len(f.versions) == 1 && f.v1[0].num == 1 && f.versions[0].lk == f.v1[0].lk {
		f.versions = f.v1[:1:1]
		if lk := f.v1[0].lk; lk != nil && !lk.ready.Load() {
			f.v1[0].lk = &ent.lk1
		}
	}
	ent.publish(f)
}

// publish makes s the entry's snapshot. s must not be published yet: it
// is given the entry's usage counters first.
func (ent *keyEntry) publish(s *keySnap) {
	s.u = &ent.usage
	ent.snap.Store(s)
}

// keySnap is an immutable view of a key, in the Engine's own types. It is
// built from the store's records when the Engine opens (and when another
// process's change arrives) and turned back into records when a change is
// committed; nothing else holds a copy of its state.
type keySnap struct {
	tag   string
	name  string
	typ   KeyType
	state KeyState
	// x holds what most keys do not have or only management reads; nil
	// when all of it is zero (see rare and own).
	x *keyRare
	// limit is the key's own token-plane rate limit (normalized), or nil
	// for the Engine's.
	limit *ratelimit.Limit
	// u is the use counters of the entry holding this snapshot (set by
	// keyEntry.publish; clones share it).
	u *keyUsage

	// versions holds the versions by value (versions[i].num == i+1): one
	// object per key instead of one per version, for the collector to
	// walk. A snapshot's array is never written after it is published;
	// a change copies it.
	versions []versionSnap
	// v1 holds the only version of a key that has one (most keys):
	// versions then points here, one object fewer per key.
	v1   [1]versionSnap
	gen  *genSnap     // token generator; nil until first activated
	aclM *acl.Matcher // the IP allow-list (keyRare.acl) compiled once per change
	// kek is the key's shred key (see wrapped), nil when the key has none
	// or its file is gone (a key loaded due for destruction).
	kek *shred.Key
	// root is the id of the root key whose part of a handle sealed
	// during a root-key rotation this snapshot opens (see rootkey.go).
	root []byte

	// The fields without pointers come last: the collector scans an
	// object only up to its last pointer.

	// rev is the store revision of the key record this view was built
	// from or committed as: every change to the key expects it.
	rev            int64
	seq            uint64
	createdAt      stamp
	stateChangedAt stamp
	// histSeq is the Seq of the key's newest history record (history.go).
	histSeq uint64
	// minDecrypt is the lowest version that decrypts (0: every version).
	minDecrypt uint32
	convergent bool
	// wrapped is true when the key's stored handles are sealed under its
	// shred key (every key made with a Badger directory since shred keys
	// exist): new handles are sealed too.
	wrapped bool
}

// keyRare is the part of a key's snapshot that most keys leave zero or
// that only management calls read. It sits behind one pointer, nil when
// all of it is zero, so that a key costs about a hundred bytes less to
// keep and for the collector to scan; like the snapshot it is immutable
// once published (a change replaces it: own).
type keyRare struct {
	memo string
	// destroyAt is when a REVOKED key is due for destruction.
	destroyAt stamp
	// rotation is the auto-rotation setting; set is false until rotation
	// was first turned on (the store then holds no setting at all).
	rotation rotation
	acl      acl.List // IP allow-list as entered
	// kekNext is the key's next shred key while a root-key rotation
	// seals its handles under the new root key too (see rootkey.go).
	kekNext *shred.Key
}

// setKekNext sets the next shred key of an unpublished snapshot (nil:
// none), without a rare part of its own for a nil it already has.
func (s *keySnap) setKekNext(k *shred.Key) {
	if k != nil || s.x != nil && s.x.kekNext != nil {
		s.own().kekNext = k
	}
}

// noRare is what rare returns for a snapshot without a keyRare.
var noRare keyRare

// rare returns the snapshot's rare part for reading (never nil).
func (s *keySnap) rare() *keyRare {
	if s.x == nil {
		return &noRare
	}
	return s.x
}

// own gives an unpublished snapshot a rare part of its own, a copy of the
// one it shares with the snapshot it was cloned from, and returns it for
// writing.
func (s *keySnap) own() *keyRare {
	r := new(keyRare)
	if s.x != nil {
		*r = *s.x
	}
	s.x = r
	return r
}

// rotation is a key's auto-rotation setting.
type rotation struct {
	set        bool // false: never configured
	enabled    bool
	periodDays int
	nextAt     stamp // zero when off
}

// stateDestroyed marks the last snapshot of a destroyed key, for callers
// that still hold its entry. It is never stored.
const stateDestroyed KeyState = "DESTROYED"

// clone returns a shallow copy to modify and publish.
func (s *keySnap) clone() *keySnap {
	c := *s
	return &c
}

func (s *keySnap) current() *versionSnap { return &s.versions[len(s.versions)-1] }

func (s *keySnap) version(n uint32) *versionSnap {
	if n == 0 || int(n) > len(s.versions) {
		return nil
	}
	return &s.versions[n-1]
}

func (s *keySnap) enabled() bool { return s.state == StateEnabled }

func (s *keySnap) rotationDue(now time.Time) bool {
	r := &s.rare().rotation
	return s.enabled() && r.enabled && !r.nextAt.time().After(now)
}

func (s *keySnap) destructionDue(now time.Time) bool {
	return s.state == StateRevoked && !s.rare().destroyAt.time().After(now)
}

// versionSnap is an immutable view of a version. Its loaded backend key
// is shared by every snapshot that contains the version.
type versionSnap struct {
	state VersionState
	// handle is the backend's handle; nil while it is sealed in stored
	// and not opened (a key loaded already due for destruction).
	handle []byte
	// stored is the handle as the store holds it: handle, or handle
	// sealed under the key's shred key (see package internal/shred).
	stored []byte
	lk     *lazyKey
	// x holds the public key and a rotation's next handle; nil for an
	// AES256 version outside a root-key rotation (see ext).
	x *versionExt

	// The fields without pointers come last: the collector scans an
	// object only up to its last pointer.
	num            uint32
	createdAt      stamp
	stateChangedAt stamp // zero: never changed
}

// versionExt is what an AES256 version does not have: one pointer in
// every version instead of 64 bytes. Immutable once published, like
// the version (setPublic and setNext replace it).
type versionExt struct {
	publicDER []byte           // PKIX
	pub       crypto.PublicKey // publicDER parsed
	// next is the backend handle under the new root key while a
	// root-key rotation is under way (rootkey.go), else nil.
	next []byte
}

var noVersionExt versionExt

func (v *versionSnap) ext() *versionExt {
	if v.x == nil {
		return &noVersionExt
	}
	return v.x
}

// pubKey is the version's public key; nil for AES256.
func (v *versionSnap) pubKey() crypto.PublicKey { return v.ext().pub }

// der is the version's public key in PKIX; nil for AES256.
func (v *versionSnap) der() []byte { return v.ext().publicDER }

// nextHandle is the backend handle under a rotation's new root key, nil
// outside one.
func (v *versionSnap) nextHandle() []byte { return v.ext().next }

// setPublic sets the public key of a version not yet published.
func (v *versionSnap) setPublic(der []byte, pub crypto.PublicKey) {
	if der == nil && pub == nil && v.x == nil {
		return
	}
	x := *v.ext()
	x.publicDER, x.pub = der, pub
	v.x = &x
}

// setNext sets the next handle of a version not yet published.
func (v *versionSnap) setNext(h []byte) {
	if h == nil && v.ext().next == nil {
		return
	}
	x := *v.ext()
	x.next = h
	v.x = &x
}

// same reports whether v and o hold the same version state (changedVersion
// compared the versions' pointers when they were held by pointer).
func (v *versionSnap) same(o *versionSnap) bool {
	return v.num == o.num && v.state == o.state && v.createdAt == o.createdAt &&
		v.stateChangedAt == o.stateChangedAt && v.lk == o.lk &&
		bytes.Equal(v.handle, o.handle) && bytes.Equal(v.stored, o.stored) &&
		bytes.Equal(v.der(), o.der()) && bytes.Equal(v.nextHandle(), o.nextHandle())
}

// genSnap is the immutable view of a key's token generator.
type genSnap struct {
	id         string
	active     bool
	generation uint32
	handle     []byte // as in versionSnap
	stored     []byte // as in versionSnap
	publicDER  []byte
	pub        *rsa.PublicKey // nil when inactive
	enabledAt  time.Time
	disabledAt time.Time
	issued     uint64
	// revoked maps the ids of revoked tokens (see revocationID) to the
	// time their entry may go (zero: not before the generator is
	// replaced). Shared between snapshots; never modified.
	revoked map[string]time.Time
	lk      *lazyKey // the signing key, loaded on first issuance
	next    []byte   // as in versionSnap
}

func (g *genSnap) isActive() bool { return g != nil && g.active }

func (g *genSnap) ref(tag string) backend.KeyRef {
	return backend.KeyRef{KeyTag: tag, Version: g.generation, Purpose: backend.PurposeTokenSigning}
}

// lazyKey loads a backend key on first use and keeps it. The key is
// written once, before ready is set, and never again: a reader that sees
// ready reads it without a lock (and without a box of its own for the
// interface, one object and one pointer less per loaded key).
type lazyKey struct {
	mu    sync.Mutex
	ready atomic.Bool
	k     backend.Key
}

// get returns the loaded key, loading it with load on first use.
func (l *lazyKey) get(load func() (backend.Key, error)) (backend.Key, error) {
	if l.ready.Load() {
		return l.k, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ready.Load() {
		return l.k, nil
	}
	k, err := load()
	if err != nil {
		return nil, err
	}
	l.k = k
	l.ready.Store(true)
	return k, nil
}

func (e *Engine) loadKey(ctx context.Context, s *keySnap, v *versionSnap) (backend.Key, error) {
	return v.lk.get(func() (backend.Key, error) {
		h, err := s.open(v.handle, v.stored, backend.PurposeCipher, v.num)
		if err != nil {
			return nil, err
		}
		return e.be.Load(ctx, &backend.LoadRequest{
			Ref:  backend.KeyRef{KeyTag: s.tag, Version: v.num, Purpose: backend.PurposeCipher},
			Type: s.typ, Convergent: s.convergent, Handle: h,
		})
	})
}

// stamp is a time as the store keeps it: Unix milliseconds, 0 for the
// zero time. Snapshots hold stamps rather than time.Time: 8 bytes and no
// pointer for the collector to follow, against 24 bytes and a pointer,
// for every time of every key. A time the Engine sets is therefore
// reported at the store's millisecond precision at once, not only after
// a reopen.
type stamp int64

// stampOf is t as a stamp (the zero time: 0).
func stampOf(t time.Time) stamp { return stamp(timeMs(t)) }

// time is the stamp as a time in UTC (0: the zero time).
func (s stamp) time() time.Time { return msTime(int64(s)) }

// msTime turns the store's Unix milliseconds into a time (0: zero time).
func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// timeMs is msTime's inverse.
func timeMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// snapFromData builds a key's snapshot from its records, checking that
// they agree with each other.
func snapFromData(kd *store.KeyData) (*keySnap, error) {
	s := new(keySnap)
	if err := fillSnap(s, kd); err != nil {
		return nil, err
	}
	return s, nil
}

// fillSnap is snapFromData building the snapshot in *s.
func fillSnap(s *keySnap, kd *store.KeyData) error {
	r := &kd.Key
	// The tag and the name share one string: one object per key for the
	// collector to mark instead of two.
	tn := r.Tag + r.Name
	*s = keySnap{
		rev: kd.Rev, tag: tn[:len(r.Tag)], name: tn[len(r.Tag):], typ: KeyType(r.Type),
		convergent: r.Convergent, state: KeyState(r.State), seq: r.Seq,
		createdAt: stamp(r.CreatedAt), stateChangedAt: stamp(r.StateChangedAt),
		minDecrypt: r.MinDecryptVersion, histSeq: r.HistorySeq,
	}
	// The rare part is filled here and given to s once, if any of it is
	// set (own would copy it at every call).
	var x keyRare
	rare := r.Memo != "" || r.DestroyAt != 0
	x.memo, x.destroyAt = r.Memo, stamp(r.DestroyAt)
	switch {
	case !s.typ.Valid():
		return fmt.Errorf("unknown key type %q", r.Type)
	case s.state != StateEnabled && s.state != StateDisabled && s.state != StateRevoked:
		return fmt.Errorf("unknown key state %q", r.State)
	case !validTag(r.Tag):
		return errors.New("malformed key tag")
	}
	if rr := r.Rotation; rr != nil {
		rare = true
		x.rotation = rotation{set: true, enabled: rr.Enabled, periodDays: rr.PeriodDays}
		if rr.Enabled {
			x.rotation.nextAt = stamp(rr.NextAt)
		}
	}
	if rl := r.RateLimit; rl != nil {
		l, err := ratelimit.Limit{Unlimited: rl.Unlimited, Rate: rl.PerSecond, Burst: rl.Burst}.Normalize()
		if err != nil {
			return fmt.Errorf("rate limit: %w", err)
		}
		s.limit = &l
	}
	if len(kd.Versions) == 0 || int(r.CurrentVersion) != len(kd.Versions) {
		return fmt.Errorf("key has %d version records, current version %d", len(kd.Versions), r.CurrentVersion)
	}
	for i := range kd.Versions {
		vr := &kd.Versions[i]
		if vr.Version != uint32(i+1) {
			return fmt.Errorf("version records out of sequence at %d", vr.Version)
		}
		v, err := versionFromRecord(vr)
		if err != nil {
			return err
		}
		if err := v.checkPublic(s.typ); err != nil {
			return err
		}
		if len(kd.Versions) == 1 {
			s.v1[0] = *v
			s.versions = s.v1[:1:1]
		} else {
			s.versions = append(s.versions, *v)
		}
	}
	if kd.Generator != nil {
		g, err := genFromRecord(kd.Generator)
		if err != nil {
			return err
		}
		s.gen = g
		s.wrapped = s.wrapped || shred.IsWrapped(g.stored) || isDual(g.stored)
	}
	for i := range s.versions {
		v := &s.versions[i]
		s.wrapped = s.wrapped || shred.IsWrapped(v.stored) || isDual(v.stored)
	}
	s.aclM = allowAll
	if a := kd.ACL; a != nil {
		l, err := acl.ParseState(acl.State{Enabled: a.Enabled, Entries: a.Entries})
		if err != nil {
			return err
		}
		rare = true
		x.acl, s.aclM = l, compileACL(l)
	}
	if rare {
		own := x
		s.x = &own
	}
	return nil
}

func versionFromRecord(vr *store.VersionRecord) (*versionSnap, error) {
	st := VersionState(vr.State)
	if st != VersionEnabled && st != VersionDisabled {
		return nil, fmt.Errorf("version %d: unknown state %q", vr.Version, vr.State)
	}
	v := &versionSnap{
		num: vr.Version, state: st, createdAt: stamp(vr.CreatedAt), stateChangedAt: stamp(vr.StateChangedAt),
		handle: plainHandle(vr.Handle), stored: vr.Handle, lk: &lazyKey{},
	}
	if len(vr.PublicKey) != 0 {
		// A public key that does not parse leaves pub nil: checkPublic
		// refuses it, and Verify and Encrypt answer ErrInternal for a nil
		// one (pubkey.ErrInvalidKey), never panic.
		pub, _ := pubkey.Parse(vr.PublicKey)
		v.setPublic(vr.PublicKey, pub)
	}
	return v, nil
}

// checkPublic fails unless the version's stored public key parsed and is
// the one a key of type typ has (none for AES256).
func (v *versionSnap) checkPublic(typ KeyType) error {
	if v.pubKey() == nil && len(v.der()) != 0 {
		return fmt.Errorf("version %d: public key does not parse", v.num)
	}
	if err := pubkey.Check(typ, v.pubKey()); err != nil {
		return fmt.Errorf("version %d: %w", v.num, err)
	}
	return nil
}

func genFromRecord(rec *store.GeneratorRecord) (*genSnap, error) {
	g := &genSnap{
		id: rec.ID, active: rec.Active, generation: rec.Generation, handle: plainHandle(rec.Handle), stored: rec.Handle, publicDER: rec.PublicKey,
		enabledAt: msTime(rec.EnabledAt), disabledAt: msTime(rec.DisabledAt), issued: rec.IssuedCount, lk: &lazyKey{},
	}
	if len(rec.Revoked) > 0 {
		g.revoked = make(map[string]time.Time, len(rec.Revoked))
		for _, r := range rec.Revoked {
			if r.ID == "" {
				return nil, errors.New("token generator: revoked token without id")
			}
			g.revoked[r.ID] = msTime(r.Until)
		}
	}
	if rec.Active {
		pub, err := x509.ParsePKIXPublicKey(rec.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("token generator public key: %w", err)
		}
		rp, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("token generator public key is not RSA")
		}
		g.pub = rp
	}
	return g, nil
}

// keyRecord is the store record of s.
func (s *keySnap) keyRecord() *store.KeyRecord {
	r := &store.KeyRecord{
		Tag: s.tag, Name: s.name, Type: string(s.typ), Memo: s.rare().memo, Convergent: s.convergent,
		State: string(s.state), Seq: s.seq, CreatedAt: int64(s.createdAt), StateChangedAt: int64(s.stateChangedAt),
		CurrentVersion: uint32(len(s.versions)), DestroyAt: int64(s.rare().destroyAt),
		MinDecryptVersion: s.minDecrypt, HistorySeq: s.histSeq,
	}
	if ro := &s.rare().rotation; ro.set {
		r.Rotation = &store.RotationRecord{Enabled: ro.enabled, PeriodDays: ro.periodDays, NextAt: int64(ro.nextAt)}
	}
	if l := s.limit; l != nil {
		r.RateLimit = &store.RateLimitRecord{Unlimited: l.Unlimited, PerSecond: l.Rate, Burst: l.Burst}
	}
	return r
}

func (v *versionSnap) record(tag string) *store.VersionRecord {
	return &store.VersionRecord{
		Tag: tag, Version: v.num, State: string(v.state), CreatedAt: int64(v.createdAt),
		StateChangedAt: int64(v.stateChangedAt), Handle: v.stored, PublicKey: v.der(),
	}
}

func (g *genSnap) record(tag string) *store.GeneratorRecord {
	return &store.GeneratorRecord{
		Tag: tag, ID: g.id, Active: g.active, Generation: g.generation, Handle: g.stored, PublicKey: g.publicDER,
		EnabledAt: timeMs(g.enabledAt), DisabledAt: timeMs(g.disabledAt), IssuedCount: g.issued,
		Revoked: revokedRecords(g.revoked),
	}
}

func aclRecord(tag string, l acl.List) *store.ACLRecord {
	st := l.State()
	return &store.ACLRecord{Tag: tag, Enabled: st.Enabled, Entries: st.Entries}
}

// allowAll is the compiled form of every allow-list that is not enabled,
// shared by the snapshots of all such keys (most keys: one compiled empty
// list per key was about 130 bytes of every key's footprint). A Matcher
// is never modified once compiled.
var allowAll = acl.List{}.Compile()

// compileACL compiles l, sharing allowAll when l is not enabled.
func compileACL(l acl.List) *acl.Matcher {
	if !l.Enabled() {
		return allowAll
	}
	return l.Compile()
}

// appendVersionAD appends to ad the associated data every AES-GCM body of
// a version is bound to: "pocketkms/v1" ‖ 0 ‖ keyTag ‖ 0 ‖
// uint32be(version). Encrypt and Decrypt build it per call in a pooled
// buffer (aesAD) rather than keep it with every version: one object fewer
// per version for the collector.
func appendVersionAD(ad []byte, tag string, version uint32) []byte {
	ad = append(ad, "pocketkms/v1"...)
	ad = append(ad, 0)
	ad = append(ad, tag...)
	ad = append(ad, 0, byte(version>>24), byte(version>>16), byte(version>>8), byte(version))
	return ad
}
