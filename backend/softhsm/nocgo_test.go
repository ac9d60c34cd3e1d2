//go:build !cgo

package softhsm_test

import (
	"errors"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/softhsm"
)

func TestNewWithoutCgo(t *testing.T) {
	_, err := softhsm.New(t.Context(), softhsm.Config{Module: "/m.so", TokenLabel: "kms", PIN: softhsm.NewPIN("1234")})
	if !errors.Is(err, backend.ErrUnsupported) || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("New without cgo = %v, want backend.ErrUnsupported", err)
	}
}
