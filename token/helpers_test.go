package token

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"
)

// RSA key generation is slow on small machines: each test binary makes its
// keys once and shares them.
var (
	keyOnce, otherKeyOnce sync.Once
	key, otherKey         *rsa.PrivateKey
)

func testKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	keyOnce.Do(func() { key = mustKey(tb) })
	return key
}

// otherTestKey is a second generator key, for "signed by another key".
func otherTestKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	otherKeyOnce.Do(func() { otherKey = mustKey(tb) })
	return otherKey
}

func mustKey(tb testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(nil, 2048) // the reader is ignored since Go 1.26
	if err != nil {
		tb.Fatalf("GenerateKey: %v", err)
	}
	return k
}

const (
	testTag   = "a6876c471a8bebc56dc0d664d3c64d453ee178205a4abad1849651de3fa6405d"
	otherTag  = "0000000000000000000000000000000000000000000000000000000000000001"
	testSub   = "5b126890-c081-11ec-ba6e-246e96591594"
	testGenID = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
)

// testNow is the issue time of the tokens made by issueTestSet.
var testNow = time.Unix(1729052876, 0).UTC()

// issueTestSet issues a set at testNow: access 3 h, refresh 12 h (the
// lifetimes of NAVER's example tokens).
func issueTestSet(tb testing.TB) Set {
	tb.Helper()
	set, err := IssueSet(testKey(tb), Request{
		KeyTag:      testTag,
		Subject:     testSub,
		Permissions: []Permission{PermEncrypt, PermDecrypt, PermSign},
		AccessTTL:   TTL{Minutes: 180},
		RefreshTTL:  TTL{Minutes: 720},
		Now:         testNow,
	})
	if err != nil {
		tb.Fatalf("IssueSet: %v", err)
	}
	return set
}

func expectAccess(now time.Time) Expect {
	return Expect{Kind: Access, KeyTag: testTag, Now: now}
}

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// signSegments returns headerSeg.payloadSeg.sig with a valid RS256
// signature by k over whatever the two segments are, so tests can check
// what happens after the signature has verified.
func signSegments(tb testing.TB, k *rsa.PrivateKey, headerSeg, payloadSeg string) string {
	tb.Helper()
	input := headerSeg + "." + payloadSeg
	d := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, k, crypto.SHA256, d[:])
	if err != nil {
		tb.Fatalf("SignPKCS1v15: %v", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// signJSON signs a header and a payload given as JSON text.
func signJSON(tb testing.TB, header, payload string) string {
	tb.Helper()
	return signSegments(tb, testKey(tb), enc(header), enc(payload))
}

// segments returns the three segments of tok.
func segments(tb testing.TB, tok string) (h, p, s string) {
	tb.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		tb.Fatalf("token has %d segments", len(parts))
	}
	return parts[0], parts[1], parts[2]
}

// assertNoTokenText fails if text holds tok or any of its segments.
func assertNoTokenText(tb testing.TB, text string, toks ...string) {
	tb.Helper()
	for _, tok := range toks {
		if tok == "" {
			continue
		}
		if strings.Contains(text, tok) {
			tb.Errorf("output contains a token: %q", text)
			continue
		}
		// The header segment is the same constant in every token; the
		// payload and signature segments are what identify one.
		for _, seg := range strings.Split(tok, ".")[1:] {
			if len(seg) >= 16 && strings.Contains(text, seg) {
				tb.Errorf("output contains a token segment: %q", text)
			}
		}
	}
}
