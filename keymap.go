package kms

import (
	"sync"
)

// keyMapShards is the number of shards of a keyMap: enough that
// concurrent readers on many cores rarely share a lock's cache line.
const keyMapShards = 64

// keyMap maps key tags to their entries: the Engine's key table. It
// replaces a sync.Map, which keeps one small node object per key (plus
// its trie's inner nodes) that every garbage-collection cycle walks; a
// Go map keeps its entries in a few large arrays. The shards, each a map
// under its own read-write lock, keep concurrent lookups of different
// keys from contending on one lock. Its methods have sync.Map's
// signatures and meaning, including Range's: f runs without a lock held
// (a shard's entries are copied first), so it may change the map.
type keyMap struct {
	shards [keyMapShards]keyShard
}

type keyShard struct {
	mu sync.RWMutex
	m  map[string]*keyEntry
	_  [32]byte // 64 bytes: one shard per cache line
}

// shard returns tag's shard, chosen by its last two hex digits. Key tags
// are drawn at random by the Engine (freshTag), so their digits spread
// the keys evenly without hashing them first: the shard's map hashes the
// tag anyway, and a second hash of 64 bytes was a tenth of a lookup. Any
// other string (a lookup of a tag that is not one) lands in some shard
// and is not found there.
func (km *keyMap) shard(tag string) *keyShard {
	if len(tag) < 2 {
		return &km.shards[0]
	}
	hi, lo := hexDigit(tag[len(tag)-2]), hexDigit(tag[len(tag)-1])
	return &km.shards[(hi<<4|lo)%keyMapShards]
}

// hexDigit is the value of a lower- or upper-case hex digit; any other
// byte maps to some value below 32.
func hexDigit(c byte) uint {
	return uint(c&0x0f) + 9*uint(c>>6&1)
}

// Load returns the entry of tag.
func (km *keyMap) Load(tag string) (*keyEntry, bool) {
	sh := km.shard(tag)
	sh.mu.RLock()
	ent, ok := sh.m[tag]
	sh.mu.RUnlock()
	return ent, ok
}

// Store sets the entry of tag.
func (km *keyMap) Store(tag string, ent *keyEntry) {
	sh := km.shard(tag)
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = make(map[string]*keyEntry)
	}
	sh.m[tag] = ent
	sh.mu.Unlock()
}

// LoadOrStore returns the entry of tag and true if there is one, else
// stores ent and returns it and false.
func (km *keyMap) LoadOrStore(tag string, ent *keyEntry) (*keyEntry, bool) {
	sh := km.shard(tag)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.m[tag]; ok {
		return old, true
	}
	if sh.m == nil {
		sh.m = make(map[string]*keyEntry)
	}
	sh.m[tag] = ent
	return ent, false
}

// Delete removes the entry of tag.
func (km *keyMap) Delete(tag string) {
	sh := km.shard(tag)
	sh.mu.Lock()
	delete(sh.m, tag)
	sh.mu.Unlock()
}

// Range calls f for each tag and entry until f returns false.
func (km *keyMap) Range(f func(tag string, ent *keyEntry) bool) {
	type kv struct {
		tag string
		ent *keyEntry
	}
	var buf []kv
	for i := range km.shards {
		sh := &km.shards[i]
		sh.mu.RLock()
		buf = buf[:0]
		for t, ent := range sh.m {
			buf = append(buf, kv{t, ent})
		}
		sh.mu.RUnlock()
		for _, p := range buf {
			if !f(p.tag, p.ent) {
				return
			}
		}
	}
}
