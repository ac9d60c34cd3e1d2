package kms

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/token"
)

// MaxRevokedTokens bounds the revocation list of a key's token generator:
// entries of tokens that have not yet expired (or never expire). Revoking
// one more fails with ErrInvalidState; rotate the generator instead,
// which kills every token and empties the list.
const MaxRevokedTokens = 10_000

// hashIDPrefix marks the revocation id of a token without a jti: the
// prefix, then the unpadded base64url SHA-256 of the token. A jti is
// base64url and never holds a colon, so the two kinds cannot collide.
const hashIDPrefix = "sha256:"

// revocationID is the id under which a token is revoked: its jti, or for
// a token without one (NAVER's layout) the SHA-256 of the token. A valid
// token has exactly one encoding (strict base64url, a deterministic
// signature), so the hash names it; two tokens without jti issued in the
// same second for the same subject are one and the same token.
func revocationID(tok string, c *token.Claims) string {
	if c.ID != "" {
		return c.ID
	}
	sum := sha256.Sum256([]byte(tok))
	return hashIDPrefix + base64.RawURLEncoding.EncodeToString(sum[:])
}

// isRevoked reports whether g's list holds the token. It is a map lookup,
// after hashing the token only when the list is not empty and the token
// has no jti; an expired entry's token fails its own expiry check first.
func (g *genSnap) isRevoked(tok string, c *token.Claims) bool {
	if len(g.revoked) == 0 {
		return false
	}
	_, ok := g.revoked[revocationID(tok, c)]
	return ok
}

// pruneRevoked returns m without the entries whose token has expired at
// now (m itself when none has).
func pruneRevoked(m map[string]time.Time, now time.Time) map[string]time.Time {
	stale := false
	for _, until := range m {
		if !until.IsZero() && !now.Before(until) {
			stale = true
			break
		}
	}
	if !stale {
		return m
	}
	out := make(map[string]time.Time, len(m))
	for id, until := range m {
		if until.IsZero() || now.Before(until) {
			out[id] = until
		}
	}
	return out
}

// revokedRecords is the store form of a revocation list, sorted by id so
// that a record is a function of the list.
func revokedRecords(m map[string]time.Time) []store.RevokedToken {
	if len(m) == 0 {
		return nil
	}
	out := make([]store.RevokedToken, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, store.RevokedToken{ID: id, Until: timeMs(m[id])})
	}
	return out
}

// RevokeToken revokes one token of a key's active token generator, on
// the trusted plane: from the next call on, the token plane refuses it
// with ErrTokenInvalid (detail "revoked"), whether or not its verification
// was cached. Other tokens of the key keep working. tokenOrID is either
//
//   - the token itself (access or refresh). It must verify under the
//     key's current generator, else ErrInvalidArgument; an already
//     expired token is dead, and revoking it changes nothing. It is
//     revoked by its jti, or, without one, by its SHA-256; the entry is
//     kept until the token's expiry.
//   - a token id (Set.AccessID, Set.RefreshID: the jti of a token issued
//     with WithTokenIDs), 1 .. token.MaxIDLen base64url characters. Its
//     expiry is not known, so the entry is kept until the generator is
//     replaced; present the token instead to have it dropped at expiry.
//
// The revocation is stored with the key's generator record, through the
// same change as every other (so Engines sharing a store see it through
// their change feed), and survives a restart. Entries of expired tokens
// are dropped whenever the list is rewritten, so the list holds only live
// tokens; rotating or deactivating the generator, which kills every token,
// empties it. At most MaxRevokedTokens entries are kept: beyond, rotate
// the generator (ErrInvalidState). A key whose generator is not active
// has no token to revoke: ErrInvalidState. The key may be disabled.
// Revoking a token twice changes nothing.
//
// The list is rewritten whole with the generator record on every
// revocation and every issuance, so a long list makes both slower and
// larger on the store and the feed (a full list is some 700 KB); rotate
// the generator rather than revoke thousands of tokens.
func (e *Engine) RevokeToken(ctx context.Context, keyTag, tokenOrID string) error {
	const op = "revoke token"
	if tokenOrID == "" || len(tokenOrID) > token.MaxTokenSize {
		return newErr(op, "", ErrInvalidArgument, "missing or oversized token or token id")
	}
	_, err := mutate(e, ctx, op, keyTag, func(s *keySnap, now time.Time) (edit, struct{}, error) {
		tag := s.tag
		if !s.gen.isActive() {
			return edit{}, struct{}{}, newErr(op, tag, ErrInvalidState, "the token generator is not active")
		}
		id, until, live, err := revocationTarget(s, tokenOrID, now)
		if err != nil {
			return edit{}, struct{}{}, wrapErr(op, tag, ErrInvalidArgument, err)
		}
		list := pruneRevoked(s.gen.revoked, now)
		_, listed := list[id]
		if !live || listed {
			if len(list) == len(s.gen.revoked) {
				return edit{}, struct{}{}, nil // nothing to change
			}
		} else {
			if len(list) >= MaxRevokedTokens {
				return edit{}, struct{}{}, newErr(op, tag, ErrInvalidState, "revocation list full: rotate the token generator")
			}
			list = maps.Clone(list)
			if list == nil {
				list = make(map[string]time.Time, 1)
			}
			list[id] = until
		}
		g := *s.gen
		g.revoked = list
		ns := s.clone()
		ns.gen = &g
		ed := edit{next: ns}
		ed.change.Put(g.record(tag))
		return ed, struct{}{}, nil
	})
	return err
}

// revocationTarget names what RevokeToken revokes: the id, the time its
// entry may go, and whether the token is live at all (an expired token
// needs no entry).
func revocationTarget(s *keySnap, tokenOrID string, now time.Time) (id string, until time.Time, live bool, err error) {
	if !strings.Contains(tokenOrID, ".") {
		if !validTokenID(tokenOrID) {
			return "", time.Time{}, false, errors.New("neither a token nor a token id")
		}
		return tokenOrID, time.Time{}, true, nil
	}
	want := token.Expect{Kind: token.Access, KeyTag: s.tag, Now: now}
	c, err := token.Verify(tokenOrID, s.gen.pub, want)
	var te *token.Error
	if errors.As(err, &te) && te.Reason == token.ReasonWrongKind {
		want.Kind = token.Refresh
		c, err = token.Verify(tokenOrID, s.gen.pub, want)
	}
	switch {
	case errors.Is(err, token.ErrTokenExpired):
		return "", time.Time{}, false, nil
	case err != nil:
		return "", time.Time{}, false, errors.New("not a token of this key's current token generator: " + err.Error())
	}
	return revocationID(tokenOrID, c), c.ExpiresAt, true, nil
}

// validTokenID reports whether s has the shape of a jti: 1 ..
// token.MaxIDLen base64url characters.
func validTokenID(s string) bool {
	if len(s) == 0 || len(s) > token.MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
