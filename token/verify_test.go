package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestVerifyRoundTrip(t *testing.T) {
	set := issueTestSet(t)
	pub := &testKey(t).PublicKey
	now := testNow.Add(time.Minute)

	c, err := Verify(set.Access, pub, expectAccess(now))
	if err != nil {
		t.Fatalf("access: %v", err)
	}
	want := Claims{
		Subject:     testSub,
		IssuedAt:    testNow,
		ExpiresAt:   testNow.Add(180 * time.Minute),
		Kind:        Access,
		KeyTag:      testTag,
		Permissions: []Permission{PermEncrypt, PermDecrypt, PermSign},
	}
	if !claimsEqual(*c, want) {
		t.Errorf("access claims\n got %+v\nwant %+v", *c, want)
	}
	if !c.Has(PermSign) || c.Has(PermVerify) {
		t.Error("Has disagrees with the snapshot")
	}

	c, err = Verify(set.Refresh, pub, Expect{Kind: Refresh, KeyTag: testTag, Now: now})
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	want.Kind, want.ExpiresAt = Refresh, testNow.Add(720*time.Minute)
	if !claimsEqual(*c, want) {
		t.Errorf("refresh claims\n got %+v\nwant %+v", *c, want)
	}
}

func claimsEqual(a, b Claims) bool {
	if a.Subject != b.Subject || !a.IssuedAt.Equal(b.IssuedAt) || !a.ExpiresAt.Equal(b.ExpiresAt) ||
		a.ExpiresAt.IsZero() != b.ExpiresAt.IsZero() || a.Kind != b.Kind || a.KeyTag != b.KeyTag ||
		len(a.Permissions) != len(b.Permissions) {
		return false
	}
	for i := range a.Permissions {
		if a.Permissions[i] != b.Permissions[i] {
			return false
		}
	}
	return true
}

// TestVerifyRejects has one case per way a token can be refused. Cases
// marked as re-signed carry a valid signature by the generator key over
// their (bad) content, so they test the checks after the signature.
func TestVerifyRejects(t *testing.T) {
	k := testKey(t)
	pub := &k.PublicKey
	set := issueTestSet(t)
	h, p, s := segments(t, set.Access)
	now := testNow.Add(time.Minute)
	tag := `"2":"keytag__` + testTag + `"`
	claims := func(kind string) string {
		return `{"sub":"` + testSub + `","iat":1729052876,"exp":1729063676,"1":"` + kind + `",` + tag + `,"3":"EXT","4":[0]}`
	}
	sigBytes, _ := b64.DecodeString(s)
	flipped := append([]byte(nil), sigBytes...)
	flipped[len(flipped)/2] ^= 1
	sigOf := func(sig []byte) string { return base64.RawURLEncoding.EncodeToString(sig) }
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hmacWith := func(key []byte, header string) string {
		input := enc(header) + "." + p
		m := hmac.New(sha256.New, key)
		m.Write([]byte(input))
		return input + "." + sigOf(m.Sum(nil))
	}
	signWith := func(header string, sign func(input string) []byte) string {
		input := enc(header) + "." + p
		return input + "." + sigOf(sign(input))
	}
	pss := signWith(`{"typ":"JWT","alg":"PS256"}`, func(in string) []byte {
		d := sha256.Sum256([]byte(in))
		sig, err := rsa.SignPSS(rand.Reader, k, crypto.SHA256, d[:], nil)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	})
	rs384 := signWith(`{"typ":"JWT","alg":"RS384"}`, func(in string) []byte {
		d := sha512.Sum384([]byte(in))
		sig, err := rsa.SignPKCS1v15(nil, k, crypto.SHA384, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	})
	rs512 := signWith(`{"typ":"JWT","alg":"RS512"}`, func(in string) []byte {
		d := sha512.Sum512([]byte(in))
		sig, err := rsa.SignPKCS1v15(nil, k, crypto.SHA512, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	})
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es256 := signWith(`{"typ":"JWT","alg":"ES256"}`, func(in string) []byte {
		d := sha256.Sum256([]byte(in))
		sig, err := ecdsa.SignASN1(rand.Reader, ecKey, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	})
	otherSigned, err := Sign(otherTestKey(t), &Claims{Subject: testSub, IssuedAt: testNow, ExpiresAt: testNow.Add(time.Hour), Kind: Access, KeyTag: testTag})
	if err != nil {
		t.Fatal(err)
	}
	// A payload segment whose last character has non-zero trailing bits:
	// it decodes (leniently) to the same bytes but is not canonical.
	lastBits := p[:len(p)-1] + string(p[len(p)-1]+1)
	if _, err := base64.RawURLEncoding.DecodeString(lastBits); err != nil {
		t.Fatalf("lenient decode of trailing-bits payload: %v", err)
	}

	for _, tc := range []struct {
		name string
		tok  string
		want Expect
		r    Reason
	}{
		// 1. size
		{"one byte too large", strings.Repeat("a", MaxTokenSize+1), expectAccess(now), ReasonTooLarge},
		{"valid token padded past the limit", set.Access + strings.Repeat("A", MaxTokenSize), expectAccess(now), ReasonTooLarge},
		{"junk at the limit is only malformed", strings.Repeat("a", MaxTokenSize), expectAccess(now), ReasonMalformed},

		// 2. structure
		{"empty", "", expectAccess(now), ReasonMalformed},
		{"one segment", h, expectAccess(now), ReasonMalformed},
		{"two segments", h + "." + p, expectAccess(now), ReasonMalformed},
		{"four segments", set.Access + ".", expectAccess(now), ReasonMalformed},
		{"four segments with data", set.Access + "." + s, expectAccess(now), ReasonMalformed},
		{"only dots", "..", expectAccess(now), ReasonMalformed},
		{"padded signature", set.Access + "=", expectAccess(now), ReasonMalformed},
		{"padded payload", h + "." + p + "==." + s, expectAccess(now), ReasonMalformed},
		{"standard alphabet in signature", h + "." + p + "." + strings.NewReplacer("-", "+", "_", "/").Replace(s) + "+/", expectAccess(now), ReasonMalformed},
		{"newline inside", h + "." + p[:10] + "\n" + p[10:] + "." + s, expectAccess(now), ReasonMalformed},
		{"trailing newline", set.Access + "\n", expectAccess(now), ReasonMalformed},
		{"leading space", " " + set.Access, expectAccess(now), ReasonMalformed},
		{"bearer prefix", "Bearer " + set.Access, expectAccess(now), ReasonMalformed},
		{"non-ascii", set.Access[:20] + "é" + set.Access[20:], expectAccess(now), ReasonMalformed},
		{"nul byte", set.Access + "\x00", expectAccess(now), ReasonMalformed},
		{"undecodable header", "A." + p + "." + s, expectAccess(now), ReasonMalformed},
		{"empty header", "." + p + "." + s, expectAccess(now), ReasonMalformed},

		// 3. header and algorithm
		{"alg none", enc(`{"typ":"JWT","alg":"none"}`) + "." + p + ".", expectAccess(now), ReasonAlgorithm},
		{"alg none with signature", enc(`{"typ":"JWT","alg":"none"}`) + "." + p + "." + s, expectAccess(now), ReasonAlgorithm},
		{"alg None", enc(`{"typ":"JWT","alg":"None"}`) + "." + p + ".", expectAccess(now), ReasonAlgorithm},
		{"HS256 keyed with the public key PEM", hmacWith(pubPEM, `{"typ":"JWT","alg":"HS256"}`), expectAccess(now), ReasonAlgorithm},
		{"HS256 keyed with the public key DER", hmacWith(pubDER, `{"typ":"JWT","alg":"HS256"}`), expectAccess(now), ReasonAlgorithm},
		{"PS256 by the generator key", pss, expectAccess(now), ReasonAlgorithm},
		{"RS384 by the generator key", rs384, expectAccess(now), ReasonAlgorithm},
		{"RS512 by the generator key", rs512, expectAccess(now), ReasonAlgorithm},
		{"ES256", es256, expectAccess(now), ReasonAlgorithm},
		{"alg lower case", enc(`{"typ":"JWT","alg":"rs256"}`) + "." + p + "." + s, expectAccess(now), ReasonAlgorithm},
		{"alg missing", enc(`{"typ":"JWT"}`) + "." + p + "." + s, expectAccess(now), ReasonAlgorithm},
		{"alg a number", enc(`{"typ":"JWT","alg":256}`) + "." + p + "." + s, expectAccess(now), ReasonAlgorithm},
		{"typ lower case", signSegments(t, k, enc(`{"typ":"jwt","alg":"RS256"}`), p), expectAccess(now), ReasonHeader},
		{"typ missing", signSegments(t, k, enc(`{"alg":"RS256"}`), p), expectAccess(now), ReasonHeader},
		{"typ JOSE", signSegments(t, k, enc(`{"typ":"JOSE","alg":"RS256"}`), p), expectAccess(now), ReasonHeader},
		{"extra kid", signSegments(t, k, enc(`{"typ":"JWT","alg":"RS256","kid":"1"}`), p), expectAccess(now), ReasonHeader},
		{"extra crit", signSegments(t, k, enc(`{"typ":"JWT","alg":"RS256","crit":["exp"]}`), p), expectAccess(now), ReasonHeader},
		{"duplicate alg", signSegments(t, k, enc(`{"alg":"none","typ":"JWT","alg":"RS256"}`), p), expectAccess(now), ReasonHeader},
		{"duplicate typ", signSegments(t, k, enc(`{"typ":"JWT","typ":"JWT","alg":"RS256"}`), p), expectAccess(now), ReasonHeader},
		{"header with whitespace", signSegments(t, k, enc(`{"typ":"JWT", "alg":"RS256"}`), p), expectAccess(now), ReasonHeader},
		{"header escaped", signSegments(t, k, enc(`{"typ":"JWT","alg":"RS\u0032\u0035\u0036"}`), p), expectAccess(now), ReasonHeader},
		{"header an array", signSegments(t, k, enc(`["RS256"]`), p), expectAccess(now), ReasonHeader},
		{"header trailing data", signSegments(t, k, enc(`{"typ":"JWT","alg":"RS256"}x`), p), expectAccess(now), ReasonHeader},
		{"header nested", signSegments(t, k, enc(`{"typ":"JWT","alg":"RS256","x":{"alg":"none"}}`), p), expectAccess(now), ReasonHeader},
		{"header too long", signSegments(t, k, enc(`{"typ":"JWT","alg":"RS256","pad":"`+strings.Repeat("x", 64)+`"}`), p), expectAccess(now), ReasonHeader},

		// 4. signature
		{"signature bit flipped", h + "." + p + "." + sigOf(flipped), expectAccess(now), ReasonSignature},
		{"signature truncated", set.Access[:len(set.Access)-1], expectAccess(now), ReasonSignature},
		{"signature extended", set.Access + "A", expectAccess(now), ReasonSignature},
		{"signature empty", h + "." + p + ".", expectAccess(now), ReasonSignature},
		{"signature of another token", h + "." + p + "." + strings.Split(set.Refresh, ".")[2], expectAccess(now), ReasonSignature},
		{"payload altered", h + "." + strings.Split(set.Refresh, ".")[1] + "." + s, expectAccess(now), ReasonSignature},
		{"signed by another generator key", otherSigned, expectAccess(now), ReasonSignature},
		{"signature zero", h + "." + p + "." + sigOf(make([]byte, 256)), expectAccess(now), ReasonSignature},
		{"signature equal to the modulus", h + "." + p + "." + sigOf(pub.N.Bytes()), expectAccess(now), ReasonSignature},

		// 5. claims (re-signed)
		{"duplicate 1 (REFRESH then ACCESS)", signJSON(t, Header, `{"sub":"s","iat":1729052876,"exp":1729063676,"1":"REFRESH","1":"ACCESS",`+tag+`,"3":"EXT","4":[0]}`), expectAccess(now), ReasonDuplicateClaim},
		{"duplicate 1 (ACCESS then REFRESH)", signJSON(t, Header, `{"sub":"s","iat":1729052876,"exp":1729063676,"1":"ACCESS","1":"REFRESH",`+tag+`,"3":"EXT","4":[0]}`), expectAccess(now), ReasonDuplicateClaim},
		{"duplicate exp", signJSON(t, Header, `{"sub":"s","iat":1729052876,"exp":1729052877,"exp":9999999999,"1":"ACCESS",`+tag+`,"3":"EXT","4":[0]}`), expectAccess(now), ReasonDuplicateClaim},
		{"duplicate 2", signJSON(t, Header, `{"sub":"s","iat":1729052876,"1":"ACCESS","2":"keytag__`+otherTag+`",`+tag+`,"3":"EXT","4":[0]}`), expectAccess(now), ReasonDuplicateClaim},
		{"payload an array", signJSON(t, Header, `[1]`), expectAccess(now), ReasonClaims},
		{"payload a string", signJSON(t, Header, `"ACCESS"`), expectAccess(now), ReasonClaims},
		{"payload null", signJSON(t, Header, `null`), expectAccess(now), ReasonClaims},
		{"payload empty", signJSON(t, Header, ``), expectAccess(now), ReasonMalformed},
		{"1 not a string", signJSON(t, Header, strings.Replace(claims("x"), `"1":"x"`, `"1":1`, 1)), expectAccess(now), ReasonClaims},
		{"4 not an array", signJSON(t, Header, strings.Replace(claims("ACCESS"), `"4":[0]`, `"4":0`, 1)), expectAccess(now), ReasonClaims},
		{"4 holds a string", signJSON(t, Header, strings.Replace(claims("ACCESS"), `"4":[0]`, `"4":["0"]`, 1)), expectAccess(now), ReasonClaims},
		{"unknown claim", signJSON(t, Header, strings.Replace(claims("ACCESS"), `{`, `{"aud":"x",`, 1)), expectAccess(now), ReasonClaims},
		{"payload with whitespace", signJSON(t, Header, strings.Replace(claims("ACCESS"), `,`, `, `, 1)), expectAccess(now), ReasonClaims},
		{"payload trailing garbage", signJSON(t, Header, claims("ACCESS")+"x"), expectAccess(now), ReasonClaims},
		{"payload trailing bits", signSegments(t, k, h, lastBits), expectAccess(now), ReasonMalformed},
		{"payload segment empty", signSegments(t, k, h, ""), expectAccess(now), ReasonMalformed},
		{"upper-case key tag in token", signJSON(t, Header, strings.Replace(claims("ACCESS"), testTag, strings.ToUpper(testTag), 1)), expectAccess(now), ReasonClaims},

		// 6. kind, key, time
		{"refresh where access is expected", set.Refresh, expectAccess(now), ReasonWrongKind},
		{"access where refresh is expected", set.Access, Expect{Kind: Refresh, KeyTag: testTag, Now: now}, ReasonWrongKind},
		{"bound to another key", set.Access, Expect{Kind: Access, KeyTag: otherTag, Now: now}, ReasonWrongKey},
		{"tag differing in one character", set.Access, Expect{Kind: Access, KeyTag: testTag[:63] + "e", Now: now}, ReasonWrongKey},
		{"wrong kind wins over expiry", set.Refresh, expectAccess(testNow.Add(100 * 24 * time.Hour)), ReasonWrongKind},
		{"wrong key wins over expiry", set.Access, Expect{Kind: Access, KeyTag: otherTag, Now: testNow.Add(100 * 24 * time.Hour)}, ReasonWrongKey},
		{"issued beyond the leeway", set.Access, expectAccess(testNow.Add(-IssuedAtLeeway - time.Nanosecond)), ReasonIssuedInFuture},
		{"issued an hour ahead", set.Access, expectAccess(testNow.Add(-time.Hour)), ReasonIssuedInFuture},
		{"expired: now equals exp", set.Access, expectAccess(set.AccessExpires), ReasonExpired},
		{"expired: a nanosecond after exp", set.Access, expectAccess(set.AccessExpires.Add(time.Nanosecond)), ReasonExpired},
		{"expired: a year after exp", set.Access, expectAccess(set.AccessExpires.AddDate(1, 0, 0)), ReasonExpired},
		{"refresh expired", set.Refresh, Expect{Kind: Refresh, KeyTag: testTag, Now: set.RefreshExpires}, ReasonExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Verify(tc.tok, pub, tc.want)
			if c != nil {
				t.Errorf("claims returned with an error")
			}
			assertReason(t, err, tc.r)
			assertNoTokenText(t, err.Error(), tc.tok)
		})
	}
}

// TestVerifyBoundaries checks the accepting side of every time limit.
func TestVerifyBoundaries(t *testing.T) {
	set := issueTestSet(t)
	pub := &testKey(t).PublicKey
	for _, tc := range []struct {
		name string
		now  time.Time
	}{
		{"at iat", testNow},
		{"iat exactly at the leeway", testNow.Add(-IssuedAtLeeway)},
		{"a nanosecond before exp", set.AccessExpires.Add(-time.Nanosecond)},
		{"a second before exp", set.AccessExpires.Add(-time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Verify(set.Access, pub, expectAccess(tc.now)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestVerifyAltHeader: the header's two members may come in either order
// (golang-jwt writes alg first).
func TestVerifyAltHeader(t *testing.T) {
	set := issueTestSet(t)
	_, p, _ := segments(t, set.Access)
	tok := signSegments(t, testKey(t), enc(altHeader), p)
	if _, err := Verify(tok, &testKey(t).PublicKey, expectAccess(testNow)); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyArguments(t *testing.T) {
	set := issueTestSet(t)
	pub := &testKey(t).PublicKey
	small, err := rsa.GenerateKey(nil, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pub  *rsa.PublicKey
		want Expect
	}{
		{"nil key", nil, expectAccess(testNow)},
		{"key without modulus", &rsa.PublicKey{E: 65537}, expectAccess(testNow)},
		{"1024-bit key", &small.PublicKey, expectAccess(testNow)},
		{"zero now", pub, Expect{Kind: Access, KeyTag: testTag}},
		{"zero kind", pub, Expect{KeyTag: testTag, Now: testNow}},
		{"unknown kind", pub, Expect{Kind: 9, KeyTag: testTag, Now: testNow}},
		{"empty key tag", pub, Expect{Kind: Access, Now: testNow}},
		{"upper-case key tag", pub, Expect{Kind: Access, KeyTag: strings.ToUpper(testTag), Now: testNow}},
		{"prefixed key tag", pub, Expect{Kind: Access, KeyTag: "keytag__" + testTag, Now: testNow}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(set.Access, tc.pub, tc.want)
			if !errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestVerifiedRecheck(t *testing.T) {
	set := issueTestSet(t)
	c, err := Verify(set.Access, &testKey(t).PublicKey, expectAccess(testNow))
	if err != nil {
		t.Fatal(err)
	}
	v := &Verified{GeneratorID: testGenID, Claims: *c}
	for _, tc := range []struct {
		name  string
		genID string
		want  Expect
		r     Reason // 0: passes
	}{
		{"current generator", testGenID, expectAccess(testNow), 0},
		{"rotated generator", strings.Repeat("f", 64), expectAccess(testNow), ReasonStaleGenerator},
		{"no generator", "", expectAccess(testNow), ReasonStaleGenerator},
		{"stale generator wins over expiry", strings.Repeat("f", 64), expectAccess(set.AccessExpires), ReasonStaleGenerator},
		{"wrong kind", testGenID, Expect{Kind: Refresh, KeyTag: testTag, Now: testNow}, ReasonWrongKind},
		{"wrong key", testGenID, Expect{Kind: Access, KeyTag: otherTag, Now: testNow}, ReasonWrongKey},
		{"clock went back", testGenID, expectAccess(testNow.Add(-time.Hour)), ReasonIssuedInFuture},
		{"expired since", testGenID, expectAccess(set.AccessExpires), ReasonExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Recheck(tc.genID, tc.want)
			if tc.r == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			assertReason(t, err, tc.r)
		})
	}
	if err := v.Recheck(testGenID, Expect{Kind: Access, KeyTag: testTag}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("zero Now: %v", err)
	}
	if err := c.Check(expectAccess(set.AccessExpires)); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("Check at exp: %v", err)
	}
}

func TestErrorText(t *testing.T) {
	for r := ReasonTooLarge; r <= ReasonExpired; r++ {
		msg := (&Error{Op: "verify", Reason: r}).Error()
		if !strings.HasPrefix(msg, "token: verify: ") || strings.Contains(msg, "unknown") || msg != strings.ToLower(msg) {
			t.Errorf("reason %d: %q", r, msg)
		}
	}
	if s := Reason(0).String(); s != "unknown reason" {
		t.Errorf("Reason(0) = %q", s)
	}
	if s := Reason(200).String(); s != "unknown reason" {
		t.Errorf("Reason(200) = %q", s)
	}
}
