package kms_test

import (
	"context"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/token"
)

// TestTokenIDs: off by default (NAVER's layout: two sets issued in the
// same second for the same subject are identical); with WithTokenIDs every
// token has its own jti, the tokens differ, and they work on the token
// plane, renewals included.
func TestTokenIDs(t *testing.T) {
	ctx := context.Background()
	req := kms.IssueTokensRequest{Subject: "svc", Permissions: kms.AllPermissions()}

	plain, _ := newClockEngine(t)
	k, a := tokenKey(t, plain, "plain", kms.AES256, req)
	b, err := plain.IssueTokens(ctx, k.Tag, req)
	if err != nil {
		t.Fatal(err)
	}
	if a.Access != b.Access || a.AccessID != "" || b.RefreshID != "" {
		t.Fatal("without WithTokenIDs, tokens of the same second should be NAVER's: identical and without ids")
	}

	e, _ := newClockEngine(t, kms.WithTokenIDs())
	k, a = tokenKey(t, e, "ids", kms.AES256, req)
	b, err = e.IssueTokens(ctx, k.Tag, req)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, id := range []string{a.AccessID, a.RefreshID, b.AccessID, b.RefreshID} {
		if id == "" || seen[id] {
			t.Fatalf("token ids %q %q %q %q: want four distinct", a.AccessID, a.RefreshID, b.AccessID, b.RefreshID)
		}
		seen[id] = true
	}
	if a.Access == b.Access || a.Refresh == b.Refresh {
		t.Fatal("two sets issued in the same second are identical")
	}
	c := e.WithToken(a.Access, callerIP)
	ct, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decrypt(ctx, k.Tag, ct, nil); err != nil {
		t.Fatal(err)
	}
	r, err := e.WithToken(a.Refresh, callerIP).ReissueTokens(ctx, k.Tag, token.TTL{}, token.TTL{})
	if err != nil {
		t.Fatal(err)
	}
	if r.AccessID == "" || seen[r.AccessID] || r.Access == a.Access {
		t.Fatal("a renewed token has no fresh id")
	}
}
