package token

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"strings"
	"testing"
	"time"
)

// BenchmarkIssueSet issues an access and refresh token pair: two RSA-2048
// signatures, each checked after signing.
func BenchmarkIssueSet(b *testing.B) {
	k := testKey(b)
	r := baseRequest()
	r.Permissions = AllPermissions()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := IssueSet(k, r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sets/s")
}

// BenchmarkVerify is a cold verification: size and structure checks,
// header, RS256 signature, strict claim parsing and the claim checks.
// Compare with BenchmarkRawRS256Verify.
func BenchmarkVerify(b *testing.B) {
	set := issueTestSet(b)
	pub := &testKey(b).PublicKey
	want := expectAccess(testNow.Add(time.Minute))
	b.SetBytes(int64(len(set.Access)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(set.Access, pub, want); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawRS256Verify is the primitive under Verify: SHA-256 of the
// signing input and rsa.VerifyPKCS1v15, with the signature already decoded.
func BenchmarkRawRS256Verify(b *testing.B) {
	set := issueTestSet(b)
	pub := &testKey(b).PublicKey
	i := strings.LastIndexByte(set.Access, '.')
	input := []byte(set.Access[:i])
	sig, err := b64.DecodeString(set.Access[i+1:])
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(set.Access)))
	b.ReportAllocs()
	for b.Loop() {
		d := sha256.Sum256(input)
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyAfterSignature is the part of Verify that is not the RSA
// primitive: the structure and header checks, base64 decoding, and the
// strict claims parse with its canonical re-encoding.
func BenchmarkVerifyAfterSignature(b *testing.B) {
	set := issueTestSet(b)
	_, p, _ := segments(b, set.Access)
	b.ReportAllocs()
	for b.Loop() {
		payload, err := b64.DecodeString(p)
		if err != nil {
			b.Fatal(err)
		}
		if _, r := parseClaims(payload); r != 0 {
			b.Fatal(r)
		}
	}
}

// BenchmarkVerifyJunk is the cost of refusing a malformed token.
func BenchmarkVerifyJunk(b *testing.B) {
	pub := &testKey(b).PublicKey
	want := expectAccess(testNow)
	junk := strings.Repeat("A", 700) + ".x"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(junk, pub, want); err == nil {
			b.Fatal("verified")
		}
	}
}

// BenchmarkCacheHit is the hot path of a token-plane call: Get and Recheck.
func BenchmarkCacheHit(b *testing.B) {
	set := issueTestSet(b)
	c, v, want := warmCache(b, set)
	b.ReportAllocs()
	for b.Loop() {
		got, ok := c.Get(set.Access)
		if !ok || got.Recheck(testGenID, want) != nil {
			b.Fatal("miss")
		}
	}
	_ = v
}

// BenchmarkCacheHitParallel is BenchmarkCacheHit from every P at once, all
// presenting the same token (one client's access token): the worst case
// for lock contention.
func BenchmarkCacheHitParallel(b *testing.B) {
	set := issueTestSet(b)
	c, _, want := warmCache(b, set)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			got, ok := c.Get(set.Access)
			if !ok || got.Recheck(testGenID, want) != nil {
				b.Fatal("miss")
			}
		}
	})
}

// BenchmarkCachePut is the cost of recording a new verification in a full
// cache of 10,000 entries (a shard copy and an eviction).
func BenchmarkCachePut(b *testing.B) {
	c, _ := NewCache(10_000)
	v := verified(testGenID)
	toks := make([]string, 20_000)
	for i := range toks {
		toks[i] = fakeToken(i)
		c.Put(toks[i], v)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Put(toks[i%len(toks)], v)
		i++
	}
}

func warmCache(b *testing.B, set Set) (*Cache, *Verified, Expect) {
	b.Helper()
	want := expectAccess(testNow.Add(time.Minute))
	cl, err := Verify(set.Access, &testKey(b).PublicKey, want)
	if err != nil {
		b.Fatal(err)
	}
	c, _ := NewCache(10_000)
	for i := range 5_000 {
		c.Put(fakeToken(i), verified(testGenID))
	}
	v := &Verified{GeneratorID: testGenID, Claims: *cl}
	c.Put(set.Access, v)
	return c, v, want
}

// BenchmarkCtEqual compares the cache's word-wise constant-time comparison
// with crypto/subtle's byte-wise one on a 750-byte token.
func BenchmarkCtEqual(b *testing.B) {
	x := strings.Repeat("eyJhbGciOiJSUzI1NiJ9.", 36)[:750]
	y := strings.Clone(x)
	b.Run("ctEqual", func(b *testing.B) {
		for b.Loop() {
			if !ctEqual(x, y) {
				b.Fatal("unequal")
			}
		}
	})
	b.Run("subtle.ConstantTimeCompare", func(b *testing.B) {
		xb, yb := []byte(x), []byte(y)
		for b.Loop() {
			if subtle.ConstantTimeCompare(xb, yb) != 1 {
				b.Fatal("unequal")
			}
		}
	})
}

// BenchmarkParseClaims parses a typical access token's payload: the
// positional fast path that runs first, and json.Unmarshal (quickClaims)
// that ran before it.
func BenchmarkParseClaims(b *testing.B) {
	payload := []byte(`{"sub":"bench","iat":1700000000,"exp":1700003600,"1":"ACCESS","2":"keytag__` + testTag + `","3":"EXT","4":[0,1,2,3,4,5,6,7],"jti":"AAAAAAAAAAAAAAAAAAAAAA"}`)
	if _, ok := fastClaims(payload); !ok {
		b.Fatal("fastClaims refused the payload")
	}
	b.Run("fastClaims", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			fastClaims(payload)
		}
	})
	b.Run("quickClaims", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			quickClaims(payload)
		}
	})
}
