package store

import kstore "github.com/pocketkms/kms/store"

// The records are the store package's; these aliases keep this package's
// transaction API in its own terms.
type (
	KeyRecord       = kstore.KeyRecord
	VersionRecord   = kstore.VersionRecord
	GeneratorRecord = kstore.GeneratorRecord
	ACLRecord       = kstore.ACLRecord
	RateLimitRecord = kstore.RateLimitRecord
	RotationRecord  = kstore.RotationRecord
)

var castagnoli = kstore.Castagnoli

func encode(key []byte, v any) ([]byte, error) { return kstore.EncodeValue(string(key), v) }

func decode(key, data []byte, v any) error { return kstore.DecodeValue(string(key), data, v) }

func keyKey(tag string) string { return kstore.KeyKey(tag) }

func versionKey(tag string, v uint32) string { return kstore.VersionKey(tag, v) }
