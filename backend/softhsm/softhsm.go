//go:build cgo

package softhsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/softhsm/internal/p11"
)

// MaxAESInput is the largest plaintext, and the largest additional data,
// an AES256 key accepts, in bytes, as in backend/memory. It only rejects
// absurd sizes; the Engine's own limits are far smaller.
const MaxAESInput = 64 << 20

// aesKeySize is the size of an AES-256 key.
const aesKeySize = 32

var (
	_ backend.Backend  = (*Backend)(nil)
	_ backend.Importer = (*Backend)(nil)
	_ backend.Sweeper  = (*Backend)(nil)
)

// p256Params is CKA_EC_PARAMS for P-256: the DER of the named curve OID
// prime256v1 (1.2.840.10045.3.1.7).
var p256Params = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// Backend is a backend.Backend whose key material lives in a PKCS#11
// token. Create it with New; it is safe for concurrent use.
type Backend struct {
	mod    *p11.Module
	tok    *token
	pool   *pool
	desc   string // "token \"label\"", for messages
	copies bool
	// cfg is where the PIN comes from for a login after a reset: a PIN
	// file, read again each time, or a PIN value, which never prints.
	cfg Config

	closeOnce sync.Once
}

// New opens the token cfg names, logs in (once per token and process; see
// the package documentation) and returns a Backend on it. It does not
// search or read the token's objects. A malformed cfg fails with
// ErrInvalidConfig, a token that is not there with ErrTokenNotFound, a
// PIN the token refuses with ErrIncorrectPIN; errors never contain the
// PIN. If the token's login was lost since another Backend of this
// process logged it in (see the package documentation's Sessions and
// recovery), New logs it in again with cfg's PIN.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if ctx != nil {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("softhsm: new: %w", err)
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pin, err := cfg.pin()
	if err != nil {
		return nil, err
	}
	defer clear(pin)
	desc := tokenDesc(cfg.TokenLabel, cfg.TokenSerial)
	mod, err := p11.Acquire(cfg.Module)
	if err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	slot, err := findToken(mod.Ctx, cfg.TokenLabel, cfg.TokenSerial, desc)
	if err != nil {
		mod.Release()
		return nil, err
	}
	tok, err := acquireToken(mod, slot, pin, desc)
	if err != nil {
		mod.Release()
		return nil, err
	}
	return &Backend{
		mod:    mod,
		tok:    tok,
		pool:   newPool(mod.Ctx, tok, cfg.maxSessions()),
		desc:   desc,
		copies: !cfg.NoSessionCopies,
		cfg:    cfg,
	}, nil
}

func tokenDesc(label, serial string) string {
	switch {
	case label != "" && serial != "":
		return fmt.Sprintf("token %q (serial %q)", label, serial)
	case label != "":
		return fmt.Sprintf("token %q", label)
	}
	return fmt.Sprintf("token with serial %q", serial)
}

// findToken returns the slot of the one initialised token with the label
// and serial number (either may be empty, not both).
func findToken(p *pkcs11.Ctx, label, serial, desc string) (uint, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("softhsm: list slots: %w", err)
	}
	var found []uint
	var info pkcs11.TokenInfo
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		if (label == "" || ti.Label == label) && (serial == "" || ti.SerialNumber == serial) {
			found = append(found, s)
			info = ti
		}
	}
	switch {
	case len(found) == 0:
		return 0, fmt.Errorf("%w: no initialised %s", ErrTokenNotFound, desc)
	case len(found) > 1:
		return 0, fmt.Errorf("%w: %d tokens match %s; name the serial number too", ErrInvalidConfig, len(found), desc)
	case info.Flags&pkcs11.CKF_USER_PIN_INITIALIZED == 0:
		return 0, fmt.Errorf("softhsm: %s has no user PIN yet", desc)
	}
	return found[0], nil
}

// check returns ErrClosed after Close, or the context's error.
func (b *Backend) check(ctx context.Context) error {
	if b.pool.closed.Load() {
		return backend.ErrClosed
	}
	if ctx != nil {
		return ctx.Err()
	}
	return nil
}

// Generate creates key material inside the token: token objects that are
// private, sensitive and not extractable, with a new CKA_ID (recording
// the creation time) and a CKA_LABEL derived from req.Ref. It returns a
// handle that references them (it holds no material) and, for RSA2048 and
// ECDSA, the public key read from the token. See backend.Backend for the
// error contract; the KeyRef must have a 64-character lowercase hex KeyTag
// and a Version of at least 1. After a lost session it destroys what the
// failed attempt may have left and generates once more (see the package
// documentation's Sessions and recovery).
func (b *Backend) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("softhsm: generate: %w", err)
	}
	if req == nil {
		return nil, fmt.Errorf("softhsm: generate: %w: nil request", backend.ErrInvalidArgument)
	}
	if err := req.Ref.Validate(req.Type, req.Convergent); err != nil {
		return nil, fmt.Errorf("softhsm: generate %s: %w", req.Ref, err)
	}
	h := handle{ref: req.Ref, typ: req.Type, convergent: req.Convergent}
	var err error
	if h.id, err = newID(time.Now()); err != nil {
		return nil, fmt.Errorf("softhsm: generate %s: %w", req.Ref, err)
	}
	pub, err := b.createOnce(ctx, &h, nil)
	if err != nil {
		return nil, fmt.Errorf("softhsm: generate %s in %s: %w", req.Ref, b.desc, objErr(err))
	}
	return &backend.GenerateResponse{Handle: h.marshal(), Public: pub}, nil
}

// ImportKey creates token objects from existing material, with the same
// attributes as Generate (private, sensitive, not extractable), and
// returns a handle as Generate does. Material of the wrong Go type, size
// or curve, or a ConvergentKey that is not 32 bytes or given for a non-AES
// key, fails with backend.ErrInvalidArgument. A non-empty ConvergentKey
// makes an AES256 key convergent: load it with Convergent set. The
// caller's material is not modified or retained; the copies this package
// makes are cleared after use (best effort: the PKCS#11 binding copies
// attribute values into C memory it frees without clearing).
func (b *Backend) ImportKey(ctx context.Context, req *backend.ImportRequest) (*backend.GenerateResponse, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("softhsm: import: %w", err)
	}
	if req == nil {
		return nil, fmt.Errorf("softhsm: import: %w: nil request", backend.ErrInvalidArgument)
	}
	convergent := len(req.ConvergentKey) > 0
	if err := req.Ref.Validate(req.Type, convergent); err != nil {
		return nil, fmt.Errorf("softhsm: import %s: %w", req.Ref, err)
	}
	m, err := importMaterial(req)
	if err != nil {
		return nil, fmt.Errorf("softhsm: import %s: %w", req.Ref, err)
	}
	defer m.clear()
	h := handle{ref: req.Ref, typ: req.Type, convergent: convergent}
	if h.id, err = newID(time.Now()); err != nil {
		return nil, fmt.Errorf("softhsm: import %s: %w", req.Ref, err)
	}
	pub, err := b.createOnce(ctx, &h, m)
	if err != nil {
		return nil, fmt.Errorf("softhsm: import %s into %s: %w", req.Ref, b.desc, objErr(err))
	}
	return &backend.GenerateResponse{Handle: h.marshal(), Public: pub}, nil
}

// Load resolves a handle to its token objects with one search and returns
// the key. A handle that is malformed, was made for another KeyRef, type
// or convergent flag, or whose objects carry other labels, fails with
// backend.ErrInvalidHandle; objects that are gone with
// backend.ErrKeyNotFound. Unless Config.NoSessionCopies is set, the key's
// operational objects are copied into session objects for speed; every
// Key loaded from the same handle in this process shares them.
func (b *Backend) Load(ctx context.Context, req *backend.LoadRequest) (backend.Key, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("softhsm: load: %w", err)
	}
	if req == nil {
		return nil, fmt.Errorf("softhsm: load: %w: nil request", backend.ErrInvalidArgument)
	}
	if err := req.Ref.Validate(req.Type, req.Convergent); err != nil {
		return nil, fmt.Errorf("softhsm: load %s: %w", req.Ref, err)
	}
	h, err := parseHandle(req.Handle)
	if err != nil || h.ref != req.Ref || h.typ != req.Type || h.convergent != req.Convergent {
		return nil, fmt.Errorf("softhsm: load %s: %w", req.Ref, backend.ErrInvalidHandle)
	}
	var set *objectSet
	err = b.do(ctx, func(s pkcs11.SessionHandle) error {
		var err error
		set, err = b.tok.load(s, h, b.copies)
		return err
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("softhsm: load %s from %s: %w", req.Ref, b.desc, objErr(err))
	}
	base := newKeyBase(b, set, h.ref, h.typ)
	switch h.typ {
	case backend.AES256:
		return &aesKey{keyBase: base}, nil
	case backend.RSA2048:
		return &rsaKey{keyBase: base}, nil
	default: // backend.ECDSA; KeyRef.Validate admits nothing else
		return &ecdsaKey{keyBase: base}, nil
	}
}

// Destroy destroys the token objects behind a handle, and the session
// copies of them in this process; keys loaded from it fail with
// backend.ErrKeyNotFound afterwards. Objects already gone are not an
// error. It searches the token once (by CKA_ID) and destroys only objects
// whose labels match the handle's KeyRef; a handle whose objects carry
// other labels fails with backend.ErrInvalidHandle and destroys nothing.
func (b *Backend) Destroy(ctx context.Context, req *backend.DestroyRequest) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("softhsm: destroy: %w", err)
	}
	if req == nil {
		return fmt.Errorf("softhsm: destroy: %w: nil request", backend.ErrInvalidArgument)
	}
	if err := req.Ref.Validate(req.Type, false); err != nil {
		return fmt.Errorf("softhsm: destroy %s: %w", req.Ref, err)
	}
	h, err := parseHandle(req.Handle)
	if err != nil || h.ref != req.Ref || h.typ != req.Type {
		return fmt.Errorf("softhsm: destroy %s: %w", req.Ref, backend.ErrInvalidHandle)
	}
	err = b.do(ctx, func(s pkcs11.SessionHandle) error {
		return b.tok.destroy(s, h)
	}, nil)
	if err != nil {
		return fmt.Errorf("softhsm: destroy %s in %s: %w", req.Ref, b.desc, objErr(err))
	}
	return nil
}

// Close waits for operations in flight, closes the Backend's sessions and
// releases the token and the module (the last Backend of the process on a
// token logs out; the last on a module finalises it). It is idempotent and
// returns nil; afterwards every method of the Backend and of the keys it
// loaded fails with backend.ErrClosed.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.pool.close()
		b.tok.release()
		b.mod.Release()
	})
	return nil
}

// String describes the backend: the token it uses, never the PIN.
func (b *Backend) String() string {
	if b == nil {
		return "softhsm.Backend(nil)"
	}
	if b.pool.closed.Load() {
		return fmt.Sprintf("softhsm.Backend{%s, closed}", b.desc)
	}
	return fmt.Sprintf("softhsm.Backend{%s}", b.desc)
}

// GoString returns the same description as String.
func (b *Backend) GoString() string { return b.String() }

// Format prints the same description as String for every verb.
func (b *Backend) Format(f fmt.State, _ rune) { io.WriteString(f, b.String()) }

// MarshalJSON encodes the same description as String as a JSON string.
func (b *Backend) MarshalJSON() ([]byte, error) { return json.Marshal(b.String()) }

// LogValue logs the same description as String.
func (b *Backend) LogValue() slog.Value { return slog.StringValue(b.String()) }

// material is imported key material, as attribute values.
type material struct {
	secret     []byte // AES key
	convergent []byte // HMAC key
	rsa        *rsa.PrivateKey
	ec         []byte // P-256 private scalar
	ecPoint    []byte // uncompressed public point
	wipe       [][]byte
}

func (m *material) clear() {
	for _, b := range m.wipe {
		clear(b)
	}
}

// importMaterial checks req.Material and copies it.
func importMaterial(req *backend.ImportRequest) (*material, error) {
	m := &material{}
	switch req.Type {
	case backend.AES256:
		k, ok := req.Material.([]byte)
		if !ok || len(k) != aesKeySize {
			return nil, fmt.Errorf("%w: material must be a %d-byte []byte", backend.ErrInvalidArgument, aesKeySize)
		}
		if len(req.ConvergentKey) > 0 && len(req.ConvergentKey) != backend.ConvergentKeySize {
			return nil, fmt.Errorf("%w: convergent key must be %d bytes", backend.ErrInvalidArgument, backend.ConvergentKeySize)
		}
		m.secret = bytes.Clone(k)
		m.wipe = append(m.wipe, m.secret)
		if len(req.ConvergentKey) > 0 {
			m.convergent = bytes.Clone(req.ConvergentKey)
			m.wipe = append(m.wipe, m.convergent)
		}
	case backend.RSA2048:
		priv, ok := req.Material.(*rsa.PrivateKey)
		if !ok || priv == nil || priv.N == nil || priv.N.BitLen() != backend.RSAModulusBits || len(priv.Primes) != 2 {
			return nil, fmt.Errorf("%w: material must be a two-prime *rsa.PrivateKey of %d bits", backend.ErrInvalidArgument, backend.RSAModulusBits)
		}
		if err := priv.Validate(); err != nil {
			return nil, fmt.Errorf("%w: invalid rsa key", backend.ErrInvalidArgument)
		}
		m.rsa = priv
	case backend.ECDSA:
		priv, ok := req.Material.(*ecdsa.PrivateKey)
		if !ok || priv == nil || priv.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: material must be an *ecdsa.PrivateKey on P-256", backend.ErrInvalidArgument)
		}
		d, err := priv.Bytes()
		if err != nil {
			return nil, fmt.Errorf("%w: invalid ecdsa key", backend.ErrInvalidArgument)
		}
		m.wipe = append(m.wipe, d)
		// The public point is derived from the scalar, so the two objects
		// always match whatever priv.PublicKey holds.
		derived, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
		if err != nil {
			return nil, fmt.Errorf("%w: invalid ecdsa key", backend.ErrInvalidArgument)
		}
		pt, err := derived.PublicKey.Bytes()
		if err != nil {
			return nil, fmt.Errorf("%w: invalid ecdsa key", backend.ErrInvalidArgument)
		}
		m.ec, m.ecPoint = d, pt
	}
	return m, nil
}

// createOnce creates the objects of h (see create) and returns the
// public key. Creating is not safe to repeat blindly: when the session
// is lost during C_GenerateKey or C_CreateObject, the token may have
// created some or all of the objects without saying so, and a second
// attempt would leave them behind as orphans (or, under the same label,
// as a second set). So after a lost session createOnce recovers the
// token, destroys whatever carries h's CKA_ID — which this call drew and
// nothing else uses, so only the failed attempt can have made it — and
// creates once more under the same ID. If the token cannot be recovered
// or searched, it gives up with the error (backend.ErrUnavailable);
// objects left then are found by Sweep.
func (b *Backend) createOnce(ctx context.Context, h *handle, m *material) (crypto.PublicKey, error) {
	var pub crypto.PublicKey
	retry := false
	err := b.do(ctx, func(s pkcs11.SessionHandle) error {
		if retry {
			if err := b.tok.destroy(s, *h); err != nil {
				return err
			}
		}
		retry = true
		var err error
		pub, err = b.create(s, h, m)
		return err
	}, nil)
	return pub, err
}

// create makes the token objects of h in session s: generated inside the
// token when m is nil, imported from m otherwise. It returns the public
// key (nil for AES256) and records the objects in the token's index. On
// failure it destroys what it created.
func (b *Backend) create(s pkcs11.SessionHandle, h *handle, m *material) (crypto.PublicKey, error) {
	p := b.mod.Ctx
	objs := h.objects(0) // operational object first
	var pub crypto.PublicKey
	var err error
	switch h.typ {
	case backend.AES256:
		var secret, mac []byte
		if m != nil {
			secret, mac = m.secret, m.convergent
		}
		objs[0].h, err = createSecret(p, s, secretTemplate(h, false, secret), secret == nil, pkcs11.CKM_AES_KEY_GEN)
		if err == nil && h.convergent {
			objs[1].h, err = createSecret(p, s, secretTemplate(h, true, mac), mac == nil, pkcs11.CKM_GENERIC_SECRET_KEY_GEN)
		}
	case backend.RSA2048:
		pubT, privT := rsaTemplates(h, m)
		defer wipeAttributes(privT)
		objs[1].h, objs[0].h, err = createPair(p, s, pubT, privT, m == nil, pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN)
		if err == nil {
			pub, err = readRSAPublic(p, s, objs[1].h)
		}
	default: // backend.ECDSA
		pubT, privT := ecTemplates(h, m)
		defer wipeAttributes(privT)
		objs[1].h, objs[0].h, err = createPair(p, s, pubT, privT, m == nil, pkcs11.CKM_EC_KEY_PAIR_GEN)
		if err == nil {
			pub, err = readECPublic(p, s, objs[1].h)
		}
	}
	if err != nil {
		for _, o := range objs {
			if o.h != 0 {
				_ = p.DestroyObject(s, o.h)
			}
		}
		return nil, err
	}
	b.tok.added(*h, objs)
	return pub, nil
}

func createSecret(p *pkcs11.Ctx, s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute, generate bool, mech uint) (pkcs11.ObjectHandle, error) {
	if generate {
		return p.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, tmpl)
	}
	return p.CreateObject(s, tmpl)
}

// createPair generates a key pair, or creates both objects from their
// templates. Handles that were not created are zero.
func createPair(p *pkcs11.Ctx, s pkcs11.SessionHandle, pubT, privT []*pkcs11.Attribute, generate bool, mech uint) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
	if generate {
		return p.GenerateKeyPair(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, pubT, privT)
	}
	pubO, err := p.CreateObject(s, pubT)
	if err != nil {
		return 0, 0, err
	}
	privO, err := p.CreateObject(s, privT)
	return pubO, privO, err
}

// commonAttributes are those of every object: a token object, readable
// only after login, under the handle's CKA_ID and the given label.
func commonAttributes(h *handle, class, keyType uint, label string) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_ID, h.id[:]),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
}

// secretAttributes keep a secret or private key inside the token and
// unable to wrap, unwrap or derive other keys. (Private keys have no
// CKA_WRAP.)
func secretAttributes(class uint) []*pkcs11.Attribute {
	t := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
	}
	if class == pkcs11.CKO_SECRET_KEY {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_WRAP, false))
	}
	return t
}

// secretTemplate is the template of the AES key, or with mac of the
// convergent HMAC-SHA256 key. value is the imported key, or nil to
// generate one.
func secretTemplate(h *handle, mac bool, value []byte) []*pkcs11.Attribute {
	keyType, label := uint(pkcs11.CKK_AES), h.label()
	if mac {
		keyType, label = pkcs11.CKK_GENERIC_SECRET, h.convergentLabel()
	}
	t := append(commonAttributes(h, pkcs11.CKO_SECRET_KEY, keyType, label), secretAttributes(pkcs11.CKO_SECRET_KEY)...)
	t = append(t,
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, !mac),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, !mac),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, mac),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
	)
	if value != nil {
		return append(t, pkcs11.NewAttribute(pkcs11.CKA_VALUE, value))
	}
	return append(t, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, aesKeySize))
}

func rsaTemplates(h *handle, m *material) (pub, priv []*pkcs11.Attribute) {
	cipher := h.ref.Purpose == backend.PurposeCipher
	pub = append(commonAttributes(h, pkcs11.CKO_PUBLIC_KEY, pkcs11.CKK_RSA, h.label()),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, cipher),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
	)
	priv = append(commonAttributes(h, pkcs11.CKO_PRIVATE_KEY, pkcs11.CKK_RSA, h.label()), secretAttributes(pkcs11.CKO_PRIVATE_KEY)...)
	priv = append(priv,
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, cipher),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN_RECOVER, false),
	)
	if m == nil {
		pub = append(pub,
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, backend.RSAModulusBits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		)
		return pub, priv
	}
	k := m.rsa
	n, e := k.N.Bytes(), big.NewInt(int64(k.E)).Bytes()
	pub = append(pub, pkcs11.NewAttribute(pkcs11.CKA_MODULUS, n), pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, e))
	// CRT values computed here rather than with Precompute, which would
	// modify the caller's key.
	p, q := k.Primes[0], k.Primes[1]
	one := big.NewInt(1)
	dp := new(big.Int).Mod(k.D, new(big.Int).Sub(p, one))
	dq := new(big.Int).Mod(k.D, new(big.Int).Sub(q, one))
	qinv := new(big.Int).ModInverse(q, p)
	priv = append(priv,
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, n),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, e),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE_EXPONENT, k.D.Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_PRIME_1, p.Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_PRIME_2, q.Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_EXPONENT_1, dp.Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_EXPONENT_2, dq.Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_COEFFICIENT, qinv.Bytes()),
	)
	for _, x := range []*big.Int{dp, dq, qinv} {
		x.SetInt64(0)
	}
	return pub, priv
}

func ecTemplates(h *handle, m *material) (pub, priv []*pkcs11.Attribute) {
	pub = append(commonAttributes(h, pkcs11.CKO_PUBLIC_KEY, pkcs11.CKK_EC, h.label()),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256Params),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
	)
	priv = append(commonAttributes(h, pkcs11.CKO_PRIVATE_KEY, pkcs11.CKK_EC, h.label()), secretAttributes(pkcs11.CKO_PRIVATE_KEY)...)
	priv = append(priv, pkcs11.NewAttribute(pkcs11.CKA_SIGN, true))
	if m != nil {
		// Generation takes the curve from the public template only.
		point, _ := asn1.Marshal(m.ecPoint) // an OCTET STRING cannot fail
		pub = append(pub, pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, point))
		priv = append(priv,
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256Params),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, m.ec))
	}
	return pub, priv
}

// wipeAttributes clears the values of private key attributes, which
// may hold imported material. Public and non-secret values are cleared
// too; the template is not used afterwards.
func wipeAttributes(t []*pkcs11.Attribute) {
	for _, a := range t {
		switch a.Type {
		case pkcs11.CKA_PRIVATE_EXPONENT, pkcs11.CKA_PRIME_1, pkcs11.CKA_PRIME_2,
			pkcs11.CKA_EXPONENT_1, pkcs11.CKA_EXPONENT_2, pkcs11.CKA_COEFFICIENT, pkcs11.CKA_VALUE:
			clear(a.Value)
		}
	}
}

// readRSAPublic reads an RSA public key object; it must be RSA-2048.
func readRSAPublic(p *pkcs11.Ctx, s pkcs11.SessionHandle, o pkcs11.ObjectHandle) (*rsa.PublicKey, error) {
	attrs, err := p.GetAttributeValue(s, o, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil),
	})
	if err != nil {
		return nil, err
	}
	n := new(big.Int).SetBytes(attrs[0].Value)
	e := new(big.Int).SetBytes(attrs[1].Value)
	if n.BitLen() != backend.RSAModulusBits || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return nil, fmt.Errorf("%w: token holds an unexpected rsa public key", backend.ErrInvalidHandle)
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

// readECPublic reads a P-256 public key object. CKA_EC_POINT is the DER
// OCTET STRING around the uncompressed point (some modules omit the
// OCTET STRING; that is accepted too).
func readECPublic(p *pkcs11.Ctx, s pkcs11.SessionHandle, o pkcs11.ObjectHandle) (*ecdsa.PublicKey, error) {
	attrs, err := p.GetAttributeValue(s, o, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil),
	})
	if err != nil {
		return nil, err
	}
	bad := fmt.Errorf("%w: token holds an unexpected ecdsa public key", backend.ErrInvalidHandle)
	if !bytes.Equal(attrs[0].Value, p256Params) {
		return nil, bad
	}
	point := attrs[1].Value
	var inner []byte
	if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
		point = inner
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, bad
	}
	return pub, nil
}

// ulong decodes a CK_ULONG attribute value (native byte order, 4 or 8
// bytes).
func ulong(v []byte) (uint, bool) {
	switch len(v) {
	case 8:
		return uint(nativeEndian.Uint64(v)), true
	case 4:
		return uint(nativeEndian.Uint32(v)), true
	}
	return 0, false
}
