package ratelimit

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Errors returned by this package match exactly one of them
// through errors.Is; messages name the key but never anything secret.
var (
	// ErrRateLimited is matched by every *RateLimitedError: the key's bucket
	// does not hold enough tokens for the call right now, and it will after
	// RetryAfter if nobody else spends them first.
	ErrRateLimited = errors.New("ratelimit: rate limited")

	// ErrExceedsBurst reports a call whose cost is larger than the key's
	// burst. Such a call can never be admitted, so waiting does not help and
	// the error deliberately does not match ErrRateLimited.
	ErrExceedsBurst = errors.New("ratelimit: cost exceeds burst")

	// ErrInvalidCost reports a negative cost passed to Allow.
	ErrInvalidCost = errors.New("ratelimit: invalid cost")

	// ErrInvalidLimit reports configuration that cannot be used: a Limit
	// that fails Validate, an invalid Option passed to New, or a Limit
	// passed to AllowLimit or AllowLimitAt that Normalize would refuse or
	// change.
	ErrInvalidLimit = errors.New("ratelimit: invalid limit")
)

// RateLimitedError is the error Allow and AllowLimit return when a key is
// over its limit. It matches ErrRateLimited through errors.Is; use
// errors.As to read RetryAfter. Nothing was consumed from the key's budget.
type RateLimitedError struct {
	// Key is the key that was refused, as passed to Allow (a key tag, which
	// is not secret).
	Key string
	// Cost is the cost n that was asked for.
	Cost int
	// RetryAfter estimates how long until the bucket holds Cost tokens
	// again. It is always positive. It is an estimate: other callers of the
	// same key may spend the tokens first.
	RetryAfter time.Duration
	// Limit is the limit the key was refused under: the default for Allow,
	// the limit passed for AllowLimit.
	Limit Limit
}

// Error returns a message naming the key, its limit and RetryAfter.
func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("ratelimit: rate limited: key %s over %s, retry after %s", e.Key, e.Limit, e.RetryAfter)
}

// Is reports whether target is ErrRateLimited.
func (e *RateLimitedError) Is(target error) bool { return target == ErrRateLimited }
