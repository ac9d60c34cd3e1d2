//go:build cgo

package softhsm

import (
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
type token struct {
	mod  *p11.Module
	slot uint
	refs int // guarded by tokens.mu

	// pinSalt and pinSum let a later New compare its PIN with the one the
	// token was logged in with (C_Login answers "already logged in" to
	// any PIN). checkPIN is false when someone outside this package had
	// logged the token in: the PIN cannot be checked then.
	pinSalt  [16]byte
	pinSum   [32]byte
	checkPIN bool

	mu      sync.Mutex // guards anchor use, objects and index
	anchor  pkcs11.SessionHandle
	objects map[[idSize]byte]*objectSet
	index   map[[idSize]byte][]tokenObject // nil until the second lookup
	// searched is set by the first lookup, which searches instead of
	// indexing: opening an Engine loads one key and must not walk the token.
	searched bool
}

// objectSet is the resolved objects of one handle on this token, shared
// by every Key loaded from it in this process.
type objectSet struct {
	h       handle
	primary pkcs11.ObjectHandle // AES key or private key
	mac     pkcs11.ObjectHandle // convergent nonce key, or 0
	copies  []pkcs11.ObjectHandle
	gone    atomic.Bool // set by Destroy, and when the token is released
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
// logging in with pin on first use, and counts a reference to it.
func acquireToken(mod *p11.Module, slot uint, pin []byte, desc string) (*token, error) {
	tokens.mu.Lock()
	defer tokens.mu.Unlock()
	k := tokenKey{mod, slot}
	if t := tokens.m[k]; t != nil {
		if t.checkPIN {
			sum := pinDigest(t.pinSalt[:], pin)
			if subtle.ConstantTimeCompare(sum[:], t.pinSum[:]) != 1 {
				return nil, fmt.Errorf("softhsm: log in to %s: %w", desc, ErrIncorrectPIN)
			}
		}
		t.refs++
		return t, nil
	}
	p := mod.Ctx
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, fmt.Errorf("softhsm: open session on %s: %w", desc, err)
	}
	t := &token{mod: mod, slot: slot, refs: 1, anchor: s, checkPIN: true, objects: make(map[[idSize]byte]*objectSet)}
	switch err := p.Login(s, pkcs11.CKU_USER, string(pin)); {
	case err == nil:
	case p11.Is(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN):
		t.checkPIN = false
	default:
		_ = p.CloseSession(s)
		switch {
		case p11.Is(err, pkcs11.CKR_PIN_INCORRECT), p11.Is(err, pkcs11.CKR_PIN_LEN_RANGE):
			return nil, fmt.Errorf("softhsm: log in to %s: %w", desc, ErrIncorrectPIN)
		case p11.Is(err, pkcs11.CKR_PIN_LOCKED):
			return nil, fmt.Errorf("softhsm: log in to %s: the user PIN is locked after too many failures: %w", desc, err)
		}
		return nil, fmt.Errorf("softhsm: log in to %s: %w", desc, err)
	}
	if t.checkPIN {
		if _, err := rand.Read(t.pinSalt[:]); err != nil {
			_ = p.CloseSession(s)
			return nil, fmt.Errorf("softhsm: log in to %s: %w", desc, err)
		}
		t.pinSum = pinDigest(t.pinSalt[:], pin)
	}
	if tokens.m == nil {
		tokens.m = make(map[tokenKey]*token)
	}
	tokens.m[k] = t
	return t, nil
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
	t.objects, t.index, t.searched = nil, nil, false
	_ = t.mod.Ctx.CloseSession(t.anchor)
}

// load returns the objectSet of h: the one already resolved in this
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
	objs, err := t.lookup(s, h.id)
	if err != nil {
		return nil, err
	}
	set, err := resolve(h, objs)
	if err != nil {
		return nil, err
	}
	// The index may be stale (objects destroyed by another process):
	// copying or reading the objects fails then.
	if copies {
		err = set.copy(t.mod.Ctx, t.anchor)
	} else {
		err = set.check(t.mod.Ctx, s)
	}
	if err != nil {
		return nil, err
	}
	t.objects[h.id] = set
	return set, nil
}

// lookup returns the token objects with CKA_ID id. The caller holds t.mu.
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
// Backend does not build the index.
func (t *token) lookup(s pkcs11.SessionHandle, id [idSize]byte) ([]tokenObject, error) {
	byID := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id[:])}
	if t.index == nil && !t.searched {
		t.searched = true
		return t.find(s, byID)
	}
	if t.index == nil {
		if err := t.buildIndex(s); err != nil {
			return nil, err
		}
	}
	if objs, ok := t.index[id]; ok {
		return objs, nil
	}
	objs, err := t.find(s, byID)
	if err != nil {
		return nil, err
	}
	if len(objs) > 0 {
		t.index[id] = objs
	}
	return objs, nil
}

// buildIndex enumerates the token objects of this package. The caller
// holds t.mu.
func (t *token) buildIndex(s pkcs11.SessionHandle) error {
	objs, err := t.find(s, nil)
	if err != nil {
		return err
	}
	index := make(map[[idSize]byte][]tokenObject)
	for _, o := range objs {
		if strings.HasPrefix(o.label, labelPrefix) {
			index[o.id] = append(index[o.id], o)
		}
	}
	t.index = index
	return nil
}

// added records objects this process created for h.
func (t *token) added(h handle, objs []tokenObject) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.index != nil {
		t.index[h.id] = objs
	}
}

// copy replaces the operational objects of set by session-object copies
// owned by the anchor session.
func (set *objectSet) copy(p *pkcs11.Ctx, anchor pkcs11.SessionHandle) error {
	session := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)}
	primary, err := p.CopyObject(anchor, set.primary, session)
	if err != nil {
		return err
	}
	set.copies = append(set.copies, primary)
	if set.mac != 0 {
		mac, err := p.CopyObject(anchor, set.mac, session)
		if err != nil {
			_ = p.DestroyObject(anchor, primary)
			set.copies = nil
			return err
		}
		set.copies = append(set.copies, mac)
		set.mac = mac
	}
	set.primary = primary
	return nil
}

// check fails if an object of set no longer exists.
func (set *objectSet) check(p *pkcs11.Ctx, s pkcs11.SessionHandle) error {
	for _, o := range []pkcs11.ObjectHandle{set.primary, set.mac} {
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

// resolve checks that objs are exactly the objects h describes, with the
// labels derived from its KeyRef.
func resolve(h handle, objs []tokenObject) (*objectSet, error) {
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
	set := &objectSet{h: h, primary: wants[0].h}
	if h.typ == backend.AES256 && h.convergent {
		set.mac = wants[1].h
	}
	return set, nil
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
	objs, err := t.find(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, h.id[:])})
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.label != h.label() && o.label != h.convergentLabel() {
			return backend.ErrInvalidHandle
		}
	}
	if set := t.objects[h.id]; set != nil {
		set.gone.Store(true)
		for _, c := range set.copies {
			_ = t.mod.Ctx.DestroyObject(t.anchor, c)
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
