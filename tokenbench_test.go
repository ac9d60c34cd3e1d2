package kms_test

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"math/big"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/internal/cputime"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/token"
)

// benchTokenKey makes an engine with one AES key, an active generator and
// an access token.
func benchTokenKey(b *testing.B, opts ...kms.Option) (*kms.Engine, string, *token.Set) {
	b.Helper()
	e := newEngine(b, opts...)
	ctx := context.Background()
	k := createKey(b, e, "bench", kms.AES256, false)
	if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		b.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	return e, k.Tag, set
}

func runTokenEncrypt(b *testing.B, c kms.TokenClient, tag string) {
	ctx := context.Background()
	pt := make([]byte, 1024)
	if _, err := c.Encrypt(ctx, tag, pt, nil); err != nil { // warm the cache
		b.Fatal(err)
	}
	b.SetBytes(1024)
	b.ReportAllocs()
	b.ResetTimer()
	defer cputime.Report(b)()
	for b.Loop() {
		if _, err := c.Encrypt(ctx, tag, pt, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenEncrypt is the token plane with a cached token (memory
// backend, default 300/s limit switched off so the loop measures the
// path, not the bucket). ACL1000 adds an enabled allow-list of 1,000
// mixed entries; Limiter keeps the limiter on with a huge budget.
func BenchmarkTokenEncrypt(b *testing.B) {
	unlimited := kms.WithRateLimit(ratelimit.Limit{Unlimited: true})
	b.Run("1KiB", func(b *testing.B) {
		e, tag, set := benchTokenKey(b, unlimited)
		runTokenEncrypt(b, e.WithToken(set.Access, callerIP), tag)
	})
	b.Run("1KiB-ACL1000", func(b *testing.B) {
		e, tag, set := benchTokenKey(b, unlimited)
		benchACL1000(b, e, tag)
		runTokenEncrypt(b, e.WithToken(set.Access, callerIP), tag)
	})
	b.Run("1KiB-Limiter", func(b *testing.B) {
		e, tag, set := benchTokenKey(b, kms.WithRateLimit(ratelimit.Limit{Rate: 1e9, Burst: 1 << 30}))
		runTokenEncrypt(b, e.WithToken(set.Access, callerIP), tag)
	})
	// Issue 19's row: the allow-list and the limiter both on.
	b.Run("1KiB-ACL1000-Limiter", func(b *testing.B) {
		e, tag, set := benchTokenKey(b, kms.WithRateLimit(ratelimit.Limit{Rate: 1e9, Burst: 1 << 30}))
		benchACL1000(b, e, tag)
		runTokenEncrypt(b, e.WithToken(set.Access, callerIP), tag)
	})
}

// benchACL1000 enables an allow-list of 1,000 mixed entries on the key
// (/24 ranges, wildcards, single addresses) that admits callerIP.
func benchACL1000(b *testing.B, e *kms.Engine, tag string) {
	b.Helper()
	ctx := context.Background()
	if _, err := e.SetKeyACLEnabled(ctx, tag, true); err != nil {
		b.Fatal(err)
	}
	var entries []string
	for i := 0; len(entries) < 1000; i++ {
		switch i % 3 {
		case 0:
			entries = append(entries, fmt.Sprintf("172.%d.%d.0/24", 16+i%16, i%250))
		case 1:
			entries = append(entries, fmt.Sprintf("10.%d.*.%d", i%250, i%200))
		default:
			entries = append(entries, fmt.Sprintf("192.168.%d.%d", i%250, 1+i%250))
		}
		if len(entries)%100 == 0 {
			if _, err := e.AddAllowedIPs(ctx, tag, entries[len(entries)-100:]); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := e.AddAllowedIPs(ctx, tag, []string{"10.1.2.3"}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkTokenEncryptParallel runs the cached-token path from every core.
func BenchmarkTokenEncryptParallel(b *testing.B) {
	e, tag, set := benchTokenKey(b, kms.WithRateLimit(ratelimit.Limit{Unlimited: true}))
	c := e.WithToken(set.Access, callerIP)
	ctx := context.Background()
	pt := make([]byte, 1024)
	c.Encrypt(ctx, tag, pt, nil)
	b.SetBytes(1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Encrypt(ctx, tag, pt, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkTokenEncryptColdToken makes every call verify its token's
// RS256 signature: a one-entry cache and 16 tokens used in turn.
func BenchmarkTokenEncryptColdToken(b *testing.B) {
	e, tag, _ := benchTokenKey(b, kms.WithTokenCacheSize(1), kms.WithRateLimit(ratelimit.Limit{Unlimited: true}))
	ctx := context.Background()
	var clients []kms.TokenClient
	for i := range 16 {
		set, err := e.IssueTokens(ctx, tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: fmt.Sprintf("s%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, e.WithToken(set.Access, callerIP))
	}
	pt := make([]byte, 1024)
	b.SetBytes(1024)
	b.ReportAllocs()
	i := 0
	defer cputime.Report(b)()
	for b.Loop() {
		if _, err := clients[i%len(clients)].Encrypt(ctx, tag, pt, nil); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkRawRS256VerifyAESGCM is the floor for a cold token: one RS256
// verification (rsa.VerifyPKCS1v15 over a token-sized input) plus one
// AES-256-GCM seal of 1 KiB with a random nonce.
func BenchmarkRawRS256VerifyAESGCM(b *testing.B) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	input := make([]byte, 520)
	digest := sha256.Sum256(input)
	sig, _ := rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, digest[:])
	pub := &rsa.PublicKey{N: new(big.Int).Set(priv.N), E: priv.E}
	key := make([]byte, 32)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	pt := make([]byte, 1024)
	b.SetBytes(1024)
	b.ReportAllocs()
	defer cputime.Report(b)()
	for b.Loop() {
		d := sha256.Sum256(input)
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig); err != nil {
			b.Fatal(err)
		}
		nonce := make([]byte, 12)
		rand.Read(nonce)
		_ = aead.Seal(nonce, nonce, pt, nil)
	}
}

// BenchmarkIssueTokens reports token sets issued per second (two RS256
// signatures and one synced count update each).
func BenchmarkIssueTokens(b *testing.B) {
	e, tag, _ := benchTokenKey(b)
	ctx := context.Background()
	b.ReportAllocs()
	defer cputime.Report(b)()
	for b.Loop() {
		if _, err := e.IssueTokens(ctx, tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sets/s")
}
