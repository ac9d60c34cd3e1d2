package ratelimit

import (
	"errors"
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
// clock, for the race detector. The caller's per-key limits live in an
// array, as the Engine keeps them in key snapshots, and change while other
// goroutines use them. Checked: the error classes, that a refusal names the
// limit passed, and the bound; at the end, that each key's bucket follows
// the limit it is passed.
func TestConcurrentChaos(t *testing.T) {
	const (
		maxBuckets = 64
		keys       = 200
	)
	l, c := newTest(t, WithMaxBuckets(maxBuckets), WithDefaultLimit(Limit{Rate: 1000, Burst: 5}))
	var limits [keys]atomic.Pointer[Limit] // nil: the default
	call := func(k, n int, at bool) (Limit, error) {
		key := strconv.Itoa(k)
		p := limits[k].Load()
		switch {
		case p == nil && at:
			return l.def, l.AllowAt(key, n, c.Now())
		case p == nil:
			return l.def, l.Allow(key, n)
		case at:
			return *p, l.AllowLimitAt(key, *p, n, c.Now())
		default:
			return *p, l.AllowLimit(key, *p, n)
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			for range 20_000 {
				k := rng.IntN(keys)
				switch op := rng.IntN(100); {
				case op < 84:
					lim, err := call(k, rng.IntN(7), rng.IntN(2) == 0)
					var rl *RateLimitedError
					switch {
					case err == nil, errors.Is(err, ErrExceedsBurst):
					case errors.As(err, &rl):
						if rl.Limit != lim {
							t.Errorf("refused under %v, passed %v", rl.Limit, lim)
							return
						}
					default:
						t.Error(err)
						return
					}
				case op < 85:
					if err := l.AllowLimit(strconv.Itoa(k), Limit{Rate: 10}, 1); !errors.Is(err, ErrInvalidLimit) {
						t.Errorf("limit not normalized: %v", err)
						return
					}
				case op < 90:
					lim := Limit{Rate: float64(1 + rng.IntN(2000)), Burst: rng.IntN(10)}
					if rng.IntN(4) == 0 {
						lim = Limit{Unlimited: true}
					}
					norm, err := lim.Normalize()
					if err != nil {
						t.Error(err)
						return
					}
					limits[k].Store(&norm)
				case op < 94:
					limits[k].Store(nil)
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
	for k := range keys {
		lim, err := call(k, 1, false)
		if err != nil && !errors.Is(err, ErrRateLimited) {
			t.Fatal(err)
		}
		want := lim
		if lim.Unlimited {
			want = Limit{} // no bucket
		}
		if got := bucketLimit(l, strconv.Itoa(k)); got != want {
			t.Fatalf("key %d passed %v: bucket under %v", k, lim, got)
		}
	}
}

// TestConcurrentLimitChange calls one key from many goroutines, each
// passing one of two limits, with the clock stopped: the bucket flips
// between them all along, and since a change keeps the tokens the key is
// admitted at most the larger burst in all, never a fresh burst per change.
func TestConcurrentLimitChange(t *testing.T) {
	const goroutines = 8
	l, c := newTest(t)
	limits := [2]Limit{{Rate: 1, Burst: 100}, {Rate: 5, Burst: 50}}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range 5000 {
				lim := limits[(g+i)%2]
				var err error
				if i%3 == 0 {
					err = l.AllowLimitAt("k", lim, 1, c.Now())
				} else {
					err = l.AllowLimit("k", lim, 1)
				}
				switch {
				case err == nil:
					admitted.Add(1)
				case !errors.Is(err, ErrRateLimited):
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// The first call's bucket holds 100 or 50 tokens; after the first
	// change at most 50 are left, and every token is spent by the end.
	if got := admitted.Load(); got < 50 || got > 100 {
		t.Fatalf("admitted %d, want 50 to 100", got)
	}
}

// TestEvictionIsExactPerKeyLimits is TestEvictionIsExact with each key
// passed a limit of its own, keys differing in rate and burst, and each
// key's rate changed now and then: the model moves its bare rate.Limiter
// to the new rate as AllowLimit moves the bucket. Every decision is the
// same. (Bursts stay put: a key whose full bucket was swept starts full
// under a raised burst, which a model that keeps every bucket would not.)
func TestEvictionIsExactPerKeyLimits(t *testing.T) {
	t.Parallel()
	const keys = 64
	rates := []float64{7, 50, 300, 1000}
	bursts := []int{1, 5, 300}
	type key struct {
		lim   Limit
		model *rate.Limiter
	}
	var ks [keys]key
	for k := range ks {
		ks[k].lim = Limit{Rate: rates[k%len(rates)], Burst: bursts[k%len(bursts)]}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	l, c := newTest(t, WithMaxBuckets(DefaultMaxBuckets))
	swept, changed := 0, 0
	for i := range 100_000 {
		c.Advance(time.Duration(rng.Int64N(int64(5 * time.Millisecond))))
		k := rng.IntN(keys)
		kk := &ks[k]
		if rng.IntN(20) == 0 {
			kk.lim.Rate = rates[rng.IntN(len(rates))]
			changed++
		}
		now := c.Now()
		switch {
		case kk.model == nil:
			kk.model = rate.NewLimiter(rate.Limit(kk.lim.Rate), kk.lim.Burst)
		case float64(kk.model.Limit()) != kk.lim.Rate:
			kk.model.SetLimitAt(now, rate.Limit(kk.lim.Rate))
		}
		n := 1 + rng.IntN(kk.lim.Burst)
		want := kk.model.AllowN(now, n)
		var err error
		if i%2 == 0 {
			err = l.AllowLimit(strconv.Itoa(k), kk.lim, n)
		} else {
			err = l.AllowLimitAt(strconv.Itoa(k), kk.lim, n, now)
		}
		if (err == nil) != want {
			t.Fatalf("step %d key %d under %v cost %d: AllowLimit = %v, model admits %v", i, k, kk.lim, n, err, want)
		}
		var rl *RateLimitedError
		if err != nil && (!errors.As(err, &rl) || rl.Limit != kk.lim) {
			t.Fatalf("step %d: %v, want a *RateLimitedError under %v", i, err, kk.lim)
		}
		if rng.IntN(100) == 0 {
			swept += l.Sweep()
		}
	}
	if swept == 0 || changed == 0 {
		t.Fatalf("%d buckets swept, %d limits changed: the test proves nothing", swept, changed)
	}
}

// TestSweepPerKeyLimits is TestSweep with keys under two limits of their
// own, neither the default: a bucket is full, and swept, by its own limit.
func TestSweepPerKeyLimits(t *testing.T) {
	l, c := newTest(t)
	fast := Limit{Rate: 100, Burst: 10}
	slow := Limit{Rate: 10, Burst: 10}
	limOf := func(i int) Limit {
		if i%2 == 0 {
			return fast
		}
		return slow
	}
	for i := range 1000 {
		if err := l.AllowLimit(strconv.Itoa(i), limOf(i), 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.Len(); n != 1000 {
		t.Fatalf("Len = %d, want 1000", n)
	}
	c.Advance(20 * time.Millisecond) // the fast buckets are full again
	if got := l.Sweep(); got != 500 {
		t.Fatalf("Sweep removed %d, want the 500 fast buckets", got)
	}
	if err := l.AllowLimit("1", slow, 10); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("a slow bucket still missing tokens was lost: %v", err)
	}
	c.Advance(100 * time.Millisecond)
	if got := l.Sweep(); got != 500 {
		t.Fatalf("Sweep removed %d, want the 500 slow buckets", got)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
}

// TestShedPerKeyLimits fills a small Limiter with the clock stopped, so
// only the hard bound holds the count down: shedding measures each bucket
// against its own limit, so drained keys with limits of their own keep
// their buckets while keys missing one token go.
func TestShedPerKeyLimits(t *testing.T) {
	const maxBuckets = 256
	l, _ := newTest(t, WithMaxBuckets(maxBuckets))
	drained := []struct {
		key string
		lim Limit
	}{{"small", Limit{Rate: 1, Burst: 5}}, {"big", Limit{Rate: 1, Burst: 1000}}}
	for _, d := range drained {
		if err := l.AllowLimit(d.key, d.lim, d.lim.Burst); err != nil {
			t.Fatal(err)
		}
	}
	tiny := Limit{Rate: 1, Burst: 1}
	for i := range 100_000 {
		key := "k" + strconv.Itoa(i)
		var err error
		if i%2 == 0 {
			err = l.Allow(key, 1)
		} else {
			err = l.AllowLimit(key, tiny, 1)
		}
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		if i%1000 != 0 {
			continue
		}
		if n := l.Len(); n > maxBuckets {
			t.Fatalf("after %d keys Len = %d, want ≤ %d", i+1, n, maxBuckets)
		}
		for _, d := range drained {
			if err := l.AllowLimit(d.key, d.lim, 1); !errors.Is(err, ErrRateLimited) {
				t.Fatalf("after %d keys, %s was evicted: %v", i+1, d.key, err)
			}
		}
	}
}
