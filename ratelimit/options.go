package ratelimit

import (
	"fmt"
	"time"
)

// Clock is the source of time. The Engine passes its own clock; tests pass a
// fake one and drive simulated time. Now must be safe for concurrent use and
// should not go backwards (see Limitations in the package documentation).
type Clock interface {
	Now() time.Time
}

// DefaultMaxBuckets is the default bound on the number of buckets a Limiter
// holds at once. A bucket for a 64-character key tag costs about 260 bytes,
// so the default bounds the buckets at about 17 MB.
const DefaultMaxBuckets = 1 << 16

// Option configures a Limiter. Options are validated once, by New.
type Option func(*config)

type config struct {
	clock      Clock
	def        Limit
	maxBuckets int
	errs       []error
}

// WithClock makes the Limiter read time from c instead of time.Now. A nil c
// is an error.
func WithClock(c Clock) Option {
	return func(cfg *config) {
		if c == nil {
			cfg.errs = append(cfg.errs, fmt.Errorf("%w: nil clock", ErrInvalidLimit))
			return
		}
		cfg.clock = c
	}
}

// WithDefaultLimit sets the limit that Allow and AllowAt enforce (default
// DefaultLimit); l is normalized first, so a Burst of zero means one
// second's worth. Limit{Unlimited: true} switches Allow and AllowAt off;
// AllowLimit still enforces the limits it is given.
func WithDefaultLimit(l Limit) Option {
	return func(cfg *config) {
		n, err := l.Normalize()
		if err != nil {
			cfg.errs = append(cfg.errs, err)
			return
		}
		cfg.def = n
	}
}

// WithMaxBuckets bounds the number of buckets held at once (default
// DefaultMaxBuckets); n must be at least 1. See the package documentation
// for what happens at the bound.
func WithMaxBuckets(n int) Option {
	return func(cfg *config) {
		if n < 1 {
			cfg.errs = append(cfg.errs, fmt.Errorf("%w: max buckets %d is less than 1", ErrInvalidLimit, n))
			return
		}
		cfg.maxBuckets = n
	}
}
