// Command softhsm runs the quickstart's job on a PKCS#11 token instead of
// software keys: every key is generated inside the token and never leaves
// it.
//
// With no flags it makes a throw-away SoftHSM2 token in a temporary
// directory (it needs softhsm2-util and /usr/lib/softhsm/libsofthsm2.so,
// Debian's softhsm2 package):
//
//	go run ./examples/softhsm
//
// Against your own token (SoftHSM2 or any PKCS#11 module), name it by a
// pkcs11 URI and keep the Engine's state in a directory:
//
//	go run ./examples/softhsm \
//	  -uri 'pkcs11:token=my-token?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/secrets/pin' \
//	  -data ./kms-data
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/softhsm"
	"github.com/pocketkms/kms/examples/internal/demo"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "softhsm:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) (err error) {
	fs := flag.NewFlagSet("softhsm", flag.ContinueOnError)
	fs.SetOutput(out)
	uri := fs.String("uri", "", "pkcs11 URI of the token (default: a throw-away SoftHSM2 token)")
	data := fs.String("data", "", "directory for the Engine's state (default: in memory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cfg softhsm.Config
	if *uri != "" {
		c, err := softhsm.ParseURI(*uri)
		if err != nil {
			return err
		}
		cfg = c
	} else {
		c, cleanup, err := throwAwayToken(ctx, out)
		if err != nil {
			return err
		}
		defer cleanup()
		cfg = c
	}
	be, err := softhsm.New(ctx, cfg)
	if err != nil {
		return err
	}
	var opts []kms.Option
	if *data != "" {
		opts = append(opts, kms.WithDirectory(*data))
	}
	e, err := kms.New(ctx, be, opts...)
	if err != nil {
		be.Close()
		return err
	}
	defer func() {
		// Every write was synced when it returned; Close reports a store
		// or backend that did not shut down cleanly.
		err = errors.Join(err, e.Close())
	}()
	fmt.Fprintf(out, "using PKCS#11 token %q of %s\n", cfg.TokenLabel, cfg.Module)
	return demo.Run(ctx, e, out)
}

// throwAwayToken initialises a fresh SoftHSM2 token with a random PIN in a
// temporary directory, before this process loads SoftHSM2 (which reads
// SOFTHSM2_CONF once, at initialisation).
func throwAwayToken(ctx context.Context, out io.Writer) (softhsm.Config, func(), error) {
	const module = "/usr/lib/softhsm/libsofthsm2.so"
	if _, err := os.Stat(module); err != nil {
		return softhsm.Config{}, nil, fmt.Errorf("no SoftHSM2 module at %s (apt-get install softhsm2): %w", module, err)
	}
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		return softhsm.Config{}, nil, errors.New("softhsm2-util not found (apt-get install softhsm2)")
	}
	dir, err := os.MkdirTemp("", "pocketkms-softhsm-")
	if err != nil {
		return softhsm.Config{}, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	tokens := filepath.Join(dir, "tokens")
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		cleanup()
		return softhsm.Config{}, nil, err
	}
	text := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		cleanup()
		return softhsm.Config{}, nil, err
	}
	pin, soPIN := randomPIN(), randomPIN()
	const label = "pocketkms-example"
	cmd := exec.CommandContext(ctx, util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", soPIN)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	if msg, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return softhsm.Config{}, nil, fmt.Errorf("softhsm2-util --init-token: %v: %s", err, msg)
	}
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		cleanup()
		return softhsm.Config{}, nil, err
	}
	fmt.Fprintf(out, "made a throw-away SoftHSM2 token in %s\n", dir)
	return softhsm.Config{Module: module, TokenLabel: label, PIN: softhsm.NewPIN(pin)}, cleanup, nil
}

func randomPIN() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
