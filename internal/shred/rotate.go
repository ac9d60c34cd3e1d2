package shred

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pocketkms/kms/internal/keytag"
)

// Next keys. A root-key rotation (kms.Engine.RotateRootKey) gives every
// key a second shred key, its next key, in <dir>/pocketkms.shred/<tag>.next
// (same 41-byte format and checksum as <tag>), and seals the key's handles
// under the new root key with it. Once the rotation has switched to the
// new root key, Promote makes the next key the key: the old file, the only
// copy of the key that sealed the handles under the old root key, is
// shredded, so the copies Badger keeps of those handles open under
// nothing, not even with the old root key. A rotation rolled back drops
// the next keys (DropNext).

// NextSuffix ends the file name of a next key.
const NextSuffix = ".next"

// tmpOfKey reports whether name (without the temporary suffix) is a key
// file or a next key file.
func tmpOfKey(name string) bool {
	return keytag.Valid(name) || keytag.Valid(strings.TrimSuffix(name, NextSuffix))
}

// Next returns tag's next key, making it (durably, as Create does) when it
// has none.
func (ks *Keys) Next(tag string) (*Key, error) {
	if err := ks.lock(tag); err != nil {
		return nil, err
	}
	defer ks.mu.Unlock()
	k, ok, err := ks.getNextLocked(tag)
	if err != nil || ok {
		return k, err
	}
	if err := ks.mkdir(); err != nil {
		return nil, fmt.Errorf("shred: next: %w", err)
	}
	b, err := newKeyBytes()
	if err != nil {
		return nil, err
	}
	if err := ks.writeKey(tag+NextSuffix, tag, b); err != nil {
		clear(b)
		ks.unwrite(tag + NextSuffix)
		return nil, fmt.Errorf("shred: next: %w", err)
	}
	k = newKey(tag, b)
	ks.nexts[tag] = k
	delete(ks.noNext, tag)
	return k, nil
}

// GetNext returns tag's next key; ok is false (err nil) when it has none.
func (ks *Keys) GetNext(tag string) (k *Key, ok bool, err error) {
	if err := ks.lock(tag); err != nil {
		return nil, false, err
	}
	defer ks.mu.Unlock()
	return ks.getNextLocked(tag)
}

func (ks *Keys) getNextLocked(tag string) (*Key, bool, error) {
	if ks.noNext[tag] {
		return nil, false, nil // Preload listed the directory: none
	}
	return ks.loadLocked(ks.nexts, tag, tag+NextSuffix, "next key file")
}

// Promote makes tag's next key its key: the next key file is renamed over
// the key file (one atomic step; the directory is synced), and the old
// key's bytes are then overwritten with zeros through a descriptor opened
// before the rename (best effort, as in Delete). The old Key is cleared
// (ErrDeleted from then on); the next Key object becomes the key. A tag
// with no next key is left as it is.
func (ks *Keys) Promote(tag string) error {
	if err := ks.lock(tag); err != nil {
		return err
	}
	defer ks.mu.Unlock()
	next := filepath.Join(ks.dir, tag+NextSuffix)
	if _, err := os.Lstat(next); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("shred: promote: %w", err)
	}
	path := filepath.Join(ks.dir, tag)
	old, _ := os.OpenFile(path, os.O_WRONLY, 0)
	if old != nil {
		defer old.Close()
	}
	if err := os.Rename(next, path); err != nil {
		return fmt.Errorf("shred: promote: %w", err)
	}
	if err := syncDir(ks.dir); err != nil {
		return fmt.Errorf("shred: promote: %w", err)
	}
	if old != nil {
		zero(old)
	}
	if k := ks.keys[tag]; k != nil {
		k.clear()
		delete(ks.keys, tag)
	}
	if k := ks.nexts[tag]; k != nil {
		ks.keys[tag] = k
		delete(ks.nexts, tag)
	}
	return nil
}

// DropNext shreds tag's next key (as Delete does a key), if it has one.
func (ks *Keys) DropNext(tag string) error {
	if err := ks.lock(tag); err != nil {
		return err
	}
	defer ks.mu.Unlock()
	if k := ks.nexts[tag]; k != nil {
		k.clear()
		delete(ks.nexts, tag)
	}
	path := filepath.Join(ks.dir, tag+NextSuffix)
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := shredFile(path); err != nil {
		return fmt.Errorf("shred: drop next key: %w", err)
	}
	if err := syncDir(ks.dir); err != nil {
		return fmt.Errorf("shred: drop next key: %w", err)
	}
	return nil
}

// NextTags returns the tags that have a next key file, sorted.
func (ks *Keys) NextTags() ([]string, error) { return ks.tagsOf(NextSuffix) }
