package ratelimit

import (
	"fmt"
	"math"
	"strconv"
)

// Defaults: NAVER Cloud KMS API 2.0 guarantees each key 300 operations per
// second, independently of every other key.
const (
	// DefaultRate is the default sustained rate: 300 operations per second
	// per key.
	DefaultRate = 300
	// DefaultBurst is the default bucket size: one second's worth of
	// DefaultRate. See the package documentation for why.
	DefaultBurst = 300
	// MaxRate is the largest finite Rate accepted, one operation per
	// nanosecond (the clock's resolution). Use Unlimited for no limit.
	MaxRate = 1e9
)

// Limit is a token-bucket configuration: Rate tokens per second flow into a
// bucket of Burst tokens, and a call of cost n takes n tokens. The zero
// Limit is invalid; use DefaultLimit, a literal or Limit{Unlimited: true}.
type Limit struct {
	// Rate is the sustained number of operations per second: positive,
	// finite and at most MaxRate, unless Unlimited is set.
	Rate float64
	// Burst is the bucket size: how many operations a key that has been
	// idle may perform at once, and the largest cost one call may ask for.
	// Zero means one second's worth: Rate rounded up, at least 1.
	Burst int
	// Unlimited switches limiting off for the key (or engine-wide, as the
	// default). Rate and Burst must then be zero.
	Unlimited bool
}

// DefaultLimit returns the NAVER API 2.0 limit: DefaultRate per second with a
// burst of DefaultBurst.
func DefaultLimit() Limit { return Limit{Rate: DefaultRate, Burst: DefaultBurst} }

// Validate reports whether l can be used, with an error matching
// ErrInvalidLimit if not. WithDefaultLimit accepts exactly the limits
// Validate accepts, and AllowLimit exactly those that Normalize returns.
func (l Limit) Validate() error {
	_, err := l.Normalize()
	return err
}

// Normalize validates l and returns it with the default burst filled in
// (Burst zero becomes one second's worth of Rate), or an error matching
// ErrInvalidLimit. AllowLimit and AllowLimitAt take only normalized limits,
// so a caller normalizes a limit once, when it stores it, and passes the
// result on every call. Normalize is idempotent.
func (l Limit) Normalize() (Limit, error) {
	n, why := l.normalize()
	if why != "" {
		return Limit{}, fmt.Errorf("%w: %s", ErrInvalidLimit, why)
	}
	return n, nil
}

// normalize is Normalize with the reason for a refusal as a string (empty
// when l is valid), so that callers can name the key in their error.
func (l Limit) normalize() (Limit, string) {
	if l.Unlimited {
		if l.Rate != 0 || l.Burst != 0 {
			return Limit{}, fmt.Sprintf("unlimited with rate %v and burst %d set", l.Rate, l.Burst)
		}
		return l, ""
	}
	// The negated comparison also rejects NaN.
	if !(l.Rate > 0 && l.Rate <= MaxRate) {
		return Limit{}, fmt.Sprintf("rate %v is not in (0, %v]", l.Rate, float64(MaxRate))
	}
	if l.Burst < 0 {
		return Limit{}, fmt.Sprintf("negative burst %d", l.Burst)
	}
	if l.Burst == 0 {
		l.Burst = int(math.Ceil(l.Rate))
	}
	return l, ""
}

// String returns "unlimited" or the rate and burst, as in "300/s burst 300".
func (l Limit) String() string {
	if l.Unlimited {
		return "unlimited"
	}
	return strconv.FormatFloat(l.Rate, 'g', -1, 64) + "/s burst " + strconv.Itoa(l.Burst)
}
