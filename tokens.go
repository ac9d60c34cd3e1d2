package kms

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/store"
	"github.com/pocketkms/kms/token"
)

// genSnap is the immutable view of a key's token generator.
type genSnap struct {
	rec store.GeneratorRecord
	pub *rsa.PublicKey // nil when inactive
	lk  *lazyKey       // the signing key, loaded on first issuance
}

func newGenSnap(rec store.GeneratorRecord) (*genSnap, error) {
	g := &genSnap{rec: rec, lk: &lazyKey{}}
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

func (g *genSnap) active() bool { return g != nil && g.rec.Active }

func (g *genSnap) ref() backend.KeyRef {
	return backend.KeyRef{KeyTag: g.rec.Tag, Version: g.rec.Generation, Purpose: backend.PurposeTokenSigning}
}

// TokenGeneratorStatus is the state of a token generator.
type TokenGeneratorStatus string

// The generator states (NAVER v2 names).
const (
	GeneratorActive   TokenGeneratorStatus = "ACTIVE"
	GeneratorInactive TokenGeneratorStatus = "INACTIVE"
)

// TokenGenerator describes a key's token generator.
type TokenGenerator struct {
	// ID changes on every activation and rotation; empty when inactive.
	ID     string
	Status TokenGeneratorStatus
	// EnabledAt is the last activation or rotation; DisabledAt the last
	// deactivation (zero if none).
	EnabledAt  time.Time
	DisabledAt time.Time
	// IssuedTokenCount counts the tokens issued for the key over its
	// lifetime: a set counts 2, an access token alone 1. It is never reset.
	IssuedTokenCount uint64
}

func (g *genSnap) info() *TokenGenerator {
	if g == nil {
		return &TokenGenerator{Status: GeneratorInactive}
	}
	t := &TokenGenerator{
		Status: GeneratorInactive, EnabledAt: msTime(g.rec.EnabledAt), DisabledAt: msTime(g.rec.DisabledAt),
		IssuedTokenCount: g.rec.IssuedCount,
	}
	if g.rec.Active {
		t.ID, t.Status = g.rec.ID, GeneratorActive
	}
	return t
}

// GetTokenGenerator describes a key's token generator; a key whose
// generator was never activated has an INACTIVE one.
func (e *Engine) GetTokenGenerator(ctx context.Context, keyTag string) (*TokenGenerator, error) {
	return readKey(e, "get token generator", keyTag, func(op string, s *keySnap) (*TokenGenerator, error) {
		return s.gen.info(), nil
	})
}

// ActivateTokenGenerator activates an ENABLED key's token generator with a
// new RSA-2048 signing key pair, made and held by the backend, and a new
// id. Activating an active generator changes nothing. Tokens from before
// a deactivation never work again.
func (e *Engine) ActivateTokenGenerator(ctx context.Context, keyTag string) (*TokenGenerator, error) {
	return e.changeGenerator(ctx, "activate token generator", keyTag, func(g *genSnap) (bool, error) {
		return !g.active(), nil
	})
}

// RotateTokenGenerator replaces an active generator's signing key pair and
// id: every token issued before fails from the next call on.
func (e *Engine) RotateTokenGenerator(ctx context.Context, keyTag string) (*TokenGenerator, error) {
	const op = "rotate token generator"
	return e.changeGenerator(ctx, op, keyTag, func(g *genSnap) (bool, error) {
		if !g.active() {
			return false, newErr(op, keyTag, ErrInvalidState, "the token generator is not active")
		}
		return true, nil
	})
}

// DeactivateTokenGenerator deactivates a key's generator: every token
// issued fails from the next call on, for good. Deactivating an inactive
// generator changes nothing.
func (e *Engine) DeactivateTokenGenerator(ctx context.Context, keyTag string) (*TokenGenerator, error) {
	const op = "deactivate token generator"
	var old *genSnap
	s, err := e.update(ctx, op, keyTag, func(s *keySnap, now time.Time) (*keySnap, func(*store.Txn) error, error) {
		if KeyState(s.rec.State) != StateEnabled {
			return nil, nil, newErr(op, s.rec.Tag, ErrKeyNotEnabled, "")
		}
		if !s.gen.active() {
			return s, nil, nil
		}
		rec := s.gen.rec
		rec.Active, rec.ID, rec.Handle, rec.PublicKey, rec.DisabledAt = false, "", nil, nil, now.UnixMilli()
		g, err := newGenSnap(rec)
		if err != nil {
			return nil, nil, wrapErr(op, s.rec.Tag, ErrInternal, err)
		}
		old = s.gen
		ns := s.clone()
		ns.gen = g
		return ns, func(tx *store.Txn) error { return tx.PutGenerator(&rec) }, nil
	})
	if err != nil {
		return nil, err
	}
	if old != nil {
		e.destroySigningKey(ctx, old)
	}
	return s.gen.info(), nil
}

// changeGenerator makes a new signing key pair and id when need says so.
func (e *Engine) changeGenerator(ctx context.Context, op, keyTag string, need func(*genSnap) (bool, error)) (*TokenGenerator, error) {
	var old *genSnap
	// made is the new signing key once the change is ready to commit.
	var made *backend.DestroyRequest
	s, err := e.update(ctx, op, keyTag, func(s *keySnap, now time.Time) (*keySnap, func(*store.Txn) error, error) {
		tag := s.rec.Tag
		if KeyState(s.rec.State) != StateEnabled {
			return nil, nil, newErr(op, tag, ErrKeyNotEnabled, "")
		}
		ok, err := need(s.gen)
		if err != nil || !ok {
			return s, nil, err
		}
		var rec store.GeneratorRecord
		if s.gen != nil {
			rec = s.gen.rec
		}
		rec.Tag = tag
		rec.Generation++
		id, err := token.NewGeneratorID(e.random)
		if err != nil {
			return nil, nil, wrapErr(op, tag, ErrInternal, err)
		}
		ref := backend.KeyRef{KeyTag: tag, Version: rec.Generation, Purpose: backend.PurposeTokenSigning}
		res, err := e.be.Generate(ctx, &backend.GenerateRequest{Ref: ref, Type: RSA2048})
		if err != nil {
			return nil, nil, e.backendErr(op, tag, err)
		}
		pair := &backend.DestroyRequest{Ref: ref, Type: RSA2048, Handle: res.Handle}
		der, err := x509.MarshalPKIXPublicKey(res.Public)
		if err != nil {
			e.discard(ctx, pair)
			return nil, nil, wrapErr(op, tag, ErrInternal, err)
		}
		rec.ID, rec.Active, rec.Handle, rec.PublicKey, rec.EnabledAt = id, true, res.Handle, der, now.UnixMilli()
		g, err := newGenSnap(rec)
		if err != nil {
			e.discard(ctx, pair)
			return nil, nil, wrapErr(op, tag, ErrInternal, err)
		}
		old = s.gen
		made = pair
		ns := s.clone()
		ns.gen = g
		return ns, func(tx *store.Txn) error { return tx.PutGenerator(&rec) }, nil
	})
	if err != nil {
		if made != nil {
			e.discardAfter(ctx, err, made)
		}
		return nil, err
	}
	if old.active() && old.rec.Generation != s.gen.rec.Generation {
		e.destroySigningKey(ctx, old)
	}
	return s.gen.info(), nil
}

// destroySigningKey destroys a replaced generator key pair after the
// change that replaced it was committed.
func (e *Engine) destroySigningKey(ctx context.Context, g *genSnap) {
	if !g.active() {
		return
	}
	// Verification already refuses these tokens (their generator id is
	// stale); dropping them frees the cache early.
	e.tokens.DeleteGenerator(g.rec.ID)
	if err := e.be.Destroy(ctx, &backend.DestroyRequest{Ref: g.ref(), Type: RSA2048, Handle: g.rec.Handle}); err != nil {
		e.log.LogAttrs(ctx, slog.LevelWarn, "kms: could not destroy a replaced token-signing key",
			slog.String("keyTag", g.rec.Tag), slog.String("error", err.Error()))
	}
}

// IssueTokensRequest describes a token set to issue.
type IssueTokensRequest struct {
	// Subject is the principal the tokens are for (claim "sub"); required.
	Subject string
	// Permissions is the snapshot the tokens carry. nil means every
	// permission (the trusted application holds them all); an empty,
	// non-nil slice means none.
	Permissions []token.Permission
	// AccessTTL and RefreshTTL: zero values mean NAVER's defaults, 72 h
	// and 2,160 h.
	AccessTTL, RefreshTTL token.TTL
}

func withDefaultTTL(t token.TTL, minutes int) token.TTL {
	if t == (token.TTL{}) {
		return token.TTL{Minutes: minutes}
	}
	return t
}

// IssueTokens issues an access and a refresh token for an ENABLED key
// whose generator is active. The Set's String and Format redact the tokens.
func (e *Engine) IssueTokens(ctx context.Context, keyTag string, req IssueTokensRequest) (*token.Set, error) {
	const op = "issue tokens"
	perms := req.Permissions
	if perms == nil {
		perms = token.AllPermissions()
	}
	return e.issue(ctx, op, keyTag, token.Request{
		Subject: req.Subject, Permissions: perms,
		AccessTTL:  withDefaultTTL(req.AccessTTL, token.DefaultAccessTTLMinutes),
		RefreshTTL: withDefaultTTL(req.RefreshTTL, token.DefaultRefreshTTLMinutes),
	}, false, nil)
}

// issue signs a token set (or an access token alone) with the key's
// current generator and counts it, under the key's lock so that counts and
// generator changes serialise. recheck, when not nil, runs first under the key's
// lock on the snapshot that will sign: the token plane uses it so that a
// generator replaced or an allow-list changed after the refresh token was
// checked also stops the renewal.
func (e *Engine) issue(ctx context.Context, op, keyTag string, r token.Request, accessOnly bool, recheck func(*keySnap) error) (*token.Set, error) {
	if err := r.AccessTTL.Validate(); err != nil {
		return nil, wrapErr(op, keyTag, ErrInvalidArgument, err)
	}
	if !accessOnly {
		if err := r.RefreshTTL.Validate(); err != nil {
			return nil, wrapErr(op, keyTag, ErrInvalidArgument, err)
		}
	}
	var set token.Set
	_, err := e.update(ctx, op, keyTag, func(s *keySnap, now time.Time) (*keySnap, func(*store.Txn) error, error) {
		tag := s.rec.Tag
		if recheck != nil {
			if err := recheck(s); err != nil {
				return nil, nil, err
			}
		}
		if KeyState(s.rec.State) != StateEnabled {
			return nil, nil, newErr(op, tag, ErrKeyNotEnabled, "")
		}
		if !s.gen.active() {
			return nil, nil, newErr(op, tag, ErrInvalidState, "the token generator is not active")
		}
		signer, err := e.tokenSigner(ctx, s.gen)
		if err != nil {
			return nil, nil, e.backendErr(op, tag, err)
		}
		r.KeyTag, r.Now = tag, now
		n := uint64(2)
		if accessOnly {
			n = 1
			set, err = issueAccess(signer, r)
		} else {
			set, err = token.IssueSet(signer, r)
		}
		if err != nil {
			if errors.Is(err, token.ErrInvalidArgument) || errors.Is(err, token.ErrInvalidTTL) {
				return nil, nil, wrapErr(op, tag, ErrInvalidArgument, err)
			}
			return nil, nil, wrapErr(op, tag, ErrInternal, err)
		}
		rec := s.gen.rec
		rec.IssuedCount += n
		g := *s.gen
		g.rec = rec
		ns := s.clone()
		ns.gen = &g
		return ns, func(tx *store.Txn) error { return tx.PutGenerator(&rec) }, nil
	})
	if err != nil {
		return nil, err
	}
	return &set, nil
}

// issueAccess signs an access token alone; r.Permissions are known ids.
func issueAccess(signer crypto.Signer, r token.Request) (token.Set, error) {
	iat := r.Now.Truncate(time.Second).UTC()
	perms := slices.Clone(r.Permissions)
	slices.Sort(perms)
	c := token.Claims{
		Subject: r.Subject, IssuedAt: iat, Kind: token.Access, KeyTag: r.KeyTag,
		Permissions: slices.Compact(perms),
	}
	if !r.AccessTTL.Unlimited {
		c.ExpiresAt = iat.Add(r.AccessTTL.Duration())
	}
	tok, err := token.Sign(signer, &c)
	if err != nil {
		return token.Set{}, err
	}
	return token.Set{Access: tok, IssuedAt: iat, AccessExpires: c.ExpiresAt}, nil
}

// tokenSigner adapts the generator's backend key to crypto.Signer for the
// token package: RS256 is RSASSA-PKCS1-v1_5 with SHA-256.
func (e *Engine) tokenSigner(ctx context.Context, g *genSnap) (crypto.Signer, error) {
	if k := g.lk.k.Load(); k != nil {
		return backendSigner{ctx: ctx, k: (*k).(backend.Signer), pub: g.pub}, nil
	}
	g.lk.mu.Lock()
	defer g.lk.mu.Unlock()
	if k := g.lk.k.Load(); k != nil {
		return backendSigner{ctx: ctx, k: (*k).(backend.Signer), pub: g.pub}, nil
	}
	k, err := e.be.Load(ctx, &backend.LoadRequest{Ref: g.ref(), Type: RSA2048, Handle: g.rec.Handle})
	if err != nil {
		return nil, err
	}
	sk, ok := k.(backend.Signer)
	if !ok {
		return nil, errors.New("backend token-signing key cannot sign")
	}
	g.lk.k.Store(&k)
	return backendSigner{ctx: ctx, k: sk, pub: g.pub}, nil
}

// backendSigner signs with the backend key; its public key is the one the
// generator's snapshot holds, as Activate recorded it.
type backendSigner struct {
	ctx context.Context
	k   backend.Signer
	pub *rsa.PublicKey
}

func (b backendSigner) Public() crypto.PublicKey { return b.pub }

func (b backendSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if _, pss := opts.(*rsa.PSSOptions); pss || opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("%w: token keys sign RS256 only", backend.ErrInvalidArgument)
	}
	// A token-signing key signs RSASSA-PKCS1-v1_5 with SHA-256: RS256.
	return b.k.Sign(b.ctx, &backend.SignRequest{Digest: digest})
}
