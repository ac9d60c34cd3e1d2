package storetest

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/pocketkms/kms/store"
)

var _ store.Ranger = (*MemoryHandle)(nil)

// Range implements store.Ranger.
func (h *MemoryHandle) Range(ctx context.Context, from, to string, limit int, desc bool) ([]store.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if h.isClosed() {
		return nil, store.ErrClosed
	}
	m := h.m
	m.mu.Lock()
	defer m.mu.Unlock()
	var keys []string
	for k := range m.data {
		if k >= from && k < to {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if desc {
		slices.Reverse(keys)
	}
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	out := make([]store.Record, 0, len(keys))
	for _, k := range keys {
		r, err := store.Decode(k, m.data[k].raw)
		if err != nil {
			return nil, fmt.Errorf("storetest: range %s: %w", k, err)
		}
		out = append(out, r)
	}
	return out, nil
}
