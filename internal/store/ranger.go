package store

import (
	"context"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	kstore "github.com/pocketkms/kms/store"
)

var _ kstore.Ranger = (*Store)(nil)

// Range implements store.Ranger with one read-only Badger transaction.
func (s *Store) Range(ctx context.Context, from, to string, limit int, desc bool) ([]kstore.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.db.IsClosed() {
		return nil, ErrClosed
	}
	if s.broken.Load() {
		return nil, fmt.Errorf("store: range: %w", ErrBroken)
	}
	var out []kstore.Record
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Reverse: desc})
		defer it.Close()
		if desc {
			it.Seek([]byte(to)) // the last key <= to; to itself is skipped below
		} else {
			it.Seek([]byte(from))
		}
		for ; it.Valid(); it.Next() {
			if limit > 0 && len(out) >= limit {
				return nil
			}
			item := it.Item()
			k := string(item.Key())
			if k >= to {
				if desc {
					continue
				}
				return nil
			}
			if k < from {
				if desc {
					return nil
				}
				continue
			}
			if err := item.Value(func(val []byte) error {
				r, err := kstore.Decode(k, val)
				if err != nil {
					return err
				}
				out = append(out, r)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: range: %w", err)
	}
	return out, nil
}
