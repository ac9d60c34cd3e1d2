package store

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The check file holds the backend's check value (backend.CheckValuer: a
// MAC over a fixed label under the root key, never the key), written when
// the store is created. Open compares it before Badger touches the
// directory, so a store opened with the wrong root key is refused even
// when it holds no key to try, and the refused open changes no byte.
const checkFile = "pocketkms.check"

// ErrCheckMismatch: the directory was created with another backend secret
// (another root key) than the one given to Open. Nothing was written.
var ErrCheckMismatch = errors.New("store: the directory belongs to another root key")

// verifyCheck compares the directory's check file with want. It reports
// whether the file exists; a missing file (a new directory, or one made
// before check files existed) is not an error. A rotation marker (see
// rotation.go) decides ahead of the check file; the phase of the rotation
// under way is returned.
func verifyCheck(dir string, want []byte) (bool, string, error) {
	m, err := readRotation(dir)
	if err != nil {
		return false, "", err
	}
	if m != nil {
		phase, err := verifyRotation(m, want)
		return err == nil, phase, err
	}
	checked, err := verifyCheckFile(dir, want)
	return checked, RotationNone, err
}

func verifyCheckFile(dir string, want []byte) (bool, error) {
	got, err := os.ReadFile(filepath.Join(dir, checkFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("store: check file: %w", err)
	case subtle.ConstantTimeCompare(got, want) != 1:
		return true, ErrCheckMismatch
	}
	return true, nil
}

// CheckPending reports whether the directory has no check file yet
// although Open was given a check value: the caller writes it with
// WriteCheck once it has confirmed the backend opens the store's material
// (or the store holds none).
func (s *Store) CheckPending() bool { return s.check != nil && !s.checked }

// WriteCheck writes the check value given to Open, atomically and durably.
func (s *Store) WriteCheck() error {
	if s.dir == "" || s.check == nil || s.checked {
		return nil
	}
	if err := writeFileSync(s.dir, checkFile, s.check); err != nil {
		return fmt.Errorf("store: write check file: %w", err)
	}
	s.checked = true
	return nil
}
