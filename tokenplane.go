package kms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"
	"unsafe"

	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/token"
)

// TokenClient is the token plane: NAVER's x-ncp-ocapi-token API. It is
// a cheap value binding a caller's token and IP address to the Engine; make
// one per request with Engine.WithToken. Its methods mirror the Engine's
// cipher methods and run these checks in this order, authentication
// first, so that a caller who cannot authenticate learns nothing about
// its arguments and costs no more than a refusal:
//
//  1. the Engine is open (ErrClosed), its shared store's change feed
//     has not been lost for longer than WithStaleLimit (ErrStale, 503),
//     and a token is present and no longer than token.MaxTokenSize
//     (ErrTokenInvalid);
//  2. the key exists (an unknown key tag, or one in another letter case,
//     answers ErrTokenInvalid like a bad token) and the caller's address
//     passes the key's IP allow-list (ErrAccessDenied, 403) — so a caller
//     outside the list learns nothing about its token and costs no
//     signature check;
//  3. the key's generator is active, else ErrTokenInvalid;
//  4. the token: RS256 signature by the key's current generator (or a
//     cached verification, rechecked against the generator id and the
//     expiry), expiry, kind (access for cipher calls, refresh for renewal)
//     and key binding (ErrTokenInvalid / ErrTokenExpired, 401), then the
//     generator's revocation list, on every call (ErrTokenInvalid with
//     detail "revoked": this tells only a holder of a genuine, unexpired
//     token that it was revoked; see Engine.RevokeToken), then the
//     token's own CIDRs, if it was narrowed to some (ErrAccessDenied);
//  5. the permission in the token (ErrPermissionDenied, 403);
//  6. the key's rate limit (ErrRateLimited, 429) — after authentication,
//     so junk tokens cannot spend a key's budget;
//  7. the key's state: a key that is DISABLED or pending deletion answers
//     ErrKeyNotEnabled (409), as on the trusted plane — only now, once
//     the token is known good, so a caller who cannot authenticate learns
//     nothing about the key, and one who can is told the truth instead of
//     being sent to renew a token that is fine;
//  8. the arguments' shape (ErrInvalidArgument, batch sizes included),
//     the version's state, and the operation itself.
//
// # Rate limit costs
//
// Every call that passes authentication costs 1 per item: single calls 1,
// a batch of n items n, public key and token renewal 1. RSA and AES
// operations cost the same, as NAVER states one figure (300 TPS per key).
// A call refused at step 7 or 8 has spent its cost, as a request counts
// against NAVER's quota whatever its body.
type TokenClient struct {
	e *Engine
	// tok and tokLen are the token's bytes, held as a pointer and a
	// length rather than as a string, so that even fmt's reflection over
	// an unexported field holding a TokenClient prints an address, not
	// the token. (A *string did the same at the cost of one allocation
	// per request; this points into the caller's string, which Go never
	// changes, and is only read back as that string.)
	tok    *byte
	tokLen int
	addr   netip.Addr
}

// WithToken returns the token plane for a caller presenting tok from addr.
// It allocates nothing.
func (e *Engine) WithToken(tok string, addr netip.Addr) TokenClient {
	return TokenClient{e: e, tok: unsafe.StringData(tok), tokLen: len(tok), addr: addr}
}

// token returns the token WithToken was given.
func (c TokenClient) token() string {
	if c.tok == nil {
		return ""
	}
	return unsafe.String(c.tok, c.tokLen)
}

// String describes the client without its token.
func (c TokenClient) String() string {
	return "kms.TokenClient{token:[REDACTED] addr:" + c.addr.String() + "}"
}

// GoString is String.
func (c TokenClient) GoString() string { return c.String() }

// Format writes String for every verb, so no verb prints the token.
func (c TokenClient) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// LogValue logs the caller's address only.
func (c TokenClient) LogValue() slog.Value {
	return slog.GroupValue(slog.String("token", "[REDACTED]"), slog.String("addr", c.addr.String()))
}

// MarshalJSON encodes the caller's address only.
func (c TokenClient) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Addr string `json:"addr"`
	}{c.addr.String()})
}

// auth runs checks 2–7 and returns the key snapshot and claims.
func (c TokenClient) auth(op, keyTag string, kind token.Kind, perm token.Permission, cost int) (*keySnap, *token.Claims, error) {
	e := c.e
	tok := c.token()
	if len(tok) == 0 || len(tok) > token.MaxTokenSize {
		return nil, nil, newErr(op, "", ErrTokenInvalid, "missing or oversized token")
	}
	v, ok := e.keys.Load(keyTag)
	if !ok {
		return nil, nil, newErr(op, "", ErrTokenInvalid, "")
	}
	s := v.snap.Load()
	tag := s.tag
	if !s.aclM.Allow(c.addr) {
		return nil, nil, newErr(op, tag, ErrAccessDenied, "caller address not allowed")
	}
	// The key's state waits for step 7; the generator's public key, needed
	// to verify, is there whatever the key's state while it is active.
	if !s.gen.isActive() {
		return nil, nil, newErr(op, tag, ErrTokenInvalid, "")
	}
	want := token.Expect{Kind: kind, KeyTag: tag, Now: e.now()}
	var claims *token.Claims
	hit, ok := e.tokens.Get(tok)
	if e.obs != nil {
		e.obs.ObserveTokenCache(context.Background(), ok)
	}
	if ok {
		if err := hit.Recheck(s.gen.id, want); err != nil {
			return nil, nil, tokenErr(op, tag, err)
		}
		claims = &hit.Claims
	} else {
		cl, err := token.Verify(tok, s.gen.pub, want)
		if err != nil {
			return nil, nil, tokenErr(op, tag, err)
		}
		e.tokens.Put(tok, &token.Verified{GeneratorID: s.gen.id, Claims: *cl})
		claims = cl
		// The verification took tens of microseconds; the limiter
		// needs a fresh reading (ratelimit.Limiter.AllowAt).
		want.Now = e.now()
	}
	// Revocation (Engine.RevokeToken) is checked on every call, cache hit
	// or not: a map lookup in the snapshot, skipped while the list is empty.
	if s.gen.isRevoked(tok, claims) {
		return nil, nil, newErr(op, tag, ErrTokenInvalid, "revoked")
	}
	if !claims.AllowsAddr(c.addr) {
		return nil, nil, newErr(op, tag, ErrAccessDenied, "caller address not allowed by the token")
	}
	if kind == token.Access && !claims.Has(perm) {
		return nil, nil, newErr(op, tag, ErrPermissionDenied, "the token lacks the "+perm.String()+" permission")
	}
	// On a cache hit the reading taken for the token checks, a few tens of
	// nanoseconds old, serves the limiter too.
	if err := e.limiter.AllowLimitAt(tag, e.share(e.limitOf(s)), cost, want.Now); err != nil {
		var rl *ratelimit.RateLimitedError
		switch {
		case errors.As(err, &rl):
			ke := newErr(op, tag, ErrRateLimited, "")
			ke.Err = &RateLimitError{RetryAfter: rl.RetryAfter}
			return nil, nil, ke
		case errors.Is(err, ratelimit.ErrExceedsBurst):
			// Retrying can never succeed: the batch is larger than the
			// key's whole bucket.
			return nil, nil, newErr(op, tag, ErrInvalidArgument, "batch larger than the key's rate-limit burst")
		}
		return nil, nil, wrapErr(op, tag, ErrInternal, err)
	}
	if !s.enabled() {
		return nil, nil, newErr(op, tag, ErrKeyNotEnabled, "")
	}
	return s, claims, nil
}

func tokenErr(op, tag string, err error) *Error {
	if errors.Is(err, token.ErrTokenExpired) {
		return wrapErr(op, tag, ErrTokenExpired, err)
	}
	return wrapErr(op, tag, ErrTokenInvalid, err)
}

// onToken runs a token-plane call: it registers the call (ErrClosed once
// closed), runs the checks of auth, then fn on the key's snapshot.
func onToken[R any](c TokenClient, ctx context.Context, op, keyTag string, kind token.Kind, perm token.Permission, cost int,
	fn func(op string, s *keySnap, claims *token.Claims) (R, error)) (R, error) {
	var zero R
	e := c.e
	if err := e.enter(ctx, op); err != nil {
		return zero, err
	}
	defer e.leave()
	start := e.startTime()
	// A stale replica refuses before authenticating (ErrStale); the
	// refusal is audited like any other.
	var s *keySnap
	var claims *token.Claims
	err := e.checkFeed(op)
	if err == nil {
		s, claims, err = c.auth(op, keyTag, kind, perm, cost)
	}
	var r R
	if err == nil {
		r, err = fn(op, s, claims)
	}
	if err != nil || e.watching() {
		return endToken(c, ctx, op, keyTag, s, claims, start, r, err)
	}
	return r, nil
}

// endToken is the epilogue of a token-plane call (see endCall): s and
// claims are nil when the call was refused before the token was known
// good.
func endToken[R any](c TokenClient, ctx context.Context, op, keyTag string, s *keySnap, claims *token.Claims, start time.Time, r R, err error) (R, error) {
	e := c.e
	ce := callEnd{op: op, plane: PlaneToken, tag: keyTag, addr: c.addr, start: start}
	if s == nil {
		// Refused by auth: the key, if it exists, is charged the refusal.
		if v, ok := e.keys.Load(keyTag); ok {
			if ks := v.snap.Load(); ks.state != stateDestroyed {
				s = ks
			}
		}
		ce.tag = auditTag(s, keyTag)
	} else {
		ce.version = auditVersion(op, s)
	}
	if claims != nil {
		ce.caller = claims.Subject
	}
	if ferr := e.endCall(ctx, &ce, s, err); ferr != err {
		dropResult(r)
		var zero R
		return zero, ferr
	}
	return r, err
}

// Encrypt is Engine.Encrypt on the token plane (permission Encrypt).
func (c TokenClient) Encrypt(ctx context.Context, keyTag string, plaintext, encCtx []byte) (string, error) {
	return onToken(c, ctx, "encrypt", keyTag, token.Access, token.PermEncrypt, 1, func(op string, s *keySnap, _ *token.Claims) (string, error) {
		return c.e.encrypt(ctx, op, s, plaintext, encCtx)
	})
}

// Decrypt is Engine.Decrypt on the token plane (permission Decrypt).
func (c TokenClient) Decrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) ([]byte, error) {
	return onToken(c, ctx, "decrypt", keyTag, token.Access, token.PermDecrypt, 1, func(op string, s *keySnap, _ *token.Claims) ([]byte, error) {
		return c.e.decrypt(ctx, op, s, ciphertext, encCtx)
	})
}

// ReEncrypt is Engine.ReEncrypt on the token plane (permission ReEncrypt).
func (c TokenClient) ReEncrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) (string, error) {
	return onToken(c, ctx, "re-encrypt", keyTag, token.Access, token.PermReEncrypt, 1, func(op string, s *keySnap, _ *token.Claims) (string, error) {
		return c.e.reEncrypt(ctx, op, s, ciphertext, encCtx)
	})
}

// CreateCustomKey is Engine.CreateCustomKey on the token plane
// (permission CreateCustomKey).
func (c TokenClient) CreateCustomKey(ctx context.Context, keyTag string, req CustomKeyRequest) (*CustomKey, error) {
	return onToken(c, ctx, "create custom key", keyTag, token.Access, token.PermCreateCustomKey, 1, func(op string, s *keySnap, _ *token.Claims) (*CustomKey, error) {
		return c.e.createCustomKey(ctx, op, s, req)
	})
}

// Sign is Engine.Sign on the token plane (permission Sign).
func (c TokenClient) Sign(ctx context.Context, keyTag string, data []byte) (string, error) {
	return onToken(c, ctx, "sign", keyTag, token.Access, token.PermSign, 1, func(op string, s *keySnap, _ *token.Claims) (string, error) {
		return c.e.sign(ctx, op, s, data)
	})
}

// Verify is Engine.Verify on the token plane (permission Verify).
func (c TokenClient) Verify(ctx context.Context, keyTag string, data []byte, signature string) (bool, error) {
	return onToken(c, ctx, "verify", keyTag, token.Access, token.PermVerify, 1, func(op string, s *keySnap, _ *token.Claims) (bool, error) {
		return c.e.verify(ctx, op, s, data, signature)
	})
}

// GetPublicKey is Engine.GetPublicKey on the token plane (permission
// GetPublicKey).
func (c TokenClient) GetPublicKey(ctx context.Context, keyTag string, version uint32) (string, error) {
	return onToken(c, ctx, "get public key", keyTag, token.Access, token.PermGetPublicKey, 1, func(op string, s *keySnap, _ *token.Claims) (string, error) {
		return publicKeyPEM(op, s, version)
	})
}

// BatchEncrypt is Engine.BatchEncrypt on the token plane (permission
// Encrypt; costs one per item).
func (c TokenClient) BatchEncrypt(ctx context.Context, keyTag string, items []EncryptItem) ([]string, error) {
	return onToken(c, ctx, "batch encrypt", keyTag, token.Access, token.PermEncrypt, len(items), func(op string, s *keySnap, _ *token.Claims) ([]string, error) {
		return c.e.batchEncrypt(ctx, op, s, items)
	})
}

// BatchDecrypt is Engine.BatchDecrypt on the token plane (permission
// Decrypt; costs one per item).
func (c TokenClient) BatchDecrypt(ctx context.Context, keyTag string, items []DecryptItem) ([][]byte, error) {
	return onToken(c, ctx, "batch decrypt", keyTag, token.Access, token.PermDecrypt, len(items), func(op string, s *keySnap, _ *token.Claims) ([][]byte, error) {
		return c.e.batchDecrypt(ctx, op, s, items)
	})
}

// BatchReEncrypt is Engine.BatchReEncrypt on the token plane (permission
// ReEncrypt; costs one per item).
func (c TokenClient) BatchReEncrypt(ctx context.Context, keyTag string, items []DecryptItem) ([]string, error) {
	return onToken(c, ctx, "batch re-encrypt", keyTag, token.Access, token.PermReEncrypt, len(items), func(op string, s *keySnap, _ *token.Claims) ([]string, error) {
		return c.e.batchReEncrypt(ctx, op, s, items)
	})
}

// ReissueTokens issues a new access and refresh token from a refresh
// token, for the same subject with the same permission snapshot (in
// process there are no sub-accounts whose permissions could have
// changed). The refresh token used stays valid, as on NAVER. Zero TTLs
// mean the defaults. A generator rotated or deactivated while the call
// runs, or an allow-list that stops admitting the caller, refuses it.
func (c TokenClient) ReissueTokens(ctx context.Context, keyTag string, accessTTL, refreshTTL token.TTL) (*token.Set, error) {
	return onToken(c, ctx, "reissue tokens", keyTag, token.Refresh, 0, 1, func(op string, s *keySnap, claims *token.Claims) (*token.Set, error) {
		return c.e.issue(withPlane(ctx, PlaneToken, claims.Subject, c.addr), op, s.tag, token.Request{
			Subject: claims.Subject, Permissions: knownPermissions(claims.Permissions),
			AccessTTL: accessTTL, RefreshTTL: refreshTTL, CIDRs: claims.CIDRs,
		}, c.stillValid(op, s, claims))
	})
}

// IssueAccessToken issues an access token alone from a refresh token
// (NAVER v3 issueKeyAccessToken); the returned Set has no refresh token.
func (c TokenClient) IssueAccessToken(ctx context.Context, keyTag string, accessTTL token.TTL) (*token.Set, error) {
	return onToken(c, ctx, "issue access token", keyTag, token.Refresh, 0, 1, func(op string, s *keySnap, claims *token.Claims) (*token.Set, error) {
		return c.e.issue(withPlane(ctx, PlaneToken, claims.Subject, c.addr), op, s.tag, token.Request{
			Subject: claims.Subject, Permissions: knownPermissions(claims.Permissions),
			AccessTTL: accessTTL, AccessOnly: true, CIDRs: claims.CIDRs,
		}, c.stillValid(op, s, claims))
	})
}

// stillValid returns issue's recheck for a renewal authorised on snapshot
// s: under the key's lock, the caller must still pass the allow-list and
// the generator that verified the refresh token must still be the key's,
// and the refresh token must not have been revoked since. Without it, a
// rotation, deactivation or revocation committed between the check and
// the signing would let the old refresh token obtain tokens.
func (c TokenClient) stillValid(op string, s *keySnap, claims *token.Claims) func(*keySnap) error {
	genID := s.gen.id
	return func(ns *keySnap) error {
		tag := ns.tag
		if !ns.aclM.Allow(c.addr) {
			return newErr(op, tag, ErrAccessDenied, "caller address not allowed")
		}
		if !ns.gen.isActive() || ns.gen.id != genID {
			return newErr(op, tag, ErrTokenInvalid, "")
		}
		if ns.gen.isRevoked(c.token(), claims) {
			return newErr(op, tag, ErrTokenInvalid, "revoked")
		}
		return nil
	}
}

func knownPermissions(ps []token.Permission) []token.Permission {
	out := make([]token.Permission, 0, len(ps))
	for _, p := range ps {
		if p.Known() {
			out = append(out, p)
		}
	}
	return out
}
