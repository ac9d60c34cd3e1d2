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
	"sync/atomic"
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
	clock     Clock // nil means time.Now
	def       Limit // normalized
	shardCap  int   // the most buckets one shard holds
	mask      uint64
	seed      maphash.Seed
	overrides atomic.Int64 // number of per-key overrides, for the all-unlimited fast path
	shards    []shard
}

// shard is one lock's worth of the key space. Its read lock is held across
// the bucket's AllowN, so a sweep (write lock) never removes a bucket that a
// caller is about to spend from: eviction loses no tokens.
type shard struct {
	mu        sync.RWMutex
	buckets   map[string]bucket
	overrides map[string]Limit // normalized; nil until the first SetLimit
	sweepAt   int              // sweep when an insert finds this many buckets
	_         [128 - 24 - 3*8]byte
}

// bucket is one key's token bucket. The map holds it by value; limit is the
// (normalized, finite) limit lim enforces, kept beside it so that sweeps and
// refusals need not lock lim to read it, and changed only under the shard's
// write lock.
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

// Allow spends n tokens from key's bucket and returns nil, or refuses the
// call without spending anything. It never blocks.
//
// A refusal is a *RateLimitedError (matching ErrRateLimited) when the bucket
// holds fewer than n tokens, or an error matching ErrExceedsBurst when n is
// larger than the key's burst, since no amount of waiting would admit it. A
// cost of zero is always admitted and a negative one is refused with
// ErrInvalidCost. Keys whose limit is Unlimited are always admitted and hold
// no bucket.
func (l *Limiter) Allow(key string, n int) error {
	return l.allow(key, n, time.Time{}, false)
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
	return l.allow(key, n, now, true)
}

func (l *Limiter) allow(key string, n int, t time.Time, haveNow bool) error {
	if n <= 0 {
		if n == 0 {
			return nil
		}
		return fmt.Errorf("%w: key %s cost %d is negative", ErrInvalidCost, key, n)
	}
	if l.def.Unlimited && l.overrides.Load() == 0 {
		return nil
	}
	s := l.shard(key)
	s.mu.RLock()
	if b, ok := s.buckets[key]; ok {
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
	lim := s.limitLocked(key, l.def)
	s.mu.RUnlock()
	if lim.Unlimited {
		return nil
	}
	return l.allowNew(s, key, n, t, haveNow)
}

// allowNew is Allow's slow path for a key without a bucket: it creates the
// bucket under the shard's write lock, sweeping the shard first when it has
// grown.
func (l *Limiter) allowNew(s *shard, key string, n int, t time.Time, haveNow bool) error {
	s.mu.Lock()
	if !haveNow {
		t = l.now()
	}
	b, ok := s.buckets[key]
	if !ok {
		lim := s.limitLocked(key, l.def)
		if lim.Unlimited {
			s.mu.Unlock()
			return nil
		}
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
	}
	if b.lim.AllowN(t, n) {
		s.mu.Unlock()
		return nil
	}
	d := deny(b, t)
	s.mu.Unlock()
	return d.err(key, n)
}

// SetLimit overrides the limit of key; Limit{Unlimited: true} switches
// limiting off for it. It returns an error matching ErrInvalidLimit, and
// changes nothing, if lim fails Validate.
//
// A key that already has a bucket keeps its current tokens (capped at the
// new burst) and refills at the new rate from now on, so changing a limit
// never hands out a fresh burst. Overrides live in memory only; the caller
// persists them and calls SetLimit again after a restart.
func (l *Limiter) SetLimit(key string, lim Limit) error {
	lim, err := lim.normalize()
	if err != nil {
		return err
	}
	// Clone: the maps must not pin a caller's larger buffer, and assigning
	// to an existing entry replaces its key too.
	key = strings.Clone(key)
	s := l.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := l.now()
	if s.overrides == nil {
		s.overrides = make(map[string]Limit)
	}
	if _, ok := s.overrides[key]; !ok {
		l.overrides.Add(1)
	}
	s.overrides[key] = lim
	applyLocked(s, key, lim, t)
	return nil
}

// ClearLimit removes key's override, if any, so the default limit applies to
// it again. Like SetLimit it keeps the key's current tokens.
func (l *Limiter) ClearLimit(key string) {
	s := l.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.overrides[key]; !ok {
		return
	}
	delete(s.overrides, key)
	l.overrides.Add(-1)
	applyLocked(s, strings.Clone(key), l.def, l.now())
}

// LimitOf returns the limit that applies to key (Burst filled in if it was
// given as zero) and whether it is a per-key override.
func (l *Limiter) LimitOf(key string) (lim Limit, overridden bool) {
	s := l.shard(key)
	s.mu.RLock()
	defer s.mu.RUnlock()
	lim, overridden = s.overrides[key]
	if !overridden {
		lim = l.def
	}
	return lim, overridden
}

// Len returns the number of buckets currently held. Keys with an override
// count only while they hold a bucket, as other keys do.
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
// full bucket behaves exactly like the fresh one Allow would create, so
// sweeping never changes a decision. Allow already sweeps a shard whenever
// it has doubled since its last sweep, so calling Sweep is optional: it
// returns memory after a burst of keys has gone idle.
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

// limitLocked returns key's override or def. The shard's lock must be held.
func (s *shard) limitLocked(key string, def Limit) Limit {
	if lim, ok := s.overrides[key]; ok {
		return lim
	}
	return def
}

// applyLocked makes key's bucket, if any, follow lim. The shard's write
// lock must be held, and key must not pin a caller's buffer (it may become
// the map's key).
func applyLocked(s *shard, key string, lim Limit, t time.Time) {
	b, ok := s.buckets[key]
	if !ok {
		return
	}
	if lim.Unlimited {
		delete(s.buckets, key)
		return
	}
	b.lim.SetLimitAt(t, rate.Limit(lim.Rate))
	b.lim.SetBurstAt(t, lim.Burst)
	b.limit = lim
	s.buckets[key] = b
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
