package ratelimit

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestEvictionIsExact compares the Limiter, swept at random moments and
// sweeping itself on insert, with a model that keeps one bare rate.Limiter
// per key forever: every decision is the same.
func TestEvictionIsExact(t *testing.T) {
	t.Parallel()
	for _, lim := range []Limit{{Rate: 50, Burst: 5}, {Rate: 300, Burst: 300}, {Rate: 7, Burst: 1}} {
		t.Run(lim.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(lim.Burst)))
			l, c := newTest(t, WithDefaultLimit(lim), WithMaxBuckets(DefaultMaxBuckets))
			model := map[string]*rate.Limiter{}
			period := time.Duration(float64(lim.Burst) / lim.Rate * float64(time.Second))
			swept := 0
			for i := range 100_000 {
				c.Advance(time.Duration(rng.Int64N(int64(period / 8))))
				key := strconv.Itoa(rng.IntN(64))
				n := 1 + rng.IntN(lim.Burst)
				m := model[key]
				if m == nil {
					m = rate.NewLimiter(rate.Limit(lim.Rate), lim.Burst)
					model[key] = m
				}
				want := m.AllowN(c.Now(), n)
				err := l.Allow(key, n)
				if (err == nil) != want {
					t.Fatalf("step %d key %s cost %d: Allow = %v, model admits %v", i, key, n, err, want)
				}
				if err != nil && !errors.Is(err, ErrRateLimited) {
					t.Fatalf("step %d: %v", i, err)
				}
				if rng.IntN(100) == 0 {
					swept += l.Sweep()
				}
			}
			if swept == 0 {
				t.Fatal("no bucket was ever swept: the test proves nothing")
			}
		})
	}
}

func TestSweep(t *testing.T) {
	l, c := newTest(t, WithDefaultLimit(Limit{Rate: 100, Burst: 10}))
	for i := range 1000 {
		if err := l.Allow(strconv.Itoa(i), 1+i%10); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.Len(); n != 1000 {
		t.Fatalf("Len = %d, want 1000", n)
	}
	c.Advance(50 * time.Millisecond) // costs up to 5 are back
	if got := l.Sweep(); got != 500 {
		t.Fatalf("Sweep removed %d, want the 500 full buckets", got)
	}
	if err := l.Allow("9", 10); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("a bucket still missing tokens was lost: %v", err)
	}
	c.Advance(50 * time.Millisecond)
	if got := l.Sweep(); got != 500 {
		t.Fatalf("Sweep removed %d, want 500", got)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
}

// TestMillionKeys touches 1,000,000 distinct keys once each, a drained key
// among them, and checks that the number of buckets stays bounded:
//
//   - for the first half, simulated time runs at 10,000 new keys a second;
//     buckets refill in 1/300 s, so the sweeps on insert alone keep the
//     count far below the hard bound;
//   - for the second half the clock stops, so no bucket ever refills and
//     only the hard bound (WithMaxBuckets) holds the count down, evicting
//     the fullest buckets first: the drained key is never one of them.
func TestMillionKeys(t *testing.T) {
	t.Parallel()
	const (
		keys       = 1_000_000
		maxBuckets = 1 << 13
		sweptBound = 256 * minSweep // every shard below its first sweep threshold
	)
	l, c := newTest(t, WithMaxBuckets(maxBuckets))
	hot := "hot" // no key below has this form
	buf := make([]byte, 0, 32)
	peak := 0
	for i := range keys {
		if i < keys/2 {
			c.Advance(100 * time.Microsecond)
		} else if i == keys/2 {
			if err := l.Allow(hot, DefaultBurst); err != nil {
				t.Fatal(err)
			}
		}
		buf = strconv.AppendInt(append(buf[:0], 'k'), int64(i), 36)
		if err := l.Allow(string(buf), 1); err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		if i%5000 != 0 && i != keys-1 {
			continue
		}
		n := l.Len()
		if i < keys/2 {
			peak = max(peak, n)
			if n > sweptBound {
				t.Fatalf("after %d keys with the clock running, Len = %d, want ≤ %d", i+1, n, sweptBound)
			}
			continue
		}
		if n > maxBuckets {
			t.Fatalf("after %d keys with the clock stopped, Len = %d, want ≤ %d", i+1, n, maxBuckets)
		}
		if err := l.Allow(hot, 1); !errors.Is(err, ErrRateLimited) {
			t.Fatalf("after %d keys the drained key was evicted: %v", i+1, err)
		}
	}
	t.Logf("peak Len %d while the clock ran", peak)
	c.Advance(time.Second)
	l.Sweep()
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d after everything refilled and Sweep, want 0", n)
	}
}

// TestConcurrentExact hammers keys from many goroutines with the clock
// stopped: each key admits exactly its burst in total, never more.
func TestConcurrentExact(t *testing.T) {
	const (
		goroutines = 16
		keys       = 8
		burst      = 500
	)
	l, _ := newTest(t, WithDefaultLimit(Limit{Rate: 1, Burst: burst}))
	var admitted [keys]atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range 2 * burst * keys / goroutines * 2 {
				k := (g + i) % keys
				switch err := l.Allow(strconv.Itoa(k), 1); {
				case err == nil:
					admitted[k].Add(1)
				case !errors.Is(err, ErrRateLimited):
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for k := range keys {
		if got := admitted[k].Load(); got != burst {
			t.Errorf("key %d admitted %d, want exactly %d", k, got, burst)
		}
	}
}

// TestConcurrentChaos mixes every operation under a small bound and a moving
// clock, for the race detector; only the error classes and the bound are
// checked.
func TestConcurrentChaos(t *testing.T) {
	const maxBuckets = 64
	l, c := newTest(t, WithMaxBuckets(maxBuckets), WithDefaultLimit(Limit{Rate: 1000, Burst: 5}))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			for range 20_000 {
				key := strconv.Itoa(rng.IntN(200))
				switch op := rng.IntN(100); {
				case op < 85:
					err := l.Allow(key, rng.IntN(7))
					if err != nil && !errors.Is(err, ErrRateLimited) && !errors.Is(err, ErrExceedsBurst) {
						t.Error(err)
						return
					}
				case op < 90:
					lim := Limit{Rate: float64(1 + rng.IntN(2000)), Burst: rng.IntN(10)}
					if rng.IntN(4) == 0 {
						lim = Limit{Unlimited: true}
					}
					if err := l.SetLimit(key, lim); err != nil {
						t.Error(err)
						return
					}
				case op < 94:
					l.ClearLimit(key)
				case op < 96:
					l.Sweep()
				case op < 98:
					if n := l.Len(); n > maxBuckets {
						t.Errorf("Len = %d > %d", n, maxBuckets)
						return
					}
				default:
					c.Advance(time.Duration(rng.IntN(int(time.Millisecond))))
				}
			}
		})
	}
	wg.Wait()
	if n := l.Len(); n > maxBuckets {
		t.Fatalf("Len = %d > %d", n, maxBuckets)
	}
	_ = fmt.Sprint(l.LimitOf("1"))
}
