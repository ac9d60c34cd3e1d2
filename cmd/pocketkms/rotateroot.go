package main

// pocketkms rotate-root: re-seal a data directory's keys under a new root
// key (kms.Engine.RotateRootKey) and then replace its root key file.
//
//	pocketkms rotate-root -data /var/lib/kms                       # a new random root key
//	pocketkms rotate-root -data /var/lib/kms -new-root-key-file k  # a root key you made
//
// Stop the server first: the data directory is used by one process at a
// time (exit 3 otherwise, with nothing written; embedders rotate online
// with RotateRootKey instead). The steps, each safe to interrupt:
//
//  1. The store is opened with the current root key (a store already
//     switched by an interrupted run is opened with the new key instead,
//     and the rotation finished).
//  2. The new key is made durable before the store changes: without
//     -new-root-key-file, a new random key is written to <root key
//     file>.new (0600), or the one a previous, interrupted run left there
//     is reused.
//  3. The store is rotated: every key is re-sealed under the new root key
//     and a new shred key; a kill before the rotation's switch leaves the
//     store under the old key (it rolls back on the next open), a kill
//     after it under the new one.
//  4. Only then is the root key file replaced (atomically: a temporary
//     file, synced and renamed) and the .new file removed.
//
// Run it again after an interruption: when the store has already switched
// (the old key is refused as "rotated"), it opens the store with the new
// key, finishes, and replaces the root key file.

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
)

func init() {
	register(command{"rotate-root", "re-seal a data directory's keys under a new root key", rotateRoot})
}

// rotateRootJSON is rotate-root's result; it never holds a key.
type rotateRootJSON struct {
	Data        string `json:"data"`
	Store       string `json:"store"`
	RootKeyFile string `json:"rootKeyFile"`
	// Resumed: the store was already under the new key (an interrupted
	// run); this run finished the rotation.
	Resumed bool `json:"resumed"`
}

func rotateRoot(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fl := newFlags("rotate-root", "", "Re-seal every key of the data directory under a new root key (kms.Engine.RotateRootKey),\n"+
		"then replace the root key file (-root-key-file, default <data>/root.key) with it. The\n"+
		"new key is -new-root-key-file (64 hex characters or 32 bytes, mode 0600), or a new\n"+
		"random key kept in <root key file>.new until the end. Each step is safe to interrupt:\n"+
		"run the same command again to finish. Stop the server first (exit 3 otherwise).\n"+
		"Backups made before the rotation open only with the old root key: keep a copy of it\n"+
		"as long as you keep them, or take a new backup.", s, &o)
	var newFile string
	fl.StringVar(&newFile, "new-root-key-file", "", "the new root key (default: a new random key, kept in <root key file>.new until the end)")
	if _, err := parseArgs(fl, args, &o, 0, 0); err != nil {
		return err
	}
	rootFile := o.rootKeyFile
	if rootFile == "" {
		rootFile = filepath.Join(o.data, "root.key")
	}
	storeDir := filepath.Join(o.data, "store")
	if fi, err := os.Stat(storeDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not a pocketkms data directory (no store/ in it)", o.data)
	}
	oldKey, err := memory.ReadRootKeyFile(rootFile)
	if err != nil {
		return err
	}
	defer clear(oldKey)
	pending := rootFile + ".new"

	open := func(key []byte) (*kms.Engine, error) {
		be, err := memory.New(key)
		if err != nil {
			return nil, err
		}
		return o.engineOn(ctx, be)
	}
	// The new key: -new-root-key-file, read (and refused if it is
	// malformed or readable by others) before anything is opened; or the
	// pending file, read once it exists.
	var newKey []byte
	defer func() { clear(newKey) }()
	newPath := newFile
	if newFile != "" {
		if newKey, err = memory.ReadRootKeyFile(newFile); err != nil {
			return err
		}
	} else {
		newPath = pending
	}
	readNew := func() (err error) {
		if newKey == nil {
			newKey, err = memory.ReadRootKeyFile(pending)
		}
		return err
	}

	// Open before writing anything: a directory in use (exit 3) or a
	// wrong key leaves no pending key file.
	resumed := false
	e, err := open(oldKey)
	switch {
	case errors.Is(err, kms.ErrBackendMismatch):
		// Already switched by an interrupted run? Then the new key opens
		// it and finishes the rotation.
		if err := readNew(); err != nil {
			return fmt.Errorf("the root key %s does not open the store, and there is no new key to finish a rotation with: %w", rootFile, err)
		}
		if e, err = open(newKey); err != nil {
			return fmt.Errorf("the store opens with neither %s nor %s: %w", rootFile, newPath, err)
		}
		resumed = true
		fmt.Fprintln(s.err, "the store was already under the new root key (an interrupted rotation); finishing it")
	case err != nil:
		return err
	default:
		if newFile == "" {
			if _, err := os.Stat(pending); errors.Is(err, fs.ErrNotExist) {
				k, err := memory.GenerateRootKey()
				if err != nil {
					e.Close()
					return err
				}
				err = memory.WriteRootKeyFile(pending, k)
				clear(k)
				if err != nil {
					e.Close()
					return err
				}
			} else if err != nil {
				e.Close()
				return err
			} else {
				fmt.Fprintf(s.err, "reusing the new root key %s left by an interrupted rotation\n", pending)
			}
			// A run interrupted after it replaced the root key file
			// left only the pending file to remove.
			if k, err := memory.ReadRootKeyFile(pending); err == nil {
				same := subtle.ConstantTimeCompare(k, oldKey) == 1
				clear(k)
				if same {
					e.Close()
					if err := os.Remove(pending); err != nil {
						return err
					}
					fmt.Fprintf(s.out, "root key rotated: the store in %s was already under the root key in %s (an interrupted rotation had finished)\n", storeDir, rootFile)
					return nil
				}
			}
		}
		if err := readNew(); err != nil {
			e.Close()
			return err
		}
		if err := e.RotateRootKey(ctx, newKey); err != nil {
			e.Close()
			return fmt.Errorf("rotate the root key (the store stays under the key it opens with; run rotate-root again): %w", err)
		}
	}
	if err := e.Close(); err != nil {
		return err
	}
	if err := memory.WriteRootKeyFile(rootFile, newKey); err != nil {
		return fmt.Errorf("the store is under the new root key in %s, but %s could not be replaced: copy it there: %w", newPath, rootFile, err)
	}
	if newFile == "" {
		if err := os.Remove(pending); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	j := rotateRootJSON{Data: o.data, Store: storeDir, RootKeyFile: rootFile, Resumed: resumed}
	if o.output == "json" {
		return s.emit(&o, j, table{})
	}
	_, err = fmt.Fprintf(s.out, "root key rotated: the store in %s is under the new root key, now in %s\n", storeDir, rootFile)
	return err
}
