package kms_test

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/token"
)

// TestNarrowedTokens: a token narrowed to a subset of permissions, a
// short lifetime and a few CIDRs is refused outside them on the next call,
// in addition to the key's allow-list; tokens renewed from it are no wider.
func TestNarrowedTokens(t *testing.T) {
	ctx := context.Background()
	e, clk := newClockEngine(t)
	k, set := tokenKey(t, e, "narrow", kms.AES256, kms.IssueTokensRequest{
		Subject: "svc", Permissions: []token.Permission{token.PermEncrypt},
		AccessTTL: token.TTL{Minutes: 5}, RefreshTTL: token.TTL{Minutes: 60},
		AllowedCIDRs: []string{"10.1.0.0/16", "192.0.2.7", "::ffff:198.51.100.0/120"},
	})
	in, out := callerIP, netip.MustParseAddr("10.2.0.1") // callerIP is 10.1.2.3
	for name, addr := range map[string]netip.Addr{"prefix": in, "host": netip.MustParseAddr("192.0.2.7"), "mapped": netip.MustParseAddr("198.51.100.9"), "mapped caller": netip.MustParseAddr("::ffff:10.1.9.9")} {
		if _, err := e.WithToken(set.Access, addr).Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	_, err := e.WithToken(set.Access, out).Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrAccessDenied)
	_, err = e.WithToken(set.Access, in).Decrypt(ctx, k.Tag, "x", nil)
	wantErr(t, err, kms.ErrPermissionDenied)

	// The key's allow-list applies too: the token's CIDRs add no address.
	if _, err := e.AddAllowedIPs(ctx, k.Tag, []string{"10.1.2.0/24"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetKeyACLEnabled(ctx, k.Tag, true); err != nil {
		t.Fatal(err)
	}
	_, err = e.WithToken(set.Access, netip.MustParseAddr("10.1.9.9")).Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrAccessDenied)
	if _, err := e.SetKeyACLEnabled(ctx, k.Tag, false); err != nil {
		t.Fatal(err)
	}

	// Renewals keep the CIDRs and the permissions.
	_, err = e.WithToken(set.Refresh, out).ReissueTokens(ctx, k.Tag, token.TTL{}, token.TTL{})
	wantErr(t, err, kms.ErrAccessDenied)
	renewed, err := e.WithToken(set.Refresh, in).ReissueTokens(ctx, k.Tag, token.TTL{}, token.TTL{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{renewed.Access} {
		_, err = e.WithToken(tok, out).Encrypt(ctx, k.Tag, []byte("x"), nil)
		wantErr(t, err, kms.ErrAccessDenied)
		_, err = e.WithToken(tok, in).Decrypt(ctx, k.Tag, "x", nil)
		wantErr(t, err, kms.ErrPermissionDenied)
		if _, err := e.WithToken(tok, in).Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	_, err = e.WithToken(renewed.Refresh, out).IssueAccessToken(ctx, k.Tag, token.TTL{})
	wantErr(t, err, kms.ErrAccessDenied)
	one, err := e.WithToken(renewed.Refresh, in).IssueAccessToken(ctx, k.Tag, token.TTL{Minutes: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.WithToken(one.Access, out).Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrAccessDenied)

	// The short lifetime holds.
	clk.Advance(6 * time.Minute)
	_, err = e.WithToken(set.Access, in).Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrTokenExpired)
}

func TestNarrowedTokensRefusals(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	k, _ := tokenKey(t, e, "narrow-bad", kms.AES256, allReq)
	many := make([]string, token.MaxCIDRs+1)
	for i := range many {
		many[i] = "10.0." + strconv.Itoa(i) + ".0/24"
	}
	for name, cidrs := range map[string][]string{
		"malformed": {"10.0.0.0/33"},
		"not an ip": {"example.com"},
		"zone":      {"fe80::1%eth0"},
		"too many":  many,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Subject: "s", Permissions: kms.AllPermissions(), AllowedCIDRs: cidrs})
			wantErr(t, err, kms.ErrInvalidArgument)
		})
	}
	// Duplicates and unmasked prefixes are fine: they are normalised.
	if _, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Subject: "s", Permissions: kms.AllPermissions(),
		AllowedCIDRs: append(many[:token.MaxCIDRs], "10.0.0.9/24")}); err != nil {
		t.Fatal(err)
	}
}
