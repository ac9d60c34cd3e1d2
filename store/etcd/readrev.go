package etcdstore

import (
	"context"
	"fmt"

	"github.com/pocketkms/kms/store"
)

var _ store.RevReader = (*Store)(nil)

// ReadRev implements store.RevReader with one etcd read; the revision is
// the key's ModRevision, the one Apply's expectations compare.
func (s *Store) ReadRev(ctx context.Context, key string) (store.Record, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if s.closed() {
		return nil, 0, store.ErrClosed
	}
	rctx, cancel := s.request(ctx)
	resp, err := s.cli.Get(rctx, s.prefix+key)
	cancel()
	if err != nil {
		return nil, 0, fmt.Errorf("etcdstore: read: %w", rpcErr(ctx, err))
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	kv := resp.Kvs[0]
	r, err := s.decode(s.recordKey(kv.Key), kv.Value)
	if err != nil {
		return nil, 0, fmt.Errorf("etcdstore: read: %w", err)
	}
	return r, kv.ModRevision, nil
}
