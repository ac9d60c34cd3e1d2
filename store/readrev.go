package store

import "context"

// RevReader is implemented by stores that read one record together with
// the revision it was last written at, so that a caller can update it
// with an optimistic read-modify-write (read, change, Apply expecting the
// revision read, and on ErrConflict read again). The Engine adds its
// usage counts to the shared usage records this way (see
// kms.Engine.KeyUsage). Badger, store/etcd and storetest.Memory implement
// it.
type RevReader interface {
	// ReadRev returns the record under key and the revision it was last
	// written at; a record that does not exist is (nil, 0, nil). A record
	// that fails its frame is ErrCorrupt.
	ReadRev(ctx context.Context, key string) (Record, int64, error)
}
