package storetest

import (
	"context"
	"testing"

	"github.com/pocketkms/kms/store"
)

// runAuxiliary checks history and usage records: Load skips them (even a
// usage record whose key is gone), and a store that implements
// store.Ranger ranges them in both directions, bounded and limited.
func runAuxiliary(t *testing.T, fresh func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := fresh(t)
	if _, err := s.Apply(ctx, create(1, "aux")); err != nil {
		t.Fatal(err)
	}
	c := &store.Change{}
	for seq := uint64(1); seq <= 5; seq++ {
		c.Put(&store.HistoryRecord{Tag: tag(1), Seq: seq, Time: int64(seq), Op: "op", Plane: "trusted"})
	}
	c.Put(&store.UsageRecord{Tag: tag(1), Versions: []store.VersionUsageRecord{{Version: 1, Encryptions: 7}}})
	c.Put(&store.UsageRecord{Tag: tag(2)}) // a key that does not exist
	if _, err := s.Apply(ctx, c); err != nil {
		t.Fatalf("Apply auxiliary records: %v", err)
	}
	loaded, err := s.Load(ctx)
	if err != nil {
		t.Fatalf("Load with auxiliary records: %v", err)
	}
	if len(loaded.Keys) != 1 {
		t.Fatalf("Load: %d keys", len(loaded.Keys))
	}
	r, ok := s.(store.Ranger)
	if !ok {
		return
	}
	from, to := store.HistoryKey(tag(1), 2), store.HistoryKey(tag(1), 5)
	seqs := func(recs []store.Record) []uint64 {
		var out []uint64
		for _, r := range recs {
			h, ok := r.(*store.HistoryRecord)
			if !ok {
				t.Fatalf("Range returned %T", r)
			}
			out = append(out, h.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		limit int
		desc  bool
		want  []uint64
	}{{0, false, []uint64{2, 3, 4}}, {0, true, []uint64{4, 3, 2}}, {2, true, []uint64{4, 3}}, {1, false, []uint64{2}}} {
		recs, err := r.Range(ctx, from, to, tc.limit, tc.desc)
		if err != nil {
			t.Fatalf("Range: %v", err)
		}
		if got := seqs(recs); len(got) != len(tc.want) || (len(got) > 0 && (got[0] != tc.want[0] || got[len(got)-1] != tc.want[len(tc.want)-1])) {
			t.Fatalf("Range(limit %d, desc %v) = %v, want %v", tc.limit, tc.desc, got, tc.want)
		}
	}
	recs, err := r.Range(ctx, store.PrefixUsage, "u0", 0, false)
	if err != nil || len(recs) != 2 || recs[0].(*store.UsageRecord).Versions[0].Encryptions != 7 {
		t.Fatalf("Range usage = %+v, %v", recs, err)
	}
	if recs, err := r.Range(ctx, "h/zz", "h/zzz", 0, true); err != nil || len(recs) != 0 {
		t.Fatalf("empty Range = %v, %v", recs, err)
	}
}
