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

// TTL is the lifetime of a token: Minutes (1 .. MaxTTLMinutes), or
// Unlimited, or the zero TTL, which means NAVER's default for the token's
// kind: DefaultAccessTTLMinutes for an access token,
// DefaultRefreshTTLMinutes for a refresh token. The zero TTL means that
// everywhere in this module (IssueSet, the Engine, the HTTP API), so an
// absent lifetime is always the default and never an error.
type TTL struct {
	// Minutes is the lifetime in whole minutes; it must be 0 when
	// Unlimited is set.
	Minutes int
	// Unlimited makes a token that never expires: it carries no exp claim.
	Unlimited bool
}

// Validate returns an error matching [ErrInvalidTTL] unless t is valid.
// The zero TTL is valid: it stands for the default.
func (t TTL) Validate() error {
	if t == (TTL{}) {
		return nil
	}
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

// For returns t with the zero TTL replaced by the default lifetime of a
// token of kind k.
func (t TTL) For(k Kind) TTL {
	if t != (TTL{}) {
		return t
	}
	if k == Refresh {
		return TTL{Minutes: DefaultRefreshTTLMinutes}
	}
	return TTL{Minutes: DefaultAccessTTLMinutes}
}

// Duration returns the lifetime as a time.Duration, or 0 when t is
// Unlimited (or zero: resolve it with For first).
func (t TTL) Duration() time.Duration {
	if t.Unlimited {
		return 0
	}
	return time.Duration(t.Minutes) * time.Minute
}

// String returns "unlimited", "default", or the number of minutes
// followed by "m".
func (t TTL) String() string {
	if t == (TTL{}) {
		return "default"
	}
	if t.Unlimited {
		if t.Minutes != 0 {
			return "invalid"
		}
		return "unlimited"
	}
	return strconv.Itoa(t.Minutes) + "m"
}
