package store

import (
	"bytes"
	"errors"
	"testing"
)

// TestRotationMarker: at every phase of a rotation the directory opens
// with the check value it is under and refuses the other one with the
// error that says which; a crash between the marker and the check file
// is decided by the marker.
func TestRotationMarker(t *testing.T) {
	dir := t.TempDir()
	a, b := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	open := func(check []byte) (*Store, error) { return Open(Options{Dir: dir, Check: check}) }
	want := func(good, bad []byte, phase string, badErr error) {
		t.Helper()
		if _, err := open(bad); !errors.Is(err, badErr) || !errors.Is(err, ErrCheckMismatch) {
			t.Fatalf("phase %q, other key: %v, want %v", phase, err, badErr)
		}
		if _, err := open(bytes.Repeat([]byte{3}, 32)); !errors.Is(err, ErrCheckMismatch) {
			t.Fatalf("phase %q, a third key: %v", phase, err)
		}
		s, err := open(good)
		if err != nil {
			t.Fatalf("phase %q, its key: %v", phase, err)
		}
		if s.Rotation() != phase {
			t.Fatalf("phase %q read as %q", phase, s.Rotation())
		}
		s.Close()
	}
	s, err := open(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteCheck(); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginRotation(a); err == nil {
		t.Fatal("a rotation to the same check value began")
	}
	if err := s.BeginRotation(b); err != nil {
		t.Fatal(err)
	}
	s.Close()
	want(a, b, RotationReseal, ErrRotationUnfinished)

	s, _ = open(a)
	if err := s.AbortRotation(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	want(a, b, RotationNone, ErrCheckMismatch)

	s, _ = open(a)
	if err := s.BeginRotation(b); err != nil {
		t.Fatal(err)
	}
	if err := s.SwitchRotation(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	want(b, a, RotationSwitched, ErrRotatedAway)
	// The marker decides even if the check file still names the old key
	// (a crash between the two writes).
	if err := writeFileSync(dir, checkFile, a); err != nil {
		t.Fatal(err)
	}
	want(b, a, RotationSwitched, ErrRotatedAway)

	s, _ = open(b)
	if err := s.EndRotation(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	want(b, a, RotationNone, ErrCheckMismatch)
}
