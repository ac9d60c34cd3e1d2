package main

// pocketkms rotate-root: re-seal a data directory's keys under a new root
// key (kms.Engine.RotateRootKey) and then replace its root key file.
//
//	pocketkms rotate-root -data /var/lib/kms                       # a new random root key
//	pocketkms rotate-root -data /var/lib/kms -new-root-key-file k  # a root key you made
//
// Stop the server first: the data directory is used by one process at a
// time (embedders rotate online with RotateRootKey instead). The steps,
// each safe to interrupt:
//
//  1. The new key is made durable before anything else: without
//     -new-root-key-file, a new random key is written to <root key
//     file>.new (0600), or the one a previous, interrupted run left there
//     is reused.
//  2. The store is rotated: every key is re-sealed under the new root key
//     and a new shred key; a kill before the rotation's switch leaves the
//     store under the old key (it rolls back on the next open), a kill
//     after it under the new one.
//  3. Only then is the root key file replaced (atomically: a temporary
//     file, synced and renamed) and the .new file removed.
//
// Run it again after an interruption: when the store has already switched
// (the old key is refused as "rotated"), it opens the store with the new
// key, finishes, and replaces the root key file.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
)

func init() {
	register(command{"rotate-root", "re-seal a data directory's keys under a new root key (server stopped)",
		func(ctx context.Context, args []string, s *stdio) error { return rotateRoot(ctx, args, s.out) }})
}

func rotateRoot(ctx context.Context, args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("rotate-root", flag.ContinueOnError)
	flags.SetOutput(stdout)
	var data, rootFile, newFile string
	flags.Usage = func() {
		fmt.Fprintf(stdout, "usage: pocketkms rotate-root [flags]\n\nRe-seal every key of a data directory under a new root key, then replace the root key file (stop the server first).\n\nflags:\n")
		flags.PrintDefaults()
	}
	flags.StringVar(&data, "data", "kms-data", "data directory")
	flags.StringVar(&rootFile, "root-key-file", "", "the current root key file (default <data>/root.key); replaced by the new key at the end")
	flags.StringVar(&newFile, "new-root-key-file", "", "the new root key (64 hex characters or 32 bytes, mode 0600); default: a new random key, kept in <root key file>.new until the end")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err}
	}
	if flags.NArg() > 0 {
		return &usageError{fmt.Errorf("unexpected arguments %q", flags.Args())}
	}
	if rootFile == "" {
		rootFile = filepath.Join(data, "root.key")
	}
	storeDir := filepath.Join(data, "store")
	if _, err := os.Stat(storeDir); err != nil {
		return fmt.Errorf("no key store in %s: %w", data, err)
	}
	oldKey, err := memory.ReadRootKeyFile(rootFile)
	if err != nil {
		return err
	}
	defer clear(oldKey)
	pending := rootFile + ".new"
	if newFile == "" {
		newFile = pending
		if _, err := os.Stat(pending); errors.Is(err, fs.ErrNotExist) {
			k, err := memory.GenerateRootKey()
			if err != nil {
				return err
			}
			err = memory.WriteRootKeyFile(pending, k)
			clear(k)
			if err != nil {
				return err
			}
		} else if err != nil {
			return err
		} else {
			fmt.Fprintf(stdout, "reusing the new root key %s left by an interrupted rotation\n", pending)
		}
	}
	newKey, err := memory.ReadRootKeyFile(newFile)
	if err != nil {
		return err
	}
	defer clear(newKey)

	open := func(key []byte) (*kms.Engine, error) {
		be, err := memory.New(key)
		if err != nil {
			return nil, err
		}
		e, err := kms.New(ctx, be, kms.WithDirectory(storeDir), kms.WithMaintenanceInterval(0))
		if err != nil {
			be.Close()
		}
		return e, err
	}
	e, err := open(oldKey)
	switch {
	case errors.Is(err, kms.ErrBackendMismatch):
		// Already switched by an interrupted run? Then the new key opens
		// it and finishes the rotation.
		e, err = open(newKey)
		if err != nil {
			return fmt.Errorf("the store opens with neither %s nor %s: %w", rootFile, newFile, err)
		}
		fmt.Fprintln(stdout, "the store was already under the new root key (an interrupted rotation); finished it")
	case err != nil:
		return err
	default:
		if err := e.RotateRootKey(ctx, newKey); err != nil {
			e.Close()
			return fmt.Errorf("rotate the root key (the store stays under the key it opens with; run rotate-root again): %w", err)
		}
	}
	if err := e.Close(); err != nil {
		return err
	}
	if err := memory.WriteRootKeyFile(rootFile, newKey); err != nil {
		return fmt.Errorf("the store is under the new root key in %s, but %s could not be replaced: copy it there: %w", newFile, rootFile, err)
	}
	if newFile == pending {
		if err := os.Remove(pending); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	fmt.Fprintf(stdout, "root key rotated: the store in %s is under the new root key, now in %s\n", storeDir, rootFile)
	return nil
}
