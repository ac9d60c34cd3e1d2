package kms_test

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/token"
)

// Both planes serve the one cipher method set.
var (
	_ kms.Cipher = (*kms.Engine)(nil)
	_ kms.Cipher = kms.TokenClient{}
)

// forge flips a bit in a token's signature, keeping its shape.
func forge(tok string) string {
	i := strings.LastIndexByte(tok, '.') + 1
	sig := []byte(tok[i:])
	if sig[5] == 'A' {
		sig[5] = 'B'
	} else {
		sig[5] = 'A'
	}
	return tok[:i] + string(sig)
}

// TestTokenPlaneKeyState: once a token's signature, expiry, kind and key
// binding are verified, a key that is DISABLED or pending deletion answers
// ErrKeyNotEnabled (409 InvalidState), on every call and on renewal, with a
// cold token and a cached one; a token that does not verify still answers
// 401 (or the allow-list 403), so an unauthenticated caller learns nothing
// about the key's state.
func TestTokenPlaneKeyState(t *testing.T) {
	ctx := context.Background()
	for _, state := range []string{"disabled", "pending deletion"} {
		t.Run(state, func(t *testing.T) {
			e, clk := newClockEngine(t)
			k, set := tokenKey(t, e, "state", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), AccessTTL: token.TTL{Minutes: 10}})
			ec, ecSet := tokenKey(t, e, "signer", kms.ECDSA, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
			other, otherSet := tokenKey(t, e, "other", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
			ct, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil)
			if err != nil {
				t.Fatal(err)
			}
			sig, err := e.Sign(ctx, ec.Tag, []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			// The access token of k is verified and cached now; a second
			// set, never used, stays cold.
			if _, err := e.WithToken(set.Access, callerIP).Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
				t.Fatal(err)
			}
			cold, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "cold"})
			if err != nil {
				t.Fatal(err)
			}
			expiring, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "short", AccessTTL: token.TTL{Minutes: 1}})
			if err != nil {
				t.Fatal(err)
			}
			for _, tag := range []string{k.Tag, ec.Tag} {
				var err error
				if state == "disabled" {
					_, err = e.DisableKey(ctx, tag)
				} else {
					_, err = e.RequestKeyDeletion(ctx, tag)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			clk.Advance(2 * time.Minute) // expiring's access token is dead

			ttl := token.TTL{Minutes: 5}
			good := []struct {
				name string
				call func() error
			}{
				{"encrypt, cached token", func() error {
					_, err := e.WithToken(set.Access, callerIP).Encrypt(ctx, k.Tag, []byte("x"), nil)
					return err
				}},
				{"encrypt, cold token", func() error {
					_, err := e.WithToken(cold.Access, callerIP).Encrypt(ctx, k.Tag, []byte("x"), nil)
					return err
				}},
				{"decrypt", func() error { _, err := e.WithToken(set.Access, callerIP).Decrypt(ctx, k.Tag, ct, nil); return err }},
				{"re-encrypt", func() error { _, err := e.WithToken(set.Access, callerIP).ReEncrypt(ctx, k.Tag, ct, nil); return err }},
				{"custom key", func() error {
					_, err := e.WithToken(set.Access, callerIP).CreateCustomKey(ctx, k.Tag, kms.CustomKeyRequest{})
					return err
				}},
				{"batch encrypt", func() error {
					_, err := e.WithToken(set.Access, callerIP).BatchEncrypt(ctx, k.Tag, []kms.EncryptItem{{Plaintext: []byte("x")}})
					return err
				}},
				{"sign", func() error { _, err := e.WithToken(ecSet.Access, callerIP).Sign(ctx, ec.Tag, []byte("x")); return err }},
				{"verify", func() error {
					_, err := e.WithToken(ecSet.Access, callerIP).Verify(ctx, ec.Tag, []byte("x"), sig)
					return err
				}},
				{"public key", func() error { _, err := e.WithToken(ecSet.Access, callerIP).GetPublicKey(ctx, ec.Tag, 1); return err }},
				{"reissue tokens", func() error {
					_, err := e.WithToken(set.Refresh, callerIP).ReissueTokens(ctx, k.Tag, ttl, ttl)
					return err
				}},
				{"issue access token", func() error {
					_, err := e.WithToken(set.Refresh, callerIP).IssueAccessToken(ctx, k.Tag, ttl)
					return err
				}},
				{"authorize", func() error {
					return e.WithToken(cold.Access, callerIP).Authorize(ctx, k.Tag, token.Access, token.PermEncrypt)
				}},
			}
			for _, tc := range good {
				t.Run(tc.name, func(t *testing.T) {
					err := tc.call()
					wantErr(t, err, kms.ErrKeyNotEnabled)
					if ke := err.(*kms.Error); ke.Status != http.StatusConflict || ke.Code != "InvalidState" {
						t.Fatalf("%v: status %d code %s, want 409 InvalidState", err, ke.Status, ke.Code)
					}
				})
			}

			// Tokens that do not verify learn nothing about the key.
			bad := []struct {
				name string
				tok  string
				addr netip.Addr
				tag  string
				want error
			}{
				{"forged signature", forge(cold.Access), callerIP, k.Tag, kms.ErrTokenInvalid},
				{"garbage", "not.a.token", callerIP, k.Tag, kms.ErrTokenInvalid},
				{"expired", expiring.Access, callerIP, k.Tag, kms.ErrTokenExpired},
				{"refresh token on a cipher call", cold.Refresh, callerIP, k.Tag, kms.ErrTokenInvalid},
				{"token of another key", otherSet.Access, callerIP, k.Tag, kms.ErrTokenInvalid},
				{"token of the disabled key on another", set.Access, callerIP, other.Tag, kms.ErrTokenInvalid},
			}
			for _, tc := range bad {
				t.Run(tc.name, func(t *testing.T) {
					_, err := e.WithToken(tc.tok, tc.addr).Encrypt(ctx, tc.tag, []byte("x"), nil)
					wantErr(t, err, tc.want)
					if strings.Contains(err.Error(), "not enabled") {
						t.Fatalf("an unauthenticated caller learns the key's state: %v", err)
					}
				})
			}
		})
	}

	// The allow-list still comes first, and a deactivated generator still
	// refuses its tokens with 401, whatever the key's state.
	e := newEngine(t)
	k, set := tokenKey(t, e, "acl", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	if _, err := e.SetKeyACLEnabled(ctx, k.Tag, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DeactivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DisableKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	_, err := e.WithToken(set.Access, callerIP).Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrAccessDenied)
	if _, err := e.EnableKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetKeyACLEnabled(ctx, k.Tag, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DisableKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	_, err = e.WithToken(set.Access, callerIP).Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrTokenInvalid)
}

// TestTokenClientAuthorize: Authorize runs the token plane's checks with
// their errors, spends nothing from the rate limit, and leaves the token
// verified in the cache.
func TestTokenClientAuthorize(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, kms.WithRateLimit(ratelimit.Limit{Rate: 1, Burst: 1}))
	k, set := tokenKey(t, e, "authz", kms.AES256, kms.IssueTokensRequest{Permissions: []token.Permission{token.PermDecrypt}})
	c := e.WithToken(set.Access, callerIP)
	for range 20 {
		if err := c.Authorize(ctx, k.Tag, token.Access, token.PermDecrypt); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.WithToken(set.Refresh, callerIP).Authorize(ctx, k.Tag, token.Refresh, 0); err != nil {
		t.Fatalf("refresh token for renewal: %v", err)
	}
	// The budget of one is intact after 21 authorizations.
	ct, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decrypt(ctx, k.Tag, ct, nil); err != nil {
		t.Fatalf("the first call after Authorize: %v", err)
	}
	_, err = c.Decrypt(ctx, k.Tag, ct, nil)
	wantErr(t, err, kms.ErrRateLimited)

	for _, tc := range []struct {
		name string
		tok  string
		addr netip.Addr
		tag  string
		kind token.Kind
		perm token.Permission
		want error
	}{
		{"permission missing", set.Access, callerIP, k.Tag, token.Access, token.PermEncrypt, kms.ErrPermissionDenied},
		{"access token for renewal", set.Access, callerIP, k.Tag, token.Refresh, 0, kms.ErrTokenInvalid},
		{"refresh token for a call", set.Refresh, callerIP, k.Tag, token.Access, token.PermDecrypt, kms.ErrTokenInvalid},
		{"forged", forge(set.Access), callerIP, k.Tag, token.Access, token.PermDecrypt, kms.ErrTokenInvalid},
		{"unknown key", set.Access, callerIP, strings.Repeat("0", 64), token.Access, token.PermDecrypt, kms.ErrTokenInvalid},
		{"empty token", "", callerIP, k.Tag, token.Access, token.PermDecrypt, kms.ErrTokenInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, e.WithToken(tc.tok, tc.addr).Authorize(ctx, tc.tag, tc.kind, tc.perm), tc.want)
		})
	}
	if _, err := e.SetKeyACLEnabled(ctx, k.Tag, true); err != nil {
		t.Fatal(err)
	}
	wantErr(t, c.Authorize(ctx, k.Tag, token.Access, token.PermDecrypt), kms.ErrAccessDenied)
	e.Close()
	wantErr(t, c.Authorize(ctx, k.Tag, token.Access, token.PermDecrypt), kms.ErrClosed)
}
