package token

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestTTLValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  TTL
		ok   bool
	}{
		{"zero value (the default)", TTL{}, true},
		{"0 minutes (the default)", TTL{Minutes: 0}, true},
		{"negative", TTL{Minutes: -1}, false},
		{"1 minute", TTL{Minutes: 1}, true},
		{"default access", TTL{Minutes: DefaultAccessTTLMinutes}, true},
		{"default refresh", TTL{Minutes: DefaultRefreshTTLMinutes}, true},
		{"1,051,200 minutes", TTL{Minutes: 1_051_200}, true},
		{"1,051,201 minutes", TTL{Minutes: 1_051_201}, false},
		{"unlimited", TTL{Unlimited: true}, true},
		{"unlimited with minutes", TTL{Minutes: 60, Unlimited: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.ttl.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("Validate = %v", err)
			}
			if err != nil && !errors.Is(err, ErrInvalidTTL) {
				t.Fatalf("%v does not match ErrInvalidTTL", err)
			}
		})
	}
	if DefaultAccessTTLMinutes != 4_320 || DefaultRefreshTTLMinutes != 129_600 || MaxTTLMinutes != 730*24*60 {
		t.Error("TTL constants drifted from the spec")
	}
	for ttl, want := range map[TTL]string{{Minutes: 5}: "5m", {Unlimited: true}: "unlimited", {Minutes: 1, Unlimited: true}: "invalid", {}: "default"} {
		if ttl.String() != want {
			t.Errorf("%#v.String() = %q", ttl, ttl.String())
		}
	}
	if (TTL{Minutes: 2}).Duration() != 2*time.Minute || (TTL{Unlimited: true}).Duration() != 0 {
		t.Error("Duration")
	}
	if (TTL{}).For(Access) != (TTL{Minutes: DefaultAccessTTLMinutes}) || (TTL{}).For(Refresh) != (TTL{Minutes: DefaultRefreshTTLMinutes}) ||
		(TTL{Minutes: 3}).For(Refresh) != (TTL{Minutes: 3}) || (TTL{Unlimited: true}).For(Access) != (TTL{Unlimited: true}) {
		t.Error("For: the zero TTL must resolve to the kind's default and nothing else may change")
	}
}

func baseRequest() Request {
	return Request{
		KeyTag:     testTag,
		Subject:    testSub,
		AccessTTL:  TTL{Minutes: DefaultAccessTTLMinutes},
		RefreshTTL: TTL{Minutes: DefaultRefreshTTLMinutes},
		Now:        testNow.Add(999 * time.Millisecond),
	}
}

// TestIssueSetTTL issues at the TTL bounds (and beyond them) for each of
// the two tokens, and checks exp against iat.
func TestIssueSetTTL(t *testing.T) {
	pub := &testKey(t).PublicKey
	for _, tc := range []struct {
		name    string
		minutes int
		ok      bool
	}{
		{"-1", -1, false},
		{"1", 1, true},
		{"1,051,200", 1_051_200, true},
		{"1,051,201", 1_051_201, false},
	} {
		for _, kind := range []Kind{Access, Refresh} {
			t.Run(kind.String()+"/"+tc.name, func(t *testing.T) {
				r := baseRequest()
				ttl := TTL{Minutes: tc.minutes}
				if kind == Access {
					r.AccessTTL = ttl
				} else {
					r.RefreshTTL = ttl
				}
				set, err := IssueSet(testKey(t), r)
				if !tc.ok {
					if !errors.Is(err, ErrInvalidTTL) || set.Access != "" || set.Refresh != "" {
						t.Fatalf("err = %v, want ErrInvalidTTL and no tokens", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				tok, exp := set.Access, set.AccessExpires
				if kind == Refresh {
					tok, exp = set.Refresh, set.RefreshExpires
				}
				if want := testNow.Add(time.Duration(tc.minutes) * time.Minute); !exp.Equal(want) {
					t.Errorf("expires %v, want %v", exp, want)
				}
				c, err := Verify(tok, pub, Expect{Kind: kind, KeyTag: testTag, Now: testNow})
				if err != nil {
					t.Fatal(err)
				}
				if !c.ExpiresAt.Equal(exp) || !c.IssuedAt.Equal(testNow) || !set.IssuedAt.Equal(testNow) {
					t.Errorf("claims times %v..%v, set %v..%v", c.IssuedAt, c.ExpiresAt, set.IssuedAt, exp)
				}
			})
		}
	}
}

func TestIssueSetUnlimited(t *testing.T) {
	r := baseRequest()
	r.AccessTTL, r.RefreshTTL = TTL{Unlimited: true}, TTL{Unlimited: true}
	set, err := IssueSet(testKey(t), r)
	if err != nil {
		t.Fatal(err)
	}
	if !set.AccessExpires.IsZero() || !set.RefreshExpires.IsZero() {
		t.Errorf("unlimited set has expiry times")
	}
	for _, tc := range []struct {
		tok  string
		kind Kind
	}{{set.Access, Access}, {set.Refresh, Refresh}} {
		_, p, _ := segments(t, tc.tok)
		payload, _ := b64.DecodeString(p)
		var raw map[string]any
		if err := json.Unmarshal(payload, &raw); err != nil {
			t.Fatal(err)
		}
		if _, ok := raw["exp"]; ok {
			t.Errorf("%v token has exp: %s", tc.kind, payload)
		}
		far := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
		c, err := Verify(tc.tok, &testKey(t).PublicKey, Expect{Kind: tc.kind, KeyTag: testTag, Now: far})
		if err != nil {
			t.Fatalf("%v token in year 9999: %v", tc.kind, err)
		}
		if !c.ExpiresAt.IsZero() || c.Expired(far) {
			t.Errorf("unlimited claims expire")
		}
	}
}

func TestIssueSetPermissions(t *testing.T) {
	r := baseRequest()
	r.Permissions = []Permission{PermSign, PermEncrypt, PermSign, PermGetPublicKey, PermEncrypt}
	in := append([]Permission(nil), r.Permissions...)
	set, err := IssueSet(testKey(t), r)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(set.Access, &testKey(t).PublicKey, Expect{Kind: Access, KeyTag: testTag, Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.Permissions) != fmt.Sprint([]Permission{PermEncrypt, PermSign, PermGetPublicKey}) {
		t.Errorf("permissions %v", c.Permissions)
	}
	if fmt.Sprint(r.Permissions) != fmt.Sprint(in) {
		t.Errorf("IssueSet modified the request's permissions")
	}
}

// opaqueSigner is a crypto.Signer that is not an *rsa.PrivateKey, like a
// hardware key; it checks what it is asked to do.
type opaqueSigner struct {
	tb    testing.TB
	k     *rsa.PrivateKey
	err   error
	bad   bool
	calls int
}

func (s *opaqueSigner) Public() crypto.PublicKey { return &s.k.PublicKey }

func (s *opaqueSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.calls++
	if opts != crypto.SHA256 || len(digest) != 32 {
		s.tb.Errorf("Sign called with opts %v and a %d-byte digest", opts, len(digest))
	}
	if s.err != nil {
		return nil, s.err
	}
	sig, err := rsa.SignPKCS1v15(r, s.k, crypto.SHA256, digest)
	if s.bad {
		sig[0] ^= 1
	}
	return sig, err
}

func TestIssueSetThroughSigner(t *testing.T) {
	s := &opaqueSigner{tb: t, k: testKey(t)}
	set, err := IssueSet(s, baseRequest())
	if err != nil {
		t.Fatal(err)
	}
	if s.calls != 2 {
		t.Errorf("%d signatures for a set", s.calls)
	}
	if _, err := Verify(set.Refresh, &testKey(t).PublicKey, Expect{Kind: Refresh, KeyTag: testTag, Now: testNow}); err != nil {
		t.Fatal(err)
	}

	hsmDown := errors.New("hsm: device removed")
	_, err = IssueSet(&opaqueSigner{tb: t, k: testKey(t), err: hsmDown}, baseRequest())
	if !errors.Is(err, hsmDown) || !strings.HasPrefix(err.Error(), "token: sign: ") {
		t.Errorf("failing signer: %v", err)
	}
	_, err = IssueSet(&opaqueSigner{tb: t, k: testKey(t), bad: true}, baseRequest())
	if err == nil || !strings.Contains(err.Error(), "invalid signature") {
		t.Errorf("signer returning a bad signature: %v", err)
	}
}

func TestIssueSetRejects(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	small, err := rsa.GenerateKey(nil, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		signer crypto.Signer
		edit   func(*Request)
	}{
		{"nil signer", nil, func(*Request) {}},
		{"ECDSA signer", ecKey, func(*Request) {}},
		{"1024-bit RSA signer", small, func(*Request) {}},
		{"empty key tag", nil, func(r *Request) { r.KeyTag = "" }},
		{"upper-case key tag", nil, func(r *Request) { r.KeyTag = strings.ToUpper(testTag) }},
		{"short key tag", nil, func(r *Request) { r.KeyTag = testTag[1:] }},
		{"prefixed key tag", nil, func(r *Request) { r.KeyTag = "keytag__" + testTag }},
		{"empty subject", nil, func(r *Request) { r.Subject = "" }},
		{"subject with a newline", nil, func(r *Request) { r.Subject = "a\nb" }},
		{"subject with DEL", nil, func(r *Request) { r.Subject = "a\x7fb" }},
		{"subject with invalid UTF-8", nil, func(r *Request) { r.Subject = "a\xffb" }},
		{"subject too long", nil, func(r *Request) { r.Subject = strings.Repeat("x", MaxSubjectLen+1) }},
		{"unknown permission", nil, func(r *Request) { r.Permissions = []Permission{PermEncrypt, 7} }},
		{"negative permission", nil, func(r *Request) { r.Permissions = []Permission{-1} }},
		{"zero now", nil, func(r *Request) { r.Now = time.Time{} }},
		{"now before 1970", nil, func(r *Request) { r.Now = time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC) }},
		{"expiry beyond 9999", nil, func(r *Request) { r.Now = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := baseRequest()
			tc.edit(&r)
			signer := tc.signer
			if signer == nil && tc.name != "nil signer" {
				signer = testKey(t)
			}
			set, err := IssueSet(signer, r)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
			if set != (Set{}) {
				t.Errorf("tokens returned with an error")
			}
			if !strings.HasPrefix(err.Error(), "token: ") {
				t.Errorf("message %q", err)
			}
		})
	}
}

func TestSignRejects(t *testing.T) {
	good := Claims{Subject: "s", IssuedAt: testNow, Kind: Access, KeyTag: testTag}
	if _, err := Sign(testKey(t), &good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Claims)
	}{
		{"fractional iat", func(c *Claims) { c.IssuedAt = c.IssuedAt.Add(time.Millisecond) }},
		{"fractional exp", func(c *Claims) { c.ExpiresAt = c.IssuedAt.Add(time.Hour + time.Millisecond) }},
		{"exp equal to iat", func(c *Claims) { c.ExpiresAt = c.IssuedAt }},
		{"exp before iat", func(c *Claims) { c.ExpiresAt = c.IssuedAt.Add(-time.Hour) }},
		{"zero iat", func(c *Claims) { c.IssuedAt = time.Time{} }},
		{"zero kind", func(c *Claims) { c.Kind = 0 }},
		{"duplicate permission", func(c *Claims) { c.Permissions = []Permission{1, 1} }},
		{"unknown permission", func(c *Claims) { c.Permissions = []Permission{39} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			if _, err := Sign(testKey(t), &c); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
	if _, err := Sign(testKey(t), nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("nil claims: %v", err)
	}
}

// TestSetRedaction prints, logs and marshals a Set every way we can think
// of and finds no token in any of it.
func TestSetRedaction(t *testing.T) {
	set := issueTestSet(t)
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v %#v %s %q %x %X %d %T|", set, set, set, set, set, set, set, set, set)
	fmt.Fprintf(&out, "%v %+v %#v %s|", &set, &set, &set, &set)
	fmt.Fprint(&out, set, &set, []Set{set}, map[string]Set{"k": set}, struct{ S Set }{set})
	fmt.Fprintf(&out, "%+v %#v|", struct{ S Set }{set}, []*Set{&set})
	fmt.Fprintln(&out, set.String(), set.GoString())
	j, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	j, _ = json.Marshal(struct{ S *Set }{&set})
	out.Write(j)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("issued", "set", set, "ptr", &set)
	slog.New(slog.NewTextHandler(&out, nil)).Info("issued", "set", set)

	assertNoTokenText(t, out.String(), set.Access, set.Refresh)
	if !strings.Contains(out.String(), redacted) || !strings.Contains(out.String(), "2024-10-16T07:27:56Z") {
		t.Errorf("redacted output lacks the expected fields: %s", out.String())
	}

	u := Set{Access: "a", Refresh: "r", IssuedAt: testNow}
	if got := u.String(); !strings.Contains(got, "AccessExpires:unlimited") {
		t.Errorf("unlimited set: %s", got)
	}
}

// TestGolangJWTInterop checks our tokens against golang-jwt's own RS256
// parser with every strictness option on, and checks that our
// SigningMethod works inside golang-jwt.
func TestGolangJWTInterop(t *testing.T) {
	set := issueTestSet(t)
	pub := &testKey(t).PublicKey
	parse := func(tok string, now time.Time) (jwt.MapClaims, error) {
		var mc jwt.MapClaims
		_, err := jwt.NewParser(
			jwt.WithValidMethods([]string{"RS256"}),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithStrictDecoding(),
			jwt.WithJSONNumber(),
			jwt.WithLeeway(0),
			jwt.WithTimeFunc(func() time.Time { return now }),
		).ParseWithClaims(tok, &mc, func(tk *jwt.Token) (any, error) {
			if tk.Method != jwt.SigningMethodRS256 {
				return nil, errors.New("unexpected method")
			}
			return pub, nil
		})
		return mc, err
	}
	mc, err := parse(set.Access, testNow)
	if err != nil {
		t.Fatalf("golang-jwt refuses our token: %v", err)
	}
	if mc["1"] != "ACCESS" || mc["2"] != "keytag__"+testTag || mc["3"] != "EXT" || mc["sub"] != testSub {
		t.Errorf("golang-jwt reads %v", mc)
	}
	// golang-jwt agrees that exp == now is expired.
	if _, err := parse(set.Access, set.AccessExpires); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Errorf("golang-jwt at exp: %v", err)
	}
	if _, err := parse(set.Access, set.AccessExpires.Add(-time.Second)); err != nil {
		t.Errorf("golang-jwt a second before exp: %v", err)
	}

	// Our SigningMethod inside golang-jwt: it writes the header members in
	// the other order, which Verify accepts, and signs through the Signer.
	s := &opaqueSigner{tb: t, k: testKey(t)}
	tok, err := jwt.NewWithClaims(rs256{}, jwt.MapClaims{
		"sub": testSub, "iat": testNow.Unix(), "1": "ACCESS", "2": "keytag__" + testTag, "3": "EXT", "4": []int{},
	}).SignedString(s)
	if err != nil {
		t.Fatal(err)
	}
	h, _, _ := segments(t, tok)
	if h != enc(altHeader) || s.calls != 1 {
		t.Fatalf("golang-jwt header %q, %d signatures", h, s.calls)
	}
	// MapClaims marshal in sorted order, which is not canonical.
	if _, err := Verify(tok, pub, expectAccess(testNow)); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("sorted claims: %v", err)
	}
	// With claims that marshal canonically, golang-jwt + our SigningMethod
	// make a token Verify accepts.
	c := &Claims{Subject: testSub, IssuedAt: testNow, Kind: Access, KeyTag: testTag, Permissions: []Permission{PermDecrypt}}
	tok, err = jwt.NewWithClaims(rs256{}, canonicalClaims{c: c}).SignedString(s)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Verify(tok, pub, expectAccess(testNow)); err != nil || !claimsEqual(*got, *c) {
		t.Errorf("golang-jwt-made token: %v", err)
	}
	if err := (rs256{}).Verify("x", nil, testKey(t)); !errors.Is(err, jwt.ErrInvalidKeyType) {
		t.Errorf("Verify with a private key: %v", err)
	}
	if _, err := (rs256{}).Sign("x", "not a key"); !errors.Is(err, jwt.ErrInvalidKeyType) {
		t.Errorf("Sign with a string: %v", err)
	}
}

// canonicalClaims lets golang-jwt marshal Claims in our encoding.
type canonicalClaims struct {
	jwt.RegisteredClaims
	c *Claims
}

func (x canonicalClaims) MarshalJSON() ([]byte, error) { return x.c.appendPayload(nil), nil }

// TestIssueSetZeroTTLIsDefault: the zero TTL means the kind's default
// (NAVER's 72 h and 2,160 h), and AccessOnly signs the access token alone.
func TestIssueSetZeroTTLIsDefault(t *testing.T) {
	r := baseRequest()
	r.AccessTTL, r.RefreshTTL = TTL{}, TTL{}
	set, err := IssueSet(testKey(t), r)
	if err != nil {
		t.Fatal(err)
	}
	if want := testNow.Add(DefaultAccessTTLMinutes * time.Minute); !set.AccessExpires.Equal(want) {
		t.Errorf("access expires %v, want %v", set.AccessExpires, want)
	}
	if want := testNow.Add(DefaultRefreshTTLMinutes * time.Minute); !set.RefreshExpires.Equal(want) {
		t.Errorf("refresh expires %v, want %v", set.RefreshExpires, want)
	}
	r.AccessOnly = true
	r.RefreshTTL = TTL{Minutes: -5} // ignored: no refresh token is made
	acc, err := IssueSet(testKey(t), r)
	if err != nil {
		t.Fatal(err)
	}
	if acc.Access == "" || acc.Refresh != "" || !acc.RefreshExpires.IsZero() {
		t.Fatalf("AccessOnly: access %t, refresh %t", acc.Access != "", acc.Refresh != "")
	}
	c, err := Verify(acc.Access, &testKey(t).PublicKey, Expect{Kind: Access, KeyTag: testTag, Now: testNow})
	if err != nil || c.Kind != Access {
		t.Fatalf("AccessOnly token: %v", err)
	}
}

// TestIssueSetTokenIDs: with TokenIDs every token carries its own jti,
// so two sets issued in the same second differ; the tokens verify and
// round-trip; without TokenIDs the layout is NAVER's (no jti).
func TestIssueSetTokenIDs(t *testing.T) {
	req := Request{
		KeyTag: testTag, Subject: testSub, Permissions: []Permission{PermEncrypt},
		AccessTTL: TTL{Minutes: 180}, RefreshTTL: TTL{Minutes: 720}, Now: testNow, TokenIDs: rand.Reader,
	}
	k := testKey(t)
	a, err := IssueSet(k, req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := IssueSet(k, req)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, id := range []string{a.AccessID, a.RefreshID, b.AccessID, b.RefreshID} {
		if len(id) != 22 || !validID(id) {
			t.Fatalf("id %q: want 22 base64url characters", id)
		}
		ids[id] = true
	}
	if len(ids) != 4 || a.Access == b.Access || a.Refresh == b.Refresh {
		t.Fatal("token ids or tokens repeat")
	}
	c, err := Verify(a.Access, &k.PublicKey, expectAccess(testNow))
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != a.AccessID {
		t.Fatalf("verified jti %q, issued %q", c.ID, a.AccessID)
	}
	_, p, _ := segments(t, a.Access)
	payload, _ := b64.DecodeString(p)
	if !bytes.HasSuffix(payload, []byte(`],"jti":"`+a.AccessID+`"}`)) {
		t.Fatalf("jti is not the last member: %s", payload)
	}
	plain := issueTestSet(t)
	if plain.AccessID != "" || plain.RefreshID != "" {
		t.Fatal("ids without TokenIDs")
	}
	_, p, _ = segments(t, plain.Access)
	payload, _ = b64.DecodeString(p)
	if bytes.Contains(payload, []byte("jti")) {
		t.Fatalf("jti without TokenIDs: %s", payload)
	}
	req.TokenIDs = iotest.ErrReader(errors.New("no randomness"))
	if _, err := IssueSet(k, req); err == nil {
		t.Fatal("a failing id reader issued a set")
	}
}

// TestIssueSetCIDRs: CIDRs are bound into both tokens, sorted and
// deduplicated, and AllowsAddr checks them; unmasked prefixes are refused.
func TestIssueSetCIDRs(t *testing.T) {
	k := testKey(t)
	req := Request{
		KeyTag: testTag, Subject: testSub, Permissions: []Permission{PermEncrypt}, Now: testNow,
		CIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24")},
	}
	set, err := IssueSet(k, req)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(set.Access, &k.PublicKey, expectAccess(testNow))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.CIDRs) != 2 || c.CIDRs[0].String() != "10.0.0.0/8" || c.CIDRs[1].String() != "192.0.2.0/24" {
		t.Fatalf("CIDRs %v", c.CIDRs)
	}
	for addr, want := range map[string]bool{"10.9.9.9": true, "192.0.2.7": true, "::ffff:10.1.1.1": true, "192.0.3.1": false, "2001:db8::1": false} {
		if got := c.AllowsAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("AllowsAddr(%s) = %v, want %v", addr, got, want)
		}
	}
	if (&Claims{}).AllowsAddr(netip.MustParseAddr("192.0.3.1")) != true {
		t.Error("claims without CIDRs refuse an address")
	}
	req.CIDRs = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}
	if _, err := IssueSet(k, req); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unmasked prefix: %v", err)
	}
}
