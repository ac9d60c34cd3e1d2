package kms_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/pocketkms/kms"
)

// BenchmarkCreateKey is a persisted AES256 CreateKey: key generation in
// the memory backend, its shred key and one synced store commit (Badger
// with its integrity record, in a temporary directory), from one caller
// (writers=1) and from four at once (writers=4; commits in flight
// together share their syncs).
func BenchmarkCreateKey(b *testing.B) {
	e := newEngine(b, kms.WithDirectory(b.TempDir()), kms.WithMaintenanceInterval(0))
	benchCreateKeys(b, e, "key")
}

// benchCreateKeys runs the writers=1 and writers=4 CreateKey benchmarks
// on e, naming keys with prefix.
func benchCreateKeys(b *testing.B, e *kms.Engine, prefix string) {
	ctx := context.Background()
	var i atomic.Int64
	create := func() error {
		_, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: fmt.Sprintf("%s%d", prefix, i.Add(1)), Type: kms.AES256})
		return err
	}
	b.Run("writers=1", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := create(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("writers=4", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(max(1, 4/runtimeProcs()))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := create(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkRotateKey is a persisted rotation of an AES256 key, from one
// caller and from four at once, each on its own keys, spread so that none
// reaches the version limit.
func BenchmarkRotateKey(b *testing.B) {
	ctx := context.Background()
	e := newEngine(b, kms.WithDirectory(b.TempDir()), kms.WithMaintenanceInterval(0))
	var made atomic.Int64
	// rotator rotates keys of its own, making a new one every
	// MaxVersions-1 rotations.
	rotator := func(b *testing.B) func() error {
		var tag string
		n := 0
		return func() error {
			if n%(kms.MaxVersions-1) == 0 {
				k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: fmt.Sprintf("rot%d", made.Add(1)), Type: kms.AES256})
				if err != nil {
					return err
				}
				tag = k.Tag
			}
			n++
			_, err := e.RotateKey(ctx, tag)
			return err
		}
	}
	b.Run("writers=1", func(b *testing.B) {
		rotate := rotator(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := rotate(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("writers=4", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(max(1, 4/runtimeProcs()))
		b.RunParallel(func(pb *testing.PB) {
			rotate := rotator(b)
			for pb.Next() {
				if err := rotate(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// runtimeProcs is GOMAXPROCS: RunParallel starts parallelism times as
// many goroutines.
func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
