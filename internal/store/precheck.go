package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// precheck guards badger.Open against two failure modes of Badger v4 found
// by the corruption and disk-full tests:
//
//   - a damaged table file makes Badger panic in a goroutine it starts
//     while opening (nothing can recover there, and every restart panics
//     again): each table is opened and checksummed here first, under
//     recover, and damage is ErrCorrupt;
//   - a write that failed on a full disk leaves an empty memtable (.mem)
//     file, which makes the next open fail: empty memtable files hold no
//     data and are removed (not when readOnly: the directory is then left
//     exactly as it is).
func precheck(dir string, readOnly bool) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: open: %w", err)
	}
	for _, ent := range entries {
		if name := ent.Name(); !readOnly && strings.HasSuffix(name, ".mem") {
			if info, err := ent.Info(); err == nil && info.Size() == 0 {
				if err := os.Remove(filepath.Join(dir, name)); err != nil {
					return fmt.Errorf("store: open: remove empty memtable file: %w", err)
				}
			}
		}
	}
	// Only tables the manifest names hold data: a table a crash left half
	// written is not named yet, and Badger deletes it as an orphan.
	mf, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: open: %w", err)
	}
	defer mf.Close()
	m, _, err := badger.ReplayManifestFile(mf, 0, badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		return fmt.Errorf("%w: manifest: %v", ErrCorrupt, err)
	}
	for id := range m.Tables {
		path := table.NewFilename(id, dir)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			continue // Badger reports a missing table itself
		}
		if err := checkTable(path); err != nil {
			return fmt.Errorf("%w: table %s: %v", ErrCorrupt, filepath.Base(path), err)
		}
	}
	return nil
}

// checkTable opens a table read-only and verifies every block checksum.
func checkTable(path string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unreadable (%v)", r)
		}
	}()
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil && !errors.Is(err, z.NewFile) {
		return err
	}
	if mf == nil || len(mf.Data) == 0 {
		if mf != nil {
			mf.Close(-1)
		}
		return errors.New("empty")
	}
	t, err := table.OpenTable(mf, table.Options{
		ReadOnly:    true,
		ChkMode:     options.OnTableAndBlockRead,
		Compression: options.None,
	})
	if err != nil {
		return err
	}
	// Close without deleting: DecrRef would remove the file.
	return t.Close(-1)
}
