package token

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

func fakeToken(i int) string { return "tok-" + strconv.Itoa(i) + strings.Repeat("x", 700) }

func verified(genID string) *Verified {
	return &Verified{GeneratorID: genID, Claims: Claims{Subject: "s", IssuedAt: testNow, Kind: Access, KeyTag: testTag}}
}

func TestNewCache(t *testing.T) {
	for _, max := range []int{1, 2, 3, 63, 64, 65, 127, 128, 1000, 4096, 100_000, 1 << 20} {
		c, err := NewCache(max)
		if err != nil {
			t.Fatal(err)
		}
		n := len(c.shards)
		if n&(n-1) != 0 || n > maxShards || n < 1 {
			t.Errorf("max %d: %d shards", max, n)
		}
		if capacity := n * c.perShard; capacity > max || capacity < max/2 || c.perShard < 1 {
			t.Errorf("max %d: capacity %d (%d x %d)", max, capacity, n, c.perShard)
		}
	}
	for _, max := range []int{0, -1} {
		if _, err := NewCache(max); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("NewCache(%d): %v", max, err)
		}
	}
}

func TestCacheGetPutDelete(t *testing.T) {
	c, _ := NewCache(100)
	v := verified(testGenID)
	if _, ok := c.Get("a"); ok {
		t.Fatal("hit in an empty cache")
	}
	c.Put("a", v)
	if got, ok := c.Get("a"); !ok || got != v {
		t.Fatal("miss after Put")
	}
	for _, miss := range []string{"A", "a ", "", "b"} {
		if _, ok := c.Get(miss); ok {
			t.Errorf("hit for %q", miss)
		}
	}
	v2 := verified(testGenID)
	c.Put("a", v2)
	if got, _ := c.Get("a"); got != v2 || c.Len() != 1 {
		t.Error("Put does not replace")
	}
	c.Delete("b")
	c.Delete("a")
	if _, ok := c.Get("a"); ok || c.Len() != 0 {
		t.Error("hit after Delete")
	}

	// Ignored puts.
	c.Put("", v)
	c.Put("x", nil)
	c.Put("y", &Verified{})
	c.Put(strings.Repeat("z", MaxTokenSize+1), v)
	if c.Len() != 0 {
		t.Errorf("ignored puts stored %d entries", c.Len())
	}
	if _, ok := c.Get(strings.Repeat("z", MaxTokenSize+1)); ok {
		t.Error("hit for an over-long token")
	}
	c.Delete(strings.Repeat("z", MaxTokenSize+1))
}

// TestCachePutCopies: the cache keeps its own copy of the token, not a
// reference into the caller's (possibly large, possibly reused) buffer.
func TestCachePutCopies(t *testing.T) {
	c, _ := NewCache(10)
	buf := []byte("some-token-bytes")
	tok := unsafe.String(&buf[0], 10) // a view into the request buffer
	c.Put(tok, verified(testGenID))
	s, h := c.shard(tok)
	e := (*s.table.Load())[h]
	if e.tok != tok || unsafe.StringData(e.tok) == &buf[0] {
		t.Error("entry does not hold a copy")
	}
}

// TestCacheHashCollision: an entry found under the same 64-bit hash but for
// another token is a miss.
func TestCacheHashCollision(t *testing.T) {
	c, _ := NewCache(10)
	s, h := c.shard("real")
	s.table.Store(&cacheTable{h: {tok: "other", v: verified(testGenID)}})
	if _, ok := c.Get("real"); ok {
		t.Fatal("collision gave a hit")
	}
	c.Delete("real")
	if c.Len() != 1 {
		t.Fatal("Delete removed another token's entry")
	}
	c.Put("real", verified(testGenID))
	if _, ok := c.Get("real"); !ok {
		t.Fatal("Put over a colliding entry")
	}
}

func TestCacheBounded(t *testing.T) {
	for _, max := range []int{1, 7, 100, 1000} {
		c, _ := NewCache(max)
		for i := range 20 * max {
			c.Put(fakeToken(i), verified(testGenID))
			if n := c.Len(); n > max {
				t.Fatalf("max %d: %d entries after %d puts", max, n, i+1)
			}
		}
		// The newest entry always survives its own Put.
		if _, ok := c.Get(fakeToken(20*max - 1)); !ok {
			t.Errorf("max %d: newest entry missing", max)
		}
		if c.Len() < (len(c.shards)*c.perShard)/2 {
			t.Errorf("max %d: only %d entries after many puts", max, c.Len())
		}
	}
}

func TestCacheDeleteGeneratorAndClear(t *testing.T) {
	c, _ := NewCache(1000)
	old, cur := verified("old"), verified("cur")
	for i := range 100 {
		v := cur
		if i%2 == 0 {
			v = old
		}
		c.Put(fakeToken(i), v)
	}
	if n := c.DeleteGenerator("old"); n != 50 {
		t.Errorf("DeleteGenerator removed %d", n)
	}
	if n := c.DeleteGenerator("old"); n != 0 {
		t.Errorf("second DeleteGenerator removed %d", n)
	}
	if c.Len() != 50 {
		t.Errorf("Len = %d", c.Len())
	}
	if _, ok := c.Get(fakeToken(1)); !ok {
		t.Error("current generator's entry dropped")
	}
	c.Clear()
	if c.Len() != 0 {
		t.Errorf("Len after Clear = %d", c.Len())
	}
	c.Put("a", cur)
	if _, ok := c.Get("a"); !ok {
		t.Error("Put after Clear")
	}
}

func TestCacheConcurrent(t *testing.T) {
	c, _ := NewCache(64)
	v := verified(testGenID)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				tok := fakeToken((g*7 + i) % 200)
				switch i % 7 {
				case 0:
					c.Delete(tok)
				case 1, 2:
					c.Put(tok, v)
				case 3:
					if i%500 == 3 {
						c.DeleteGenerator("none")
						_ = c.Len()
					}
				default:
					if got, ok := c.Get(tok); ok && got != v {
						t.Error("wrong entry")
					}
				}
			}
		}()
	}
	wg.Wait()
	if c.Len() > 64 {
		t.Errorf("Len = %d", c.Len())
	}
}

func TestCacheRedaction(t *testing.T) {
	set := issueTestSet(t)
	c, _ := NewCache(10)
	c.Put(set.Access, verified(testGenID))
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v %#v %s|", c, c, c, c)
	fmt.Fprintf(&out, "%v %+v %#v|", *c, struct{ C *Cache }{c}, []*Cache{c})
	fmt.Fprint(&out, c.String(), c.GoString())
	assertNoTokenText(t, out.String(), set.Access)
	if !strings.Contains(c.String(), "len:1") {
		t.Errorf("String = %q", c.String())
	}
}

// TestCacheFlow is the way the Engine uses the package: verify on a miss,
// put, recheck on every hit; rotation kills cached tokens at once.
func TestCacheFlow(t *testing.T) {
	set := issueTestSet(t)
	pub := &testKey(t).PublicKey
	c, _ := NewCache(100)
	genID := testGenID
	now := testNow.Add(time.Minute)

	check := func(tok string, want Expect) (*Claims, error) {
		if v, ok := c.Get(tok); ok {
			if err := v.Recheck(genID, want); err != nil {
				return nil, err
			}
			return &v.Claims, nil
		}
		cl, err := Verify(tok, pub, want)
		if err != nil {
			return nil, err
		}
		c.Put(tok, &Verified{GeneratorID: genID, Claims: *cl})
		return cl, nil
	}
	if _, err := check(set.Access, expectAccess(now)); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get(set.Access); !ok {
		t.Fatal("not cached")
	}
	// A cached access token is still refused as a refresh token, on
	// another key, and after expiry.
	if _, err := check(set.Access, Expect{Kind: Refresh, KeyTag: testTag, Now: now}); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("wrong kind on a hit: %v", err)
	}
	if _, err := check(set.Access, Expect{Kind: Access, KeyTag: otherTag, Now: now}); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("wrong key on a hit: %v", err)
	}
	if _, err := check(set.Access, expectAccess(set.AccessExpires)); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("expired on a hit: %v", err)
	}
	// Rotation: a new generator id; the cached entry is refused at once.
	genID = strings.Repeat("e", 64)
	_, err := check(set.Access, expectAccess(now))
	assertReason(t, err, ReasonStaleGenerator)
}

// TestCtEqual: the constant-time comparison the cache confirms hits with
// agrees with ==, on equal strings, on strings that differ anywhere, and
// on different lengths, and allocates nothing.
func TestCtEqual(t *testing.T) {
	a := strings.Repeat("eyJhbGciOiJSUzI1NiJ9.", 40)
	for i := 0; i < len(a); i++ {
		b := []byte(a)
		b[i] ^= 1
		if ctEqual(a, string(b)) {
			t.Fatalf("differing at %d compared equal", i)
		}
	}
	if !ctEqual(a, strings.Clone(a)) || ctEqual(a, a[:len(a)-1]) || ctEqual("", "x") || !ctEqual("", "") {
		t.Fatal("ctEqual disagrees with ==")
	}
	b := strings.Clone(a)
	if n := testing.AllocsPerRun(100, func() { ctEqual(a, b) }); n != 0 {
		t.Fatalf("ctEqual allocates %v times", n)
	}
}

// FuzzCtEqual: the word-wise constant-time comparison agrees with == on
// any two strings, of any lengths (the tail loop included).
func FuzzCtEqual(f *testing.F) {
	f.Add("", "")
	f.Add("a", "b")
	f.Add("eyJhbGciOiJSUzI1NiJ9.abc", "eyJhbGciOiJSUzI1NiJ9.abd")
	f.Add("0123456789abcdef0", "0123456789abcdef1")
	f.Fuzz(func(t *testing.T, a, b string) {
		if ctEqual(a, b) != (a == b) || !ctEqual(a, strings.Clone(a)) {
			t.Fatalf("ctEqual(%q, %q) disagrees with ==", a, b)
		}
		// Every single-bit difference at every position is seen.
		for i := range len(a) {
			c := []byte(a)
			c[i] ^= 0x80
			if ctEqual(a, string(c)) {
				t.Fatalf("a difference at %d of %q compared equal", i, a)
			}
		}
	})
}
