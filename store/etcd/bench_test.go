package etcdstore_test

// The hot path of an etcd-backed Engine against a Badger-backed one, in
// the same run, beside raw AES-GCM; and the cost of an administrative
// change on the 3-member loopback cluster.
//
//	go test -run '^$' -bench . -benchmem -cpu 1 -count 6 ./store/etcd/

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/ratelimit"
	etcdstore "github.com/pocketkms/kms/store/etcd"
)

var benchPrefix atomic.Int64

// benchEngines returns an Engine of each kind: "badger" in a directory,
// "etcd" on the shared cluster, beside two more stores registered under
// its prefix, so that it enforces a third of each rate limit as a
// replica of three would.
func benchEngine(b *testing.B, kind string) *kms.Engine {
	b.Helper()
	ctx := context.Background()
	be, err := memory.New(rootKey)
	if err != nil {
		b.Fatal(err)
	}
	opts := []kms.Option{kms.WithMaintenanceInterval(0)}
	// The in-process cluster's members (raft ticks, lease keep-alives)
	// share the benchmark's CPU: start it for both kinds, so that the two
	// run beside the same background work and differ only in their store.
	c := shared(b)
	switch kind {
	case "badger":
		opts = append(opts, kms.WithDirectory(b.TempDir()))
	case "etcd":
		prefix := fmt.Sprintf("bench/%d/", benchPrefix.Add(1))
		var sts []*etcdstore.Store
		for range 3 {
			cli, err := c.NewClient()
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { cli.Close() })
			st, err := etcdstore.New(ctx, cli, prefix)
			if err != nil {
				b.Fatal(err)
			}
			sts = append(sts, st)
		}
		b.Cleanup(func() { sts[1].Close(); sts[2].Close() })
		for sts[0].Members() != 3 {
			time.Sleep(time.Millisecond)
		}
		opts = append(opts, kms.WithStore(sts[0]))
	}
	e, err := kms.New(ctx, be, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e
}

// benchKey is benchEngine with the AES256 key "bench" created in it.
func benchKey(b *testing.B, kind string) (*kms.Engine, *kms.Key) {
	e := benchEngine(b, kind)
	k, err := e.CreateKey(context.Background(), kms.CreateKeyRequest{Name: "bench", Type: kms.AES256})
	if err != nil {
		b.Fatal(err)
	}
	return e, k
}

func BenchmarkRawAESGCM1KiB(b *testing.B) {
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	pt := make([]byte, 1024)
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		nonce := make([]byte, 12)
		rand.Read(nonce)
		_ = aead.Seal(nonce, nonce, pt, nil)
	}
}

// BenchmarkEncrypt1KiB: trusted-plane Encrypt of 1 KiB.
func BenchmarkEncrypt1KiB(b *testing.B) {
	for _, kind := range []string{"badger", "etcd"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			e, k := benchKey(b, kind)
			pt := make([]byte, 1024)
			b.SetBytes(1024)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Encrypt(ctx, k.Tag, pt, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTokenEncrypt1KiB: token-plane Encrypt of 1 KiB (a cached
// token, a rate limit high enough never to refuse: the limiter runs).
func BenchmarkTokenEncrypt1KiB(b *testing.B) {
	for _, kind := range []string{"badger", "etcd"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			e, k := benchKey(b, kind)
			if err := e.SetKeyRateLimit(ctx, k.Tag, ratelimit.Limit{Rate: 1e9, Burst: 1 << 30}); err != nil {
				b.Fatal(err)
			}
			if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
				b.Fatal(err)
			}
			set, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			tc := e.WithToken(set.Access, netip.MustParseAddr("10.0.0.1"))
			pt := make([]byte, 1024)
			b.SetBytes(1024)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.Encrypt(ctx, k.Tag, pt, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAdminChange: one administrative change (a memo update: one
// transaction rewriting the key record), one caller at a time: ns/op is
// its latency, 1e9/(ns/op) changes per second.
func BenchmarkAdminChange(b *testing.B) {
	for _, kind := range []string{"badger", "etcd"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			e, k := benchKey(b, kind)
			memos := [2]string{"a", "b"}
			i := 0
			for b.Loop() {
				i++
				if _, err := e.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{Memo: &memos[i%2]}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAdminChangeParallel: changes from 16 callers at once, each on
// a key of its own: 1e9/(ns/op) is the changes per second the store
// sustains.
func BenchmarkAdminChangeParallel(b *testing.B) {
	for _, kind := range []string{"badger", "etcd"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			e := benchEngine(b, kind)
			var next atomic.Int64
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: fmt.Sprintf("bench-%d", next.Add(1)), Type: kms.AES256})
				if err != nil {
					b.Error(err)
					return
				}
				memos := [2]string{"a", "b"}
				i := 0
				for pb.Next() {
					i++
					if _, err := e.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{Memo: &memos[i%2]}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
