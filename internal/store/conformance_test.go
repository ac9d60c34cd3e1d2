package store

import (
	"testing"

	kstore "github.com/pocketkms/kms/store"
	"github.com/pocketkms/kms/store/storetest"
)

var _ kstore.Store = (*Store)(nil)

func TestConformanceInMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) kstore.Store {
		s, err := Open(Options{InMemory: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestConformanceDirectory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) kstore.Store {
		s, err := Open(Options{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
