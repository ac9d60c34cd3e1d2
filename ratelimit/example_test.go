package ratelimit_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/pocketkms/kms/ratelimit"
)

// manualClock is a Clock that moves only when told to.
type manualClock struct{ t time.Time }

func (c *manualClock) Now() time.Time { return c.t }

func ExampleLimiter_Allow() {
	clock := &manualClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	lim, err := ratelimit.New(
		ratelimit.WithClock(clock),
		ratelimit.WithDefaultLimit(ratelimit.Limit{Rate: 10, Burst: 2}),
	)
	if err != nil {
		panic(err)
	}
	const keyTag = "6f1c0cbd0b5e4a2e9e3e0a1b2c3d4e5f6f1c0cbd0b5e4a2e9e3e0a1b2c3d4e5f"

	for range 3 {
		err = lim.Allow(keyTag, 1)
		fmt.Println(err == nil)
	}
	var rl *ratelimit.RateLimitedError
	if errors.As(err, &rl) {
		fmt.Println(errors.Is(err, ratelimit.ErrRateLimited), "retry after", rl.RetryAfter)
	}
	clock.t = clock.t.Add(rl.RetryAfter)
	fmt.Println(lim.Allow(keyTag, 1) == nil)

	// A cost above the burst can never be admitted.
	fmt.Println(errors.Is(lim.Allow(keyTag, 3), ratelimit.ErrExceedsBurst))
	// Output:
	// true
	// true
	// false
	// true retry after 100ms
	// true
	// true
}

func ExampleLimiter_AllowLimit() {
	clock := &manualClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	lim, err := ratelimit.New(ratelimit.WithClock(clock)) // 300/s, burst 300 by default
	if err != nil {
		panic(err)
	}
	// The caller owns the per-key limits (the Engine keeps them in each
	// key's snapshot); it normalizes a limit once, when it stores it.
	limits := map[string]ratelimit.Limit{}
	for _, kl := range []struct {
		key string
		lim ratelimit.Limit
	}{
		{"batch-key", ratelimit.Limit{Rate: 1000}}, // burst: one second's worth
		{"internal-key", ratelimit.Limit{Unlimited: true}},
		{"other-key", ratelimit.Limit{Rate: -1}},
	} {
		n, err := kl.lim.Normalize()
		if err != nil {
			fmt.Println(kl.key, errors.Is(err, ratelimit.ErrInvalidLimit))
			continue
		}
		limits[kl.key] = n
		fmt.Println(kl.key, n)
	}
	allow := func(key string, n int) error {
		if l, ok := limits[key]; ok {
			return lim.AllowLimit(key, l, n)
		}
		return lim.Allow(key, n) // the default limit
	}
	fmt.Println(allow("batch-key", 1000), allow("internal-key", 1_000_000), allow("other-key", 300))
	fmt.Println(errors.Is(allow("batch-key", 1), ratelimit.ErrRateLimited), errors.Is(allow("other-key", 1), ratelimit.ErrRateLimited))

	// A limit must be normalized: Burst 0 is not.
	fmt.Println(errors.Is(lim.AllowLimit("batch-key", ratelimit.Limit{Rate: 1000}, 1), ratelimit.ErrInvalidLimit))
	// Output:
	// batch-key 1000/s burst 1000
	// internal-key unlimited
	// other-key true
	// <nil> <nil> <nil>
	// true true
	// true
}

// A key's limit changes when the caller passes another one: the bucket
// keeps its tokens and refills at the new rate, so raising the limit of a
// drained key hands out no fresh burst.
func ExampleLimiter_AllowLimit_change() {
	clock := &manualClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	lim, err := ratelimit.New(ratelimit.WithClock(clock))
	if err != nil {
		panic(err)
	}
	const keyTag = "6f1c0cbd0b5e4a2e9e3e0a1b2c3d4e5f6f1c0cbd0b5e4a2e9e3e0a1b2c3d4e5f"
	before := ratelimit.Limit{Rate: 1, Burst: 2}
	after := ratelimit.Limit{Rate: 100, Burst: 100}

	fmt.Println(lim.AllowLimit(keyTag, before, 2)) // drains the bucket
	var rl *ratelimit.RateLimitedError
	if errors.As(lim.AllowLimit(keyTag, after, 1), &rl) {
		fmt.Println("under", rl.Limit, "retry after", rl.RetryAfter)
	}
	clock.t = clock.t.Add(100 * time.Millisecond)
	fmt.Println(lim.AllowLimit(keyTag, after, 10), lim.AllowLimit(keyTag, after, 1) != nil)
	// Output:
	// <nil>
	// under 100/s burst 100 retry after 10ms
	// <nil> true
}
