package ratelimit

import (
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// The benchmarks run on the real clock (time.Now, as in production) with a
// limit high enough that every call is admitted, so they measure the
// admitting path; BenchmarkAllowRefused measures the refusing one. Compare
// each with the BenchmarkRaw* line beside it: the difference is what this
// package adds to a bare rate.Limiter.

// benchLimit admits every call a benchmark can make.
var benchLimit = Limit{Rate: MaxRate, Burst: 1 << 30}

// benchKey is a key tag: 64 lowercase hex digits.
func benchKey(i int) string {
	s := strconv.FormatUint(uint64(i)*0x9e3779b97f4a7c15, 16)
	for len(s) < 64 {
		s = "0" + s
	}
	return s
}

func newBench(b *testing.B) *Limiter {
	b.Helper()
	l, err := New(WithDefaultLimit(benchLimit))
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkRawRateLimiter is a bare rate.Limiter on one key: the baseline
// for BenchmarkAllow.
func BenchmarkRawRateLimiter(b *testing.B) {
	lim := rate.NewLimiter(rate.Limit(benchLimit.Rate), benchLimit.Burst)
	b.ReportAllocs()
	for b.Loop() {
		if !lim.AllowN(time.Now(), 1) {
			b.Fatal("refused")
		}
	}
}

// BenchmarkAllow is one key, one goroutine.
func BenchmarkAllow(b *testing.B) {
	l := newBench(b)
	key := benchKey(1)
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Allow(key, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowAt is BenchmarkAllow with the caller's own clock reading,
// as the Engine's token plane calls it.
func BenchmarkAllowAt(b *testing.B) {
	l := newBench(b)
	key := benchKey(1)
	b.ReportAllocs()
	for b.Loop() {
		if err := l.AllowAt(key, 1, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowLimitAt is BenchmarkAllowAt with the key's own limit
// passed on every call, as the Engine passes the limit in the key's
// snapshot: the bucket exists under that limit, so the cost over AllowAt
// is one comparison of limits.
func BenchmarkAllowLimitAt(b *testing.B) {
	l := newBench(b)
	key := benchKey(1)
	lim := Limit{Rate: MaxRate, Burst: 1 << 29} // not the default
	b.ReportAllocs()
	for b.Loop() {
		if err := l.AllowLimitAt(key, lim, 1, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowLimitChange changes the key's limit on every call, between
// two limits: the rare path, which takes the shard's write lock, moves
// the bucket and clones the key.
func BenchmarkAllowLimitChange(b *testing.B) {
	l := newBench(b)
	key := benchKey(1)
	lims := [2]Limit{{Rate: MaxRate, Burst: 1 << 29}, {Rate: MaxRate / 2, Burst: 1 << 29}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := l.AllowLimitAt(key, lims[i&1], 1, time.Now()); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkAllowRefused is one drained key, one goroutine: every call is
// refused and allocates its error.
func BenchmarkAllowRefused(b *testing.B) {
	l, err := New(WithDefaultLimit(Limit{Rate: 1e-3, Burst: 1}))
	if err != nil {
		b.Fatal(err)
	}
	key := benchKey(1)
	_ = l.Allow(key, 1)
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Allow(key, 1); !errors.Is(err, ErrRateLimited) {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowDisabled is a Limiter switched off engine-wide.
func BenchmarkAllowDisabled(b *testing.B) {
	l, err := New(WithDefaultLimit(Limit{Unlimited: true}))
	if err != nil {
		b.Fatal(err)
	}
	key := benchKey(1)
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Allow(key, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowUnlimitedKey is one key passed an unlimited limit of its
// own while the default limits every other key.
func BenchmarkAllowUnlimitedKey(b *testing.B) {
	l := newBench(b)
	key := benchKey(1)
	off := Limit{Unlimited: true}
	b.ReportAllocs()
	for b.Loop() {
		if err := l.AllowLimit(key, off, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowNewKey makes a new bucket on every call (1<<20 keys in
// turn, under the default bound): the insert path, sweeps and shedding
// included.
func BenchmarkAllowNewKey(b *testing.B) {
	l := newBench(b)
	keys := make([]string, 1<<20)
	for i := range keys {
		keys[i] = benchKey(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := l.Allow(keys[i&(len(keys)-1)], 1); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// parallelKeys is how many keys BenchmarkAllowParallel spreads over.
const parallelKeys = 1024

// BenchmarkRawRateLimiterParallel is a bare rate.Limiter per key, across
// parallelKeys keys from every P: the baseline for BenchmarkAllowParallel.
func BenchmarkRawRateLimiterParallel(b *testing.B) {
	lims := make([]*rate.Limiter, parallelKeys)
	for i := range lims {
		lims[i] = rate.NewLimiter(rate.Limit(benchLimit.Rate), benchLimit.Burst)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919))
		for pb.Next() {
			if !lims[i%parallelKeys].AllowN(time.Now(), 1) {
				b.Error("refused")
				return
			}
			i++
		}
	})
}

// BenchmarkAllowParallel spreads calls from every P over parallelKeys keys.
func BenchmarkAllowParallel(b *testing.B) {
	l := newBench(b)
	keys := make([]string, parallelKeys)
	for i := range keys {
		keys[i] = benchKey(i)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919))
		for pb.Next() {
			if err := l.Allow(keys[i%parallelKeys], 1); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkRawRateLimiterParallelOneKey is one bare rate.Limiter shared by
// every P: the baseline for BenchmarkAllowParallelOneKey.
func BenchmarkRawRateLimiterParallelOneKey(b *testing.B) {
	lim := rate.NewLimiter(rate.Limit(benchLimit.Rate), benchLimit.Burst)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !lim.AllowN(time.Now(), 1) {
				b.Error("refused")
				return
			}
		}
	})
}

// BenchmarkAllowParallelOneKey is one key shared by every P.
func BenchmarkAllowParallelOneKey(b *testing.B) {
	l := newBench(b)
	key := benchKey(1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Allow(key, 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
