package store

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
