package kms_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/store/storetest"
	"github.com/pocketkms/kms/token"
)

var allReq = kms.IssueTokensRequest{Subject: "svc", Permissions: kms.AllPermissions()}

// wantRevoked checks err is ErrTokenInvalid with the detail "revoked".
func wantRevoked(t *testing.T, err error) {
	t.Helper()
	wantErr(t, err, kms.ErrTokenInvalid)
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Detail != "revoked" {
		t.Fatalf("err %v: want detail \"revoked\"", err)
	}
}

// TestRevokeToken: a token revoked by presenting it (NAVER layout, no jti:
// by its SHA-256) or by its id (WithTokenIDs) is refused on the next call,
// although its verification was cached; the key's other tokens work; a
// revoked refresh token renews nothing.
func TestRevokeToken(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		opts   []kms.Option
		access func(*token.Set) string
		fresh  func(*token.Set) string
	}{
		{"token without jti", nil, func(s *token.Set) string { return s.Access }, func(s *token.Set) string { return s.Refresh }},
		{"token with jti", []kms.Option{kms.WithTokenIDs()}, func(s *token.Set) string { return s.Access }, func(s *token.Set) string { return s.Refresh }},
		{"jti", []kms.Option{kms.WithTokenIDs()}, func(s *token.Set) string { return s.AccessID }, func(s *token.Set) string { return s.RefreshID }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, clk := newClockEngine(t, tc.opts...)
			k, set := tokenKey(t, e, "revoke", kms.AES256, allReq)
			clk.Advance(time.Second) // another second: a different token even without jti
			other, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Subject: "svc", Permissions: kms.AllPermissions()})
			if err != nil {
				t.Fatal(err)
			}
			c := e.WithToken(set.Access, callerIP)
			if _, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
				t.Fatal(err) // verified and cached
			}
			if err := e.RevokeToken(ctx, k.Tag, tc.access(set)); err != nil {
				t.Fatal(err)
			}
			_, err = c.Encrypt(ctx, k.Tag, []byte("x"), nil)
			wantRevoked(t, err)
			if err := e.RevokeToken(ctx, k.Tag, tc.access(set)); err != nil {
				t.Fatalf("revoking twice: %v", err)
			}
			if _, err := e.WithToken(other.Access, callerIP).Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
				t.Fatalf("another token of the key: %v", err)
			}
			// The refresh token still renews until it is revoked too.
			r := e.WithToken(set.Refresh, callerIP)
			if _, err := r.IssueAccessToken(ctx, k.Tag, token.TTL{}); err != nil {
				t.Fatal(err)
			}
			if err := e.RevokeToken(ctx, k.Tag, tc.fresh(set)); err != nil {
				t.Fatal(err)
			}
			_, err = r.ReissueTokens(ctx, k.Tag, token.TTL{}, token.TTL{})
			wantRevoked(t, err)
			_, err = r.IssueAccessToken(ctx, k.Tag, token.TTL{})
			wantRevoked(t, err)
			// Rotation kills every token and empties the list.
			if _, err := e.RotateTokenGenerator(ctx, k.Tag); err != nil {
				t.Fatal(err)
			}
			_, err = c.Encrypt(ctx, k.Tag, []byte("x"), nil)
			wantErr(t, err, kms.ErrTokenInvalid)
		})
	}
}

func TestRevokeTokenRefusals(t *testing.T) {
	ctx := context.Background()
	e, clk := newClockEngine(t)
	k, set := tokenKey(t, e, "refusals", kms.AES256, kms.IssueTokensRequest{Subject: "svc", Permissions: kms.AllPermissions(), AccessTTL: token.TTL{Minutes: 1}})
	_, foreign := tokenKey(t, e, "foreign", kms.AES256, allReq)
	forged := set.Access[:len(set.Access)-4] + "AAAA"
	for name, arg := range map[string]string{
		"empty":         "",
		"oversized":     strings.Repeat("a", token.MaxTokenSize+1),
		"not an id":     "a+b",
		"id too long":   strings.Repeat("a", token.MaxIDLen+1),
		"another key's": foreign.Access,
		"forged":        forged,
		"three dots":    "a.b.c.d",
		"two segments":  "x.y",
	} {
		t.Run(name, func(t *testing.T) { wantErr(t, e.RevokeToken(ctx, k.Tag, arg), kms.ErrInvalidArgument) })
	}
	wantErr(t, e.RevokeToken(ctx, strings.Repeat("0", 64), "abc"), kms.ErrKeyNotFound)
	// An expired token is dead already: nothing to do.
	clk.Advance(2 * time.Minute)
	if err := e.RevokeToken(ctx, k.Tag, set.Access); err != nil {
		t.Fatalf("revoking an expired token: %v", err)
	}
	if _, err := e.DeactivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.RevokeToken(ctx, k.Tag, set.Refresh), kms.ErrInvalidState)
}

// TestRevokeTokenSurvivesRestart: the list is stored with the key.
func TestRevokeTokenSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	k, set := tokenKey(t, e, "persist", kms.AES256, allReq)
	if err := e.RevokeToken(ctx, k.Tag, set.Access); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e2, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	_, err = e2.WithToken(set.Access, callerIP).Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantRevoked(t, err)
	if _, err := e2.WithToken(set.Refresh, callerIP).IssueAccessToken(ctx, k.Tag, token.TTL{}); err != nil {
		t.Fatalf("the refresh token was not revoked: %v", err)
	}
}

// TestRevokeTokenBounded: entries go with their tokens' expiry. Many
// short-lived tokens are revoked; once they have expired, revoking one
// more rewrites the list with only the live entries (and the unlimited
// one, and the one revoked by id alone, kept until the generator goes).
func TestRevokeTokenBounded(t *testing.T) {
	ctx := context.Background()
	m := storetest.NewMemory()
	clk := newFakeClock()
	e := newEngine(t, kms.WithStore(m.Open()), kms.WithClock(clk), kms.WithMaintenanceInterval(0), kms.WithTokenIDs())
	k, long := tokenKey(t, e, "bounded", kms.AES256, kms.IssueTokensRequest{Subject: "svc", Permissions: kms.AllPermissions(),
		AccessTTL: token.TTL{Unlimited: true}, RefreshTTL: token.TTL{Minutes: 60}})
	const n = 50
	for i := range n {
		s, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Subject: "svc", Permissions: kms.AllPermissions(),
			AccessTTL: token.TTL{Minutes: 1}, RefreshTTL: token.TTL{Minutes: 2}})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.RevokeToken(ctx, k.Tag, s.Access); err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
	}
	if got := revokedList(t, m, k.Tag); len(got) != n {
		t.Fatalf("%d entries stored, want %d", len(got), n)
	}
	for _, tok := range []string{long.Access, long.RefreshID} {
		if err := e.RevokeToken(ctx, k.Tag, tok); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(90 * time.Second) // past every short token's expiry
	live, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Subject: "svc", Permissions: kms.AllPermissions(),
		AccessTTL: token.TTL{Minutes: 5}, RefreshTTL: token.TTL{Minutes: 5}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.RevokeToken(ctx, k.Tag, live.Access); err != nil {
		t.Fatal(err)
	}
	got := revokedList(t, m, k.Tag)
	want := map[string]bool{long.AccessID: true, long.RefreshID: true, live.AccessID: true}
	if len(got) != len(want) {
		t.Fatalf("stored list %+v: want only the %d live entries", got, len(want))
	}
	for _, r := range got {
		if !want[r.ID] {
			t.Fatalf("stored list holds %q, not a live entry", r.ID)
		}
		if (r.ID == live.AccessID) != (r.Until != 0) {
			t.Fatalf("entry %+v: only the token presented with an expiry has one", r)
		}
	}
	_, err = e.WithToken(long.Access, callerIP).Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantRevoked(t, err)
	if _, err := e.DeactivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	if got := revokedList(t, m, k.Tag); len(got) != 0 {
		t.Fatalf("list after deactivation: %+v", got)
	}
}

// revokedList reads a key's stored revocation list.
func revokedList(t *testing.T, m *storetest.Memory, tag string) []store.RevokedToken {
	t.Helper()
	h := m.Open()
	defer h.Close()
	c, err := h.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, kd := range c.Keys {
		if kd.Key.Tag == tag && kd.Generator != nil {
			return kd.Generator.Revoked
		}
	}
	t.Fatalf("no generator record for %s", tag)
	return nil
}

// TestRevokeTokenSharedStore: a revocation made on one Engine reaches the
// others sharing the store.
func TestRevokeTokenSharedStore(t *testing.T) {
	ctx := context.Background()
	_, es := sharedEngines(t, 2)
	a, b := es[0], es[1]
	k, err := a.CreateKey(ctx, kms.CreateKeyRequest{Name: "shared-revoke", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := a.IssueTokens(ctx, k.Tag, allReq)
	if err != nil {
		t.Fatal(err)
	}
	cb := b.WithToken(set.Access, callerIP)
	eventually(t, "the token works on B", func() bool { _, err := cb.Encrypt(ctx, k.Tag, []byte("x"), nil); return err == nil })
	if err := a.RevokeToken(ctx, k.Tag, set.Access); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the revocation reaches B", func() bool {
		_, err := cb.Encrypt(ctx, k.Tag, []byte("x"), nil)
		var ke *kms.Error
		return errors.As(err, &ke) && ke.Detail == "revoked"
	})
}
