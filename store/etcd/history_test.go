package etcdstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/testclock"
	"github.com/pocketkms/kms/store"
	etcdstore "github.com/pocketkms/kms/store/etcd"
)

// TestHistoryAndUsageRecords: the Engine's history and usage records on
// etcd: written with the change, ranged newest first, skipped by Load and
// by other Engines' change feeds, and deleted with a destroyed key.
func TestHistoryAndUsageRecords(t *testing.T) {
	c := shared(t)
	prefix := freshPrefix(t)
	clk := testclock.New(time.Now())
	ctx := context.Background()
	st := newStore(t, c.Client(t), prefix)
	be, err := memory.New(rootKey)
	if err != nil {
		t.Fatal(err)
	}
	a, err := kms.New(ctx, be, kms.WithStore(st), kms.WithMaintenanceInterval(0), kms.WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := newEngine(t, c, prefix)

	k, err := a.CreateKey(kms.WithCaller(ctx, "replica-a"), kms.CreateKeyRequest{Name: "etcdhist", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	ct, err := a.Encrypt(ctx, k.Tag, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Maintain(ctx); err != nil { // writes the usage record
		t.Fatal(err)
	}
	// The other replica follows the feed past history and usage records.
	within(t, 10*time.Second, "replica b sees version 2", func() bool {
		got, err := b.GetKey(ctx, k.Tag)
		return err == nil && got.CurrentVersion == 2
	})
	if _, err := b.Decrypt(ctx, k.Tag, ct, nil); err != nil {
		t.Fatalf("replica b: %v", err)
	}
	p, err := b.ListKeyHistory(ctx, k.Tag, 0, 0)
	if err != nil || p.TotalCount != 2 || p.Entries[0].Op != "rotate key" || p.Entries[1].Caller != "replica-a" {
		t.Fatalf("history from b = %+v, %v", p, err)
	}
	recs, err := st.Range(ctx, store.HistoryPrefix(k.Tag), store.HistoryPrefix(k.Tag)+"~", 1, true)
	if err != nil || len(recs) != 1 || recs[0].(*store.HistoryRecord).Seq != 2 {
		t.Fatalf("Range desc limit 1 = %+v, %v", recs, err)
	}
	recs, err = st.Range(ctx, store.PrefixUsage, "u0", 0, false)
	if err != nil || len(recs) != 1 || recs[0].(*store.UsageRecord).Versions[1].Encryptions != 1 {
		t.Fatalf("usage records = %+v, %v", recs, err)
	}
	// Load skips them.
	loaded, err := st.Load(ctx)
	if err != nil || len(loaded.Keys) != 1 {
		t.Fatalf("Load = %+v, %v", loaded, err)
	}
	// A reopened Engine reads the usage back.
	st2, err := etcdstore.New(ctx, c.Client(t), prefix)
	if err != nil {
		t.Fatal(err)
	}
	be2, _ := memory.New(rootKey)
	e2, err := kms.New(ctx, be2, kms.WithStore(st2), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	u, err := e2.KeyUsage(ctx, k.Tag)
	e2.Close()
	if err != nil || u.Versions[1].Encryptions != 1 {
		t.Fatalf("reopened usage = %+v, %v", u, err)
	}

	// Destruction takes history and usage with the key.
	if _, err := a.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay + time.Minute)
	if err := a.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pfx := range []string{store.HistoryPrefix(k.Tag), store.PrefixUsage} {
		recs, err := st.Range(ctx, pfx, pfx+"~", 0, false)
		if err != nil || len(recs) != 0 {
			t.Fatalf("%s after destruction: %d records, %v", pfx, len(recs), err)
		}
	}
}
