package store

import (
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pocketkms/kms/internal/atomicfile"
)

// Root-key rotation marker. While a rotation of the backend's root key is
// under way (kms.Engine.RotateRootKey), the directory holds
// pocketkms.rotation beside the check file:
//
//	{"phase":"reseal"|"switched","from":hex(check value),"to":hex(check value)}
//
// It decides which root key the directory is under, ahead of the check
// file: in phase "reseal" the old one ("from"; stored handles are being
// sealed under the new one as well), in phase "switched" the new one
// ("to"; the check file is rewritten right after the marker). Open
// accepts that key alone and refuses the other with an error that says
// which key the directory is under. The marker is removed when the
// rotation is finished or rolled back. Check values are MACs of a fixed
// label, never keys.
const rotationFile = "pocketkms.rotation"

// Rotation phases.
const (
	// RotationNone: no rotation is under way.
	RotationNone = ""
	// RotationReseal: the directory is under the old root key; handles
	// are being sealed under the new one too. Opening with the old key
	// rolls the rotation back.
	RotationReseal = "reseal"
	// RotationSwitched: the directory is under the new root key; what is
	// left is clean-up, which opening with the new key finishes.
	RotationSwitched = "switched"
)

// ErrRotationUnfinished: the directory is under the old root key and a
// rotation to the key given was interrupted before its switch. It
// wraps ErrCheckMismatch.
var ErrRotationUnfinished = fmt.Errorf("%w: a rotation to this root key was interrupted before its switch; the directory is still under the previous root key: open it with that key (which rolls the rotation back) and rotate again", ErrCheckMismatch)

// ErrRotatedAway: the directory was rotated from the key given to
// another root key. It wraps ErrCheckMismatch.
var ErrRotatedAway = fmt.Errorf("%w: the directory was rotated from this root key to a new one: open it with the new root key", ErrCheckMismatch)

type rotationMarker struct {
	Phase string `json:"phase"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// readRotation returns the directory's marker, or nil when there is none.
func readRotation(dir string) (*rotationMarker, error) {
	raw, err := os.ReadFile(filepath.Join(dir, rotationFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: rotation marker: %w", err)
	}
	var m rotationMarker
	if err := json.Unmarshal(raw, &m); err != nil || (m.Phase != RotationReseal && m.Phase != RotationSwitched) {
		return nil, fmt.Errorf("%w: rotation marker %s does not parse", ErrCorrupt, rotationFile)
	}
	return &m, nil
}

func hexEqual(h string, want []byte) bool {
	b, err := hex.DecodeString(h)
	return err == nil && subtle.ConstantTimeCompare(b, want) == 1
}

// verifyRotation checks want against a rotation marker: it returns the
// phase when want is the key the directory is under, and an error saying
// which key it is under otherwise.
func verifyRotation(m *rotationMarker, want []byte) (string, error) {
	from, to := hexEqual(m.From, want), hexEqual(m.To, want)
	switch {
	case m.Phase == RotationReseal && from, m.Phase == RotationSwitched && to:
		return m.Phase, nil
	case m.Phase == RotationReseal && to:
		return "", ErrRotationUnfinished
	case m.Phase == RotationSwitched && from:
		return "", ErrRotatedAway
	}
	return "", ErrCheckMismatch
}

// Rotation returns the phase of the rotation under way (RotationNone,
// RotationReseal or RotationSwitched), as Open found it and the Begin,
// Switch, End and Abort calls since changed it.
func (s *Store) Rotation() string { return s.rotation }

func (s *Store) writeRotation(m rotationMarker) error {
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := writeFileSync(s.dir, rotationFile, raw); err != nil {
		return fmt.Errorf("store: write rotation marker: %w", err)
	}
	return nil
}

func (s *Store) rotationReady() error {
	if s.dir == "" || s.check == nil {
		return errors.New("store: root-key rotation needs a directory and a backend check value")
	}
	if !s.checked {
		return errors.New("store: the directory's check file is not written yet")
	}
	return nil
}

// BeginRotation durably records that a rotation from the current check
// value to next has begun (phase RotationReseal). A rotation to the same
// value is refused.
func (s *Store) BeginRotation(next []byte) error {
	if err := s.rotationReady(); err != nil {
		return err
	}
	if bytes.Equal(next, s.check) {
		return errors.New("store: the new root key is the current one")
	}
	if s.rotation != RotationNone {
		return fmt.Errorf("store: a rotation is already under way (phase %s)", s.rotation)
	}
	if err := s.writeRotation(rotationMarker{Phase: RotationReseal, From: hex.EncodeToString(s.check), To: hex.EncodeToString(next)}); err != nil {
		return err
	}
	s.rotation, s.next = RotationReseal, bytes.Clone(next)
	return nil
}

// SwitchRotation is the rotation's switch: one atomic, durable write of
// the marker puts the directory under the new root key; the check file
// is then rewritten to name it (should that fail, the marker still
// decides, and End rewrites it).
func (s *Store) SwitchRotation() error {
	if s.rotation != RotationReseal {
		return fmt.Errorf("store: no rotation to switch (phase %q)", s.rotation)
	}
	if err := s.writeRotation(rotationMarker{Phase: RotationSwitched, From: hex.EncodeToString(s.check), To: hex.EncodeToString(s.next)}); err != nil {
		return err
	}
	s.rotation, s.check, s.next = RotationSwitched, s.next, nil
	if err := writeFileSync(s.dir, checkFile, s.check); err != nil {
		return fmt.Errorf("store: rotation switched; the check file is rewritten when it ends: %w", err)
	}
	return nil
}

// EndRotation ends a switched rotation: it makes sure the check file
// names the new root key, then removes the marker.
func (s *Store) EndRotation() error {
	if s.rotation != RotationSwitched {
		return fmt.Errorf("store: no switched rotation to end (phase %q)", s.rotation)
	}
	if err := writeFileSync(s.dir, checkFile, s.check); err != nil {
		return fmt.Errorf("store: write check file: %w", err)
	}
	if err := s.removeRotation(); err != nil {
		return err
	}
	s.checked = true
	return nil
}

// AbortRotation rolls back a rotation that has not switched: the marker
// goes, and the directory stays under the current root key.
func (s *Store) AbortRotation() error {
	if s.rotation != RotationReseal {
		return fmt.Errorf("store: no rotation to roll back (phase %q)", s.rotation)
	}
	if err := s.removeRotation(); err != nil {
		return err
	}
	s.next = nil
	return nil
}

func (s *Store) removeRotation() error {
	if err := os.Remove(filepath.Join(s.dir, rotationFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: remove rotation marker: %w", err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("store: remove rotation marker: %w", err)
	}
	s.rotation = RotationNone
	return nil
}
