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

func ExampleLimiter_SetLimit() {
	lim, err := ratelimit.New() // 300/s, burst 300 for every key
	if err != nil {
		panic(err)
	}
	if err := lim.SetLimit("batch-key", ratelimit.Limit{Rate: 1000}); err != nil { // burst: one second's worth
		panic(err)
	}
	if err := lim.SetLimit("internal-key", ratelimit.Limit{Unlimited: true}); err != nil {
		panic(err)
	}
	for _, key := range []string{"batch-key", "internal-key", "other-key"} {
		l, overridden := lim.LimitOf(key)
		fmt.Println(key, l, overridden)
	}
	fmt.Println(lim.SetLimit("other-key", ratelimit.Limit{Rate: -1}) != nil)
	// Output:
	// batch-key 1000/s burst 1000 true
	// internal-key unlimited true
	// other-key 300/s burst 300 false
	// true
}
