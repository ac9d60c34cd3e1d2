package etcdstore

import (
	"context"
	"fmt"

	"github.com/pocketkms/kms/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var _ store.Ranger = (*Store)(nil)

// Range implements store.Ranger with one etcd range read, sorted by key.
func (s *Store) Range(ctx context.Context, from, to string, limit int, desc bool) ([]store.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.closed() {
		return nil, store.ErrClosed
	}
	order := clientv3.SortAscend
	if desc {
		order = clientv3.SortDescend
	}
	opts := []clientv3.OpOption{clientv3.WithRange(s.prefix + to), clientv3.WithSort(clientv3.SortByKey, order)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	rctx, cancel := s.request(ctx)
	resp, err := s.cli.Get(rctx, s.prefix+from, opts...)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("etcdstore: range: %w", rpcErr(ctx, err))
	}
	out := make([]store.Record, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r, err := s.decode(s.recordKey(kv.Key), kv.Value)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: range: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}
