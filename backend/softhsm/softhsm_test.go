package softhsm_test

import (
	"flag"
	"sync"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/backendtest"
	"github.com/pocketkms/kms/backend/softhsm"
	"github.com/pocketkms/kms/backend/softhsm/softhsmtest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

// tokenOpener returns the open function of backendtest.Run: a state
// directory stands for a token, created on first use (SoftHSM2 keeps every
// token of the process in softhsmtest's directory), and each call opens a
// new Backend on it.
func tokenOpener(noSessionCopies bool) func(t *testing.T, dir string) backend.Backend {
	var mu sync.Mutex
	tokens := map[string]softhsm.Config{} // state dir → token
	return func(t *testing.T, dir string) backend.Backend {
		t.Helper()
		mu.Lock()
		cfg, ok := tokens[dir]
		if !ok {
			cfg = softhsmtest.NewToken(t)
			cfg.NoSessionCopies = noSessionCopies
			tokens[dir] = cfg
		}
		mu.Unlock()
		b, err := softhsm.New(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func TestConformance(t *testing.T) {
	softhsmtest.Module(t)
	backendtest.Run(t, tokenOpener(false))
}

var allModes = flag.Bool("softhsm.all-modes", false, "also run the conformance suite with Config.NoSessionCopies")

// TestConformanceNoSessionCopies runs the suite with every operation on
// the token objects themselves. It doubles the package's test time, so it
// runs with -softhsm.all-modes only; TestDestroyedKeyIsNotFound covers the
// mode's own code either way.
func TestConformanceNoSessionCopies(t *testing.T) {
	if !*allModes {
		t.Skip("run with -softhsm.all-modes")
	}
	softhsmtest.Module(t)
	backendtest.Run(t, tokenOpener(true))
}
