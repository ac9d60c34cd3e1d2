package storetest

import (
	"context"
	"fmt"

	"github.com/pocketkms/kms/store"
)

var _ store.RevReader = (*MemoryHandle)(nil)

// ReadRev implements store.RevReader.
func (h *MemoryHandle) ReadRev(ctx context.Context, key string) (store.Record, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if h.isClosed() {
		return nil, 0, store.ErrClosed
	}
	m := h.m
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.data[key]
	if !ok {
		return nil, 0, nil
	}
	r, err := store.Decode(key, v.raw)
	if err != nil {
		return nil, 0, fmt.Errorf("storetest: read %s: %w", key, err)
	}
	return r, v.rev, nil
}
