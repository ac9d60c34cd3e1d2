package store

import (
	"context"
	"errors"

	kstore "github.com/pocketkms/kms/store"
)

var _ kstore.RevReader = (*Store)(nil)

// ReadRev implements store.RevReader with Get: the revision is the Badger
// version the record was committed at, the one Apply's expectations
// compare.
func (s *Store) ReadRev(ctx context.Context, key string) (kstore.Record, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	r, rev, err := s.Get(key)
	if errors.Is(err, ErrNotFound) {
		return nil, 0, nil
	}
	return r, rev, err
}
