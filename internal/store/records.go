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
	// Handle is the backend's opaque, storable handle.
	Handle []byte `json:"handle"`
	// PublicKey is the PKIX DER public key, absent for AES256.
	PublicKey []byte `json:"publicKey,omitempty"`
}
