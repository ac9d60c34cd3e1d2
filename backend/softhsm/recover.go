//go:build cgo

package softhsm

import (
	"context"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/softhsm/internal/p11"
)

// errLoginLost: a session of this process on the token is not logged in,
// so the token's login was lost (all sessions closed, or a logout).
var errLoginLost = errors.New("the token's login was lost")

// lostValues are the return values after which the session, or the
// login, is gone: the token is reset and the operation retried.
var lostValues = []uint{
	pkcs11.CKR_SESSION_HANDLE_INVALID,
	pkcs11.CKR_SESSION_CLOSED,
	pkcs11.CKR_USER_NOT_LOGGED_IN,
	pkcs11.CKR_DEVICE_ERROR,
	pkcs11.CKR_DEVICE_REMOVED,
	pkcs11.CKR_TOKEN_NOT_PRESENT,
	pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
}

func isAny(err error, rvs ...uint) bool {
	for _, rv := range rvs {
		if p11.Is(err, rv) {
			return true
		}
	}
	return false
}

// isLost reports whether err means the session or the login was lost.
func isLost(err error) bool {
	return err != nil && (errors.Is(err, errLoginLost) || isAny(err, lostValues...))
}

// isStale reports whether err means an object handle is not (or no
// longer) valid.
func isStale(err error) bool {
	return isAny(err, pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID)
}

// isUnavailable reports whether err means the token cannot serve now,
// for reasons that say nothing about the key or the request.
func isUnavailable(err error) bool {
	return isLost(err) || errors.Is(err, backend.ErrUnavailable) ||
		isAny(err, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_SESSION_COUNT)
}

// sessionGone reports whether err says the session no longer exists: the
// module closed it, and closing it again could close a session that
// reuses its handle.
func sessionGone(err error) bool {
	return isAny(err, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED)
}

// sessionBroken reports whether err means the session cannot be reused.
func sessionBroken(err error) bool {
	return err != nil && (isLost(err) ||
		isAny(err, pkcs11.CKR_OPERATION_ACTIVE, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED))
}

// objErr maps a token error that is not a decryption's: objects that
// are not there become backend.ErrKeyNotFound, a lost session or login
// that could not be restored backend.ErrUnavailable.
func objErr(err error) error {
	switch {
	case isStale(err):
		return fmt.Errorf("%w (%v)", backend.ErrKeyNotFound, err)
	case errors.Is(err, backend.ErrUnavailable):
		return err
	case isUnavailable(err):
		return fmt.Errorf("%w: %w", backend.ErrUnavailable, err)
	}
	return err
}

// loggedIn reports whether a session state is the normal user's.
func loggedIn(state uint) bool {
	return state == pkcs11.CKS_RW_USER_FUNCTIONS || state == pkcs11.CKS_RO_USER_FUNCTIONS
}

// checkLogin returns nil if session s is logged in as the user, its
// error if it is gone, and errLoginLost otherwise.
func checkLogin(p *pkcs11.Ctx, s pkcs11.SessionHandle) error {
	info, err := p.GetSessionInfo(s)
	if err != nil {
		return err
	}
	if !loggedIn(info.State) {
		return errLoginLost
	}
	return nil
}

// healthy reports whether the anchor session exists and is logged in.
// The caller holds t.mu.
func (t *token) healthy() bool {
	return t.anchor != 0 && checkLogin(t.mod.Ctx, t.anchor) == nil
}

// recover brings the token back after an operation on a session of epoch
// seen failed as lost (see isLost). If another caller has reset the
// token since, or the login holds (only the caller's session was lost),
// there is nothing to do; otherwise it waits for the calls in flight to
// end and resets the token, reading the PIN with pin. The caller, which
// holds no session, then retries on a new one.
func (t *token) recover(seen uint64, pin func() ([]byte, error)) error {
	needed := func() bool { return !t.released && t.epoch.Load() == seen && !t.healthy() }
	t.mu.Lock()
	n := needed()
	t.mu.Unlock()
	if !n {
		return nil
	}
	t.inflight.Lock()
	defer t.inflight.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !needed() {
		return nil
	}
	return t.reset(pin)
}

// reset starts a new epoch: it closes every session of the process on
// the token (C_CloseAllSessions: those of every pool are forgotten, not
// closed one by one), opens a new anchor session and logs in with the PIN
// pin returns, which it clears afterwards. Handles resolved in the old
// epoch are resolved again on their next use, and the index is rebuilt.
// The caller holds t.inflight for writing, so no call is using a
// session, and t.mu. Errors wrap backend.ErrUnavailable, and
// ErrIncorrectPIN when the token refuses the PIN; after a failure the
// next operation tries again.
func (t *token) reset(pin func() ([]byte, error)) error {
	_ = t.mod.Ctx.CloseAllSessions(t.slot)
	t.anchor = 0
	t.index, t.searched = nil, true
	t.epoch.Add(1)
	b, err := pin()
	if err != nil {
		return fmt.Errorf("%w: log in to %s again: %w", backend.ErrUnavailable, t.desc, err)
	}
	defer clear(b)
	if err := t.login(b); err != nil {
		return fmt.Errorf("%w: %w", backend.ErrUnavailable, err)
	}
	return nil
}

// recover is token.recover with the Backend's PIN source, re-read now: a
// PIN file rewritten since New is read anew.
func (b *Backend) recover(seen uint64) error {
	return b.tok.recover(seen, b.cfg.pin)
}

// do runs fn on a pool session. When fn (or opening the session) fails
// because the session or the login was lost, do recovers the token and
// runs fn once more on a new session; when fn fails on an invalid object
// handle and onStale is not nil, do calls onStale (which forgets the
// handles) and runs fn once more. Only operations that are safe to
// repeat use it: fn must leave nothing behind that a second run would
// duplicate (see Generate).
func (b *Backend) do(ctx context.Context, fn func(s pkcs11.SessionHandle) error, onStale func()) error {
	for attempt := 0; ; attempt++ {
		epoch, err := b.withSession(ctx, fn)
		if err == nil || attempt == 1 {
			return err
		}
		switch {
		case isLost(err):
			if rerr := b.recover(epoch); rerr != nil {
				return rerr
			}
		case isStale(err) && onStale != nil:
			onStale()
		default:
			return err
		}
	}
}

// withSession runs fn on a pool session and returns the session's epoch
// with fn's error, or the error of getting a session. fn's errors are
// PKCS#11 errors, which decide whether the session goes back to the pool.
// It holds the token's inflight lock for reading throughout, so a reset
// waits for it.
func (b *Backend) withSession(ctx context.Context, fn func(s pkcs11.SessionHandle) error) (epoch uint64, err error) {
	if ctx == nil {
		ctx = context.Background()
	}
	b.tok.inflight.RLock()
	defer b.tok.inflight.RUnlock()
	s, err := b.pool.get(ctx)
	if err != nil {
		return s.epoch, err
	}
	defer func() { b.pool.put(s, err) }()
	return s.epoch, fn(s.h)
}
