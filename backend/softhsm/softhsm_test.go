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

// sharedToken is one token for the conformance suite: every subtest opens
// its own Backend on it (which exercises several Backends on one token)
// rather than creating a token each.
var sharedToken struct {
	once sync.Once
	cfg  softhsm.Config
}

func suiteBackend(t *testing.T) backend.Backend {
	t.Helper()
	sharedToken.once.Do(func() { sharedToken.cfg = softhsmtest.NewToken(t) })
	if sharedToken.cfg.Module == "" {
		t.Fatal("the shared token was not created")
	}
	b, err := softhsm.New(t.Context(), sharedToken.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	softhsmtest.Module(t)
	backendtest.Run(t, suiteBackend)
}

func TestConformanceReopen(t *testing.T) {
	softhsmtest.Module(t)
	var mu sync.Mutex
	tokens := map[string]softhsm.Config{} // state dir → token
	backendtest.RunReopen(t, func(t *testing.T, dir string) backend.Backend {
		t.Helper()
		mu.Lock()
		cfg, ok := tokens[dir]
		if !ok {
			cfg = softhsmtest.NewToken(t)
			tokens[dir] = cfg
		}
		mu.Unlock()
		b, err := softhsm.New(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestConformanceWycheproof(t *testing.T) {
	softhsmtest.Module(t)
	backendtest.RunWycheproof(t, suiteBackend)
}

var allModes = flag.Bool("softhsm.all-modes", false, "also run the conformance suite with Config.NoSessionCopies")

// TestConformanceNoSessionCopies runs the main suite with every operation
// on the token objects themselves. It doubles the package's test time, so
// it runs with -softhsm.all-modes only; TestDestroyedKeyIsNotFound covers
// the mode's own code either way.
func TestConformanceNoSessionCopies(t *testing.T) {
	if !*allModes {
		t.Skip("run with -softhsm.all-modes")
	}
	cfg := softhsmtest.NewToken(t)
	cfg.NoSessionCopies = true
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b, err := softhsm.New(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
