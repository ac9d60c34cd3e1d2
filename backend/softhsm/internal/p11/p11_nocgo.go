//go:build !cgo

// Package p11 holds the process-wide registry of PKCS#11 modules shared by
// backend/softhsm and its test helper. This build has no cgo, so it offers
// only InitToken, which always fails.
package p11

import (
	"fmt"

	"github.com/pocketkms/kms/backend"
)

// InitToken fails: PKCS#11 needs cgo.
func InitToken(path, label, soPIN, userPIN string) error {
	return fmt.Errorf("PKCS#11 needs cgo, and this build has none: %w", backend.ErrUnsupported)
}
