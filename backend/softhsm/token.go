//go:build cgo

package softhsm

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/softhsm/internal/p11"
)

// token is the process-wide state of one logged-in token, shared by every
// Backend of this process on it.
//
// In PKCS#11 the login state belongs to the application (the process) and
// ends when its last session on the token closes; token object handles
// stay valid as long as it lasts. The token therefore keeps one session of
// its own, the anchor, open from the first Backend's New to the last
// Backend's Close. The anchor also owns the session-object copies of
// loaded keys, so they live exactly as long as the login.
//
// The login can still end under the process: C_CloseAllSessions from
// other code, a token reset, an HSM restart. Every session and every
// resolved object handle therefore belongs to an epoch, and a reset (see
// recover) starts a new one: it closes every session of the process on
// the token, opens a new anchor, logs in again and leaves the handles of
// the old epoch to be resolved again by CKA_ID and label.
type token struct {
	mod  *p11.Module
	slot uint
	desc string
	refs int // guarded by tokens.mu

	// epoch counts the resets. A session or resolved handle of an older
	// epoch is never used again.
	epoch atomic.Uint64
	// inflight is held for reading by every call on the token's pool
	// sessions, for its whole duration (opening and closing sessions
	// included), and for writing by a reset. A reset therefore closes
	// sessions no call is using: SoftHSM2 2.6.1 frees a session in
	// C_CloseAllSessions while another thread may be inside a call on it
	// (heap corruption, SIGABRT). Lock order: tokens.mu, inflight, mu.
	inflight sync.RWMutex

	mu sync.Mutex // guards the fields below
	// anchor is the session holding the login, 0 after a reset that
	// could not log in again.
	anchor pkcs11.SessionHandle
	// pinSalt and pinSum let a later New compare its PIN with the one the
	// token was logged in with (C_Login answers "already logged in" to
	// any PIN). checkPIN is false when someone outside this package had
	// logged the token in: the PIN cannot be checked then.
	pinSalt  [16]byte
	pinSum   [32]byte
	checkPIN bool
	// refused is the digest (under pinSalt) of a PIN the token refused
	// at a reset; the same PIN is not tried again, so that retries cannot
	// lock the PIN. Zero when none was refused.
	refused [32]byte
	// released is set when the last Backend let go: nothing resets
	// the token afterwards.
	released bool
	objects  map[[idSize]byte]*objectSet
	index    map[[idSize]byte][]tokenObject // nil until the second lookup
	// searched is set by the first lookup, which searches instead of
	// indexing: opening an Engine loads one key and must not walk the token.
	searched bool
}

// objectSet is the material of one handle on this token as loaded in
// this process, shared by every Key loaded from it.
type objectSet struct {
	h      handle
	copies bool        // operate on session-object copies
	gone   atomic.Bool // set by Destroy, and when the token is released
	cur    atomic.Pointer[resolved]
}

// resolved is the object handles of an objectSet in one epoch.
type resolved struct {
	epoch   uint64
	primary pkcs11.ObjectHandle // AES key or private key (or its copy)
	mac     pkcs11.ObjectHandle // convergent nonce key (or its copy), or 0
	copies  []pkcs11.ObjectHandle
}

type tokenKey struct {
	mod  *p11.Module
	slot uint
}

var tokens struct {
	mu sync.Mutex
	m  map[tokenKey]*token
}

// acquireToken returns the logged-in state of the token in slot,
// logging in with pin on first use, and counts a reference to it. A token
// this process knows but whose login was lost meanwhile is logged in again
// with pin.
func acquireToken(mod *p11.Module, slot uint, pin []byte, desc string) (*token, error) {
	tokens.mu.Lock()
	defer tokens.mu.Unlock()
	k := tokenKey{mod, slot}
	if t := tokens.m[k]; t != nil {
		if err := t.ensure(pin); err != nil {
			return nil, err
		}
		t.refs++
		return t, nil
	}
	t := &token{mod: mod, slot: slot, desc: desc, refs: 1, checkPIN: true, objects: make(map[[idSize]byte]*objectSet)}
	if _, err := rand.Read(t.pinSalt[:]); err != nil {
		return nil, fmt.Errorf("softhsm: log in to %s: %w", desc, err)
	}
	if err := t.login(pin); err != nil {
		return nil, err
	}
	if tokens.m == nil {
		tokens.m = make(map[tokenKey]*token)
	}
	tokens.m[k] = t
	return t, nil
}

// login opens the anchor session and logs the token in with pin. The
// caller holds t.mu or owns t alone. A refused PIN is remembered and
// not tried again.
func (t *token) login(pin []byte) error {
	p := t.mod.Ctx
	sum := pinDigest(t.pinSalt[:], pin)
	if t.refused != ([32]byte{}) && subtle.ConstantTimeCompare(sum[:], t.refused[:]) == 1 {
		return fmt.Errorf("softhsm: log in to %s: %w (the token refused this PIN before; not tried again)", t.desc, ErrIncorrectPIN)
	}
	s, err := p.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("softhsm: open session on %s: %w", t.desc, err)
	}
	checkPIN := true
	switch err := p.Login(s, pkcs11.CKU_USER, string(pin)); {
	case err == nil:
	case p11.Is(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN):
		checkPIN = false
	default:
		_ = p.CloseSession(s)
		switch {
		case p11.Is(err, pkcs11.CKR_PIN_INCORRECT), p11.Is(err, pkcs11.CKR_PIN_LEN_RANGE):
			t.refused = sum
			return fmt.Errorf("softhsm: log in to %s: %w", t.desc, ErrIncorrectPIN)
		case p11.Is(err, pkcs11.CKR_PIN_LOCKED):
			return fmt.Errorf("softhsm: log in to %s: the user PIN is locked after too many failures: %w", t.desc, err)
		}
		return fmt.Errorf("softhsm: log in to %s: %w", t.desc, err)
	}
	t.anchor, t.refused = s, [32]byte{}
	// The PIN may have changed since the first login (a PIN file
	// rewritten for a new PIN): later New calls compare with this one.
	t.checkPIN, t.pinSum = checkPIN, sum
	return nil
}

// ensure makes sure the token is logged in, resetting it with pin if the
// login was lost, then checks that pin is the PIN it is logged in with.
// The caller holds tokens.mu.
func (t *token) ensure(pin []byte) error {
	t.mu.Lock()
	healthy := t.healthy()
	t.mu.Unlock()
	if !healthy {
		t.inflight.Lock()
		defer t.inflight.Unlock()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !healthy && !t.healthy() {
		if err := t.reset(func() ([]byte, error) { return bytes.Clone(pin), nil }); err != nil {
			return err
		}
	}
	if t.checkPIN {
		sum := pinDigest(t.pinSalt[:], pin)
		if subtle.ConstantTimeCompare(sum[:], t.pinSum[:]) != 1 {
			return fmt.Errorf("softhsm: log in to %s: %w", t.desc, ErrIncorrectPIN)
		}
	}
	return nil
}

// release drops a reference. The last one closes the anchor session,
// which ends the login (once every pool session is closed too) and
// destroys the session-object copies.
func (t *token) release() {
	tokens.mu.Lock()
	defer tokens.mu.Unlock()
	t.refs--
	if t.refs > 0 {
		return
	}
	delete(tokens.m, tokenKey{t.mod, t.slot})
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, set := range t.objects {
		set.gone.Store(true)
	}
	t.objects, t.index, t.searched, t.released = nil, nil, false, true
	if t.anchor != 0 {
		_ = t.mod.Ctx.CloseSession(t.anchor)
		t.anchor = 0
	}
}

// load returns the objectSet of h: the one already loaded in this
// process, or a new one resolved from the index (see lookup). With
// copies, the operational objects are copied into session objects owned
// by the anchor session. s is a pool session.
//
// load holds t.mu throughout, so Loads of new material run one at a time
// (each costs tens of microseconds once the index exists), and a Destroy,
// which holds t.mu too, either sees the copies made here and destroys
// them, or runs first, and then this fails because the objects are gone.
func (t *token) load(s pkcs11.SessionHandle, h handle, copies bool) (*objectSet, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if set := t.objects[h.id]; set != nil {
		if set.h != h {
			return nil, backend.ErrInvalidHandle
		}
		return set, nil
	}
	set := &objectSet{h: h, copies: copies}
	r, err := t.resolve(s, set)
	if err != nil {
		return nil, err
	}
	set.cur.Store(r)
	t.objects[h.id] = set
	return set, nil
}

// current returns the object handles of set in the current epoch,
// resolving them again after a reset or an invalidate. s is a pool
// session. The hot path is two atomic loads.
func (t *token) current(s pkcs11.SessionHandle, set *objectSet) (*resolved, error) {
	if r := set.cur.Load(); r != nil && r.epoch == t.epoch.Load() {
		return r, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if set.gone.Load() {
		return nil, backend.ErrKeyNotFound
	}
	if r := set.cur.Load(); r != nil && r.epoch == t.epoch.Load() {
		return r, nil
	}
	r, err := t.resolve(s, set)
	if err != nil {
		return nil, err
	}
	set.cur.Store(r)
	return r, nil
}

// invalidate drops r, the handles of set that an operation found
// invalid, so that the next operation finds the objects again by CKA_ID
// and label (searching: the index may be as stale as r). Session copies
// in r that are still valid stay until the login ends: other calls may
// be using them, and SoftHSM2 does not survive an object destroyed under
// a call in flight.
func (t *token) invalidate(set *objectSet, r *resolved) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if set.cur.CompareAndSwap(r, nil) {
		delete(t.index, set.h.id)
	}
}

// resolve finds the objects of set in the token and, with set.copies,
// copies its operational objects into session objects of the anchor.
// The caller holds t.mu. An index entry that has gone stale (objects
// destroyed by another process, or renumbered) is searched again once.
func (t *token) resolve(s pkcs11.SessionHandle, set *objectSet) (*resolved, error) {
	for {
		objs, indexed, err := t.lookup(s, set.h.id)
		if err != nil {
			return nil, err
		}
		r, err := match(set.h, objs)
		if err != nil {
			return nil, err
		}
		r.epoch = t.epoch.Load()
		if set.copies {
			err = r.copy(t.mod.Ctx, t.anchor)
		} else {
			err = r.check(t.mod.Ctx, s)
		}
		if err != nil && indexed && isStale(err) {
			delete(t.index, set.h.id)
			continue
		}
		if err != nil {
			return nil, err
		}
		return r, nil
	}
}

// lookup returns the token objects with CKA_ID id, and whether they came
// from the index. The caller holds t.mu.
//
// SoftHSM2 compares every object of the token on each search (C_FindObjects
// costs about 15 µs per object in the token), so one search per Load
// would make loading N keys cost O(N²). Instead, the second lookup after
// login enumerates the token once and indexes this package's objects by
// CKA_ID (about 70 µs per object); Generate, ImportKey and Destroy keep
// the index current. The first lookup is a plain search, so that opening
// an Engine — which loads one key to check the token — does not walk the
// token. An ID missing from the index (material created by another
// process since, or gone) falls back to a search by CKA_ID. Opening a
// Backend does not build the index; a reset drops it.
func (t *token) lookup(s pkcs11.SessionHandle, id [idSize]byte) ([]tokenObject, bool, error) {
	byID := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id[:])}
	if t.index == nil && !t.searched {
		t.searched = true
		objs, err := t.findOwn(s, byID)
		return objs, false, err
	}
	if t.index == nil {
		if err := t.buildIndex(s); err != nil {
			return nil, false, err
		}
	}
	if objs, ok := t.index[id]; ok {
		return objs, true, nil
	}
	objs, err := t.findOwn(s, byID)
	if err != nil {
		return nil, false, err
	}
	if len(objs) > 0 {
		t.index[id] = objs
	}
	return objs, false, nil
}

// findOwn is find for objects that are private to the logged-in user:
// an empty result is believed only if s is logged in, since a session
// that lost the login sees none of them.
func (t *token) findOwn(s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]tokenObject, error) {
	objs, err := t.find(s, tmpl)
	if err == nil && len(objs) == 0 {
		err = checkLogin(t.mod.Ctx, s)
	}
	return objs, err
}

// buildIndex enumerates the token objects of this package. The caller
// holds t.mu.
func (t *token) buildIndex(s pkcs11.SessionHandle) error {
	index, err := t.ownObjects(s)
	if err != nil {
		return err
	}
	t.index = index
	return nil
}

// ownObjects enumerates the token objects carrying this package's label
// prefix, grouped by CKA_ID. The caller holds t.mu.
func (t *token) ownObjects(s pkcs11.SessionHandle) (map[[idSize]byte][]tokenObject, error) {
	objs, err := t.find(s, nil)
	if err == nil {
		// Logged out, the enumeration would miss every object.
		err = checkLogin(t.mod.Ctx, s)
	}
	if err != nil {
		return nil, err
	}
	groups := make(map[[idSize]byte][]tokenObject)
	for _, o := range objs {
		if strings.HasPrefix(o.label, labelPrefix) {
			groups[o.id] = append(groups[o.id], o)
		}
	}
	return groups, nil
}

// added records objects this process created for h.
func (t *token) added(h handle, objs []tokenObject) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.index != nil {
		t.index[h.id] = objs
	}
}

// copy replaces the operational objects of r by session-object copies
// owned by the anchor session.
func (r *resolved) copy(p *pkcs11.Ctx, anchor pkcs11.SessionHandle) error {
	if anchor == 0 {
		return errLoginLost
	}
	session := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)}
	primary, err := p.CopyObject(anchor, r.primary, session)
	if err != nil {
		return err
	}
	r.copies = append(r.copies, primary)
	if r.mac != 0 {
		mac, err := p.CopyObject(anchor, r.mac, session)
		if err != nil {
			_ = p.DestroyObject(anchor, primary)
			r.copies = nil
			return err
		}
		r.copies = append(r.copies, mac)
		r.mac = mac
	}
	r.primary = primary
	return nil
}

// check fails if an object of r no longer exists.
func (r *resolved) check(p *pkcs11.Ctx, s pkcs11.SessionHandle) error {
	for _, o := range []pkcs11.ObjectHandle{r.primary, r.mac} {
		if o == 0 {
			continue
		}
		if _, err := p.GetAttributeValue(s, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil)}); err != nil {
			return err
		}
	}
	return nil
}

// tokenObject describes a token object of this package.
type tokenObject struct {
	h       pkcs11.ObjectHandle
	id      [idSize]byte
	class   uint
	keyType uint
	label   string
}

// find searches the token objects (never session copies) that match
// tmpl and describes them. Objects whose attributes cannot be read as
// this package's keys (certificates, data objects, foreign IDs) are left
// out.
func (t *token) find(s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]tokenObject, error) {
	p := t.mod.Ctx
	tmpl = append([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true)}, tmpl...)
	if err := p.FindObjectsInit(s, tmpl); err != nil {
		return nil, err
	}
	var hs []pkcs11.ObjectHandle
	var err error
	for {
		var more []pkcs11.ObjectHandle
		more, _, err = p.FindObjects(s, 1024)
		if err != nil || len(more) == 0 {
			break
		}
		hs = append(hs, more...)
	}
	if ferr := p.FindObjectsFinal(s); err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	objs := make([]tokenObject, 0, len(hs))
	for _, h := range hs {
		attrs, err := p.GetAttributeValue(s, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
		})
		if p11.Is(err, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID) || p11.Is(err, pkcs11.CKR_OBJECT_HANDLE_INVALID) {
			continue // not a key, or destroyed meanwhile
		}
		if err != nil {
			return nil, err
		}
		class, ok1 := ulong(attrs[1].Value)
		keyType, ok2 := ulong(attrs[2].Value)
		if !ok1 || !ok2 || len(attrs[0].Value) != idSize {
			continue
		}
		o := tokenObject{h: h, class: class, keyType: keyType, label: string(attrs[3].Value)}
		copy(o.id[:], attrs[0].Value)
		objs = append(objs, o)
	}
	return objs, nil
}

// match checks that objs are exactly the objects h describes, with the
// labels derived from its KeyRef, and returns their handles.
func match(h handle, objs []tokenObject) (*resolved, error) {
	wants := h.objects(0)
	for _, o := range objs {
		matched := false
		for i := range wants {
			w := &wants[i]
			if w.h == 0 && o.class == w.class && o.keyType == w.keyType && o.label == w.label {
				w.h, matched = o.h, true
				break
			}
		}
		if !matched {
			return nil, backend.ErrInvalidHandle
		}
	}
	for _, w := range wants {
		if w.h == 0 {
			return nil, backend.ErrKeyNotFound
		}
	}
	r := &resolved{primary: wants[0].h}
	if h.typ == backend.AES256 && h.convergent {
		r.mac = wants[1].h
	}
	return r, nil
}

// objects describes the token objects of h, the operational one (AES key
// or private key) first, all with handle zero, as create makes them:
// AES256 has the AES key and, if convergent, the HMAC key; RSA2048 and
// ECDSA a private and a public key.
func (h *handle) objects(zero pkcs11.ObjectHandle) []tokenObject {
	o := func(class, keyType uint, label string) tokenObject {
		return tokenObject{h: zero, id: h.id, class: class, keyType: keyType, label: label}
	}
	switch h.typ {
	case backend.AES256:
		objs := []tokenObject{o(pkcs11.CKO_SECRET_KEY, pkcs11.CKK_AES, h.label())}
		if h.convergent {
			objs = append(objs, o(pkcs11.CKO_SECRET_KEY, pkcs11.CKK_GENERIC_SECRET, h.convergentLabel()))
		}
		return objs
	case backend.RSA2048:
		return []tokenObject{o(pkcs11.CKO_PRIVATE_KEY, pkcs11.CKK_RSA, h.label()), o(pkcs11.CKO_PUBLIC_KEY, pkcs11.CKK_RSA, h.label())}
	default: // backend.ECDSA
		return []tokenObject{o(pkcs11.CKO_PRIVATE_KEY, pkcs11.CKK_EC, h.label()), o(pkcs11.CKO_PUBLIC_KEY, pkcs11.CKK_EC, h.label())}
	}
}

// destroy destroys the token objects of h and this process's copies of
// them. It searches the token (Destroy is not a hot path, and the objects
// may have been created by another process) and holds t.mu, so that no
// Load copies the objects meanwhile.
func (t *token) destroy(s pkcs11.SessionHandle, h handle) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	objs, err := t.findOwn(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, h.id[:])})
	if err != nil {
		return err
	}
	return t.destroyObjects(s, h, objs)
}

// destroyObjects destroys objs, the token objects found under h's
// CKA_ID, if all carry h's labels. The caller holds t.mu.
func (t *token) destroyObjects(s pkcs11.SessionHandle, h handle, objs []tokenObject) error {
	for _, o := range objs {
		if o.label != h.label() && o.label != h.convergentLabel() {
			return backend.ErrInvalidHandle
		}
	}
	if set := t.objects[h.id]; set != nil {
		set.gone.Store(true)
		if r := set.cur.Load(); r != nil && r.epoch == t.epoch.Load() && t.anchor != 0 {
			for _, c := range r.copies {
				_ = t.mod.Ctx.DestroyObject(t.anchor, c)
			}
		}
		delete(t.objects, h.id)
	}
	delete(t.index, h.id)
	for _, o := range objs {
		if err := t.mod.Ctx.DestroyObject(s, o.h); err != nil && !p11.Is(err, pkcs11.CKR_OBJECT_HANDLE_INVALID) {
			return err
		}
	}
	return nil
}

// pinDigest is what a token entry keeps to compare later logins with
// the first one; it is a salted hash, not the PIN.
func pinDigest(salt, pin []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(salt)
	h.Write(pin)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}
