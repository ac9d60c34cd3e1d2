package kms

import (
	"math"

	"github.com/pocketkms/kms/ratelimit"
)

// Cluster-wide rate limits. On a store that counts the Engines sharing it
// (store.Membership, such as etcdstore), each of N Engines enforces 1/N of
// a key's token-plane rate limit: Rate/N per second, with a burst of
// Burst/N (rounded up) but never less than min(Burst, MaxBatchItems), so
// that a batch the key's limit admits on one Engine is never refused as
// larger than the burst. Under even load the N Engines together admit the
// key's limit; see the package documentation of etcdstore for uneven load
// and for members joining or dying.

// share returns the part of a key's limit l (normalized) this Engine
// enforces.
func (e *Engine) share(l ratelimit.Limit) ratelimit.Limit {
	if e.members == nil || l.Unlimited {
		return l
	}
	n := e.members.Members()
	if n <= 1 {
		return l
	}
	return shareOf(l, n)
}

// shareOf returns 1/n of l (normalized, n > 1), normalized.
func shareOf(l ratelimit.Limit, n int) ratelimit.Limit {
	burst := int(math.Ceil(float64(l.Burst) / float64(n)))
	burst = max(burst, min(l.Burst, MaxBatchItems), 1)
	return ratelimit.Limit{Rate: l.Rate / float64(n), Burst: burst}
}
