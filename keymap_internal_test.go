package kms

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
)

// TestKeyMapShards: random key tags spread over every shard (the shard is
// taken from the tag's last two hex digits, without hashing), and strings
// that are not tags (empty, short, upper-case, not hex) are stored, found
// and deleted like any other.
func TestKeyMapShards(t *testing.T) {
	var km keyMap
	const n = 64 * 200
	for range n {
		var b [32]byte
		rand.Read(b[:])
		tag := hex.EncodeToString(b[:])
		km.Store(tag, &keyEntry{})
	}
	for i := range km.shards {
		// 200 a shard on average; a binomial spread stays far above 100.
		if got := len(km.shards[i].m); got < 100 || got > 300 {
			t.Errorf("shard %d holds %d of %d random tags", i, got, n)
		}
	}
	odd := []string{"", "a", "ZZ", "not a tag at all \xff\x00", "ABCDEF", "abcdef"}
	ents := map[string]*keyEntry{}
	for _, s := range odd {
		ents[s] = &keyEntry{}
		km.Store(s, ents[s])
	}
	for _, s := range odd {
		if got, ok := km.Load(s); !ok || got != ents[s] {
			t.Errorf("Load(%q) = %p, %v; want %p", s, got, ok, ents[s])
		}
		km.Delete(s)
		if _, ok := km.Load(s); ok {
			t.Errorf("Load(%q) after Delete found it", s)
		}
	}
}
