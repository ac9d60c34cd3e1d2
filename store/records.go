package store

import (
	"fmt"
	"strings"
)

// Record is one stored record: a *KeyRecord, *VersionRecord,
// *GeneratorRecord, *ACLRecord or *NameRecord. Its StoreKey is where it
// lives (see the package documentation's schema).
type Record interface {
	// StoreKey returns the record's key in the schema.
	StoreKey() string
	// KeyTag returns the tag of the key the record belongs to.
	KeyTag() string
}

// Prefixes of the schema's record keys.
const (
	PrefixKey       = "k/"
	PrefixVersion   = "v/"
	PrefixName      = "n/"
	PrefixGenerator = "g/"
	PrefixACL       = "a/"
)

// KeyKey is the store key of a key record.
func KeyKey(tag string) string { return PrefixKey + tag }

// VersionKey is the store key of a version record.
func VersionKey(tag string, v uint32) string {
	return PrefixVersion + tag + "/" + fmt.Sprintf("%010d", v)
}

// GeneratorKey is the store key of a token generator record.
func GeneratorKey(tag string) string { return PrefixGenerator + tag }

// ACLKey is the store key of an IP allow-list record.
func ACLKey(tag string) string { return PrefixACL + tag }

// NameKey is the store key of a name index entry: names are unique
// case-insensitively, so the key holds the name in lower case.
func NameKey(name string) string { return PrefixName + strings.ToLower(name) }

// StoreKey implements Record.
func (r *KeyRecord) StoreKey() string { return KeyKey(r.Tag) }

// KeyTag implements Record.
func (r *KeyRecord) KeyTag() string { return r.Tag }

// StoreKey implements Record.
func (r *VersionRecord) StoreKey() string { return VersionKey(r.Tag, r.Version) }

// KeyTag implements Record.
func (r *VersionRecord) KeyTag() string { return r.Tag }

// StoreKey implements Record.
func (r *GeneratorRecord) StoreKey() string { return GeneratorKey(r.Tag) }

// KeyTag implements Record.
func (r *GeneratorRecord) KeyTag() string { return r.Tag }

// StoreKey implements Record.
func (r *ACLRecord) StoreKey() string { return ACLKey(r.Tag) }

// KeyTag implements Record.
func (r *ACLRecord) KeyTag() string { return r.Tag }

// NameRecord is an entry of the name index: Tag owns Name. Name is kept
// as the index holds it, in lower case; its value is the owning tag.
type NameRecord struct {
	Name string
	Tag  string
}

// StoreKey implements Record.
func (r *NameRecord) StoreKey() string { return NameKey(r.Name) }

// KeyTag implements Record.
func (r *NameRecord) KeyTag() string { return r.Tag }

// Encode frames a record for storage under its StoreKey.
func Encode(r Record) (key string, value []byte, err error) {
	key = r.StoreKey()
	var v any = r
	if n, ok := r.(*NameRecord); ok {
		v = n.Tag // the index stores the owning tag alone
	}
	value, err = EncodeValue(key, v)
	return key, value, err
}

// Decode parses a framed record read under key. A key outside the schema,
// a value that fails its frame, or a record that names another key than
// the one it was read under is ErrCorrupt.
func Decode(key string, value []byte) (Record, error) {
	var r Record
	switch {
	case strings.HasPrefix(key, PrefixKey):
		r = new(KeyRecord)
	case strings.HasPrefix(key, PrefixVersion):
		r = new(VersionRecord)
	case strings.HasPrefix(key, PrefixGenerator):
		r = new(GeneratorRecord)
	case strings.HasPrefix(key, PrefixACL):
		r = new(ACLRecord)
	case strings.HasPrefix(key, PrefixHistory):
		r = new(HistoryRecord)
	case strings.HasPrefix(key, PrefixUsage):
		r = new(UsageRecord)
	case strings.HasPrefix(key, PrefixName):
		var tag string
		if err := DecodeValue(key, value, &tag); err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(key, PrefixName)
		if name == "" || name != strings.ToLower(name) {
			return nil, fmt.Errorf("%w: name index entry not in lower case", ErrCorrupt)
		}
		return &NameRecord{Name: name, Tag: tag}, nil
	default:
		return nil, fmt.Errorf("%w: unknown record key", ErrCorrupt)
	}
	if err := DecodeValue(key, value, r); err != nil {
		return nil, err
	}
	if r.StoreKey() != key {
		return nil, fmt.Errorf("%w: record stored under the wrong key", ErrCorrupt)
	}
	return r, nil
}

// KeyRecord is the persisted state of one key. Times are Unix milliseconds.
type KeyRecord struct {
	Tag            string `json:"tag"`
	Name           string `json:"name"`
	Type           string `json:"type"`
	Memo           string `json:"memo,omitempty"`
	Convergent     bool   `json:"convergent,omitempty"`
	State          string `json:"state"`
	Seq            uint64 `json:"seq"`
	CreatedAt      int64  `json:"createdAt"`
	StateChangedAt int64  `json:"stateChangedAt"`
	CurrentVersion uint32 `json:"currentVersion"`
	// DestroyAt is when a REVOKED key is due for destruction.
	DestroyAt int64 `json:"destroyAt,omitempty"`
	// Rotation is the auto-rotation setting.
	Rotation *RotationRecord `json:"rotation,omitempty"`
	// RateLimit is the key's own rate limit; nil means the Engine's.
	RateLimit *RateLimitRecord `json:"rateLimit,omitempty"`
	// MinDecryptVersion is the lowest version that still decrypts and
	// re-encrypts (0: every version).
	MinDecryptVersion uint32 `json:"minDecryptVersion,omitempty"`
	// HistorySeq is the Seq of the key's newest HistoryRecord (0: none).
	HistorySeq uint64 `json:"historySeq,omitempty"`
}

// RotationRecord is a key's auto-rotation setting.
type RotationRecord struct {
	Enabled    bool  `json:"enabled"`
	PeriodDays int   `json:"periodDays"`
	NextAt     int64 `json:"nextAt,omitempty"`
}

// VersionRecord is the persisted state of one key version.
type VersionRecord struct {
	Tag       string `json:"tag"`
	Version   uint32 `json:"version"`
	State     string `json:"state"`
	CreatedAt int64  `json:"createdAt"`
	// StateChangedAt is the last enable/disable of the version (0: never).
	StateChangedAt int64 `json:"stateChangedAt,omitempty"`
	// Handle is the backend's opaque, storable handle.
	Handle []byte `json:"handle"`
	// PublicKey is the PKIX DER public key, absent for AES256.
	PublicKey []byte `json:"publicKey,omitempty"`
}

// GeneratorRecord is the persisted state of a key's token generator.
type GeneratorRecord struct {
	Tag string `json:"tag"`
	// ID is the generator id; a new one on every activation and rotation.
	ID string `json:"id"`
	// Active is false once deactivated.
	Active bool `json:"active"`
	// Generation numbers the signing key pairs made for this key (the
	// KeyRef.Version of the token-signing material).
	Generation uint32 `json:"generation"`
	// Handle and PublicKey (PKIX DER) of the current signing key; empty
	// when inactive.
	Handle      []byte `json:"handle,omitempty"`
	PublicKey   []byte `json:"publicKey,omitempty"`
	EnabledAt   int64  `json:"enabledAt,omitempty"`
	DisabledAt  int64  `json:"disabledAt,omitempty"`
	IssuedCount uint64 `json:"issuedCount"`
	// Revoked lists the tokens of this generator revoked one by one
	// (Engine.RevokeToken), until their expiry. A new generator (rotation,
	// deactivation) starts with none.
	Revoked []RevokedToken `json:"revoked,omitempty"`
}

// RevokedToken is one revoked token: its id (its jti, or "sha256:" and
// the unpadded base64url SHA-256 of a token without one) and its expiry
// in Unix milliseconds, after which the entry is dropped (0: the token
// never expires, or only its id was given; the entry stays until the
// generator is replaced).
type RevokedToken struct {
	ID    string `json:"id"`
	Until int64  `json:"until,omitempty"`
}

// ACLRecord is the persisted IP allow-list of a key, entries as entered.
type ACLRecord struct {
	Tag     string   `json:"tag"`
	Enabled bool     `json:"enabled"`
	Entries []string `json:"entries"`
}

// RateLimitRecord is a key's own rate limit, overriding the Engine's.
type RateLimitRecord struct {
	Unlimited bool    `json:"unlimited,omitempty"`
	PerSecond float64 `json:"perSecond,omitempty"`
	Burst     int     `json:"burst,omitempty"`
}

// Prefixes of the auxiliary records: a key's change history and its usage
// counters. Load skips them (see [Assembler]) and the change feed carries
// them like any record; the Engine reads them through [Ranger].
const (
	PrefixHistory = "h/"
	PrefixUsage   = "u/"
)

// HistoryKey is the store key of entry seq of a key's change history.
func HistoryKey(tag string, seq uint64) string {
	return PrefixHistory + tag + "/" + fmt.Sprintf("%020d", seq)
}

// HistoryPrefix is the prefix of every history entry of a key.
func HistoryPrefix(tag string) string { return PrefixHistory + tag + "/" }

// UsageKey is the store key of a key's usage counters.
func UsageKey(tag string) string { return PrefixUsage + tag }

// IsAuxiliary reports whether r is a history or usage record: records the
// Engine writes beside a key's state and never builds a snapshot from.
func IsAuxiliary(r Record) bool {
	switch r.(type) {
	case *HistoryRecord, *UsageRecord:
		return true
	}
	return false
}

// HistoryRecord is one management change of a key, written in the same
// Change as the change itself (the Engine's audit history). It names the
// operation and who asked, never key material, tokens or data.
type HistoryRecord struct {
	Tag string `json:"tag"`
	// Seq numbers the key's history entries from 1 (KeyRecord.HistorySeq
	// is the last).
	Seq uint64 `json:"seq"`
	// Time is Unix milliseconds.
	Time int64  `json:"time"`
	Op   string `json:"op"`
	// Version is the version the change concerns (0: the key as a whole).
	Version uint32 `json:"version,omitempty"`
	// Plane is "trusted", "token" or "system" (background maintenance).
	Plane  string `json:"plane"`
	Caller string `json:"caller,omitempty"`
	Addr   string `json:"addr,omitempty"`
	// State is the key's state after the change.
	State string `json:"state,omitempty"`
}

// StoreKey implements Record.
func (r *HistoryRecord) StoreKey() string { return HistoryKey(r.Tag, r.Seq) }

// KeyTag implements Record.
func (r *HistoryRecord) KeyTag() string { return r.Tag }

// UsageRecord holds a key's usage counters as last flushed (see
// kms.Engine.KeyUsage): per version, totals since the version was made.
type UsageRecord struct {
	Tag      string               `json:"tag"`
	Versions []VersionUsageRecord `json:"versions"`
}

// VersionUsageRecord is one version's counters; LastUse is Unix
// milliseconds (0: never used).
type VersionUsageRecord struct {
	Version       uint32 `json:"version"`
	Encryptions   uint64 `json:"enc,omitempty"`
	Decryptions   uint64 `json:"dec,omitempty"`
	Signatures    uint64 `json:"sign,omitempty"`
	Verifications uint64 `json:"verify,omitempty"`
	Refusals      uint64 `json:"refused,omitempty"`
	LastUse       int64  `json:"lastUse,omitempty"`
}

// StoreKey implements Record.
func (r *UsageRecord) StoreKey() string { return UsageKey(r.Tag) }

// KeyTag implements Record.
func (r *UsageRecord) KeyTag() string { return r.Tag }
