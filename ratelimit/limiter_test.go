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
			if tt.err {
				if !errors.Is(err, ErrInvalidLimit) {
					t.Fatalf("Validate(%+v) = %v, want ErrInvalidLimit", tt.in, err)
				}
				l, _ := newTest(t)
				if err := l.SetLimit("k", tt.in); !errors.Is(err, ErrInvalidLimit) {
					t.Fatalf("SetLimit(%+v) = %v, want ErrInvalidLimit", tt.in, err)
				}
				if _, over := l.LimitOf("k"); over {
					t.Fatal("a refused SetLimit left an override")
				}
				if _, err := New(WithDefaultLimit(tt.in)); !errors.Is(err, ErrInvalidLimit) {
					t.Fatalf("New(WithDefaultLimit(%+v)) = %v, want ErrInvalidLimit", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate(%+v) = %v", tt.in, err)
			}
			l, _ := newTest(t)
			if err := l.SetLimit("k", tt.in); err != nil {
				t.Fatal(err)
			}
			if got, over := l.LimitOf("k"); got != tt.want || !over {
				t.Fatalf("LimitOf = %+v, %v; want %+v, true", got, over, tt.want)
			}
		})
	}
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
			if got, over := l.LimitOf("k"); got != DefaultLimit() || over {
				t.Fatalf("LimitOf = %+v, %v; want the default", got, over)
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
	if err := l.SetLimit("off", Limit{Unlimited: true}); err != nil {
		t.Fatal(err)
	}
	if err := l.AllowAt("off", 1000, at(0)); err != nil {
		t.Fatalf("unlimited key: %v", err)
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

func TestSetLimit(t *testing.T) {
	l, c := newTest(t)
	// Lower one key's limit: others keep the default.
	if err := l.SetLimit("slow", Limit{Rate: 1, Burst: 2}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := l.Allow("slow", 1); err != nil {
			t.Fatalf("slow call %d: %v", i, err)
		}
	}
	var rl *RateLimitedError
	if err := l.Allow("slow", 1); !errors.As(err, &rl) || rl.Limit != (Limit{Rate: 1, Burst: 2}) || rl.RetryAfter != time.Second {
		t.Fatalf("slow key over its override: %v", err)
	}
	if err := l.Allow("other", 300); err != nil {
		t.Fatalf("other key: %v", err)
	}

	// Switch the drained default key off, then on again: it stays drained
	// while limited... and is admitted freely while unlimited.
	if err := l.SetLimit("other", Limit{Unlimited: true}); err != nil {
		t.Fatal(err)
	}
	if n := l.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1 (an unlimited key holds no bucket)", n)
	}
	for range 10_000 {
		if err := l.Allow("other", 300); err != nil {
			t.Fatalf("unlimited key: %v", err)
		}
	}
	if n := l.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}

	// Raising a drained key's limit does not refill it: it refills at the
	// new rate from now on.
	if err := l.SetLimit("slow", Limit{Rate: 10, Burst: 20}); err != nil {
		t.Fatal(err)
	}
	if err := l.Allow("slow", 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("raised limit handed out tokens: %v", err)
	}
	c.Advance(time.Second)
	if err := l.Allow("slow", 10); err != nil {
		t.Fatalf("10 tokens after a second at 10/s: %v", err)
	}
	if err := l.Allow("slow", 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("more than 10 tokens after a second at 10/s: %v", err)
	}

	// Lowering the burst caps the tokens.
	c.Advance(time.Hour)
	if err := l.SetLimit("slow", Limit{Rate: 10, Burst: 3}); err != nil {
		t.Fatal(err)
	}
	if err := l.Allow("slow", 4); !errors.Is(err, ErrExceedsBurst) {
		t.Fatalf("cost 4 over burst 3: %v", err)
	}
	if err := l.Allow("slow", 3); err != nil {
		t.Fatalf("cost 3 at burst 3: %v", err)
	}

	// ClearLimit: back to the default, tokens kept.
	l.ClearLimit("slow")
	l.ClearLimit("never-set")
	if got, over := l.LimitOf("slow"); got != DefaultLimit() || over {
		t.Fatalf("after ClearLimit: %+v, %v", got, over)
	}
	if err := l.Allow("slow", 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("ClearLimit refilled the bucket: %v", err)
	}
	c.Advance(time.Second)
	if err := l.Allow("slow", 300); err != nil {
		t.Fatalf("default refill: %v", err)
	}
	if got := l.overrides.Load(); got != 1 {
		t.Fatalf("override count %d, want 1", got)
	}
}

// TestDisabled switches limiting off engine-wide: nothing is refused and no
// bucket is made, except for keys given a limit of their own.
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
	if err := l.SetLimit("limited", Limit{Rate: 1, Burst: 1}); err != nil {
		t.Fatal(err)
	}
	if err := l.Allow("limited", 1); err != nil {
		t.Fatal(err)
	}
	if err := l.Allow("limited", 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("key with its own limit under a disabled default: %v", err)
	}
	if err := l.Allow("other", 1000); err != nil {
		t.Fatal(err)
	}
	l.ClearLimit("limited")
	if n := l.Len(); n != 0 {
		t.Fatalf("Len = %d after ClearLimit to unlimited, want 0", n)
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
		l.SetLimit("tag", Limit{}),
	}
	for _, err := range errs {
		msg := err.Error()
		if !strings.HasPrefix(msg, "ratelimit: ") || strings.ToLower(msg) != msg {
			t.Errorf("message %q: want a lower-case message prefixed by the package", msg)
		}
	}
	if got, want := errs[0].Error(), "ratelimit: rate limited: key tag over 2/s burst 1, retry after 500ms"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l, _ := newTest(t)
	if err := l.SetLimit("off", Limit{Unlimited: true}); err != nil {
		t.Fatal(err)
	}
	key := strings.Repeat("a", 64)
	_ = l.Allow(key, 1)
	for _, tt := range []struct {
		name string
		f    func()
	}{
		{"admitted", func() { _ = l.Allow(key, 0); _ = l.Allow(key, 1) }},
		{"admitted at", func() { _ = l.AllowAt(key, 1, epoch) }},
		{"unlimited key", func() { _ = l.Allow("off", 1) }},
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
	if err := l.SetLimit(key, Limit{Rate: 1}); err != nil {
		t.Fatal(err)
	}
	s := l.shard(key)
	for k := range s.buckets {
		if unsafe.StringData(k) == &buf[0] {
			t.Error("bucket map keeps the caller's buffer")
		}
	}
	for k := range s.overrides {
		if unsafe.StringData(k) == &buf[0] {
			t.Error("override map keeps the caller's buffer")
		}
	}
}
