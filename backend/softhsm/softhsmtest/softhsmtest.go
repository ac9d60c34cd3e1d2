// Package softhsmtest gives tests real SoftHSM2 tokens for
// backend/softhsm: start with New, which returns a Backend on a fresh
// token, or NewToken, which returns the Config of one (to open several
// Backends on the same token, or to test reopening).
//
//	func TestMain(m *testing.M) { softhsmtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		b := softhsmtest.New(t) // a *softhsm.Backend, closed at cleanup
//		...
//	}
//
// The first call in a test process creates a private SoftHSM2 directory
// under os.TempDir (a softhsm2.conf and a tokens directory) and points
// SOFTHSM2_CONF at it for the whole process: SoftHSM2 reads that variable
// once, when the module is first initialised, so every token of the
// process lives there (use this package before anything else in the
// process loads SoftHSM2). Main removes the directory when the tests end;
// without Main it stays behind in os.TempDir. Tokens are created inside
// the process through PKCS#11, not with softhsm2-util: SoftHSM2 does not
// see tokens another process creates after it was initialised.
//
// The module is $PKCS11_MODULE, else $SOFTHSM2_MODULE, else the first of
// the usual install paths that exists (/usr/lib/softhsm/libsofthsm2.so
// first). If there is none, or the test binary was built without cgo, the
// test is skipped with the reason, unless the environment variable CI is
// "true": then it fails, so that CI never passes by skipping the hardware
// paths.
package softhsmtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pocketkms/kms/backend/softhsm"
	"github.com/pocketkms/kms/backend/softhsm/internal/p11"
)

// DefaultModulePaths are the places Module looks for SoftHSM2 when
// neither PKCS11_MODULE nor SOFTHSM2_MODULE is set.
var DefaultModulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

var (
	setupOnce sync.Once
	setupDir  string
	setupErr  error
	counter   atomic.Uint64
)

// unavailable skips t, or fails it when CI is "true".
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf("softhsmtest: "+format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true turns this skip into a failure)")
	}
	t.Skip(msg)
}

// Module returns the path of the SoftHSM2 module, or skips t (fails it
// when CI is "true") if there is none or the build has no cgo.
func Module(t testing.TB) string {
	t.Helper()
	if !haveCgo {
		unavailable(t, "PKCS#11 needs cgo and this test binary was built without it")
	}
	for _, env := range []string{"PKCS11_MODULE", "SOFTHSM2_MODULE"} {
		if p := os.Getenv(env); p != "" {
			if _, err := os.Stat(p); err != nil {
				unavailable(t, "%s=%q: %v", env, p, err)
			}
			return p
		}
	}
	for _, p := range DefaultModulePaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	unavailable(t, "SoftHSM2 is not installed (no %s; set PKCS11_MODULE to its path)", DefaultModulePaths[0])
	return ""
}

// setup creates the process's SoftHSM2 directory once.
func setup() (string, error) {
	setupOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pocketkms-softhsm-")
		if err != nil {
			setupErr = err
			return
		}
		conf := filepath.Join(dir, "softhsm2.conf")
		tokens := filepath.Join(dir, "tokens")
		content := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
		if err := os.Mkdir(tokens, 0o700); err != nil {
			setupErr = err
			return
		}
		if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
			setupErr = err
			return
		}
		setupErr = os.Setenv("SOFTHSM2_CONF", conf)
		setupDir = dir
	})
	return setupDir, setupErr
}

// Dir returns the process's SoftHSM2 directory (holding softhsm2.conf and
// tokens/), creating it on first use.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := setup()
	if err != nil {
		t.Fatalf("softhsmtest: create the SoftHSM2 directory: %v", err)
	}
	return dir
}

// NewToken initialises a new token with a unique label and a random user
// PIN and returns a Config for it: Module, TokenLabel and PIN. The token
// lives until the process's SoftHSM2 directory is removed (see Main).
func NewToken(t testing.TB) softhsm.Config {
	t.Helper()
	return NewTokenWithPIN(t, randomHex(t, 16))
}

// NewTokenWithPIN is NewToken with a user PIN of the caller's choice (at
// least 4 bytes), for tests of PIN handling (PIN files, wrong PINs).
func NewTokenWithPIN(t testing.TB, pin string) softhsm.Config {
	t.Helper()
	module := Module(t)
	Dir(t)
	label := fmt.Sprintf("pocketkms-%d-%s", counter.Add(1), randomHex(t, 4))
	if err := p11.InitToken(module, label, randomHex(t, 16), pin); err != nil {
		t.Fatalf("softhsmtest: create token %q: %v", label, err)
	}
	return softhsm.Config{Module: module, TokenLabel: label, PIN: softhsm.NewPIN(pin)}
}

// Open opens a Backend for cfg and closes it when t ends.
func Open(t testing.TB, cfg softhsm.Config) *softhsm.Backend {
	t.Helper()
	b, err := softhsm.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("softhsmtest: open %v: %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("softhsmtest: close: %v", err)
		}
	})
	return b
}

// New opens a Backend on a fresh token and closes it when t ends.
func New(t testing.TB) *softhsm.Backend {
	t.Helper()
	return Open(t, NewToken(t))
}

// Main runs the tests of m, then removes the process's SoftHSM2
// directory, and exits. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if setupDir != "" {
		if err := os.RemoveAll(setupDir); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "softhsmtest: remove %s: %v\n", setupDir, err)
		}
	}
	os.Exit(code)
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
