package token

import (
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"io"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Cache remembers verified tokens so that a token seen before costs a map
// look-up instead of an RSA verification. It is bounded: it never holds
// more than the maxEntries given to [NewCache]; when a shard is full, Put
// evicts a random entry of that shard.
//
// A hit is not a verdict. The caller must [Verified.Recheck] every hit
// against the generator's current id, the request's expectation and its
// clock, and check the key's state, so that rotation, deactivation and
// expiry take effect at once; Delete or DeleteGenerator then drop entries
// that can never pass again.
//
// # Design
//
// The cache is split into a power-of-two number of shards (about 64 entries
// each, at most 4096 shards) chosen by a seeded [maphash] of the token.
// Each shard publishes an immutable map through an atomic pointer: Get is
// one hash, one atomic load and one map look-up, and writes nothing shared,
// so goroutines that all present the same token (one client's access
// token, the common case) do not contend at all. Put, Delete and
// DeleteGenerator take the shard's mutex and publish a modified copy; a
// copy costs a few microseconds, against the tens of microseconds of the
// RSA verification that precedes every Put.
//
// # Security
//
// Entries are found by the seeded 64-bit hash and confirmed by comparing the
// whole token string in constant time (see ctEqual), so a hash collision
// is a miss, never a false hit, and the comparison's timing tells nothing
// about a presented token's likeness to a stored one.
// The token strings are kept, in memory only, as the proof of identity;
// they are copied on Put (so a large request buffer is not retained), are
// never logged or printed (Cache's String, GoString and Format show only
// counts), and are released when evicted or deleted. Go strings cannot be
// wiped, so a released token lingers in the heap until the garbage
// collector reuses its memory.
type Cache struct {
	seed     maphash.Seed
	shards   []cacheShard
	mask     uint64
	perShard int
}

type cacheEntry struct {
	tok string
	v   *Verified
}

type cacheTable = map[uint64]cacheEntry

type cacheShard struct {
	table atomic.Pointer[cacheTable]
	mu    sync.Mutex
	_     [48]byte // keep shards on separate cache lines
}

// Shape of a Cache.
const (
	targetPerShard = 64
	maxShards      = 4096
)

// NewCache returns an empty cache holding at most maxEntries verified
// tokens. A maxEntries below one fails with an error matching
// [ErrInvalidArgument]. Because entries are spread over shards of equal
// size, the cache may start evicting somewhat before it holds maxEntries.
func NewCache(maxEntries int) (*Cache, error) {
	if maxEntries < 1 {
		return nil, invalidArg("cache", "maxEntries must be at least 1")
	}
	n := (maxEntries + targetPerShard - 1) / targetPerShard
	n = 1 << bits.Len(uint(n-1)) // round up to a power of two
	n = min(n, maxShards)
	for n > maxEntries {
		n /= 2
	}
	return &Cache{
		seed:     maphash.MakeSeed(),
		shards:   make([]cacheShard, n),
		mask:     uint64(n - 1),
		perShard: maxEntries / n,
	}, nil
}

func (c *Cache) shard(tok string) (*cacheShard, uint64) {
	h := maphash.String(c.seed, tok)
	return &c.shards[h&c.mask], h
}

// Get returns the verification recorded for exactly tok, if any. The
// returned Verified is shared: it must not be modified.
func (c *Cache) Get(tok string) (*Verified, bool) {
	if len(tok) > MaxTokenSize {
		return nil, false
	}
	s, h := c.shard(tok)
	t := s.table.Load()
	if t == nil {
		return nil, false
	}
	e, ok := (*t)[h]
	if !ok || !ctEqual(e.tok, tok) {
		return nil, false
	}
	return e.v, true
}

// ctEqual compares a presented token with a stored one in time that
// depends only on their lengths, so the comparison says nothing about how
// much of a guess was right. It XORs the two strings eight bytes at a time
// and ORs the differences together, with no branch on their contents, and
// decides once at the end (as crypto/subtle.ConstantTimeCompare does, which
// goes a byte at a time: about 260 ns for a 750-byte token against 30 ns
// here; BenchmarkCtEqual). The byte views share the strings' memory (no
// copy, no allocation) and are only read.
func ctEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	x := unsafe.Slice(unsafe.StringData(a), len(a))
	y := unsafe.Slice(unsafe.StringData(b), len(b))
	// Four independent accumulators over 32-byte blocks, then words,
	// then bytes.
	var d0, d1, d2, d3 uint64
	for len(x) >= 32 && len(y) >= 32 {
		d0 |= binary.LittleEndian.Uint64(x[0:8]) ^ binary.LittleEndian.Uint64(y[0:8])
		d1 |= binary.LittleEndian.Uint64(x[8:16]) ^ binary.LittleEndian.Uint64(y[8:16])
		d2 |= binary.LittleEndian.Uint64(x[16:24]) ^ binary.LittleEndian.Uint64(y[16:24])
		d3 |= binary.LittleEndian.Uint64(x[24:32]) ^ binary.LittleEndian.Uint64(y[24:32])
		x, y = x[32:], y[32:]
	}
	for len(x) >= 8 && len(y) >= 8 {
		d0 |= binary.LittleEndian.Uint64(x[:8]) ^ binary.LittleEndian.Uint64(y[:8])
		x, y = x[8:], y[8:]
	}
	for i := 0; i < len(x) && i < len(y); i++ {
		d1 |= uint64(x[i] ^ y[i])
	}
	diff := d0 | d1 | d2 | d3
	return subtle.ConstantTimeEq(int32(uint32(diff)|uint32(diff>>32)), 0) == 1
}

// Put records that tok was verified as v, replacing any earlier record, and
// evicts a random entry when the shard is full. Record only what [Verify]
// accepted. Put ignores a nil v, a v without a GeneratorID, and an empty or
// over-long tok. After Put, v belongs to the cache and must not be
// modified.
func (c *Cache) Put(tok string, v *Verified) {
	if v == nil || v.GeneratorID == "" || tok == "" || len(tok) > MaxTokenSize {
		return
	}
	s, h := c.shard(tok)
	s.mu.Lock()
	defer s.mu.Unlock()
	var old cacheTable
	if t := s.table.Load(); t != nil {
		old = *t
	}
	_, replacing := old[h]
	evict := !replacing && len(old) >= c.perShard
	next := make(cacheTable, min(len(old)+1, c.perShard))
	for k, e := range old {
		if evict {
			// Map iteration starts at a random position, so the first
			// entry seen is a random victim.
			evict = false
			continue
		}
		next[k] = e
	}
	next[h] = cacheEntry{tok: strings.Clone(tok), v: v}
	s.table.Store(&next)
}

// Delete drops the record of tok, if any.
func (c *Cache) Delete(tok string) {
	if len(tok) > MaxTokenSize {
		return
	}
	s, h := c.shard(tok)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.table.Load()
	if t == nil {
		return
	}
	if e, ok := (*t)[h]; !ok || e.tok != tok {
		return
	}
	s.rewrite(func(k uint64, _ cacheEntry) bool { return k == h })
}

// DeleteGenerator drops every record verified by the generator with the
// given id, and returns how many it dropped. Call it when a generator is
// rotated or deactivated to free the memory of tokens that can never pass
// Recheck again. It visits every shard.
func (c *Cache) DeleteGenerator(generatorID string) int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.rewrite(func(_ uint64, e cacheEntry) bool { return e.v.GeneratorID == generatorID })
		s.mu.Unlock()
	}
	return n
}

// rewrite publishes the shard without the entries drop selects, and
// returns how many it dropped. The caller holds s.mu.
func (s *cacheShard) rewrite(drop func(uint64, cacheEntry) bool) int {
	t := s.table.Load()
	if t == nil {
		return 0
	}
	n := 0
	for k, e := range *t {
		if drop(k, e) {
			n++
		}
	}
	if n == 0 {
		return 0
	}
	next := make(cacheTable, len(*t)-n)
	for k, e := range *t {
		if !drop(k, e) {
			next[k] = e
		}
	}
	s.table.Store(&next)
	return n
}

// Clear drops every record.
func (c *Cache) Clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.table.Store(nil)
		s.mu.Unlock()
	}
}

// Len returns the number of records. Under concurrent writes it is a
// snapshot per shard, not of the whole cache.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		if t := c.shards[i].table.Load(); t != nil {
			n += len(*t)
		}
	}
	return n
}

// String returns a description with counts only, never tokens.
func (c *Cache) String() string {
	return "token.Cache{len:" + strconv.Itoa(c.Len()) + " max:" + strconv.Itoa(c.perShard*len(c.shards)) + "}"
}

// GoString returns the same description as String.
func (c *Cache) GoString() string { return c.String() }

// Format implements fmt.Formatter: every verb prints String.
func (c *Cache) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }
