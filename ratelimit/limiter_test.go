package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
	"unsafe"
)

func TestLimitValidate(t *testing.T) {
	tests := []struct {
		name string
		in   Limit
		want Limit // normalized; ignored when wantErr
		err  bool
	}{
		{"default", DefaultLimit(), Limit{Rate: 300, Burst: 300}, false},
		{"burst zero is one second", Limit{Rate: 300}, Limit{Rate: 300, Burst: 300}, false},
		{"burst zero rounds up", Limit{Rate: 2.5}, Limit{Rate: 2.5, Burst: 3}, false},
		{"burst zero at least one", Limit{Rate: 0.01}, Limit{Rate: 0.01, Burst: 1}, false},
		{"explicit burst", Limit{Rate: 10, Burst: 1}, Limit{Rate: 10, Burst: 1}, false},
		{"max rate", Limit{Rate: MaxRate, Burst: 1}, Limit{Rate: MaxRate, Burst: 1}, false},
		{"unlimited", Limit{Unlimited: true}, Limit{Unlimited: true}, false},
		{"zero value", Limit{}, Limit{}, true},
		{"negative rate", Limit{Rate: -1, Burst: 1}, Limit{}, true},
		{"nan rate", Limit{Rate: math.NaN(), Burst: 1}, Limit{}, true},
		{"inf rate", Limit{Rate: math.Inf(1), Burst: 1}, Limit{}, true},
		{"above max rate", Limit{Rate: MaxRate * 2, Burst: 1}, Limit{}, true},
		{"negative burst", Limit{Rate: 1, Burst: -1}, Limit{}, true},
		{"unlimited with rate", Limit{Unlimited: true, Rate: 300}, Limit{}, true},
		{"unlimited with burst", Limit{Unlimited: true, Burst: 3}, Limit{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.Validate()
			norm, nerr := tt.in.Normalize()
			if tt.err {
				if !errors.Is(err, ErrInvalidLimit) {
					t.Fatalf("Validate(%+v) = %v, want ErrInvalidLimit", tt.in, err)
				}
				if !errors.Is(nerr, ErrInvalidLimit) || norm != (Limit{}) {
					t.Fatalf("Normalize(%+v) = %+v, %v; want the zero Limit, ErrInvalidLimit", tt.in, norm, nerr)
				}
				l, _ := newTest(t)
				// On a key without a bucket: refused whatever the cost,
				// and no bucket is made.
				for _, n := range []int{1, 0, -1} {
					if err := l.AllowLimit("k", tt.in, n); !errors.Is(err, ErrInvalidLimit) {
						t.Fatalf("AllowLimit(%+v, %d) = %v, want ErrInvalidLimit", tt.in, n, err)
					}
				}
				if n := l.Len(); n != 0 {
					t.Fatalf("Len = %d after refused limits, want 0", n)
				}
				// On a key with a bucket: refused, nothing spent, and
				// the bucket keeps its limit.
				if err := l.Allow("k", 1); err != nil {
					t.Fatal(err)
				}
				if err := l.AllowLimit("k", tt.in, 1); !errors.Is(err, ErrInvalidLimit) {
					t.Fatalf("AllowLimit(%+v) on a bucket = %v, want ErrInvalidLimit", tt.in, err)
				}
				if got := bucketLimit(l, "k"); got != DefaultLimit() {
					t.Fatalf("a refused limit changed the bucket's limit to %+v", got)
				}
				if err := l.Allow("k", DefaultBurst-1); err != nil {
					t.Fatalf("a refused limit spent tokens: %v", err)
				}
				if _, err := New(WithDefaultLimit(tt.in)); !errors.Is(err, ErrInvalidLimit) {
					t.Fatalf("New(WithDefaultLimit(%+v)) = %v, want ErrInvalidLimit", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate(%+v) = %v", tt.in, err)
			}
			if nerr != nil || norm != tt.want {
				t.Fatalf("Normalize(%+v) = %+v, %v; want %+v", tt.in, norm, nerr, tt.want)
			}
			if again, err := norm.Normalize(); err != nil || again != norm {
				t.Fatalf("Normalize is not idempotent: %+v, %v", again, err)
			}
			l, _ := newTest(t)
			if err := l.AllowLimit("k", norm, 1); err != nil {
				t.Fatal(err)
			}
			if tt.want.Unlimited {
				if n := l.Len(); n != 0 {
					t.Fatalf("Len = %d, want 0 (an unlimited key holds no bucket)", n)
				}
			} else if got := bucketLimit(l, "k"); got != tt.want {
				t.Fatalf("bucket limit = %+v, want %+v", got, tt.want)
			}
			if tt.in != tt.want {
				if err := l.AllowLimit("k", tt.in, 1); !errors.Is(err, ErrInvalidLimit) {
					t.Fatalf("AllowLimit(%+v), not normalized: %v, want ErrInvalidLimit", tt.in, err)
				}
			}
			d, err := New(WithDefaultLimit(tt.in))
			if err != nil || d.def != tt.want {
				t.Fatalf("New(WithDefaultLimit(%+v)): default %+v, %v; want %+v", tt.in, d.def, err, tt.want)
			}
		})
	}
}

// bucketLimit returns the limit key's bucket was last used under, or the
// zero Limit if key has no bucket.
func bucketLimit(l *Limiter, key string) Limit {
	s := l.shard(key)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.buckets[key].limit
}

func TestLimitString(t *testing.T) {
	for _, tt := range []struct {
		l    Limit
		want string
	}{
		{DefaultLimit(), "300/s burst 300"},
		{Limit{Rate: 0.5, Burst: 1}, "0.5/s burst 1"},
		{Limit{Unlimited: true}, "unlimited"},
	} {
		if got := tt.l.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.l, got, tt.want)
		}
	}
}

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		err  bool
	}{
		{"none", nil, false},
		{"nil option ignored", []Option{nil}, false},
		{"max buckets 1", []Option{WithMaxBuckets(1)}, false},
		{"nil clock", []Option{WithClock(nil)}, true},
		{"bad default", []Option{WithDefaultLimit(Limit{Rate: -1})}, true},
		{"max buckets 0", []Option{WithMaxBuckets(0)}, true},
		{"two errors", []Option{WithMaxBuckets(-1), WithClock(nil)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := New(tt.opts...)
			if tt.err {
				if !errors.Is(err, ErrInvalidLimit) || l != nil {
					t.Fatalf("New = %v, %v; want nil, ErrInvalidLimit", l, err)
				}
				if !strings.HasPrefix(err.Error(), "ratelimit: ") {
					t.Fatalf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil || l == nil {
				t.Fatalf("New = %v, %v", l, err)
			}
			if l.def != DefaultLimit() {
				t.Fatalf("default limit %+v, want %+v", l.def, DefaultLimit())
			}
		})
	}
}

func TestShardLayout(t *testing.T) {
	if s := unsafe.Sizeof(shard{}); s != 128 {
		t.Fatalf("shard is %d bytes, want 128 (two cache lines, no false sharing)", s)
	}
	for _, tt := range []struct{ max, shards, shardCap int }{
		{DefaultMaxBuckets, 256, 256},
		{4096, 256, 16},
		{4095, 128, 31},
		{100, 4, 25},
		{1, 1, 1},
	} {
		l, err := New(WithMaxBuckets(tt.max))
		if err != nil {
			t.Fatal(err)
		}
		if len(l.shards) != tt.shards || l.shardCap != tt.shardCap {
			t.Errorf("max %d: %d shards of %d, want %d of %d", tt.max, len(l.shards), l.shardCap, tt.shards, tt.shardCap)
		}
	}
}

func TestBurstThenRate(t *testing.T) {
	l, c := newTest(t)
	for i := range DefaultBurst {
		if err := l.Allow("k", 1); err != nil {
			t.Fatalf("call %d of the burst refused: %v", i, err)
		}
	}
	err := l.Allow("k", 1)
	if !errors.Is(err, ErrRateLimited) || errors.Is(err, ErrExceedsBurst) {
		t.Fatalf("call after the burst: %v, want ErrRateLimited", err)
	}
	var rl *RateLimitedError
	if !errors.As(err, &rl) {
		t.Fatalf("%T is not a *RateLimitedError", err)
	}
	want := time.Second / DefaultRate
	if rl.Key != "k" || rl.Cost != 1 || rl.Limit != DefaultLimit() || rl.RetryAfter < want || rl.RetryAfter > want+time.Microsecond {
		t.Fatalf("error = %+v, want key k, cost 1, the default limit, RetryAfter ≈ %v", rl, want)
	}
	c.Advance(rl.RetryAfter - time.Microsecond)
	if err := l.Allow("k", 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("before RetryAfter: %v, want ErrRateLimited", err)
	}
	c.Advance(time.Microsecond)
	if err := l.Allow("k", 1); err != nil {
		t.Fatalf("at RetryAfter: %v", err)
	}
}

// TestAllowAt checks that AllowAt uses the reading it is given, not the
// Limiter's clock, both when it creates a bucket and when the bucket
// exists, and that its refusals are Allow's.
func TestAllowAt(t *testing.T) {
	l, c := newTest(t, WithDefaultLimit(Limit{Rate: 10, Burst: 2}))
	c.Set(time.Hour) // the clock is far ahead of the readings passed below
	at := func(d time.Duration) time.Time { return epoch.Add(d) }
	if err := l.AllowAt("k", 2, at(0)); err != nil { // new bucket, full
		t.Fatalf("first call: %v", err)
	}
	// Had the clock been read, an hour would have refilled the bucket.
	err := l.AllowAt("k", 1, at(50*time.Millisecond))
	var rl *RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter != 50*time.Millisecond {
		t.Fatalf("half a token in: %v, want *RateLimitedError with RetryAfter 50ms", err)
	}
	if err := l.AllowAt("k", 1, at(100*time.Millisecond)); err != nil {
		t.Fatalf("one token in: %v", err)
	}
	if err := l.AllowAt("k", 3, at(time.Hour)); !errors.Is(err, ErrExceedsBurst) {
		t.Fatalf("cost above the burst: %v, want ErrExceedsBurst", err)
	}
	if err := l.AllowAt("k", -1, at(time.Hour)); !errors.Is(err, ErrInvalidCost) {
		t.Fatalf("negative cost: %v, want ErrInvalidCost", err)
	}
	// Allow, by contrast, reads the clock: an hour on, the bucket is full.
	if err := l.Allow("k", 2); err != nil {
		t.Fatalf("Allow an hour on: %v", err)
	}
	if err := l.AllowLimitAt("off", Limit{Unlimited: true}, 1000, at(0)); err != nil {
		t.Fatalf("unlimited key: %v", err)
	}
	if n := l.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1 (an unlimited key holds no bucket)", n)
	}
}

// TestAllowLimitAt is TestAllowAt for AllowLimitAt: the reading it is
// given serves when the bucket is created, when it is used, and when it
// moves to another limit, and refusals carry the limit passed.
func TestAllowLimitAt(t *testing.T) {
	l, c := newTest(t) // the default, 300/s, is not the limit used below
	c.Set(time.Hour)
	at := func(d time.Duration) time.Time { return epoch.Add(d) }
	lim := Limit{Rate: 10, Burst: 2}
	if err := l.AllowLimitAt("k", lim, 2, at(0)); err != nil { // new bucket, full
		t.Fatalf("first call: %v", err)
	}
	err := l.AllowLimitAt("k", lim, 1, at(50*time.Millisecond))
	var rl *RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter != 50*time.Millisecond || rl.Limit != lim {
		t.Fatalf("half a token in: %v, want *RateLimitedError with RetryAfter 50ms under %v", err, lim)
	}
	// At 50 ms the key moves to 20/s with its half token: the other half
	// takes 25 ms at the new rate, not 50 ms at the old one.
	faster := Limit{Rate: 20, Burst: 2}
	err = l.AllowLimitAt("k", faster, 1, at(50*time.Millisecond))
	if !errors.As(err, &rl) || rl.RetryAfter < 25*time.Millisecond || rl.RetryAfter > 25*time.Millisecond+3 || rl.Limit != faster {
		t.Fatalf("after the change: %v, want *RateLimitedError with RetryAfter 25ms under %v", err, faster)
	}
	if err := l.AllowLimitAt("k", faster, 1, at(74*time.Millisecond)); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("just before a token at the new rate: %v, want ErrRateLimited", err)
	}
	if err := l.AllowLimitAt("k", faster, 1, at(75*time.Millisecond)); err != nil {
		t.Fatalf("one token at the new rate: %v", err)
	}
	if err := l.AllowLimitAt("k", faster, 3, at(time.Hour)); !errors.Is(err, ErrExceedsBurst) {
		t.Fatalf("cost above the burst: %v, want ErrExceedsBurst", err)
	}
	if err := l.AllowLimitAt("k", faster, -1, at(time.Hour)); !errors.Is(err, ErrInvalidCost) {
		t.Fatalf("negative cost: %v, want ErrInvalidCost", err)
	}
	if err := l.AllowLimitAt("k", Limit{Rate: 20}, 1, at(time.Hour)); !errors.Is(err, ErrInvalidLimit) {
		t.Fatalf("limit not normalized: %v, want ErrInvalidLimit", err)
	}
	// AllowLimit, by contrast, reads the clock: an hour on, the bucket is
	// full.
	if err := l.AllowLimit("k", faster, 2); err != nil {
		t.Fatalf("AllowLimit an hour on: %v", err)
	}
	if err := l.AllowLimitAt("off", Limit{Unlimited: true}, 1000, at(0)); err != nil {
		t.Fatalf("unlimited key: %v", err)
	}
	if n := l.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1 (an unlimited key holds no bucket)", n)
	}
}

// TestAllowLimitNotNormalized checks the new error: a limit that Normalize
// would change (or refuse) is refused, on a new key and on a key with a
// bucket, whatever the cost, and nothing is spent, made or changed.
func TestAllowLimitNotNormalized(t *testing.T) {
	l, c := newTest(t)
	c.Set(time.Hour)
	raw := Limit{Rate: 100} // Normalize fills in Burst: 100
	norm, err := raw.Normalize()
	if err != nil || norm == raw {
		t.Fatalf("Normalize(%+v) = %+v, %v; want a different limit", raw, norm, err)
	}
	for _, n := range []int{1, 0, -1, 1000} {
		err := l.AllowLimit("new", raw, n)
		if !errors.Is(err, ErrInvalidLimit) || errors.Is(err, ErrRateLimited) || errors.Is(err, ErrInvalidCost) {
			t.Fatalf("AllowLimit(new, %+v, %d) = %v, want ErrInvalidLimit only", raw, n, err)
		}
		if want := "ratelimit: invalid limit: key new: burst 0 is not normalized (normalized: 100/s burst 100)"; err.Error() != want {
			t.Fatalf("message %q, want %q", err, want)
		}
		if err := l.AllowLimitAt("new", raw, n, c.Now()); !errors.Is(err, ErrInvalidLimit) {
			t.Fatalf("AllowLimitAt(new, %+v, %d) = %v, want ErrInvalidLimit", raw, n, err)
		}
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d after refused calls, want 0", n)
	}
	// A key whose bucket holds the normalized limit, half spent.
	if err := l.AllowLimit("k", norm, 50); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if err := l.AllowLimit("k", raw, 1); !errors.Is(err, ErrInvalidLimit) {
			t.Fatalf("AllowLimit(k, %+v) = %v, want ErrInvalidLimit", raw, err)
		}
	}
	if got := bucketLimit(l, "k"); got != norm {
		t.Fatalf("bucket limit %+v after refused calls, want %+v", got, norm)
	}
	if err := l.AllowLimit("k", norm, 50); err != nil {
		t.Fatalf("refused calls spent tokens: %v", err)
	}
	if err := l.AllowLimit("k", norm, 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("bucket should be empty: %v", err)
	}
}

func TestRefusalSpendsNothing(t *testing.T) {
	l, c := newTest(t, WithDefaultLimit(Limit{Rate: 100, Burst: 10}))
	if err := l.Allow("k", 10); err != nil {
		t.Fatal(err)
	}
	// A flood of refused calls, each asking for more than is there.
	for i := range 1000 {
		c.Set(time.Duration(i) * 40 * time.Microsecond) // up to 40 ms: under 4 tokens
		if err := l.Allow("k", 5); !errors.Is(err, ErrRateLimited) {
			t.Fatalf("flood call %d at %v: %v, want ErrRateLimited", i, c.Now().Sub(epoch), err)
		}
	}
	c.Set(50 * time.Millisecond) // exactly 5 tokens: nothing was spent by the flood
	if err := l.Allow("k", 5); err != nil {
		t.Fatalf("after the flood: %v", err)
	}
}

func TestRetryAfterAdmits(t *testing.T) {
	t.Parallel()
	rates := []float64{0.001, 1, 3, 7.5, 300, 333.333, 1000, 12345.678, 1e6, MaxRate}
	for _, r := range rates {
		for _, burst := range []int{1, 7, 300} {
			for _, n := range []int{1, 2, 7, 300} {
				if n > burst {
					continue
				}
				t.Run(fmt.Sprint(r, "/", burst, "/", n), func(t *testing.T) {
					l, c := newTest(t, WithDefaultLimit(Limit{Rate: r, Burst: burst}))
					c.Set(time.Hour + 123456789)
					if err := l.Allow("k", burst); err != nil {
						t.Fatal(err)
					}
					c.Advance(time.Duration(float64(time.Second) * 0.37 / r)) // a fraction of a token back
					var rl *RateLimitedError
					if err := l.Allow("k", n); !errors.As(err, &rl) {
						t.Fatalf("Allow = %v, want *RateLimitedError", err)
					}
					if rl.RetryAfter <= 0 {
						t.Fatalf("RetryAfter = %v, want > 0", rl.RetryAfter)
					}
					exact := (float64(n) - 0.37) / r * 1e9
					if float64(rl.RetryAfter) > exact+3 {
						t.Fatalf("RetryAfter = %v, exact %vns", rl.RetryAfter, exact)
					}
					c.Advance(rl.RetryAfter)
					if err := l.Allow("k", n); err != nil {
						t.Fatalf("after RetryAfter %v: %v", rl.RetryAfter, err)
					}
				})
			}
		}
	}
}

func TestExceedsBurst(t *testing.T) {
	l, _ := newTest(t, WithDefaultLimit(Limit{Rate: 100, Burst: 10}))
	// On a key without a bucket: refused, and no bucket is made.
	err := l.Allow("fresh", 11)
	if !errors.Is(err, ErrExceedsBurst) || errors.Is(err, ErrRateLimited) {
		t.Fatalf("Allow(fresh, 11) = %v, want ErrExceedsBurst only", err)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d after a refused first call, want 0", n)
	}
	// On a key with a bucket: refused, and nothing is spent.
	if err := l.Allow("k", 1); err != nil {
		t.Fatal(err)
	}
	if err := l.Allow("k", 11); !errors.Is(err, ErrExceedsBurst) {
		t.Fatalf("Allow(k, 11) = %v, want ErrExceedsBurst", err)
	}
	if err := l.Allow("k", 9); err != nil {
		t.Fatalf("the 9 tokens left: %v", err)
	}
	if !strings.Contains(err.Error(), "key fresh cost 11, burst 10") {
		t.Errorf("message %q does not name key, cost and burst", err)
	}
}

func TestCost(t *testing.T) {
	l, _ := newTest(t)
	if err := l.Allow("k", 0); err != nil {
		t.Fatalf("Allow(k, 0) = %v", err)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("a zero cost made a bucket: Len = %d", n)
	}
	if err := l.Allow("k", -1); !errors.Is(err, ErrInvalidCost) {
		t.Fatalf("Allow(k, -1) = %v, want ErrInvalidCost", err)
	}
	if err := l.Allow("k", DefaultBurst); err != nil {
		t.Fatalf("negative cost must not add tokens, nor a zero cost spend them: %v", err)
	}
	if err := l.Allow("k", 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("bucket should be empty: %v", err)
	}
}

// TestIsolation drives one key at ten times its limit while 99 others run
// exactly at theirs, in simulated time: the 99 are never refused and the hot
// key gets its own rate and burst, no more.
func TestIsolation(t *testing.T) {
	t.Parallel()
	const (
		seconds = 20
		ticks   = seconds * 3000 // the hot key calls every tick: 10×300/s
	)
	l, c := newTest(t)
	keys := make([]string, 99)
	for i := range keys {
		keys[i] = fmt.Sprintf("%064x", i+1)
	}
	hot := strings.Repeat("f", 64)
	hotOK := 0
	for i := range ticks {
		c.Set(time.Duration(int64(i) * int64(time.Second) / 3000))
		switch err := l.Allow(hot, 1); {
		case err == nil:
			hotOK++
		case !errors.Is(err, ErrRateLimited):
			t.Fatalf("hot key: %v", err)
		}
		// Key j calls every 10th tick (300/s), staggered by j.
		for j := i % 10; j < len(keys); j += 10 {
			if err := l.Allow(keys[j], 1); err != nil {
				t.Fatalf("key %d refused at %v: %v", j, c.Now().Sub(epoch), err)
			}
		}
	}
	want := DefaultRate*seconds + DefaultBurst
	if hotOK < want-2 || hotOK > want {
		t.Fatalf("hot key admitted %d, want %d (rate × time + burst)", hotOK, want)
	}
}

// TestAccuracy tries a key every millisecond for a simulated minute: the
// admitted cost is rate × 60 s + burst, within 1%. (The tries outpace each
// limit and its burst is above the 1 ms granularity of the tries.)
func TestAccuracy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		lim  Limit
		cost int
	}{
		{DefaultLimit(), 1},
		{Limit{Rate: 300, Burst: 10}, 1},
		{Limit{Rate: 300, Burst: 1000}, 1},
		{DefaultLimit(), 3},
		{Limit{Rate: 50, Burst: 5}, 1},
		{Limit{Rate: 900, Burst: 100}, 1}, // just under the try rate
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.lim, " cost ", tt.cost), func(t *testing.T) {
			l, c := newTest(t, WithDefaultLimit(tt.lim))
			admitted := 0
			for ms := range 60_000 {
				c.Set(time.Duration(ms) * time.Millisecond)
				if l.Allow("k", tt.cost) == nil {
					admitted += tt.cost
				}
			}
			want := tt.lim.Rate*60 + float64(tt.lim.Burst)
			if math.Abs(float64(admitted)-want) > want/100 {
				t.Fatalf("admitted %d, want %.0f ± 1%%", admitted, want)
			}
		})
	}
}

// TestLimitChange passes a key limits of its own and changes them: other
// keys keep the default, an unlimited limit drops the key's bucket, and a
// changed limit keeps the key's tokens (capped at the new burst) and
// refills at the new rate, so it never hands out a fresh burst.
func TestLimitChange(t *testing.T) {
	l, c := newTest(t)
	// Lower one key's limit: others keep the default.
	slow := Limit{Rate: 1, Burst: 2}
	for i := range 2 {
		if err := l.AllowLimit("slow", slow, 1); err != nil {
			t.Fatalf("slow call %d: %v", i, err)
		}
	}
	var rl *RateLimitedError
	if err := l.AllowLimit("slow", slow, 1); !errors.As(err, &rl) || rl.Limit != slow || rl.RetryAfter != time.Second {
		t.Fatalf("slow key over its own limit: %v", err)
	}
	if err := l.Allow("other", 300); err != nil {
		t.Fatalf("other key: %v", err)
	}

	// Switch the drained default key off: it is admitted freely while
	// unlimited, and holds no bucket.
	off := Limit{Unlimited: true}
	if err := l.AllowLimit("other", off, 300); err != nil {
		t.Fatalf("unlimited key: %v", err)
	}
	if n := l.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1 (an unlimited key holds no bucket)", n)
	}
	for range 10_000 {
		if err := l.AllowLimit("other", off, 300); err != nil {
			t.Fatalf("unlimited key: %v", err)
		}
	}
	if n := l.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}

	// Raising a drained key's limit does not refill it: it refills at the
	// new rate from now on.
	raised := Limit{Rate: 10, Burst: 20}
	if err := l.AllowLimit("slow", raised, 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("raised limit handed out tokens: %v", err)
	}
	if got := bucketLimit(l, "slow"); got != raised {
		t.Fatalf("bucket limit %+v, want %+v", got, raised)
	}
	c.Advance(time.Second)
	if err := l.AllowLimit("slow", raised, 10); err != nil {
		t.Fatalf("10 tokens after a second at 10/s: %v", err)
	}
	if err := l.AllowLimit("slow", raised, 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("more than 10 tokens after a second at 10/s: %v", err)
	}

	// Lowering the burst caps the tokens.
	c.Advance(time.Hour)
	capped := Limit{Rate: 10, Burst: 3}
	if err := l.AllowLimit("slow", capped, 4); !errors.Is(err, ErrExceedsBurst) {
		t.Fatalf("cost 4 over burst 3: %v", err)
	}
	if err := l.AllowLimit("slow", capped, 3); err != nil {
		t.Fatalf("cost 3 at burst 3: %v", err)
	}

	// Back to the default (Allow), tokens kept.
	if err := l.Allow("slow", 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("moving back to the default refilled the bucket: %v", err)
	}
	if got := bucketLimit(l, "slow"); got != DefaultLimit() {
		t.Fatalf("bucket limit %+v after Allow, want the default", got)
	}
	c.Advance(time.Second)
	if err := l.Allow("slow", 300); err != nil {
		t.Fatalf("default refill: %v", err)
	}
	if n := l.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1 (slow only)", n)
	}
}

// TestLimitChangeNoFreshBurst flips a key between finite limits many times
// with the clock stopped: every change keeps the tokens, capped at the new
// burst, so the key is admitted no more than its first burst allowed, less
// what the smallest burst cut off.
func TestLimitChangeNoFreshBurst(t *testing.T) {
	l, _ := newTest(t)
	limits := []Limit{{Rate: 1, Burst: 100}, {Rate: 5, Burst: 50}, {Rate: 1e6, Burst: 1000}, DefaultLimit()}
	admitted := 0
	for i := range 10_000 {
		lim := limits[i%len(limits)]
		var err error
		if lim == DefaultLimit() {
			err = l.Allow("k", 1)
		} else {
			err = l.AllowLimit("k", lim, 1)
		}
		switch {
		case err == nil:
			admitted++
		case !errors.Is(err, ErrRateLimited):
			t.Fatalf("call %d under %v: %v", i, lim, err)
		}
	}
	// The first call spends 1 of 100; the change to burst 50 caps the other
	// 99 at 50; later changes keep what is left, and nothing refills.
	if admitted != 51 {
		t.Fatalf("admitted %d, want exactly 51: a change handed out tokens", admitted)
	}
}

// TestDifferentLimitsIsolated gives two keys of one shard different limits:
// each is held to its own, and draining one leaves the other untouched.
func TestDifferentLimitsIsolated(t *testing.T) {
	l, c := newTest(t, WithMaxBuckets(minShardCap)) // one shard
	if len(l.shards) != 1 {
		t.Fatalf("%d shards, want 1", len(l.shards))
	}
	small := Limit{Rate: 1, Burst: 2}
	big := Limit{Rate: 1000, Burst: 1000}
	for range 2 {
		if err := l.AllowLimit("a", small, 1); err != nil {
			t.Fatal(err)
		}
	}
	var rl *RateLimitedError
	if err := l.AllowLimit("a", small, 1); !errors.As(err, &rl) || rl.Key != "a" || rl.Limit != small || rl.RetryAfter != time.Second {
		t.Fatalf("a over its limit: %v", err)
	}
	// b's whole burst is there, though a is drained.
	if err := l.AllowLimit("b", big, 1000); err != nil {
		t.Fatalf("b after a drained: %v", err)
	}
	if err := l.AllowLimit("b", big, 1); !errors.As(err, &rl) || rl.Key != "b" || rl.Limit != big || rl.RetryAfter != time.Millisecond {
		t.Fatalf("b over its limit: %v", err)
	}
	// Each refills at its own rate.
	c.Advance(10 * time.Millisecond)
	if err := l.AllowLimit("b", big, 10); err != nil {
		t.Fatalf("b after 10 ms at 1000/s: %v", err)
	}
	if err := l.AllowLimit("a", small, 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("a after 10 ms at 1/s: %v", err)
	}
	c.Advance(time.Second)
	if err := l.AllowLimit("a", small, 1); err != nil {
		t.Fatalf("a after a second: %v", err)
	}
	if err := l.AllowLimit("a", small, 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("a took b's tokens: %v", err)
	}
	// A cost within b's burst but above a's is refused for a only.
	if err := l.AllowLimit("a", small, 3); !errors.Is(err, ErrExceedsBurst) {
		t.Fatalf("a cost 3: %v, want ErrExceedsBurst", err)
	}
	if err := l.AllowLimit("b", big, 3); err != nil {
		t.Fatalf("b cost 3: %v", err)
	}
	if got, want := [2]Limit{bucketLimit(l, "a"), bucketLimit(l, "b")}, [2]Limit{small, big}; got != want {
		t.Fatalf("bucket limits %v, want %v", got, want)
	}
}

// TestDisabled switches limiting off engine-wide: nothing is refused and no
// bucket is made, except for keys passed a limit of their own.
func TestDisabled(t *testing.T) {
	l, _ := newTest(t, WithDefaultLimit(Limit{Unlimited: true}))
	for i := range 1000 {
		if err := l.Allow(fmt.Sprint(i%10), 1000); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
	own := Limit{Rate: 1, Burst: 1}
	if err := l.AllowLimit("limited", own, 1); err != nil {
		t.Fatal(err)
	}
	if err := l.AllowLimit("limited", own, 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("key with its own limit under a disabled default: %v", err)
	}
	if err := l.Allow("other", 1000); err != nil {
		t.Fatal(err)
	}
	// Allow under the disabled default admits the key without looking at
	// its bucket, and leaves the bucket alone.
	if err := l.Allow("limited", 1000); err != nil {
		t.Fatal(err)
	}
	if n := l.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1 (Allow under a disabled default touches no bucket)", n)
	}
	// Passing the key an unlimited limit drops its bucket.
	if err := l.AllowLimit("limited", Limit{Unlimited: true}, 1); err != nil {
		t.Fatal(err)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d after an unlimited call, want 0", n)
	}
	if err := l.Allow("limited", 1); err != nil {
		t.Fatal(err)
	}
}

func TestErrorMessages(t *testing.T) {
	l, _ := newTest(t, WithDefaultLimit(Limit{Rate: 2, Burst: 1}))
	_ = l.Allow("tag", 1)
	errs := []error{
		l.Allow("tag", 1),
		l.Allow("tag", 2),
		l.Allow("tag", -1),
		l.AllowLimit("tag", Limit{}, 1),
		l.AllowLimit("tag", Limit{Rate: 2}, 1),
		l.AllowLimit("tag", Limit{Unlimited: true, Burst: 1}, 1),
	}
	for _, err := range errs {
		msg := err.Error()
		if !strings.HasPrefix(msg, "ratelimit: ") || strings.ToLower(msg) != msg {
			t.Errorf("message %q: want a lower-case message prefixed by the package", msg)
		}
		if !strings.Contains(msg, "key tag") {
			t.Errorf("message %q does not name the key", msg)
		}
	}
	if got, want := errs[0].Error(), "ratelimit: rate limited: key tag over 2/s burst 1, retry after 500ms"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l, _ := newTest(t)
	off := Limit{Unlimited: true}
	own := Limit{Rate: 1000, Burst: 1000} // not the default
	key := strings.Repeat("a", 64)
	ownKey := strings.Repeat("b", 64)
	ownKeyAt := strings.Repeat("c", 64)
	if err := errors.Join(
		l.Allow(key, 1),
		l.AllowLimit(ownKey, own, 1),
		l.AllowLimitAt(ownKeyAt, own, 1, epoch),
		l.AllowLimit("off", off, 1),
	); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		f    func()
	}{
		{"admitted", func() { _ = l.Allow(key, 0); _ = l.Allow(key, 1) }},
		{"admitted at", func() { _ = l.AllowAt(key, 1, epoch) }},
		{"admitted, own limit", func() { _ = l.AllowLimit(ownKey, own, 0); _ = l.AllowLimit(ownKey, own, 1) }},
		{"admitted at, own limit", func() { _ = l.AllowLimitAt(ownKeyAt, own, 1, epoch) }},
		{"unlimited key", func() { _ = l.AllowLimit("off", off, 1) }},
		{"unlimited key at", func() { _ = l.AllowLimitAt("off", off, 1, epoch) }},
	} {
		// The clock never moves, so stay within the burst.
		if a := testing.AllocsPerRun(100, tt.f); a != 0 {
			t.Errorf("%s: %v allocations per call, want 0", tt.name, a)
		}
	}
	d, _ := newTest(t, WithDefaultLimit(Limit{Unlimited: true}))
	if a := testing.AllocsPerRun(100, func() { _ = d.Allow(key, 1) }); a != 0 {
		t.Errorf("disabled: %v allocations per call, want 0", a)
	}
}

func TestKeyIsCloned(t *testing.T) {
	l, _ := newTest(t)
	buf := []byte(strings.Repeat("k", 1<<16))
	key := unsafe.String(&buf[0], 8) // a short key pinning a large buffer
	if err := l.Allow(key, 1); err != nil {
		t.Fatal(err)
	}
	s := l.shard(key)
	check := func(after string) {
		t.Helper()
		for k := range s.buckets {
			if unsafe.StringData(k) == &buf[0] {
				t.Errorf("after %s, the bucket map keeps the caller's buffer", after)
			}
		}
	}
	check("creating the bucket")
	// A changed limit reassigns the map entry, which replaces its key.
	if err := l.AllowLimit(key, Limit{Rate: 1, Burst: 1}, 1); err != nil {
		t.Fatal(err)
	}
	if got := bucketLimit(l, key); got != (Limit{Rate: 1, Burst: 1}) {
		t.Fatalf("bucket limit %+v, want the new one", got)
	}
	check("changing the limit")
}
