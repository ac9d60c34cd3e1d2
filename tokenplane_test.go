package kms_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/token"
)

var callerIP = netip.MustParseAddr("10.1.2.3")

// tokenKey makes a key with an active generator and a token set.
func tokenKey(t *testing.T, e *kms.Engine, name string, typ kms.KeyType, req kms.IssueTokensRequest) (*kms.Key, *token.Set) {
	t.Helper()
	ctx := context.Background()
	k := createKey(t, e, name, typ, false)
	if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	if req.Subject == "" {
		req.Subject = "app-1"
	}
	set, err := e.IssueTokens(ctx, k.Tag, req)
	if err != nil {
		t.Fatal(err)
	}
	return k, set
}

func TestTokenGeneratorLifecycle(t *testing.T) {
	e, clk := newClockEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "gen", kms.AES256, false)
	g, err := e.GetTokenGenerator(ctx, k.Tag)
	if err != nil || g.Status != kms.GeneratorInactive || g.ID != "" {
		t.Fatalf("fresh generator = %+v, %v", g, err)
	}
	_, err = e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "s"})
	wantErr(t, err, kms.ErrInvalidState)
	_, err = e.RotateTokenGenerator(ctx, k.Tag)
	wantErr(t, err, kms.ErrInvalidState)

	g1, err := e.ActivateTokenGenerator(ctx, k.Tag)
	if err != nil || g1.Status != kms.GeneratorActive || len(g1.ID) != 64 || !g1.EnabledAt.Equal(clk.Now()) {
		t.Fatalf("activate = %+v, %v", g1, err)
	}
	again, _ := e.ActivateTokenGenerator(ctx, k.Tag)
	if again.ID != g1.ID {
		t.Fatal("activating an active generator changed it")
	}
	set, _ := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "s"})
	tc := e.WithToken(set.Access, callerIP)
	if _, err := tc.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}

	g2, err := e.RotateTokenGenerator(ctx, k.Tag)
	if err != nil || g2.ID == g1.ID {
		t.Fatalf("rotate = %+v, %v", g2, err)
	}
	_, err = tc.Encrypt(ctx, k.Tag, []byte("x"), nil) // cached, yet dead at once
	wantErr(t, err, kms.ErrTokenInvalid)
	set2, _ := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "s"})
	tc2 := e.WithToken(set2.Access, callerIP)
	if _, err := tc2.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}

	clk.Advance(time.Hour)
	g3, err := e.DeactivateTokenGenerator(ctx, k.Tag)
	if err != nil || g3.Status != kms.GeneratorInactive || g3.ID != "" || !g3.DisabledAt.Equal(clk.Now()) {
		t.Fatalf("deactivate = %+v, %v", g3, err)
	}
	_, err = tc2.Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrTokenInvalid)
	if _, err := e.DeactivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatalf("deactivating twice: %v", err)
	}
	g4, _ := e.ActivateTokenGenerator(ctx, k.Tag)
	if g4.ID == g2.ID || g4.ID == g1.ID {
		t.Fatal("re-activation reused an id")
	}
	for _, old := range []kms.TokenClient{tc, tc2, e.WithToken(set2.Refresh, callerIP)} {
		_, err = old.Encrypt(ctx, k.Tag, []byte("x"), nil)
		wantErr(t, err, kms.ErrTokenInvalid)
	}
	got, _ := e.GetTokenGenerator(ctx, k.Tag)
	if got.IssuedTokenCount != 4 {
		t.Fatalf("IssuedTokenCount = %d, want 4", got.IssuedTokenCount)
	}
	// Generator changes need an ENABLED key.
	e.DisableKey(ctx, k.Tag)
	for _, fn := range []func(context.Context, string) (*kms.TokenGenerator, error){e.ActivateTokenGenerator, e.RotateTokenGenerator, e.DeactivateTokenGenerator} {
		_, err := fn(ctx, k.Tag)
		wantErr(t, err, kms.ErrKeyNotEnabled)
	}
	_, err = e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "s"})
	wantErr(t, err, kms.ErrKeyNotEnabled)
}

func TestTokenPlaneOperations(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	aesKey, aesSet := tokenKey(t, e, "tokaes", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	rsaKey, rsaSet := tokenKey(t, e, "tokrsa", kms.RSA2048, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	a := e.WithToken(aesSet.Access, callerIP)
	ct, err := a.Encrypt(ctx, aesKey.Tag, []byte("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := a.Decrypt(ctx, aesKey.Tag, ct, nil); err != nil || string(pt) != "hello" {
		t.Fatalf("decrypt: %v", err)
	}
	if _, err := a.ReEncrypt(ctx, aesKey.Tag, ct, nil); err != nil {
		t.Fatal(err)
	}
	if dk, err := a.CreateCustomKey(ctx, aesKey.Tag, kms.CustomKeyRequest{RequestPlainKey: true}); err != nil || len(dk.Plaintext) != 32 {
		t.Fatalf("custom key: %v", err)
	}
	cts, err := a.BatchEncrypt(ctx, aesKey.Tag, []kms.EncryptItem{{Plaintext: []byte("1")}, {Plaintext: []byte("2")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.BatchDecrypt(ctx, aesKey.Tag, []kms.DecryptItem{{Ciphertext: cts[0]}, {Ciphertext: cts[1]}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.BatchReEncrypt(ctx, aesKey.Tag, []kms.DecryptItem{{Ciphertext: cts[0]}}); err != nil {
		t.Fatal(err)
	}
	r := e.WithToken(rsaSet.Access, callerIP)
	sig, err := r.Sign(ctx, rsaKey.Tag, []byte("doc"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Verify(ctx, rsaKey.Tag, []byte("doc"), sig); err != nil || !ok {
		t.Fatalf("verify: %v %v", ok, err)
	}
	if _, err := r.GetPublicKey(ctx, rsaKey.Tag, 0); err != nil {
		t.Fatal(err)
	}
	// A token is bound to its key.
	_, err = a.Sign(ctx, rsaKey.Tag, []byte("doc"))
	wantErr(t, err, kms.ErrTokenInvalid)
	_, err = r.Encrypt(ctx, aesKey.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrTokenInvalid)
	// Upper-case key tag: 401 on the token plane (trusted plane accepts it).
	_, err = a.Encrypt(ctx, strings.ToUpper(aesKey.Tag), []byte("x"), nil)
	wantErr(t, err, kms.ErrTokenInvalid)
	// Unknown key answers like a bad token.
	_, err = a.Encrypt(ctx, strings.Repeat("0", 64), []byte("x"), nil)
	wantErr(t, err, kms.ErrTokenInvalid)
	// Refresh tokens never work on cipher calls; access tokens never renew.
	_, err = e.WithToken(aesSet.Refresh, callerIP).Encrypt(ctx, aesKey.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrTokenInvalid)
	_, err = a.ReissueTokens(ctx, aesKey.Tag, token.TTL{}, token.TTL{})
	wantErr(t, err, kms.ErrTokenInvalid)
}

func TestTokenRenewal(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k, set := tokenKey(t, e, "renew", kms.AES256, kms.IssueTokensRequest{Subject: "svc", Permissions: []token.Permission{token.PermEncrypt}})
	rc := e.WithToken(set.Refresh, callerIP)
	set2, err := rc.ReissueTokens(ctx, k.Tag, token.TTL{Minutes: 30}, token.TTL{Unlimited: true})
	if err != nil {
		t.Fatal(err)
	}
	if set2.Access == set.Access || !set2.RefreshExpires.IsZero() || !set2.AccessExpires.Equal(set2.IssuedAt.Add(30*time.Minute)) {
		t.Fatalf("reissued set: %v", set2)
	}
	// The refresh token used stays valid; the new access token keeps the
	// permission snapshot (encrypt only).
	acc, err := rc.IssueAccessToken(ctx, k.Tag, token.TTL{})
	if err != nil || acc.Refresh != "" || acc.Access == "" {
		t.Fatalf("IssueAccessToken: %v", err)
	}
	c := e.WithToken(acc.Access, callerIP)
	ct, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Decrypt(ctx, k.Tag, ct, nil)
	wantErr(t, err, kms.ErrPermissionDenied)
	if _, err := e.WithToken(set2.Refresh, callerIP).ReissueTokens(ctx, k.Tag, token.TTL{}, token.TTL{}); err != nil {
		t.Fatalf("new refresh token: %v", err)
	}
	_, err = rc.ReissueTokens(ctx, k.Tag, token.TTL{Minutes: token.MaxTTLMinutes + 1}, token.TTL{})
	wantErr(t, err, kms.ErrInvalidArgument)
	g, _ := e.GetTokenGenerator(ctx, k.Tag)
	if g.IssuedTokenCount != 2+2+1+2 {
		t.Fatalf("IssuedTokenCount = %d", g.IssuedTokenCount)
	}
}

func TestTokenExpiry(t *testing.T) {
	e, clk := newClockEngine(t)
	ctx := context.Background()
	k, set := tokenKey(t, e, "expiry", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), AccessTTL: token.TTL{Minutes: 1}})
	c := e.WithToken(set.Access, callerIP)
	if _, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil { // now cached
		t.Fatal(err)
	}
	clk.Advance(time.Minute - time.Second)
	if _, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatalf("a second before exp: %v", err)
	}
	clk.Advance(time.Second) // exp == now: expired
	_, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrTokenExpired)
	// Defaults: 72 h access, 2,160 h refresh.
	_, set2 := tokenKey(t, e, "defaults", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	if set2.AccessExpires.Sub(set2.IssuedAt) != 72*time.Hour || set2.RefreshExpires.Sub(set2.IssuedAt) != 2160*time.Hour {
		t.Fatalf("default TTLs: %v", set2)
	}
	_, err = e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "s", AccessTTL: token.TTL{Minutes: -1}})
	wantErr(t, err, kms.ErrInvalidArgument)
	_, err = e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	wantErr(t, err, kms.ErrInvalidArgument) // no subject
}

func TestTokenKeyState(t *testing.T) {
	e, clk := newClockEngine(t)
	ctx := context.Background()
	k, set := tokenKey(t, e, "state", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	c := e.WithToken(set.Access, callerIP)
	if _, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	// A verified token on a key that is not ENABLED: 409, not 401
	// (plane_test.go has the details).
	e.DisableKey(ctx, k.Tag)
	_, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrKeyNotEnabled)
	e.EnableKey(ctx, k.Tag)
	if _, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatalf("after re-enable: %v", err)
	}
	e.RequestKeyDeletion(ctx, k.Tag)
	_, err = c.Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrKeyNotEnabled)
	clk.Advance(kms.DeletionDelay)
	e.Maintain(ctx)
	_, err = c.Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrTokenInvalid)
}

func TestTokenTampering(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k, set := tokenKey(t, e, "tamper", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	parts := strings.Split(set.Access, ".")
	b64 := base64.RawURLEncoding
	hs := func(header string) string { return b64.EncodeToString([]byte(header)) }
	sig := []byte(parts[2])
	sig[10] ^= 1
	for name, tok := range map[string]string{
		"flipped signature": parts[0] + "." + parts[1] + "." + string(sig),
		"alg none":          hs(`{"typ":"JWT","alg":"none"}`) + "." + parts[1] + ".",
		"alg HS256":         hs(`{"typ":"JWT","alg":"HS256"}`) + "." + parts[1] + "." + parts[2],
		"alg PS256":         hs(`{"typ":"JWT","alg":"PS256"}`) + "." + parts[1] + "." + parts[2],
		"payload swapped":   parts[0] + "." + b64.EncodeToString([]byte(`{"sub":"x"}`)) + "." + parts[2],
		"two segments":      parts[0] + "." + parts[1],
		"empty":             "",
		"oversized":         strings.Repeat("a", token.MaxTokenSize+1),
		"garbage":           "not a token",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.WithToken(tok, callerIP).Encrypt(ctx, k.Tag, []byte("x"), nil)
			wantErr(t, err, kms.ErrTokenInvalid)
			if tok != "" && len(tok) > 20 && strings.Contains(err.Error(), tok[len(tok)-20:]) {
				t.Fatalf("error leaks the token: %v", err)
			}
		})
	}
}

func TestTokenPermissions(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k, set := tokenKey(t, e, "perms", kms.RSA2048, kms.IssueTokensRequest{Permissions: []token.Permission{token.PermSign}})
	c := e.WithToken(set.Access, callerIP)
	sig, err := c.Sign(ctx, k.Tag, []byte("d"))
	if err != nil {
		t.Fatal(err)
	}
	for name, fn := range map[string]func() error{
		"verify":     func() error { _, err := c.Verify(ctx, k.Tag, []byte("d"), sig); return err },
		"encrypt":    func() error { _, err := c.Encrypt(ctx, k.Tag, []byte("d"), nil); return err },
		"public key": func() error { _, err := c.GetPublicKey(ctx, k.Tag, 0); return err },
		"batch": func() error {
			_, err := c.BatchEncrypt(ctx, k.Tag, []kms.EncryptItem{{Plaintext: []byte("d")}})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) { wantErr(t, fn(), kms.ErrPermissionDenied) })
	}
	_, other := tokenKey(t, e, "otherkey", kms.AES256, kms.IssueTokensRequest{Permissions: []token.Permission{token.PermEncrypt}})
	_, err = e.WithToken(other.Access, callerIP).Encrypt(ctx, k.Tag, []byte("d"), nil)
	wantErr(t, err, kms.ErrTokenInvalid) // another key's token, even one with the permission
}

// TestIssueTokensExplicitPermissions: a nil or empty permission list is
// refused (it used to mean "all" and "none"); AllPermissions is the named
// way to grant everything.
func TestIssueTokensExplicitPermissions(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k, all := tokenKey(t, e, "explicit", kms.RSA2048, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	for name, perms := range map[string][]token.Permission{"nil": nil, "empty": {}} {
		t.Run(name, func(t *testing.T) {
			set, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Subject: "s", Permissions: perms})
			wantErr(t, err, kms.ErrInvalidArgument)
			if set != nil {
				t.Fatal("a set was issued")
			}
		})
	}
	c := e.WithToken(all.Access, callerIP)
	sig, err := c.Sign(ctx, k.Tag, []byte("d"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Verify(ctx, k.Tag, []byte("d"), sig); err != nil || !ok {
		t.Fatalf("verify with all permissions: %v, %v", ok, err)
	}
	if _, err := c.GetPublicKey(ctx, k.Tag, 0); err != nil {
		t.Fatal(err)
	}
	if got, want := len(kms.AllPermissions()), len(token.AllPermissions()); got != want {
		t.Fatalf("AllPermissions has %d, token.AllPermissions %d", got, want)
	}
}

func TestTokenPlaneACL(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k, set := tokenKey(t, e, "acl", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	c := e.WithToken(set.Access, callerIP)
	if _, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	a, err := e.SetKeyACLEnabled(ctx, k.Tag, true)
	if err != nil || !a.Enabled || len(a.Entries) != 0 {
		t.Fatalf("enable acl: %+v %v", a, err)
	}
	_, err = c.Encrypt(ctx, k.Tag, []byte("x"), nil) // a token from before: denied at once
	wantErr(t, err, kms.ErrAccessDenied)
	// The ACL comes before the token: a junk token from outside is 403.
	_, err = e.WithToken("junk", callerIP).Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrAccessDenied)
	// Trusted-plane calls ignore the ACL.
	if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.AddAllowedIPs(ctx, k.Tag, []string{"10.1.0.0/16", "192.168.*.*", "2001:db8::/32"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"10.1.2.3", true}, {"::ffff:10.1.9.9", true}, {"192.168.4.5", true}, {"2001:db8::7", true},
		{"10.2.0.1", false}, {"fe80::1%eth0", false}, {"0.0.0.0", false}, {"2001:db9::1", false},
	} {
		_, err := e.WithToken(set.Access, netip.MustParseAddr(tc.addr)).Encrypt(ctx, k.Tag, []byte("x"), nil)
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.addr, err)
		}
		if !tc.ok && !errors.Is(err, kms.ErrAccessDenied) {
			t.Errorf("%s: err = %v, want access denied", tc.addr, err)
		}
	}
	_, err = e.WithToken(set.Access, netip.Addr{}).Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrAccessDenied)
	// Renewal is covered by the ACL too.
	_, err = e.WithToken(set.Refresh, netip.MustParseAddr("10.9.9.9")).ReissueTokens(ctx, k.Tag, token.TTL{}, token.TTL{})
	wantErr(t, err, kms.ErrAccessDenied)

	// Removal is exact and all-or-nothing.
	_, err = e.RemoveAllowedIPs(ctx, k.Tag, []string{"10.1.0.0/16", "10.1.0.1"})
	wantErr(t, err, kms.ErrInvalidArgument)
	if got, _ := e.GetKeyACL(ctx, k.Tag); len(got.Entries) != 3 {
		t.Fatalf("failed removal changed the list: %+v", got)
	}
	_, err = e.AddAllowedIPs(ctx, k.Tag, []string{"10.0.0.256", "bad", "10.0.0.1"})
	wantErr(t, err, kms.ErrInvalidArgument)
	page, err := e.ListAllowedIPs(ctx, k.Tag, 0, 2)
	if err != nil || page.TotalCount != 3 || fmt.Sprint(page.Entries) != "[10.1.0.0/16 192.168.*.*]" {
		t.Fatalf("ListAllowedIPs = %+v %v", page, err)
	}
	_, err = e.ListAllowedIPs(ctx, k.Tag, 0, 201)
	wantErr(t, err, kms.ErrInvalidArgument)
	if _, err := e.SetKeyACLEnabled(ctx, k.Tag, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WithToken(set.Access, netip.MustParseAddr("10.2.0.1")).Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatalf("acl disabled: %v", err)
	}
	e.DisableKey(ctx, k.Tag)
	_, err = e.AddAllowedIPs(ctx, k.Tag, []string{"10.0.0.1"})
	wantErr(t, err, kms.ErrKeyNotEnabled)
}

func TestTokenPlaneRateLimit(t *testing.T) {
	e, clk := newClockEngine(t, kms.WithRateLimit(ratelimit.Limit{Rate: 10, Burst: 10}))
	ctx := context.Background()
	k, set := tokenKey(t, e, "limited", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	other, otherSet := tokenKey(t, e, "other", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	c := e.WithToken(set.Access, callerIP)
	// Junk tokens do not spend the budget.
	for range 50 {
		e.WithToken("junk", callerIP).Encrypt(ctx, k.Tag, []byte("x"), nil)
	}
	for i := range 10 {
		if _, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	_, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrRateLimited)
	var rl *kms.RateLimitError
	if !errors.As(err, &rl) || rl.RetryAfter <= 0 {
		t.Fatalf("no RetryAfter in %v", err)
	}
	// Another key has its own budget; the trusted plane is not limited.
	if _, err := e.WithToken(otherSet.Access, callerIP).Encrypt(ctx, other.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	clk.Advance(rl.RetryAfter)
	if _, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatalf("after RetryAfter: %v", err)
	}
	// A batch of n costs n.
	clk.Advance(time.Second)
	items := make([]kms.EncryptItem, 10)
	for i := range items {
		items[i].Plaintext = []byte("x")
	}
	if _, err := c.BatchEncrypt(ctx, k.Tag, items); err != nil {
		t.Fatal(err)
	}
	_, err = c.Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrRateLimited)
	// A key's own limit.
	if err := e.SetKeyRateLimit(ctx, k.Tag, ratelimit.Limit{Unlimited: true}); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := e.GetKeyRateLimit(ctx, k.Tag)
	if !l.Own || !l.Unlimited {
		t.Fatalf("GetKeyRateLimit = %+v", l)
	}
	err = e.SetKeyRateLimit(ctx, k.Tag, ratelimit.Limit{Rate: -1})
	wantErr(t, err, kms.ErrInvalidArgument)
}

func TestTokenStatePersists(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	k, set := tokenKey(t, e, "persist", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
	e.SetKeyACLEnabled(ctx, k.Tag, true)
	e.AddAllowedIPs(ctx, k.Tag, []string{"10.1.2.3"})
	e.SetKeyRateLimit(ctx, k.Tag, ratelimit.Limit{Rate: 5, Burst: 5})
	g1, _ := e.GetTokenGenerator(ctx, k.Tag)
	e.Close()

	e2, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	g2, _ := e2.GetTokenGenerator(ctx, k.Tag)
	if *g1 != *g2 {
		t.Fatalf("generator %+v became %+v", g1, g2)
	}
	c := e2.WithToken(set.Access, callerIP)
	if _, err := c.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatalf("token after restart: %v", err)
	}
	_, err = e2.WithToken(set.Access, netip.MustParseAddr("10.1.2.4")).Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrAccessDenied)
	if l, _ := e2.GetKeyRateLimit(ctx, k.Tag); !l.Own || l.Rate != 5 {
		t.Fatalf("rate limit after restart: %+v", l)
	}
	// Issuance works with the reloaded signing key.
	if _, err := e2.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "again"}); err != nil {
		t.Fatal(err)
	}
}

// hookClock runs a one-shot hook inside its next Now call: a way to run a
// management call between the token checks and the signing of a renewal.
type hookClock struct {
	*fakeClock
	hook atomic.Pointer[func()]
}

func (c *hookClock) Now() time.Time {
	if h := c.hook.Swap(nil); h != nil {
		(*h)()
	}
	return c.fakeClock.Now()
}

func (c *hookClock) arm(f func()) { c.hook.Store(&f) }

// TestRenewalRacesGeneratorChange: a refresh token checked just before its
// generator is rotated, or deactivated and activated again, must not get
// tokens signed by the new generator.
func TestRenewalRacesGeneratorChange(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		change func(e *kms.Engine, tag string) error
		renew  func(c kms.TokenClient, tag string) (*token.Set, error)
	}{
		{"reissue during rotation",
			func(e *kms.Engine, tag string) error { _, err := e.RotateTokenGenerator(ctx, tag); return err },
			func(c kms.TokenClient, tag string) (*token.Set, error) {
				return c.ReissueTokens(ctx, tag, token.TTL{}, token.TTL{})
			}},
		{"access token during deactivate and activate",
			func(e *kms.Engine, tag string) error {
				if _, err := e.DeactivateTokenGenerator(ctx, tag); err != nil {
					return err
				}
				_, err := e.ActivateTokenGenerator(ctx, tag)
				return err
			},
			func(c kms.TokenClient, tag string) (*token.Set, error) {
				return c.IssueAccessToken(ctx, tag, token.TTL{Unlimited: true})
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &hookClock{fakeClock: newFakeClock()}
			e := newEngine(t, kms.WithClock(clk), kms.WithMaintenanceInterval(0))
			k, set := tokenKey(t, e, "race", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
			ran := false
			clk.arm(func() {
				ran = true
				if err := tc.change(e, k.Tag); err != nil {
					t.Error(err)
				}
			})
			got, err := tc.renew(e.WithToken(set.Refresh, callerIP), k.Tag)
			if !ran {
				t.Fatal("the hook did not run during the renewal")
			}
			if !errors.Is(err, kms.ErrTokenInvalid) {
				t.Fatalf("renewal across a generator change: %v, want ErrTokenInvalid", err)
			}
			if got != nil {
				t.Fatal("tokens returned with the error")
			}
		})
	}
}
