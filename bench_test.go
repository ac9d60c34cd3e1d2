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
)

var benchSizes = []struct {
	name string
	n    int
}{{"32B", 32}, {"1KiB", 1024}, {"32KiB", 32 * 1024}}

// BenchmarkRawAESGCM is the floor: crypto/aes GCM with a fresh random
// 12-byte nonce, nothing else.
func BenchmarkRawAESGCM(b *testing.B) {
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			pt := make([]byte, s.n)
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			defer cputime.Report(b)()
			for b.Loop() {
				nonce := make([]byte, 12)
				rand.Read(nonce)
				_ = aead.Seal(nonce, nonce, pt, nil)
			}
		})
	}
}

// BenchmarkRawAESGCMOpen is Decrypt's floor: crypto/aes GCM opening a
// sealed body (nonce ‖ ciphertext ‖ tag) into a fresh buffer.
func BenchmarkRawAESGCMOpen(b *testing.B) {
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			nonce := make([]byte, 12)
			rand.Read(nonce)
			body := aead.Seal(nonce, nonce, make([]byte, s.n), nil)
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			defer cputime.Report(b)()
			for b.Loop() {
				if _, err := aead.Open(nil, body[:12], body[12:], nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRawAESGCMParallel is the floor for the parallel benchmarks:
// 1 KiB sealed from every core with one shared AEAD, as the Engine shares
// one per key version.
func BenchmarkRawAESGCMParallel(b *testing.B) {
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	pt := make([]byte, 1024)
	b.SetBytes(1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			nonce := make([]byte, 12)
			rand.Read(nonce)
			_ = aead.Seal(nonce, nonce, pt, nil)
		}
	})
}

func benchKey(b *testing.B) (*kms.Engine, string) {
	e := newEngine(b)
	k := createKey(b, e, "bench", kms.AES256, false)
	return e, k.Tag
}

// BenchmarkEncrypt is the trusted-plane Encrypt on the memory backend.
func BenchmarkEncrypt(b *testing.B) {
	e, tag := benchKey(b)
	ctx := context.Background()
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			pt := make([]byte, s.n)
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			defer cputime.Report(b)()
			for b.Loop() {
				if _, err := e.Encrypt(ctx, tag, pt, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecrypt is the trusted-plane Decrypt on the memory backend.
func BenchmarkDecrypt(b *testing.B) {
	e, tag := benchKey(b)
	ctx := context.Background()
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			ct, err := e.Encrypt(ctx, tag, make([]byte, s.n), nil)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			defer cputime.Report(b)()
			for b.Loop() {
				if _, err := e.Decrypt(ctx, tag, ct, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncryptParallel runs Encrypt 1 KiB from every core on one key.
func BenchmarkEncryptParallel(b *testing.B) {
	e, tag := benchKey(b)
	ctx := context.Background()
	pt := make([]byte, 1024)
	b.SetBytes(1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.Encrypt(ctx, tag, pt, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkVsRaw is issue 19's table measured the way a shared 2-core
// machine allows: each Engine call against its raw baseline in
// alternating batches, by CPU time (see cputime.Paired). Run it with -cpu 1
// and a fixed count of batch pairs:
//
//	go test -run '^$' -bench '^BenchmarkVsRaw$' -benchtime 400x -cpu 1 .
func BenchmarkVsRaw(b *testing.B) {
	ctx := context.Background()
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	pt := make([]byte, 1024)
	seal := func() {
		nonce := make([]byte, 12)
		rand.Read(nonce)
		_ = aead.Seal(nonce, nonce, pt, nil)
	}
	body := aead.Seal(make([]byte, 12), make([]byte, 12), pt, nil)
	open := func() {
		if _, err := aead.Open(nil, body[:12], body[12:], nil); err != nil {
			b.Fatal(err)
		}
	}
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	// The method's own noise: the baseline against itself.
	b.Run("Seal/Seal", func(b *testing.B) { cputime.Paired(b, 500, seal, seal) })
	b.Run("Encrypt-1KiB/Seal", func(b *testing.B) {
		e, tag := benchKey(b)
		cputime.Paired(b, 500, seal, func() { _, err := e.Encrypt(ctx, tag, pt, nil); must(err) })
	})
	b.Run("Decrypt-1KiB/Open", func(b *testing.B) {
		e, tag := benchKey(b)
		ct, err := e.Encrypt(ctx, tag, pt, nil)
		must(err)
		cputime.Paired(b, 500, open, func() { _, err := e.Decrypt(ctx, tag, ct, nil); must(err) })
	})
	b.Run("TokenEncrypt-1KiB/Seal", func(b *testing.B) {
		e, tag, set := benchTokenKey(b, kms.WithRateLimit(ratelimit.Limit{Unlimited: true}))
		c := e.WithToken(set.Access, callerIP)
		cputime.Paired(b, 500, seal, func() { _, err := c.Encrypt(ctx, tag, pt, nil); must(err) })
	})
	b.Run("TokenEncrypt-1KiB-ACL1000-Limiter/Seal", func(b *testing.B) {
		e, tag, set := benchTokenKey(b, kms.WithRateLimit(ratelimit.Limit{Rate: 1e9, Burst: 1 << 30}))
		benchACL1000(b, e, tag)
		c := e.WithToken(set.Access, callerIP)
		cputime.Paired(b, 500, seal, func() { _, err := c.Encrypt(ctx, tag, pt, nil); must(err) })
	})
	b.Run("ColdToken/RS256Verify+Seal", func(b *testing.B) {
		e, tag, _ := benchTokenKey(b, kms.WithTokenCacheSize(1), kms.WithRateLimit(ratelimit.Limit{Unlimited: true}))
		var clients []kms.TokenClient
		for i := range 16 {
			set, err := e.IssueTokens(ctx, tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: fmt.Sprintf("s%d", i)})
			must(err)
			clients = append(clients, e.WithToken(set.Access, callerIP))
		}
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		must(err)
		input := make([]byte, 520)
		digest := sha256.Sum256(input)
		sig, _ := rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, digest[:])
		pub := &rsa.PublicKey{N: new(big.Int).Set(priv.N), E: priv.E}
		i := 0
		cputime.Paired(b, 20, func() {
			d := sha256.Sum256(input)
			must(rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig))
			seal()
		}, func() {
			_, err := clients[i%len(clients)].Encrypt(ctx, tag, pt, nil)
			must(err)
			i++
		})
	})
}
