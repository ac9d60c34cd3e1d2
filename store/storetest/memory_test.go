package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/pocketkms/kms/store"
)

func TestMemoryConformance(t *testing.T) {
	Run(t, func(t *testing.T) store.Store { return NewMemory().Open() })
}

// TestMemoryCompactForcesResync: after Compact, a watcher behind the
// compaction is told to reload (store.ErrResync) instead of missing commits.
func TestMemoryCompactForcesResync(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	h := m.Open()
	if _, err := h.Apply(ctx, create(1, "c1")); err != nil {
		t.Fatal(err)
	}
	m.Compact()
	if err := h.Watch(ctx, 0, func(store.Commit) { t.Fatal("delivered a compacted commit") }); !errors.Is(err, store.ErrResync) {
		t.Fatalf("Watch behind compaction = %v, want ErrResync", err)
	}
}
