package filebackend_test

import (
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/backendtest"
	"github.com/pocketkms/kms/backend/backendtest/filebackend"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, dir string) backend.Backend {
		b, err := filebackend.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
