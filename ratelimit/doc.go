// Package ratelimit is a per-key rate limiter: every key gets its own token
// bucket, and keys never share a budget. It models NAVER Cloud KMS API 2.0,
// which guarantees each key 300 operations per second independently of
// every other key.
//
// Start with New and Allow:
//
//	lim, err := ratelimit.New() // 300/s, burst 300 per key
//	...
//	if err := lim.Allow(keyTag, 1); err != nil {
//		var rl *ratelimit.RateLimitedError
//		if errors.As(err, &rl) {
//			// answer 429, Retry-After: rl.RetryAfter
//		}
//		return err
//	}
//
// Allow never blocks: it admits a call and spends its cost, or refuses it
// and spends nothing. Allow enforces the engine-wide limit, set with
// WithDefaultLimit; a key with a limit of its own goes through AllowLimit,
// which takes that limit as an argument. Limit{Unlimited: true} switches
// limiting off, engine-wide or for one key. Time comes from a Clock
// (WithClock), so tests drive simulated time and never sleep; AllowAt and
// AllowLimitAt take a reading the caller has just made.
//
// # Per-key limits
//
// The Limiter stores no per-key limits. The caller owns them (the Engine
// keeps a key's limit in the key's snapshot and persists it with the key),
// normalizes each once with Limit.Normalize when it stores it, and passes
// it on every call:
//
//	err := lim.AllowLimit(keyTag, snap.Limit, cost)
//
// So there is one source of truth and no second copy to keep in step: a
// limit takes effect on the first call that passes it, survives restarts
// with the caller's storage, and never outlives the key. A limit that is
// not normalized is refused with ErrInvalidLimit rather than normalized on
// the fly: with Burst left at zero it would never equal the normalized
// limit its bucket holds, and every call would take the slow path.
//
// Each bucket remembers the limit it was last used under. A call under
// that same limit takes the fast path: a read lock, one comparison of
// limits, the bucket's update and no allocation. A call
// under another limit moves the bucket to it under the shard's write lock:
// the bucket keeps its tokens, capped at the new burst, and refills at the
// new rate from then on, so changing a limit never hands out a fresh
// burst. An unlimited limit drops the key's bucket. Allow and AllowAt are
// AllowLimit with the default limit, so a key moved between its own limit
// and the default keeps its tokens too.
//
// # Limits and burst
//
// A Limit is a token bucket: Rate tokens per second refill a bucket holding
// at most Burst tokens, and a call of cost n takes n tokens. The default is
// DefaultRate (300/s) with a DefaultBurst of 300, one second's worth. A burst
// of one second matches how NAVER states its guarantee (operations per
// second): a key that has been idle may spend its whole second at once, for
// example three full 100-item batches, while over any interval T a key is
// admitted at most Burst + Rate×T operations, so the sustained rate is
// exactly Rate. A smaller burst would refuse a client that sends its
// second's worth in one go, and a burst below the largest batch cost would
// refuse that batch forever. A call whose cost exceeds the burst can never be
// admitted and is refused with ErrExceedsBurst (not ErrRateLimited: retrying
// does not help).
//
// # What the Engine counts
//
// The cost n is the number of operations a call stands for. The Engine
// charges a key after authentication (so junk tokens cannot spend a key's
// budget) and before the backend runs; one cipher call (encrypt, decrypt,
// re-encrypt, sign, verify, data-key creation) costs 1, a batch of k items
// costs k, and operations that are expensive for the backend (RSA private-key
// operations) may cost more. The exact weights are the Engine's to choose and
// are documented in package kms; this package only adds them up. A refused
// call costs nothing, so a flood over the limit does not push a key's
// recovery further away.
//
// # Memory and eviction
//
// A bucket is created on a key's first limited call and costs about 260
// bytes. A bucket that is full again (idle for Burst/Rate seconds, one second
// by default) behaves exactly like a fresh one under the same limit, so the
// Limiter drops full buckets without changing any decision: whenever an
// insert finds that a shard has doubled since its last sweep, that shard is
// swept first, so the work is amortized over the inserts and no goroutine
// is needed. Sweep does the same for every shard on demand. Each bucket is
// judged full, and ranked for eviction, against its own limit.
//
// The number of buckets is also bounded outright (WithMaxBuckets, default
// DefaultMaxBuckets, split evenly over the shards, so a shard may reach its
// share a little before the whole reaches the bound). When an insert finds
// its shard at its share with none of its buckets full, meaning more keys
// than the bound were used within about one second, the shard evicts the
// quarter of its buckets closest to full. That is the one approximate step:
// an evicted key that comes back gets a full bucket again, up to Burst
// tokens more than its limit allows; a key that has spent its budget is the
// last to be evicted.
//
// # Concurrency
//
// A Limiter is safe for concurrent use. Keys are spread over up to 256
// shards by maphash. A call on a key whose bucket exists under the limit
// passed (the common case) takes its shard's read lock and the bucket's own
// mutex (inside rate.Limiter), so calls on different keys never wait on a
// common lock, and calls on one key serialize only on that key's bucket.
// Such a call allocates nothing when it admits, and neither does a call
// under an unlimited limit (a read lock, to find that the key has no
// bucket) nor Allow under an unlimited default (no lock at all). Creating a
// bucket, moving one to another limit, dropping one for
// an unlimited call, and sweeps take one shard's write lock. The shard lock
// is held across the bucket's update, so eviction never races with a call
// spending from the evicted bucket.
//
// Callers that pass one key different finite limits at once (while a change
// propagates, say) are each served under their own limit; the bucket moves
// to and fro under the write lock, keeping its tokens each time, so the key
// is never admitted more than its largest burst plus what the rates refill.
//
// # Limitations
//
//   - Limits are per process: two Limiters, or two processes, each grant the
//     full rate.
//   - There is no fairness among the callers of one key: Allow does not
//     queue, so a busy caller can take a key's whole budget from a quiet one.
//   - A refusal allocates its error (a few dozen bytes).
//   - RetryAfter is an estimate: another caller of the same key may spend the
//     tokens first.
//   - The Clock should not go backwards. Concurrent callers of one key read
//     it without a common lock, so a bucket may see times slightly out of
//     order; golang.org/x/time/rate then credits the reordered interval
//     twice, a surplus of Rate × (the reordering, typically nanoseconds)
//     tokens. Sweeping is exact only for times after the sweep.
//   - Eviction is exact only while fewer keys than WithMaxBuckets are busy
//     within one refill period (Burst/Rate); beyond that it sheds the
//     fullest buckets, as described under Memory and eviction.
//   - A limit change keeps the tokens only of a bucket that exists. A key
//     without one (never used, evicted, swept because full, or last called
//     unlimited) starts full under the limit it is passed: a full, idle
//     key whose burst is raised may spend the new burst at once, and a key
//     switched from unlimited back to a limit starts with a full burst.
//   - Allow and AllowAt under an unlimited default do not look keys up, so
//     they leave any bucket a key has from AllowLimit until it is swept.
package ratelimit
