package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/pocketkms/kms"
)

func init() {
	register(command{"init", "create a data directory (as serve's first run does)", initCmd})
}

// initCmd creates a data directory with serve's own code: the directory
// (0700), root.key and credentials (0600) and the key store, so that the
// admin commands can work on it before any server ran.
func initCmd(ctx context.Context, args []string, s *stdio) error {
	var o dataOpts
	fs := newFlags("init", "", "Create a data directory: root key, credentials and an empty key store, as the\n"+
		"first run of serve does. It refuses a directory that already holds a key store.", s, nil)
	fs.StringVar(&o.data, "data", "kms-data", "data directory to create")
	if _, err := parseArgs(fs, args, nil, 0, 0); err != nil {
		return err
	}
	cfg := &serveConfig{data: o.data}
	firstRun, err := prepareDataDir(cfg.data, slog.New(slog.NewTextHandler(s.err, nil)))
	if err != nil {
		return err
	}
	if !firstRun {
		return errors.New("init: " + cfg.data + " already holds a key store")
	}
	be, rootKeyPath, err := openBackend(cfg, true)
	if err != nil {
		return err
	}
	credsPath, created, err := ensureCredentials(cfg)
	if err != nil {
		be.Close()
		return err
	}
	e, err := kms.New(ctx, be, kms.WithDirectory(filepath.Join(cfg.data, "store")), kms.WithMaintenanceInterval(0))
	if err != nil {
		be.Close()
		return (&dataOpts{data: cfg.data}).openErr(err)
	}
	if err := e.Close(); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "created data directory %s: root key %s, key store %s\n", cfg.data, rootKeyPath, filepath.Join(cfg.data, "store"))
	if created != "" {
		fmt.Fprintf(s.out, "created access key %s; its secret key is in %s (mode 0600)\n", created, credsPath)
	}
	return nil
}
