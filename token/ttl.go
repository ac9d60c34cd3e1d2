package token

import (
	"fmt"
	"strconv"
	"time"
)

// Token lifetimes, in whole minutes (spec §6.3).
const (
	// MinTTLMinutes is the shortest lifetime: one minute.
	MinTTLMinutes = 1
	// MaxTTLMinutes is the longest lifetime that is not unlimited: 730 days
	// (17,520 hours).
	MaxTTLMinutes = 1_051_200
	// DefaultAccessTTLMinutes is NAVER's default access-token lifetime:
	// 72 hours.
	DefaultAccessTTLMinutes = 72 * 60
	// DefaultRefreshTTLMinutes is NAVER's default refresh-token lifetime:
	// 2,160 hours (90 days).
	DefaultRefreshTTLMinutes = 2_160 * 60
)

// TTL is the lifetime of a token: either Minutes (1 .. MaxTTLMinutes) or
// Unlimited, never both. The zero TTL is invalid, so a forgotten lifetime
// fails instead of silently picking one; callers that follow NAVER's
// defaults fill in DefaultAccessTTLMinutes and DefaultRefreshTTLMinutes
// themselves.
type TTL struct {
	// Minutes is the lifetime in whole minutes; it must be 0 when
	// Unlimited is set.
	Minutes int
	// Unlimited makes a token that never expires: it carries no exp claim.
	Unlimited bool
}

// Validate returns an error matching [ErrInvalidTTL] unless t is valid.
func (t TTL) Validate() error {
	if t.Unlimited {
		if t.Minutes != 0 {
			return fmt.Errorf("%w: minutes given with unlimited", ErrInvalidTTL)
		}
		return nil
	}
	if t.Minutes < MinTTLMinutes || t.Minutes > MaxTTLMinutes {
		return fmt.Errorf("%w: %d minutes is outside %d..%d", ErrInvalidTTL, t.Minutes, MinTTLMinutes, MaxTTLMinutes)
	}
	return nil
}

// Duration returns the lifetime as a time.Duration, or 0 when t is
// Unlimited.
func (t TTL) Duration() time.Duration {
	if t.Unlimited {
		return 0
	}
	return time.Duration(t.Minutes) * time.Minute
}

// String returns "unlimited" or the number of minutes followed by "m".
func (t TTL) String() string {
	if t.Unlimited {
		if t.Minutes != 0 {
			return "invalid"
		}
		return "unlimited"
	}
	return strconv.Itoa(t.Minutes) + "m"
}
