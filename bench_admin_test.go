package kms_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pocketkms/kms"
)

// BenchmarkCreateKey is a persisted AES256 CreateKey: key generation in
// the memory backend and one synced store commit (Badger with its
// integrity record, in a temporary directory).
func BenchmarkCreateKey(b *testing.B) {
	ctx := context.Background()
	e := newEngine(b, kms.WithDirectory(b.TempDir()), kms.WithMaintenanceInterval(0))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: fmt.Sprintf("key%d", i), Type: kms.AES256}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRotateKey is a persisted rotation of an AES256 key, spread
// over keys so that none reaches the version limit.
func BenchmarkRotateKey(b *testing.B) {
	ctx := context.Background()
	e := newEngine(b, kms.WithDirectory(b.TempDir()), kms.WithMaintenanceInterval(0))
	var tags []string
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if i%(kms.MaxVersions-1) == 0 {
			b.StopTimer()
			k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: fmt.Sprintf("rot%d", len(tags)), Type: kms.AES256})
			if err != nil {
				b.Fatal(err)
			}
			tags = append(tags, k.Tag)
			b.StartTimer()
		}
		i++
		if _, err := e.RotateKey(ctx, tags[len(tags)-1]); err != nil {
			b.Fatal(err)
		}
	}
}
