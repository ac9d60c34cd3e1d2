// Command quickstart runs pocketkms's main job on the embedded default (an
// in-memory store and software keys under a fresh root key): it creates a
// key of each type, encrypts and decrypts, makes a data key, signs and
// verifies, rotates, decrypts the old ciphertext and re-encrypts it. It
// prints what it did and exits non-zero on any failure.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/examples/internal/demo"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) (err error) {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %q", args)
	}
	root, err := memory.GenerateRootKey()
	if err != nil {
		return err
	}
	be, err := memory.New(root)
	clear(root)
	if err != nil {
		return err
	}
	e, err := kms.New(ctx, be)
	if err != nil {
		return err
	}
	defer func() {
		// Every write was synced when it returned; Close reports a store
		// or backend that did not shut down cleanly.
		err = errors.Join(err, e.Close())
	}()
	return demo.Run(ctx, e, out)
}
