//go:build cgo

package softhsm

import (
	"context"
	"sync/atomic"

	"github.com/miekg/pkcs11"

	"github.com/pocketkms/kms/backend"
)

// pool is a bounded pool of read-write sessions on one token. A PKCS#11
// session runs one operation at a time, so each operation takes a session
// for its duration. Sessions are opened on demand, up to max, and kept
// open; when all are busy, callers wait for one (or for their context).
//
// Every session the pool may open is, at any time, either a token in
// free (not opened yet), in idle, or held by exactly one caller. Close
// counts max of them back, so it waits for callers in flight.
//
// Each session belongs to the token's epoch in which it was opened (see
// token.reset). A reset closes every session of the process on the
// token, so the pool forgets sessions of an earlier epoch instead of
// using or closing them: closing a handle the module has already closed
// could close another session that reuses its number. Callers of get and
// put hold the token's inflight lock for reading (see
// Backend.withSession), so no reset runs while they open or close a
// session.
type pool struct {
	ctx    *pkcs11.Ctx
	tok    *token
	max    int
	idle   chan session  // capacity max: sends never block
	free   chan struct{} // capacity max, starts full
	done   chan struct{} // closed by close
	closed atomic.Bool
}

// session is a pool session and the token epoch it was opened in.
type session struct {
	h     pkcs11.SessionHandle
	epoch uint64
}

func newPool(ctx *pkcs11.Ctx, tok *token, max int) *pool {
	p := &pool{
		ctx:  ctx,
		tok:  tok,
		max:  max,
		idle: make(chan session, max),
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
// with the context's error when ctx ends first. When opening a session
// fails, the returned session has no handle but the epoch the attempt
// saw, for recovery.
func (p *pool) get(ctx context.Context) (session, error) {
	for {
		if p.closed.Load() {
			return session{}, backend.ErrClosed
		}
		var s session
		select {
		case s = <-p.idle:
		default:
			select {
			case s = <-p.idle:
			case <-p.free:
				s, err := p.open()
				if err != nil {
					p.free <- struct{}{}
					return s, err
				}
				return p.checked(s)
			case <-ctx.Done():
				return session{}, ctx.Err()
			case <-p.done:
				return session{}, backend.ErrClosed
			}
		}
		if s.epoch != p.tok.epoch.Load() {
			p.forget() // closed by the reset that ended its epoch
			continue
		}
		return p.checked(s)
	}
}

// open opens a session in the current epoch. A session opened after the
// token's login was lost could not use any key: that is reported now, as
// errLoginLost, rather than later as objects that do not exist.
func (p *pool) open() (session, error) {
	t := p.tok
	s := session{epoch: t.epoch.Load()}
	h, err := p.ctx.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return s, err
	}
	if err := checkLogin(p.ctx, h); err != nil {
		_ = p.ctx.CloseSession(h)
		return s, err
	}
	s.h = h
	return s, nil
}

// checked hands s to the caller unless the pool started closing
// meanwhile.
func (p *pool) checked(s session) (session, error) {
	if p.closed.Load() {
		p.discard(s)
		return session{}, backend.ErrClosed
	}
	return s, nil
}

// put returns a session taken with get. err is the operation's result: a
// session-level failure closes the session instead of keeping it, and a
// session the module reports closed is forgotten.
func (p *pool) put(s session, err error) {
	switch {
	case s.epoch != p.tok.epoch.Load() || sessionGone(err):
		p.forget()
	case p.closed.Load() || sessionBroken(err):
		p.discard(s)
	default:
		p.idle <- s
	}
}

// discard closes s and frees its place.
func (p *pool) discard(s session) {
	p.closeSession(s)
	p.free <- struct{}{}
}

// forget frees the place of a session that is already closed.
func (p *pool) forget() { p.free <- struct{}{} }

// closeSession closes s unless a reset has closed it already. The caller
// holds the token's inflight lock for reading, so no reset runs
// meanwhile.
func (p *pool) closeSession(s session) {
	if s.epoch == p.tok.epoch.Load() {
		_ = p.ctx.CloseSession(s.h)
	}
}

// close makes get fail and waits until every session is back, closing
// each. It must be called once, by a caller that holds no session.
func (p *pool) close() {
	p.closed.Store(true)
	close(p.done)
	for range p.max {
		select {
		case <-p.free:
		case s := <-p.idle:
			p.tok.inflight.RLock()
			p.closeSession(s)
			p.tok.inflight.RUnlock()
		}
	}
}
