package ratelimit

import (
	"cmp"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const (
	// maxShards is the number of shards of a Limiter with the default bound.
	maxShards = 256
	// minShardCap: New halves the shard count until each shard may hold at
	// least this many buckets (or one shard is left).
	minShardCap = 16
	// minSweep is the smallest shard size that triggers a sweep on insert.
	minSweep = 16
)

// Limiter is a set of per-key token buckets. Create it with New; the zero
// Limiter is not usable. A Limiter is safe for concurrent use.
type Limiter struct {
	clock    Clock // nil means time.Now
	def      Limit // normalized
	shardCap int   // the most buckets one shard holds
	mask     uint64
	seed     maphash.Seed
	shards   []shard
}

// shard is one lock's worth of the key space. Its read lock is held across
// the bucket's AllowN, so a sweep (write lock) never removes a bucket that a
// caller is about to spend from: eviction loses no tokens.
type shard struct {
	mu      sync.RWMutex
	buckets map[string]bucket
	sweepAt int // sweep when an insert finds this many buckets
	_       [128 - 24 - 2*8]byte
}

// bucket is one key's token bucket. The map holds it by value; limit is the
// (normalized, finite) limit lim enforces, which is the limit of the call
// that last used the bucket. It is kept beside lim so that a call can tell
// whether its limit changed, and sweeps and refusals need not lock lim to
// read it; it changes only under the shard's write lock.
type bucket struct {
	lim   *rate.Limiter
	limit Limit
}

// New returns a Limiter configured by opts: by default every key gets
// DefaultLimit, time comes from time.Now and at most DefaultMaxBuckets
// buckets are held. Invalid options yield an error matching ErrInvalidLimit.
func New(opts ...Option) (*Limiter, error) {
	cfg := config{def: DefaultLimit(), maxBuckets: DefaultMaxBuckets}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if err := errors.Join(cfg.errs...); err != nil {
		return nil, err
	}
	n := maxShards
	for n > 1 && cfg.maxBuckets/n < minShardCap {
		n /= 2
	}
	l := &Limiter{
		clock:    cfg.clock,
		def:      cfg.def,
		shardCap: cfg.maxBuckets / n,
		mask:     uint64(n - 1),
		seed:     maphash.MakeSeed(),
		shards:   make([]shard, n),
	}
	for i := range l.shards {
		l.shards[i].buckets = make(map[string]bucket)
		l.shards[i].sweepAt = min(minSweep, l.shardCap)
	}
	return l, nil
}

// Allow spends n tokens from key's bucket under the Limiter's default
// limit (WithDefaultLimit) and returns nil, or refuses the call without
// spending anything. It never blocks. It is AllowLimit(key, default, n),
// except that under an unlimited default it admits every call without
// looking key up, so a bucket that AllowLimit left for key stays until a
// sweep drops it.
//
// A cost of zero is always admitted. Otherwise Allow returns:
//   - a *RateLimitedError (matching ErrRateLimited) when the bucket holds
//     fewer than n tokens; it says when to retry;
//   - an error matching ErrExceedsBurst when n is larger than the burst,
//     since no amount of waiting would admit it;
//   - an error matching ErrInvalidCost when n is negative.
func (l *Limiter) Allow(key string, n int) error {
	if l.def.Unlimited && n >= 0 {
		return nil
	}
	return l.allow(key, l.def, n, time.Time{}, false)
}

// AllowAt is Allow for a caller that has just read the Limiter's clock
// (the one given to WithClock, or time.Now) and passes that reading as
// now, saving a second read on a hot path. The reading must be fresh:
// taken just before the call, with nothing slow in between. x/time/rate
// refills nothing for a reading older than the bucket's last update but
// then records it as the last update, so the next call refills from it
// again; a reading held for long would let the bucket count the same
// time twice. (Allow's own reading has the same property when goroutines
// race to the bucket, bounded by how long they wait for its lock.)
func (l *Limiter) AllowAt(key string, n int, now time.Time) error {
	if l.def.Unlimited && n >= 0 {
		return nil
	}
	return l.allow(key, l.def, n, now, true)
}

// AllowLimit is Allow for a key with a limit of its own: lim is the limit
// in force for key for this call, as the caller stores it (the Engine keeps
// it in the key's snapshot). The Limiter stores no per-key limits, so there
// is no copy to keep in step with the caller's: a bucket only remembers the
// limit it was last used under, to notice a change.
//
// lim must be normalized (see Limit.Normalize). Any other lim is refused
// with an error matching ErrInvalidLimit, whatever n, and nothing is spent
// or changed. Limit{Unlimited: true} admits every call of a non-negative
// cost and drops key's bucket if it has one.
//
// When lim is finite and key's bucket was last used under another limit,
// the bucket moves to lim keeping its current tokens (capped at lim.Burst)
// and refills at lim.Rate from now on, so changing a limit never hands out
// a fresh burst. That move takes the shard's write lock; a call under the
// bucket's current limit costs what Allow costs. A key without a bucket
// (never used, swept because its bucket was full, evicted, or last used
// unlimited) starts with a full bucket under lim.
//
// Otherwise AllowLimit behaves and fails as Allow does, with lim.Burst as
// the burst; a *RateLimitedError it returns carries lim as its Limit.
func (l *Limiter) AllowLimit(key string, lim Limit, n int) error {
	return l.allow(key, lim, n, time.Time{}, false)
}

// AllowLimitAt is AllowLimit with the caller's own fresh reading of the
// Limiter's clock, on the terms of AllowAt.
func (l *Limiter) AllowLimitAt(key string, lim Limit, n int, now time.Time) error {
	return l.allow(key, lim, n, now, true)
}

// allow is the common path: lim is the limit in force for key for this
// call, as the caller passed it (not yet checked). When key's bucket
// exists under lim, which then is known to be normalized, it spends under
// the shard's read lock; everything else goes to allowSlow.
func (l *Limiter) allow(key string, lim Limit, n int, t time.Time, haveNow bool) error {
	if n <= 0 {
		return trivial(key, lim, n)
	}
	s := l.shard(key)
	s.mu.RLock()
	b, ok := s.buckets[key]
	if ok && b.limit == lim {
		if !haveNow {
			t = l.now()
		}
		if b.lim.AllowN(t, n) {
			s.mu.RUnlock()
			return nil
		}
		d := deny(b, t)
		s.mu.RUnlock()
		return d.err(key, n)
	}
	s.mu.RUnlock()
	if why := notNormalized(lim); why != "" {
		return invalidLimit(key, why)
	}
	if lim.Unlimited && !ok {
		return nil
	}
	return l.allowSlow(s, key, lim, n, t, haveNow)
}

// allowSlow is the rare path, under the shard's write lock: for a
// normalized lim it drops key's bucket if lim is unlimited, moves the
// bucket to lim if it was last used under another limit, or creates it,
// sweeping the shard first when it has grown; then it spends.
func (l *Limiter) allowSlow(s *shard, key string, lim Limit, n int, t time.Time, haveNow bool) error {
	s.mu.Lock()
	b, ok := s.buckets[key]
	if lim.Unlimited {
		if ok {
			delete(s.buckets, key)
		}
		s.mu.Unlock()
		return nil
	}
	if !haveNow {
		t = l.now()
	}
	switch {
	case !ok:
		if n > lim.Burst {
			s.mu.Unlock()
			return exceedsBurst(key, n, lim.Burst)
		}
		if len(s.buckets) >= s.sweepAt {
			l.maintainLocked(s, t)
		}
		b = bucket{lim: rate.NewLimiter(rate.Limit(lim.Rate), lim.Burst), limit: lim}
		// Clone: the map must not pin a caller's larger buffer.
		s.buckets[strings.Clone(key)] = b
	case b.limit != lim:
		// Tokens so far accrue at the old rate; SetBurstAt leaves them
		// above a lowered burst, and AllowN and TokensAt cap them.
		b.lim.SetLimitAt(t, rate.Limit(lim.Rate))
		b.lim.SetBurstAt(t, lim.Burst)
		b.limit = lim
		// Clone: assigning to an existing entry replaces its key too.
		s.buckets[strings.Clone(key)] = b
	}
	if b.lim.AllowN(t, n) {
		s.mu.Unlock()
		return nil
	}
	d := deny(b, t)
	s.mu.Unlock()
	return d.err(key, n)
}

// trivial answers a call of cost n ≤ 0, which spends nothing and needs no
// bucket, after checking lim as any other call would.
func trivial(key string, lim Limit, n int) error {
	if why := notNormalized(lim); why != "" {
		return invalidLimit(key, why)
	}
	if n < 0 {
		return fmt.Errorf("%w: key %s cost %d is negative", ErrInvalidCost, key, n)
	}
	return nil
}

// notNormalized returns why lim is not a normalized Limit, or "".
func notNormalized(lim Limit) string {
	norm, why := lim.normalize()
	if why == "" && norm != lim {
		why = fmt.Sprintf("burst 0 is not normalized (normalized: %v)", norm)
	}
	return why
}

func invalidLimit(key, why string) error {
	return fmt.Errorf("%w: key %s: %s", ErrInvalidLimit, key, why)
}

// Len returns the number of buckets currently held. A key holds one from
// its first limited call until its bucket is swept, evicted or dropped by
// an unlimited call.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.RLock()
		n += len(s.buckets)
		s.mu.RUnlock()
	}
	return n
}

// Sweep removes every bucket that is full, returning how many it removed. A
// full bucket behaves exactly like the fresh one Allow would create under
// the same limit, so sweeping never changes a decision while a key's limit
// stays put (see AllowLimit for a changed one). Creating a bucket already
// sweeps its shard whenever the shard has doubled since its last sweep, so
// calling Sweep is optional: it returns memory after a burst of keys has
// gone idle.
func (l *Limiter) Sweep() int {
	t := l.now()
	removed := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		removed += sweepLocked(s, t)
		s.sweepAt = l.nextSweep(s)
		s.mu.Unlock()
	}
	return removed
}

func (l *Limiter) now() time.Time {
	if l.clock == nil {
		return time.Now()
	}
	return l.clock.Now()
}

func (l *Limiter) shard(key string) *shard {
	return &l.shards[maphash.String(l.seed, key)&l.mask]
}

// maintainLocked runs when an insert finds the shard at its sweep
// threshold: it drops the full buckets and, if the shard is still at its
// bound, sheds the quarter of its buckets closest to full (evicting a bucket
// that lacks d tokens lets its key spend up to d more than its limit, so the
// fullest go first). The threshold then doubles from what is left, so the
// work, one pass over the shard, is amortized over the inserts in between.
// The write lock must be held.
func (l *Limiter) maintainLocked(s *shard, t time.Time) {
	type candidate struct {
		key     string
		deficit float64
	}
	var c []candidate
	shed := len(s.buckets) >= l.shardCap
	if shed {
		c = make([]candidate, 0, len(s.buckets))
	}
	for k, b := range s.buckets {
		deficit := float64(b.limit.Burst) - b.lim.TokensAt(t)
		switch {
		case deficit <= 0:
			delete(s.buckets, k)
		case shed:
			c = append(c, candidate{k, deficit})
		}
	}
	if len(s.buckets) >= l.shardCap { // then c holds exactly the buckets left
		slices.SortFunc(c, func(a, b candidate) int { return cmp.Compare(a.deficit, b.deficit) })
		keep := l.shardCap - max(1, l.shardCap/4)
		for _, x := range c[:len(c)-keep] {
			delete(s.buckets, x.key)
		}
	}
	s.sweepAt = l.nextSweep(s)
}

func (l *Limiter) nextSweep(s *shard) int {
	return min(l.shardCap, max(minSweep, 2*len(s.buckets)))
}

// sweepLocked deletes the shard's full buckets. The write lock must be held.
func sweepLocked(s *shard, t time.Time) int {
	removed := 0
	for k, b := range s.buckets {
		if b.lim.TokensAt(t) >= float64(b.limit.Burst) {
			delete(s.buckets, k)
			removed++
		}
	}
	return removed
}

// denial is what a refused call needs to build its error, read while the
// shard lock still pins the bucket.
type denial struct {
	tokens float64
	limit  Limit
}

func deny(b bucket, t time.Time) denial {
	return denial{tokens: b.lim.TokensAt(t), limit: b.limit}
}

func (d denial) err(key string, n int) error {
	if n > d.limit.Burst {
		return exceedsBurst(key, n, d.limit.Burst)
	}
	return &RateLimitedError{Key: key, Cost: n, RetryAfter: retryAfter(d.tokens, n, d.limit.Rate), Limit: d.limit}
}

func exceedsBurst(key string, n, burst int) error {
	return fmt.Errorf("%w: key %s cost %d, burst %d", ErrExceedsBurst, key, n, burst)
}

// retryAfter returns the time for a bucket holding tokens to reach n at
// rate r, rounded up so that x/time/rate's own arithmetic admits n then.
func retryAfter(tokens float64, n int, r float64) time.Duration {
	need := float64(n) - tokens
	if !(need > 0) {
		// Another caller refilled the view between AllowN and TokensAt
		// (possible only when callers' clocks disagree); retry at once.
		return time.Nanosecond
	}
	ns := math.Ceil(need / r * 1e9)
	if ns >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	d := max(time.Duration(ns), time.Nanosecond)
	for i := 0; i < 4 && tokens+d.Seconds()*r < float64(n); i++ {
		d++
	}
	return d
}
