//go:build cgo

// Package p11 holds the process-wide registry of PKCS#11 modules shared by
// backend/softhsm and its test helper.
//
// A PKCS#11 module may be initialised once per process (C_Initialize), and
// login state, session objects and object handles belong to the process,
// not to a caller. So every user of a module in this process shares one
// *pkcs11.Ctx per module file, counted by Acquire and Release; the last
// Release finalises the module if this registry initialised it.
package p11

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/miekg/pkcs11"
)

// Module is one loaded, initialised PKCS#11 module.
type Module struct {
	// Ctx is the module's context. It is safe for concurrent use (the
	// module is initialised with CKF_OS_LOCKING_OK); sessions are not.
	Ctx *pkcs11.Ctx
	// Path is the module path as the first caller gave it.
	Path string

	key   string
	refs  int  // guarded by reg.mu
	owner bool // this registry's C_Initialize succeeded; finalise at the end
}

var reg struct {
	mu      sync.Mutex
	modules map[string]*Module
	initMu  sync.Mutex // serialises InitToken (free-slot races)
}

// Acquire loads and initialises the module at path, or returns the one
// already loaded from the same file, and counts a reference to it. Each
// successful Acquire must be matched by one Release.
func Acquire(path string) (*Module, error) {
	if path == "" {
		return nil, errors.New("no module path")
	}
	key, err := filepath.Abs(path)
	if err == nil {
		key, err = filepath.EvalSymlinks(key)
	}
	if err != nil {
		return nil, fmt.Errorf("module %q: %w", path, err)
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if m := reg.modules[key]; m != nil {
		m.refs++
		return m, nil
	}
	ctx := pkcs11.New(key)
	if ctx == nil {
		return nil, fmt.Errorf("module %q: cannot be loaded as a PKCS#11 library", path)
	}
	owner := true
	if err := ctx.Initialize(); err != nil {
		if !Is(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			ctx.Destroy()
			return nil, fmt.Errorf("module %q: initialize: %w", path, err)
		}
		// Someone else in this process initialised it: share it, and
		// leave finalisation to them.
		owner = false
	}
	m := &Module{Ctx: ctx, Path: path, key: key, refs: 1, owner: owner}
	if reg.modules == nil {
		reg.modules = make(map[string]*Module)
	}
	reg.modules[key] = m
	return m, nil
}

// Release drops a reference taken by Acquire. The last one finalises the
// module (when this registry initialised it) and unloads it; every
// session of the process on it must have been closed before.
func (m *Module) Release() {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(reg.modules, m.key)
	if m.owner {
		_ = m.Ctx.Finalize()
	}
	m.Ctx.Destroy()
}

// Is reports whether err is the PKCS#11 return value rv.
func Is(err error, rv uint) bool {
	var e pkcs11.Error
	return errors.As(err, &e) && uint(e) == rv
}

// InitToken initialises a new token in the first slot of the module at
// path that holds an uninitialised token, with the given label, security
// officer PIN and user PIN. It is meant for tests: SoftHSM2 creates a new
// free slot after each initialisation, and a token created this way is
// visible at once, whereas tokens that softhsm2-util creates after this
// process initialised the module stay invisible until it is finalised.
func InitToken(path, label, soPIN, userPIN string) error {
	reg.initMu.Lock()
	defer reg.initMu.Unlock()
	m, err := Acquire(path)
	if err != nil {
		return err
	}
	defer m.Release()
	p := m.Ctx
	slots, err := p.GetSlotList(false)
	if err != nil {
		return fmt.Errorf("list slots: %w", err)
	}
	free, found := uint(0), false
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free, found = s, true
			break
		}
	}
	if !found {
		return errors.New("no slot with an uninitialised token")
	}
	if err := p.InitToken(free, soPIN, label); err != nil {
		return fmt.Errorf("init token %q: %w", label, err)
	}
	s, err := p.OpenSession(free, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("token %q: open session: %w", label, err)
	}
	defer p.CloseSession(s)
	if err := p.Login(s, pkcs11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("token %q: security officer login: %w", label, err)
	}
	defer p.Logout(s)
	if err := p.InitPIN(s, userPIN); err != nil {
		return fmt.Errorf("token %q: init user PIN: %w", label, err)
	}
	return nil
}
