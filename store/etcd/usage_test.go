package etcdstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/store"
)

// TestSharedUsageCounts: two Engines on one etcd prefix add their
// encryption counts to the shared usage record (flushes racing each
// other conflict and retry); ReadRev reports the ModRevision that Apply's
// expectations compare.
func TestSharedUsageCounts(t *testing.T) {
	c := shared(t)
	prefix := freshPrefix(t)
	ctx := context.Background()
	es := newEngines(t, c, 2, prefix)
	a, b := es[0], es[1]
	st := newStore(t, c.Client(t), prefix)
	k, err := a.CreateKey(ctx, kms.CreateKeyRequest{Name: "etcdusage", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	within(t, 10*time.Second, "b sees the key", func() bool { _, err := b.GetKey(ctx, k.Tag); return err == nil })
	if r, rev, err := st.ReadRev(ctx, store.UsageKey(k.Tag)); r != nil || rev != 0 || err != nil {
		t.Fatalf("ReadRev of an absent record = %v, %d, %v", r, rev, err)
	}
	const rounds, per = 3, 5
	for range rounds {
		var wg sync.WaitGroup
		for _, e := range es {
			for range per {
				if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
					t.Fatal(err)
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := e.Maintain(ctx); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	r, rev, err := st.ReadRev(ctx, store.UsageKey(k.Tag))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.(*store.UsageRecord).Versions[0].Encryptions; got != 2*rounds*per {
		t.Fatalf("shared record counts %d encryptions, made %d", got, 2*rounds*per)
	}
	if _, err := st.Apply(ctx, (&store.Change{}).Expecting(store.UsageKey(k.Tag), rev)); err != nil {
		t.Fatalf("expecting ReadRev's revision: %v", err)
	}
}
