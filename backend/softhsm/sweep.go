//go:build cgo

package softhsm

import (
	"context"
	"fmt"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/pocketkms/kms/backend"
)

// Sweep destroys leftover material: token objects this package created
// (CKA_LABEL starting "pocketkms:", a CKA_ID recording the creation
// time) whose CKA_ID no handle in req.Keep holds, created before
// req.CreatedBefore, and not loaded by a Key of this process. It returns
// what it destroyed; see backend.Sweeper for the contract. Objects of
// other applications, objects of this package whose labels and types do
// not form one piece of material, and material made before CKA_IDs
// recorded the creation time are never destroyed. Sweep enumerates the
// token once (SoftHSM2: about 70 µs per object) and holds the token's
// lock meanwhile, so Loads of new material wait for it.
func (b *Backend) Sweep(ctx context.Context, req *backend.SweepRequest) ([]backend.Swept, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("softhsm: sweep: %w", err)
	}
	if req == nil || req.CreatedBefore.IsZero() {
		return nil, fmt.Errorf("softhsm: sweep: %w: nil request or zero CreatedBefore", backend.ErrInvalidArgument)
	}
	keep := make(map[[idSize]byte]bool, len(req.Keep))
	for _, hb := range req.Keep {
		if h, err := parseHandle(hb); err == nil {
			keep[h.id] = true
		}
	}
	var swept []backend.Swept
	// Safe to repeat: a second run lists the token again, and what the
	// first destroyed is gone.
	err := b.do(ctx, func(s pkcs11.SessionHandle) error {
		return b.tok.sweep(ctx, s, keep, req.CreatedBefore, &swept)
	}, nil)
	if err != nil {
		return swept, fmt.Errorf("softhsm: sweep %s: %w", b.desc, objErr(err))
	}
	return swept, nil
}

// sweep is Sweep on session s; it appends what it destroys to out.
func (t *token) sweep(ctx context.Context, s pkcs11.SessionHandle, keep map[[idSize]byte]bool, before time.Time, out *[]backend.Swept) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	groups, err := t.ownObjects(s)
	if err != nil {
		return err
	}
	for id, objs := range groups {
		created, ok := idCreated(id)
		if !ok || !created.Before(before) || keep[id] || t.objects[id] != nil {
			continue
		}
		h, ok := materialOf(id, objs)
		if !ok {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := t.destroyObjects(s, h, objs); err != nil {
			return err
		}
		*out = append(*out, backend.Swept{Ref: h.ref, Type: h.typ, Created: created})
	}
	return nil
}

// materialOf returns the handle of the material that objs, the objects
// of this package under one CKA_ID, are (all of it or a part): the same
// KeyRef in every label, the classes and key types of one key type, no
// object twice. A convergent AES key missing its nonce key looks like a
// plain AES key, which destroys the same objects.
func materialOf(id [idSize]byte, objs []tokenObject) (handle, bool) {
	h := handle{id: id}
	for i, o := range objs {
		ref, conv, ok := parseLabel(o.label)
		if !ok {
			return h, false
		}
		var typ backend.KeyType
		pair := o.class == pkcs11.CKO_PRIVATE_KEY || o.class == pkcs11.CKO_PUBLIC_KEY
		switch {
		case o.class == pkcs11.CKO_SECRET_KEY && o.keyType == pkcs11.CKK_AES && !conv:
			typ = backend.AES256
		case o.class == pkcs11.CKO_SECRET_KEY && o.keyType == pkcs11.CKK_GENERIC_SECRET && conv:
			typ, h.convergent = backend.AES256, true
		case pair && o.keyType == pkcs11.CKK_RSA && !conv:
			typ = backend.RSA2048
		case pair && o.keyType == pkcs11.CKK_EC && !conv:
			typ = backend.ECDSA
		default:
			return h, false
		}
		if i == 0 {
			h.ref, h.typ = ref, typ
		} else if ref != h.ref || typ != h.typ {
			return h, false
		}
	}
	if len(objs) == 0 || h.ref.Validate(h.typ, h.convergent) != nil {
		return h, false
	}
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
			return h, false
		}
	}
	return h, true
}
