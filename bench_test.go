package kms_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"

	"github.com/pocketkms/kms"
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
			defer reportCPU(b)()
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
			defer reportCPU(b)()
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
			defer reportCPU(b)()
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
			defer reportCPU(b)()
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
