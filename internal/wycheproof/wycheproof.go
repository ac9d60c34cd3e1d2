// Package wycheproof loads Project Wycheproof test vectors for the tests
// of this module and judges the outcomes against them. Start with
// [Vectors], which returns the directory of the pinned vectors, then
// [Read] a file and feed each test case's outcome to [Counts.Judge].
//
// The vectors come from the pinned module
// github.com/C2SP/wycheproof@v0.0.0-20250901140545-b51abcfb8daf, fetched
// with "go mod download" into the module cache; nothing is vendored.
// Without network access the calling test is skipped, unless the
// environment variable CI is "true", which makes it fail.
//
// Two suites use it: backend/backendtest runs the vectors that need a
// secret (AES-GCM and RSA-OAEP decryption) against every backend, and the
// root package runs the public-key ones (signature verification, RSA-OAEP
// encryption) once, against internal/pubkey, which the Engine uses.
//
// "valid" vectors must pass and "invalid" ones must be rejected;
// "acceptable" ones are judged by a decision table kept in this package,
// and an acceptable vector that no entry covers fails the test, so that a
// new pin forces a decision.
package wycheproof

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The pinned Wycheproof module and the directory of its vector files.
const (
	Module  = "github.com/C2SP/wycheproof"
	Version = "v0.0.0-20250901140545-b51abcfb8daf"
	Dir     = "testvectors_v1"
)

// acceptDecision says how an "acceptable" vector is judged.
type acceptDecision int

const (
	// mustReject: the vector must be rejected, as if "invalid".
	mustReject acceptDecision = iota + 1
	// mustAccept: the vector must be accepted, as if "valid".
	mustAccept
	// eitherWay: both outcomes pass; the outcome is counted and logged.
	eitherWay
)

func (d acceptDecision) String() string {
	switch d {
	case mustReject:
		return "must reject"
	case mustAccept:
		return "must accept"
	case eitherWay:
		return "either way"
	}
	return "undecided"
}

// acceptableDecisions records, per Wycheproof flag, how an "acceptable"
// vector carrying it is judged. A vector with several flags takes the
// strictest decision (reject, then accept, then either way).
//
// The pinned files have no acceptable vectors in the groups we run. The
// entries are the flags that Wycheproof marks acceptable in its files for
// these algorithms (the legacy testvectors/ directory and the misc and
// PKCS #1 v1.5 files of testvectors_v1), so that moving the pin, or adding
// a file, keeps our intent.
var acceptableDecisions = map[string]struct {
	decision acceptDecision
	why      string
}{
	// ECDSA: we accept DER only, so a signature's encoding is not
	// malleable (crypto/ecdsa parses strictly).
	"MissingZero":         {mustReject, "ECDSA signatures must be DER"},
	"BerEncodedSignature": {mustReject, "ECDSA signatures must be DER"},
	// PKCS #1 v1.5 (token signing): the DigestInfo must be the canonical
	// encoding with its NULL parameter; crypto/rsa compares against it.
	"MissingNull": {mustReject, "one canonical PKCS #1 v1.5 encoding"},
	// RSA-OAEP: correct ciphertexts of special shape; decrypting them is
	// correct, refusing them is harmless.
	"SmallIntegerCiphertext": {eitherWay, "a correct OAEP ciphertext of unusual shape"},
	"Constructed":            {eitherWay, "a correct OAEP ciphertext of unusual shape"},
	// Parameters pocketkms fixes, so no caller meets them.
	"SmallModulus":   {eitherWay, "pocketkms fixes RSA-2048"},
	"SmallPublicKey": {eitherWay, "pocketkms fixes RSA-2048"},
	"WeakHash":       {eitherWay, "pocketkms fixes SHA-256"},
	"SmallIv":        {eitherWay, "pocketkms fixes 96-bit nonces"},
}

// Counts tallies the outcomes of one vector file.
type Counts struct {
	passed, rejected               int                    // valid accepted, invalid rejected
	acceptAccepted, acceptRejected int                    // acceptable vectors, by outcome
	skipped                        map[string]int         // by reason
	acceptDecided                  map[acceptDecision]int // acceptable vectors, by decision
	acceptFlags                    map[string]int         // acceptable vectors, by flag
}

// NewCounts returns empty counts.
func NewCounts() *Counts {
	return &Counts{skipped: map[string]int{}, acceptDecided: map[acceptDecision]int{}, acceptFlags: map[string]int{}}
}

// Skip records n vectors not run, with the reason.
func (c *Counts) Skip(reason string, n int) { c.skipped[reason] += n }

// Log logs the counts of file, and fails t when no valid or no invalid
// vector ran (a changed file layout would otherwise pass silently).
func (c *Counts) Log(t testing.TB, file string) {
	t.Helper()
	var skips []string
	skipTotal := 0
	for r, n := range c.skipped {
		skips = append(skips, fmt.Sprintf("%d %s", n, r))
		skipTotal += n
	}
	sort.Strings(skips)
	t.Logf("%s: %d valid passed, %d invalid rejected, %d skipped [%s], %d acceptable (%d accepted, %d rejected)",
		file, c.passed, c.rejected, skipTotal, strings.Join(skips, "; "),
		c.acceptAccepted+c.acceptRejected, c.acceptAccepted, c.acceptRejected)
	if len(c.acceptFlags) > 0 {
		t.Logf("%s: acceptable vectors by flag: %v; by decision: %v", file, c.acceptFlags, c.acceptDecided)
	}
	if c.passed == 0 || c.rejected == 0 {
		t.Errorf("%s: no valid or no invalid vector ran; has the file layout changed?", file)
	}
}

// Judge checks one vector's outcome against its expected result (valid,
// invalid or acceptable) and records it: accepted reports whether the
// code under test accepted the vector, detail says why it did not.
func (c *Counts) Judge(t testing.TB, tcID int, result string, flags []string, accepted bool, detail string) {
	t.Helper()
	switch result {
	case "valid":
		if !accepted {
			t.Errorf("tcId %d (valid, flags %v): rejected: %s", tcID, flags, detail)
			return
		}
		c.passed++
	case "invalid":
		if accepted {
			t.Errorf("tcId %d (invalid, flags %v): accepted", tcID, flags)
			return
		}
		c.rejected++
	case "acceptable":
		d, why := acceptDecision(0), ""
		for _, fl := range flags {
			c.acceptFlags[fl]++
			if e, ok := acceptableDecisions[fl]; ok && (d == 0 || e.decision < d) {
				d, why = e.decision, fl+": "+e.why
			}
		}
		c.acceptDecided[d]++
		switch {
		case d == 0:
			t.Errorf("tcId %d: acceptable vector with flags %v has no recorded decision; add one to acceptableDecisions", tcID, flags)
		case d == mustReject && accepted:
			t.Errorf("tcId %d (acceptable, flags %v): accepted, but the decision is %v (%s)", tcID, flags, d, why)
		case d == mustAccept && !accepted:
			t.Errorf("tcId %d (acceptable, flags %v): rejected, but the decision is %v (%s): %s", tcID, flags, d, why, detail)
		}
		if accepted {
			c.acceptAccepted++
		} else {
			c.acceptRejected++
		}
	default:
		t.Errorf("tcId %d: unknown result %q", tcID, result)
	}
}

// HexBytes is a hex string in a vector file.
type HexBytes []byte

// UnmarshalJSON decodes a JSON string of hex digits.
func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	*h = d
	return nil
}

// Test holds the fields of a test case that our files use.
type Test struct {
	TcID    int      `json:"tcId"`
	Comment string   `json:"comment"`
	Flags   []string `json:"flags"`
	Result  string   `json:"result"`
	Key     HexBytes `json:"key"`
	IV      HexBytes `json:"iv"`
	AAD     HexBytes `json:"aad"`
	Msg     HexBytes `json:"msg"`
	CT      HexBytes `json:"ct"`
	Tag     HexBytes `json:"tag"`
	Label   HexBytes `json:"label"`
	Sig     HexBytes `json:"sig"`
}

// Group holds the fields of a test group that our files use.
type Group struct {
	Type            string   `json:"type"`
	KeySize         int      `json:"keySize"`
	IVSize          int      `json:"ivSize"`
	TagSize         int      `json:"tagSize"`
	SHA             string   `json:"sha"`
	MGF             string   `json:"mgf"`
	MGFSHA          string   `json:"mgfSha"`
	SLen            *int     `json:"sLen"`
	PrivateKeyPkcs8 HexBytes `json:"privateKeyPkcs8"`
	PublicKeyDer    HexBytes `json:"publicKeyDer"`
	Tests           []Test   `json:"tests"`
}

// File is a vector file.
type File struct {
	Algorithm     string  `json:"algorithm"`
	NumberOfTests int     `json:"numberOfTests"`
	TestGroups    []Group `json:"testGroups"`
}

var (
	vectorsOnce sync.Once
	vectorsPath string
	vectorsErr  error
)

// Vectors returns the directory of the pinned vector files, downloading
// the module once per process. When that fails it skips t, or fails it if
// the environment variable CI is "true".
func Vectors(t testing.TB) string {
	t.Helper()
	vectorsOnce.Do(func() { vectorsPath, vectorsErr = download() })
	if vectorsErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("wycheproof vectors unavailable (CI=true): %v", vectorsErr)
		}
		t.Skipf("wycheproof vectors unavailable: %v", vectorsErr)
	}
	return vectorsPath
}

func download() (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("no go command: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "mod", "download", "-json", Module+"@"+Version)
	// Run outside any module so that no go.mod or go.sum is touched.
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var info struct {
		Dir   string
		Error string
	}
	if err := json.Unmarshal(out, &info); err != nil {
		if runErr != nil {
			return "", fmt.Errorf("go mod download: %v: %s", runErr, strings.TrimSpace(stderr.String()))
		}
		return "", fmt.Errorf("go mod download: cannot parse its output: %v", err)
	}
	if info.Error != "" {
		return "", fmt.Errorf("go mod download: %s", info.Error)
	}
	if runErr != nil {
		return "", fmt.Errorf("go mod download: %v: %s", runErr, strings.TrimSpace(stderr.String()))
	}
	dir := filepath.Join(info.Dir, Dir)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("module %s@%s has no %s directory", Module, Version, Dir)
	}
	return dir, nil
}

// Read reads and parses the vector file name in dir, failing t if it
// cannot, or if the number of test cases differs from the one the file
// announces.
func Read(t testing.TB, dir, name string) *File {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	n := 0
	for _, g := range f.TestGroups {
		n += len(g.Tests)
	}
	if n == 0 || (f.NumberOfTests != 0 && n != f.NumberOfTests) {
		t.Fatalf("%s: %d tests found, the file announces %d", name, n, f.NumberOfTests)
	}
	return &f
}

// ParseDER parses der with parse and fails t unless it holds a T; what
// names the field in messages.
func ParseDER[T any](t testing.TB, what string, parse func([]byte) (any, error), der []byte) T {
	t.Helper()
	parsed, err := parse(der)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	k, ok := parsed.(T)
	if !ok {
		t.Fatalf("%s holds a %T", what, parsed)
	}
	return k
}
