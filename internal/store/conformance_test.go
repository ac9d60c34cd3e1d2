package store

import (
	"context"
	"errors"
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

// TestGet reads one record back with the revision Load reports for it.
func TestGet(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tag := sampleTag(7)
	k := &kstore.KeyRecord{Tag: tag, Name: "seven", Type: "AES256", State: "ENABLED", CurrentVersion: 1}
	rev, err := s.Apply(ctx, (&kstore.Change{}).Put(k))
	if err != nil {
		t.Fatal(err)
	}
	r, got, err := s.Get(kstore.KeyKey(tag))
	if err != nil || got != rev {
		t.Fatalf("Get: rev %d (committed %d), %v", got, rev, err)
	}
	if kr, ok := r.(*kstore.KeyRecord); !ok || *kr != *k {
		t.Fatalf("Get returned %#v", r)
	}
	if _, _, err := s.Get(kstore.KeyKey(sampleTag(8))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing record: %v", err)
	}
}
