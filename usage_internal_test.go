package kms

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/store/storetest"
)

// TestLoadUsageInParts: the usage records a large store's Engine reads in
// parts at open (one per first hex digit of the tag, from the prefix to
// its end) give every key its counts back, and a record whose key is gone
// is still deleted, wherever its tag falls (here one that is not hex).
func TestLoadUsageInParts(t *testing.T) {
	defer func(n int) { usageSplitFrom = n }(usageSplitFrom)
	usageSplitFrom = 1
	ctx := context.Background()
	root := bytes.Repeat([]byte{0x42}, memory.RootKeySize)
	mem := storetest.NewMemory()
	open := func() *Engine {
		t.Helper()
		be, err := memory.New(root)
		if err != nil {
			t.Fatal(err)
		}
		e, err := New(ctx, be, WithStore(mem.Open()), WithMaintenanceInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := open()
	want := map[string]uint64{}
	for i := range 40 {
		k, err := e.CreateKey(ctx, CreateKeyRequest{Name: fmt.Sprintf("key-%d", i), Type: AES256})
		if err != nil {
			t.Fatal(err)
		}
		for range i % 5 {
			if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
				t.Fatal(err)
			}
		}
		want[k.Tag] = uint64(i % 5)
	}
	if err := e.Close(); err != nil { // flushes the counters
		t.Fatal(err)
	}
	for _, gone := range []string{"zz-not-a-tag", "0" + string(bytes.Repeat([]byte("f"), 63))} {
		if _, err := mem.Open().Apply(ctx, (&store.Change{}).Put(&store.UsageRecord{Tag: gone,
			Versions: []store.VersionUsageRecord{{Version: 1, Encryptions: 7}}})); err != nil {
			t.Fatal(err)
		}
	}
	e = open()
	defer e.Close()
	for tag, n := range want {
		u, err := e.KeyUsage(ctx, tag)
		if err != nil {
			t.Fatal(err)
		}
		if u.Versions[0].Encryptions != n {
			t.Fatalf("key %s: %d encryptions after reopening, want %d", tag, u.Versions[0].Encryptions, n)
		}
	}
	recs, err := mem.Open().Range(ctx, store.PrefixUsage, prefixEnd(store.PrefixUsage), 0, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if tag := r.(*store.UsageRecord).Tag; !keyOf(want, tag) {
			t.Fatalf("the usage record of %q, whose key is gone, was not deleted", tag)
		}
	}
}

func keyOf(keys map[string]uint64, tag string) bool {
	_, ok := keys[tag]
	return ok
}

// TestUseMs: under the system clock a use's time is the anchor's wall
// time plus the monotonic time since it, and an anchor a minute old is
// replaced by a fresh reading; under another clock it is that clock's.
func TestUseMs(t *testing.T) {
	e := &Engine{clock: systemClock{}}
	e.usage.anchor.Store(newAnchor())
	if got, now := e.useMs(), time.Now().UnixMilli(); got < now-5 || got > now {
		t.Errorf("useMs = %d, time.Now = %d", got, now)
	}
	// A wall clock stepped back an hour since the anchor: the readings
	// follow the anchor's timeline while it is fresh...
	fresh := newAnchor()
	fresh.ns -= int64(time.Hour)
	e.usage.anchor.Store(fresh)
	if got, now := e.useMs(), time.Now().UnixMilli(); got > now-time.Hour.Milliseconds()+5 {
		t.Errorf("useMs = %d left the anchor's timeline (now %d)", got, now)
	}
	// ...and a minute-old anchor gives way to a fresh reading.
	old := newAnchor()
	old.t = old.t.Add(-2 * reanchorAfter)
	old.ns -= int64(time.Hour)
	e.usage.anchor.Store(old)
	if got, now := e.useMs(), time.Now().UnixMilli(); got < now-5 || got > now {
		t.Errorf("useMs with a stale anchor = %d, time.Now = %d", got, now)
	}
	if e.usage.anchor.Load() == old {
		t.Error("the stale anchor was kept")
	}
	clk := &fixedClock{at: time.UnixMilli(1700000000123)}
	f := &Engine{clock: clk}
	if got := f.useMs(); got != 1700000000123 {
		t.Errorf("useMs under WithClock = %d", got)
	}
}

type fixedClock struct{ at time.Time }

func (c *fixedClock) Now() time.Time { return c.at }
