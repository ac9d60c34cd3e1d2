//go:build cgo

package softhsm

import (
	"context"
	"sync/atomic"

	"github.com/miekg/pkcs11"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/softhsm/internal/p11"
)

// pool is a bounded pool of read-write sessions on one token. A PKCS#11
// session runs one operation at a time, so each operation takes a session
// for its duration. Sessions are opened on demand, up to max, and kept
// open; when all are busy, callers wait for one (or for their context).
//
// Every session the pool may open is, at any time, either a token in
// free (not opened yet), in idle, or held by exactly one caller. Close
// counts max of them back, so it waits for callers in flight.
type pool struct {
	ctx    *pkcs11.Ctx
	slot   uint
	max    int
	idle   chan pkcs11.SessionHandle // capacity max: sends never block
	free   chan struct{}             // capacity max, starts full
	done   chan struct{}             // closed by close
	closed atomic.Bool
}

func newPool(ctx *pkcs11.Ctx, slot uint, max int) *pool {
	p := &pool{
		ctx:  ctx,
		slot: slot,
		max:  max,
		idle: make(chan pkcs11.SessionHandle, max),
		free: make(chan struct{}, max),
		done: make(chan struct{}),
	}
	for range max {
		p.free <- struct{}{}
	}
	return p
}

// get returns a session for the caller's exclusive use; the caller hands
// it back with put. It fails with ErrClosed once the pool is closing and
// with the context's error when ctx ends first.
func (p *pool) get(ctx context.Context) (pkcs11.SessionHandle, error) {
	if p.closed.Load() {
		return 0, backend.ErrClosed
	}
	select {
	case s := <-p.idle:
		return p.checked(s)
	default:
	}
	select {
	case s := <-p.idle:
		return p.checked(s)
	case <-p.free:
		s, err := p.ctx.OpenSession(p.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			p.free <- struct{}{}
			return 0, err
		}
		return p.checked(s)
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-p.done:
		return 0, backend.ErrClosed
	}
}

// checked hands s to the caller unless the pool started closing
// meanwhile.
func (p *pool) checked(s pkcs11.SessionHandle) (pkcs11.SessionHandle, error) {
	if p.closed.Load() {
		p.discard(s)
		return 0, backend.ErrClosed
	}
	return s, nil
}

// put returns a session taken with get. err is the operation's result: a
// session-level failure closes the session instead of keeping it.
func (p *pool) put(s pkcs11.SessionHandle, err error) {
	if p.closed.Load() || sessionBroken(err) {
		p.discard(s)
		return
	}
	p.idle <- s
}

func (p *pool) discard(s pkcs11.SessionHandle) {
	_ = p.ctx.CloseSession(s)
	p.free <- struct{}{}
}

// close makes get fail and waits until every session is back, closing
// each. It must be called once.
func (p *pool) close() {
	p.closed.Store(true)
	close(p.done)
	for range p.max {
		select {
		case <-p.free:
		case s := <-p.idle:
			_ = p.ctx.CloseSession(s)
		}
	}
}

// sessionBroken reports whether err means the session cannot be reused.
func sessionBroken(err error) bool {
	if err == nil {
		return false
	}
	for _, rv := range []uint{
		pkcs11.CKR_SESSION_HANDLE_INVALID,
		pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_DEVICE_REMOVED,
		pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_USER_NOT_LOGGED_IN,
		pkcs11.CKR_OPERATION_ACTIVE,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
	} {
		if p11.Is(err, rv) {
			return true
		}
	}
	return false
}
