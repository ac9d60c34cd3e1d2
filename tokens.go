package kms

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/token"
)

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
	t := &TokenGenerator{Status: GeneratorInactive, EnabledAt: g.enabledAt, DisabledAt: g.disabledAt, IssuedTokenCount: g.issued}
	if g.active {
		t.ID, t.Status = g.id, GeneratorActive
	}
	return t
}

// GetTokenGenerator describes a key's token generator; a key whose
// generator was never activated has an INACTIVE one.
func (e *Engine) GetTokenGenerator(ctx context.Context, keyTag string) (*TokenGenerator, error) {
	return readKey(e, ctx, "get token generator", keyTag, func(op string, s *keySnap) (*TokenGenerator, error) {
		return s.gen.info(), nil
	})
}

// ActivateTokenGenerator activates an ENABLED key's token generator with a
// new RSA-2048 signing key pair, made and held by the backend, and a new
// id. Activating an active generator changes nothing. Tokens from before
// a deactivation never work again.
func (e *Engine) ActivateTokenGenerator(ctx context.Context, keyTag string) (*TokenGenerator, error) {
	const op = "activate token generator"
	return e.changeGenerator(ctx, op, keyTag, func(s *keySnap) (bool, error) {
		return !s.gen.isActive(), nil
	})
}

// RotateTokenGenerator replaces an active generator's signing key pair and
// id: every token issued before fails from the next call on.
func (e *Engine) RotateTokenGenerator(ctx context.Context, keyTag string) (*TokenGenerator, error) {
	const op = "rotate token generator"
	return e.changeGenerator(ctx, op, keyTag, func(s *keySnap) (bool, error) {
		if !s.gen.isActive() {
			return false, newErr(op, s.tag, ErrInvalidState, "the token generator is not active")
		}
		return true, nil
	})
}

// DeactivateTokenGenerator deactivates a key's generator: every token
// issued fails from the next call on, for good. Deactivating an inactive
// generator changes nothing.
func (e *Engine) DeactivateTokenGenerator(ctx context.Context, keyTag string) (*TokenGenerator, error) {
	const op = "deactivate token generator"
	r, err := mutate(e, ctx, op, keyTag, func(s *keySnap, now time.Time) (edit, genChange, error) {
		if !s.enabled() {
			return edit{}, genChange{}, newErr(op, s.tag, ErrKeyNotEnabled, "")
		}
		if !s.gen.isActive() {
			return edit{}, genChange{now: s.gen}, nil
		}
		g := &genSnap{generation: s.gen.generation, enabledAt: s.gen.enabledAt, disabledAt: now, issued: s.gen.issued, lk: &lazyKey{}}
		ns := s.clone()
		ns.gen = g
		ed := edit{next: ns}
		ed.change.Put(g.record(s.tag))
		return ed, genChange{from: s, now: g, replaced: s.gen}, nil
	})
	if err != nil {
		return nil, err
	}
	e.destroySigningKey(ctx, r.from, r.replaced)
	return r.now.info(), nil
}

// genChange is the result of a generator change: the generator now in
// force, and the one it replaced (whose signing key is destroyed once the
// change is committed), if any, with the snapshot it was replaced in.
type genChange struct {
	from          *keySnap
	now, replaced *genSnap
}

// changeGenerator makes a new signing key pair and id when need says so.
func (e *Engine) changeGenerator(ctx context.Context, op, keyTag string, need func(*keySnap) (bool, error)) (*TokenGenerator, error) {
	r, err := mutate(e, ctx, op, keyTag, func(s *keySnap, now time.Time) (edit, genChange, error) {
		tag := s.tag
		if !s.enabled() {
			return edit{}, genChange{}, newErr(op, tag, ErrKeyNotEnabled, "")
		}
		ok, err := need(s)
		if err != nil || !ok {
			return edit{}, genChange{now: s.gen}, err
		}
		id, err := token.NewGeneratorID(e.random)
		if err != nil {
			return edit{}, genChange{}, wrapErr(op, tag, ErrInternal, err)
		}
		g := &genSnap{id: id, active: true, enabledAt: now, generation: 1, lk: &lazyKey{}}
		if s.gen != nil {
			g.generation, g.disabledAt, g.issued = s.gen.generation+1, s.gen.disabledAt, s.gen.issued
		}
		ref := g.ref(tag)
		res, err := e.be.Generate(ctx, &backend.GenerateRequest{Ref: ref, Type: RSA2048})
		if err != nil {
			return edit{}, genChange{}, backendErr(op, tag, err)
		}
		made := &backend.DestroyRequest{Ref: ref, Type: RSA2048, Handle: res.Handle}
		g.handle = res.Handle
		if g.stored, err = s.seal(res.Handle, backend.PurposeTokenSigning, g.generation); err != nil {
			e.discard(ctx, made)
			return edit{}, genChange{}, wrapErr(op, tag, ErrInternal, fmt.Errorf("seal the handle: %w", err))
		}
		if g.pub, _ = res.Public.(*rsa.PublicKey); g.pub == nil {
			e.discard(ctx, made)
			return edit{}, genChange{}, wrapErr(op, tag, ErrInternal, errors.New("the backend's token-signing key is not RSA"))
		}
		if g.publicDER, err = x509.MarshalPKIXPublicKey(g.pub); err != nil {
			e.discard(ctx, made)
			return edit{}, genChange{}, wrapErr(op, tag, ErrInternal, err)
		}
		ns := s.clone()
		ns.gen = g
		ed := edit{next: ns, made: made}
		ed.change.Put(g.record(tag))
		return ed, genChange{from: s, now: g, replaced: s.gen}, nil
	})
	if err != nil {
		return nil, err
	}
	e.destroySigningKey(ctx, r.from, r.replaced)
	return r.now.info(), nil
}

// destroySigningKey destroys a generator key pair g, replaced in the
// key's snapshot s, after the change that replaced it was committed.
func (e *Engine) destroySigningKey(ctx context.Context, s *keySnap, g *genSnap) {
	if !g.isActive() {
		return
	}
	tag := s.tag
	// Verification already refuses these tokens (their generator id is
	// stale); dropping them frees the cache early.
	e.tokens.DeleteGenerator(g.id)
	h, err := s.open(g.handle, g.stored, backend.PurposeTokenSigning, g.generation)
	if err == nil {
		err = e.be.Destroy(ctx, &backend.DestroyRequest{Ref: g.ref(tag), Type: RSA2048, Handle: h})
	}
	if err != nil {
		e.log.LogAttrs(ctx, slog.LevelWarn, "kms: could not destroy a replaced token-signing key",
			slog.String("keyTag", tag), slog.String("error", err.Error()))
	}
}

// AllPermissions returns every permission this version defines, for an
// IssueTokensRequest that grants them all (NAVER's account-authenticated
// token sets do). The slice is new on every call.
func AllPermissions() []token.Permission { return token.AllPermissions() }

// IssueTokensRequest describes a token set to issue.
type IssueTokensRequest struct {
	// Subject is the principal the tokens are for (claim "sub"); required.
	Subject string
	// Permissions is the snapshot the tokens carry; required. It must
	// be explicit: nil or empty fails with ErrInvalidArgument, and every
	// permission is asked for by name, with AllPermissions.
	Permissions []token.Permission
	// AccessTTL and RefreshTTL: the zero TTL means NAVER's defaults, 72 h
	// and 2,160 h (see token.TTL).
	AccessTTL, RefreshTTL token.TTL
	// AllowedCIDRs, when not empty, narrows the tokens to callers in
	// these address prefixes ("10.0.0.0/8"; a bare address is one host),
	// at most token.MaxCIDRs after deduplication, checked on the token
	// plane in addition to the key's allow-list (ErrAccessDenied). They
	// are bound into the tokens (claim "cidr", not NAVER's layout; off
	// unless given), and tokens renewed from a narrowed refresh token
	// carry them too, so a narrowed token never begets a wider one.
	AllowedCIDRs []string
}

// IssueTokens issues an access and a refresh token for an ENABLED key
// whose generator is active, carrying req.Permissions (a nil or empty list
// is ErrInvalidArgument; see AllPermissions). The Set's String and Format
// redact the tokens.
func (e *Engine) IssueTokens(ctx context.Context, keyTag string, req IssueTokensRequest) (*token.Set, error) {
	const op = "issue tokens"
	if err := e.enter(ctx, op); err != nil {
		return nil, err
	}
	defer e.leave()
	if len(req.Permissions) == 0 {
		return nil, newErr(op, keyTag, ErrInvalidArgument, "no permissions: name them, or pass AllPermissions()")
	}
	cidrs, err := parseCIDRs(req.AllowedCIDRs)
	if err != nil {
		return nil, newErr(op, keyTag, ErrInvalidArgument, err.Error())
	}
	start := e.startTime()
	set, err := e.issue(ctx, op, keyTag, token.Request{
		Subject: req.Subject, Permissions: req.Permissions, AccessTTL: req.AccessTTL, RefreshTTL: req.RefreshTTL,
		CIDRs: cidrs,
	}, nil)
	if e.watching() {
		return endTrusted(e, ctx, op, keyTag, nil, 0, start, set, err)
	}
	return set, err
}

// issue signs tokens (package token makes them: claims, lifetimes,
// signing) with the key's current generator and counts them, under the
// key's lock so that counts and generator changes serialise. recheck,
// when not nil, runs first under the key's lock on the snapshot that will
// sign: the token plane uses it so that a generator replaced or an
// allow-list changed after the refresh token was checked also stops the
// renewal. The caller has entered the Engine.
func (e *Engine) issue(ctx context.Context, op, keyTag string, r token.Request, recheck func(*keySnap) error) (*token.Set, error) {
	if err := r.AccessTTL.Validate(); err != nil {
		return nil, wrapErr(op, keyTag, ErrInvalidArgument, err)
	}
	if !r.AccessOnly {
		if err := r.RefreshTTL.Validate(); err != nil {
			return nil, wrapErr(op, keyTag, ErrInvalidArgument, err)
		}
	}
	return update(e, ctx, op, keyTag, func(s *keySnap, now time.Time) (edit, *token.Set, error) {
		tag := s.tag
		if recheck != nil {
			if err := recheck(s); err != nil {
				return edit{}, nil, err
			}
		}
		if !s.enabled() {
			return edit{}, nil, newErr(op, tag, ErrKeyNotEnabled, "")
		}
		if !s.gen.isActive() {
			return edit{}, nil, newErr(op, tag, ErrInvalidState, "the token generator is not active")
		}
		signer, err := e.tokenSigner(ctx, s)
		if err != nil {
			return edit{}, nil, backendErr(op, tag, err)
		}
		r.KeyTag, r.Now = tag, now
		if e.tokenIDs {
			r.TokenIDs = e.random
		}
		set, err := token.IssueSet(signer, r)
		if err != nil {
			if errors.Is(err, token.ErrInvalidArgument) || errors.Is(err, token.ErrInvalidTTL) {
				return edit{}, nil, wrapErr(op, tag, ErrInvalidArgument, err)
			}
			return edit{}, nil, wrapErr(op, tag, ErrInternal, err)
		}
		g := *s.gen
		g.revoked = pruneRevoked(g.revoked, now)
		g.issued += 2
		if r.AccessOnly {
			g.issued--
		}
		ns := s.clone()
		ns.gen = &g
		ed := edit{next: ns}
		ed.change.Put(g.record(tag))
		return ed, &set, nil
	})
}

// tokenSigner adapts the backend key of s's generator to crypto.Signer
// for the token package: RS256 is RSASSA-PKCS1-v1_5 with SHA-256.
func (e *Engine) tokenSigner(ctx context.Context, s *keySnap) (crypto.Signer, error) {
	g := s.gen
	k, err := g.lk.get(func() (backend.Key, error) {
		h, err := s.open(g.handle, g.stored, backend.PurposeTokenSigning, g.generation)
		if err != nil {
			return nil, err
		}
		return e.be.Load(ctx, &backend.LoadRequest{Ref: g.ref(s.tag), Type: RSA2048, Handle: h})
	})
	if err != nil {
		return nil, err
	}
	sk, ok := k.(backend.Signer)
	if !ok {
		return nil, errors.New("backend token-signing key cannot sign")
	}
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

// jwk is one RSA public key in a JWKS document (RFC 7517, RFC 7518 §6.3).
type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// TokenJWKS returns the public key of a key's active token generator as a
// JSON Web Key Set (RFC 7517): {"keys":[{"kty":"RSA","use":"sig",
// "alg":"RS256","kid":<generator id>,"n":…,"e":…}]}, n and e in unpadded
// base64url. Another service can verify the key's tokens offline with it
// (RS256; then check the claims itself: kind "1", key tag "2", exp,
// permissions "4"). Tokens carry NAVER's header, which has no kid: the
// set holds one key, and a rotation replaces it (fetch it again when a
// token stops verifying). Offline verification cannot see revocations
// (RevokeToken), nor a key disabled since. A key whose generator is not
// active has no key set: ErrInvalidState.
func (e *Engine) TokenJWKS(ctx context.Context, keyTag string) ([]byte, error) {
	return readKey(e, ctx, "token jwks", keyTag, func(op string, s *keySnap) ([]byte, error) {
		if !s.gen.isActive() {
			return nil, newErr(op, s.tag, ErrInvalidState, "the token generator is not active")
		}
		pub := s.gen.pub
		k := jwk{
			Kty: "RSA", Use: "sig", Alg: "RS256", Kid: s.gen.id,
			N: base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		}
		b, err := json.Marshal(struct {
			Keys []jwk `json:"keys"`
		}{[]jwk{k}})
		if err != nil {
			return nil, wrapErr(op, s.tag, ErrInternal, err)
		}
		return b, nil
	})
}

// parseCIDRs parses IssueTokensRequest.AllowedCIDRs: prefixes (masked
// here) or bare addresses, IPv4-mapped IPv6 taken as IPv4.
func parseCIDRs(ss []string) ([]netip.Prefix, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	ps := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		var p netip.Prefix
		if strings.Contains(s, "/") {
			q, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, errors.New("malformed allowed CIDR")
			}
			p = q
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, errors.New("malformed allowed CIDR")
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.IsValid() {
			return nil, errors.New("malformed allowed CIDR")
		}
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				return nil, errors.New("allowed CIDR mixes IPv4-mapped and IPv6 addresses")
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		if !slices.Contains(ps, p.Masked()) {
			ps = append(ps, p.Masked())
		}
	}
	if len(ps) > token.MaxCIDRs {
		return nil, fmt.Errorf("more than %d allowed CIDRs", token.MaxCIDRs)
	}
	return ps, nil
}
