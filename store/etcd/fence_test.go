package etcdstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pocketkms/kms/internal/etcdtest"
	"github.com/pocketkms/kms/store"
)

// TestFence: an Apply under a leader's fence commits while the candidacy
// stands, and fails with ErrNotLeader, writing nothing, once it is gone,
// even when its own expectations hold.
func TestFence(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cli := etcdtest.Start(t, 1).Client(t)
	s, err := New(ctx, cli, "fence/")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cand := "fence/" + electionPrefix + "1234"
	put, err := cli.Put(ctx, cand, "me")
	if err != nil {
		t.Fatal(err)
	}
	lead := withFence(ctx, fence{prefix: "fence/", key: cand, rev: put.Header.Revision})
	rec := func(name string) *store.Change {
		return (&store.Change{}).Put(&store.NameRecord{Name: name, Tag: "t"}).Expecting(store.NameKey(name), 0)
	}
	if _, err := s.Apply(lead, rec("while-leader")); err != nil {
		t.Fatalf("Apply while the candidacy stands: %v", err)
	}
	// A conflict is still a conflict under a standing fence.
	if _, err := s.Apply(lead, rec("while-leader")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Apply of an existing record under the fence = %v, want ErrConflict", err)
	}
	if _, err := cli.Delete(ctx, cand); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(lead, rec("deposed")); !errors.Is(err, ErrNotLeader) || errors.Is(err, store.ErrUncertain) {
		t.Fatalf("Apply after the candidacy went = %v, want ErrNotLeader", err)
	}
	// A successor's candidacy under the same key name is another revision.
	if _, err := cli.Put(ctx, cand, "successor"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(lead, rec("deposed")); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Apply under a replaced candidacy = %v, want ErrNotLeader", err)
	}
	// A fence for another prefix does not apply here; no fence, no check.
	other := withFence(ctx, fence{prefix: "other/", key: cand, rev: 1})
	if _, err := s.Apply(other, rec("unfenced")); err != nil {
		t.Fatalf("Apply under another prefix's fence: %v", err)
	}
	resp, err := cli.Get(ctx, "fence/"+store.NameKey("deposed"))
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("a fenced-off Apply wrote: %v", err)
	}
}
