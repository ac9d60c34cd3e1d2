package backendtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms/backend"
)

// The pinned Wycheproof module. Its vectors are read from the module cache
// after "go mod download"; nothing is vendored.
const (
	wycheproofModule  = "github.com/C2SP/wycheproof"
	wycheproofVersion = "v0.0.0-20250901140545-b51abcfb8daf"
	wycheproofDir     = "testvectors_v1"
)

// RunWycheproof runs Project Wycheproof vectors through the SPI, one
// subtest (and one fresh backend) per file:
//
//   - aes_gcm_test.json: groups with a 256-bit key, a 96-bit IV and a
//     128-bit tag. Each key is imported (backend.Importer) and Decrypt of
//     iv ‖ ct ‖ tag with the vector's aad must give msg ("valid") or fail
//     with backend.ErrDecryptionFailed ("invalid"). Encryption is not
//     checked against the vectors: the SPI never takes a caller's nonce.
//   - rsa_oaep_2048_sha256_mgf1sha256_test.json: the PKCS #8 private key is
//     imported; Decrypt as above. Vectors with a non-empty label are
//     skipped: the SPI (like NAVER KMS) has no OAEP label.
//   - rsa_pss_2048_sha256_mgf1_32_test.json: verification through
//     backend.PublicVerifier with PSSSaltLength set to the group's sLen.
//   - ecdsa_secp256r1_sha256_test.json: DER signatures through
//     backend.PublicVerifier with the SHA-256 digest of msg.
//
// "valid" vectors must pass and "invalid" ones must be rejected;
// "acceptable" ones are judged by the decision table acceptableDecisions
// in this file, and an acceptable vector that no entry covers fails the
// test, so that a new pin forces a decision. Per-file counts are logged.
//
// A file whose capability the backend lacks (Importer, PublicVerifier) is
// skipped with the reason. When the module cannot be downloaded the test
// is skipped, or fails if the environment variable CI is "true".
func RunWycheproof(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	dir := wycheproofVectors(t)
	t.Run("aes_gcm_test.json", func(t *testing.T) { wycheproofAESGCM(t, newBackend, dir) })
	t.Run("rsa_oaep_2048_sha256_mgf1sha256_test.json", func(t *testing.T) { wycheproofOAEP(t, newBackend, dir) })
	t.Run("rsa_pss_2048_sha256_mgf1_32_test.json", func(t *testing.T) { wycheproofPSS(t, newBackend, dir) })
	t.Run("ecdsa_secp256r1_sha256_test.json", func(t *testing.T) { wycheproofECDSA(t, newBackend, dir) })
}

// acceptDecision says how an "acceptable" vector is judged.
type acceptDecision int

const (
	// mustReject: the backend must reject the vector, as if "invalid".
	mustReject acceptDecision = iota + 1
	// mustAccept: the backend must accept the vector, as if "valid".
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
	// Parameters the SPI fixes, so no backend meets them through it.
	"SmallModulus":   {eitherWay, "the SPI fixes RSA-2048"},
	"SmallPublicKey": {eitherWay, "the SPI fixes RSA-2048"},
	"WeakHash":       {eitherWay, "the SPI fixes SHA-256"},
	"SmallIv":        {eitherWay, "the SPI fixes 96-bit nonces"},
}

// wycheproofCounts tallies one file's outcomes.
type wycheproofCounts struct {
	passed, rejected               int                    // valid accepted, invalid rejected
	acceptAccepted, acceptRejected int                    // acceptable vectors, by outcome
	skipped                        map[string]int         // by reason
	acceptDecided                  map[acceptDecision]int // acceptable vectors, by decision
	acceptFlags                    map[string]int         // acceptable vectors, by flag
}

func newCounts() *wycheproofCounts {
	return &wycheproofCounts{skipped: map[string]int{}, acceptDecided: map[acceptDecision]int{}, acceptFlags: map[string]int{}}
}

func (c *wycheproofCounts) skip(reason string, n int) { c.skipped[reason] += n }

func (c *wycheproofCounts) log(t *testing.T, file string) {
	t.Helper()
	var skips []string
	for r, n := range c.skipped {
		skips = append(skips, fmt.Sprintf("%d %s", n, r))
	}
	sort.Strings(skips)
	skipTotal := 0
	for _, n := range c.skipped {
		skipTotal += n
	}
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

// judge checks one vector's outcome (accepted reports whether the backend
// accepted it) against its expected result and records it.
func (c *wycheproofCounts) judge(t *testing.T, tcID int, result string, flags []string, accepted bool, detail string) {
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

// hexBytes is a hex string in a vector file.
type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
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

// wycheproofTest holds the fields of a test case that our files use.
type wycheproofTest struct {
	TcID    int      `json:"tcId"`
	Comment string   `json:"comment"`
	Flags   []string `json:"flags"`
	Result  string   `json:"result"`
	Key     hexBytes `json:"key"`
	IV      hexBytes `json:"iv"`
	AAD     hexBytes `json:"aad"`
	Msg     hexBytes `json:"msg"`
	CT      hexBytes `json:"ct"`
	Tag     hexBytes `json:"tag"`
	Label   hexBytes `json:"label"`
	Sig     hexBytes `json:"sig"`
}

// wycheproofGroup holds the fields of a test group that our files use.
type wycheproofGroup struct {
	Type            string           `json:"type"`
	KeySize         int              `json:"keySize"`
	IVSize          int              `json:"ivSize"`
	TagSize         int              `json:"tagSize"`
	SHA             string           `json:"sha"`
	MGF             string           `json:"mgf"`
	MGFSHA          string           `json:"mgfSha"`
	SLen            *int             `json:"sLen"`
	PrivateKeyPkcs8 hexBytes         `json:"privateKeyPkcs8"`
	PublicKeyDer    hexBytes         `json:"publicKeyDer"`
	Tests           []wycheproofTest `json:"tests"`
}

type wycheproofFile struct {
	Algorithm     string            `json:"algorithm"`
	NumberOfTests int               `json:"numberOfTests"`
	TestGroups    []wycheproofGroup `json:"testGroups"`
}

var (
	wycheproofOnce sync.Once
	wycheproofPath string
	wycheproofErr  error
)

// wycheproofVectors returns the directory of the pinned vectors,
// downloading the module once per process.
func wycheproofVectors(t *testing.T) string {
	t.Helper()
	wycheproofOnce.Do(func() { wycheproofPath, wycheproofErr = downloadWycheproof() })
	if wycheproofErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("wycheproof vectors unavailable (CI=true): %v", wycheproofErr)
		}
		t.Skipf("wycheproof vectors unavailable: %v", wycheproofErr)
	}
	return wycheproofPath
}

func downloadWycheproof() (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("no go command: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "mod", "download", "-json", wycheproofModule+"@"+wycheproofVersion)
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
	dir := filepath.Join(info.Dir, wycheproofDir)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("module %s@%s has no %s directory", wycheproofModule, wycheproofVersion, wycheproofDir)
	}
	return dir, nil
}

func readWycheproof(t *testing.T, dir, name string) *wycheproofFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	var f wycheproofFile
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

// decryptOutcome decrypts and reports whether the backend accepted the
// ciphertext; a failure that is not ErrDecryptionFailed is a test error.
func decryptOutcome(t *testing.T, ctx context.Context, k backend.Key, tc wycheproofTest, ct, ad []byte) (bool, string) {
	t.Helper()
	pt, err := as[backend.Decrypter](t, k).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: ct, AdditionalData: ad})
	if err != nil {
		if !errors.Is(err, backend.ErrDecryptionFailed) {
			t.Errorf("tcId %d: Decrypt failed with %v, want a result or backend.ErrDecryptionFailed", tc.TcID, err)
		}
		return false, err.Error()
	}
	if !bytes.Equal(pt, tc.Msg) {
		t.Errorf("tcId %d: Decrypt returned another plaintext", tc.TcID)
		return false, "wrong plaintext"
	}
	return true, ""
}

func wycheproofAESGCM(t *testing.T, nb func(t *testing.T) backend.Backend, dir string) {
	const name = "aes_gcm_test.json"
	file := readWycheproof(t, dir, name)
	f := setup(t, nb)
	f.importer()
	c := newCounts()
	keys := map[string]backend.Key{}
	for _, g := range file.TestGroups {
		if g.KeySize != 256 || g.IVSize != 96 || g.TagSize != 128 {
			c.skip("in groups other than key 256, iv 96, tag 128 bits", len(g.Tests))
			continue
		}
		for _, tc := range g.Tests {
			k, ok := keys[string(tc.Key)]
			if !ok {
				k, _ = f.importKey(specAES, []byte(tc.Key), nil)
				keys[string(tc.Key)] = k
			}
			ct := make([]byte, 0, len(tc.IV)+len(tc.CT)+len(tc.Tag))
			ct = append(append(append(ct, tc.IV...), tc.CT...), tc.Tag...)
			accepted, detail := decryptOutcome(t, f.ctx, k, tc, ct, tc.AAD)
			c.judge(t, tc.TcID, tc.Result, tc.Flags, accepted, detail)
		}
	}
	c.log(t, name)
}

func wycheproofOAEP(t *testing.T, nb func(t *testing.T) backend.Backend, dir string) {
	const name = "rsa_oaep_2048_sha256_mgf1sha256_test.json"
	file := readWycheproof(t, dir, name)
	f := setup(t, nb)
	f.importer()
	c := newCounts()
	for _, g := range file.TestGroups {
		if g.KeySize != 2048 || g.SHA != "SHA-256" || g.MGF != "MGF1" || g.MGFSHA != "SHA-256" {
			c.skip("group parameters outside the SPI", len(g.Tests))
			continue
		}
		if len(g.PrivateKeyPkcs8) == 0 {
			t.Fatalf("%s: group without privateKeyPkcs8", name)
		}
		priv := parseDER[*rsa.PrivateKey](t, name+": privateKeyPkcs8", x509.ParsePKCS8PrivateKey, g.PrivateKeyPkcs8)
		k, _ := f.importKey(specRSA, priv, nil)
		for _, tc := range g.Tests {
			if len(tc.Label) != 0 {
				// Recorded decision: the SPI has no OAEP label (NAVER KMS
				// has none), so these cannot be expressed.
				c.skip("with a non-empty OAEP label (no label in the SPI)", 1)
				continue
			}
			accepted, detail := decryptOutcome(t, f.ctx, k, tc, tc.CT, nil)
			c.judge(t, tc.TcID, tc.Result, tc.Flags, accepted, detail)
		}
	}
	c.log(t, name)
}

// publicVerifier returns the backend's PublicVerifier or skips the test.
func (f *fixture) publicVerifier() backend.PublicVerifier {
	return capability[backend.PublicVerifier](f)
}

// parseDER parses der with parse and fails the test unless it holds a T;
// what names the field in messages.
func parseDER[T any](t *testing.T, what string, parse func([]byte) (any, error), der []byte) T {
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

// verifyOutcome verifies and reports whether the backend accepted the
// signature; an error is a test error (vectors are well-formed requests).
func verifyOutcome(t *testing.T, ctx context.Context, pv backend.PublicVerifier, pub any, tc wycheproofTest, req *backend.VerifyRequest) (bool, string) {
	t.Helper()
	ok, err := pv.VerifyWithPublicKey(ctx, pub, req)
	if err != nil {
		t.Errorf("tcId %d: VerifyWithPublicKey: %v (want a result, not an error)", tc.TcID, err)
		return false, err.Error()
	}
	if !ok {
		return false, "signature rejected"
	}
	return true, ""
}

func wycheproofPSS(t *testing.T, nb func(t *testing.T) backend.Backend, dir string) {
	const name = "rsa_pss_2048_sha256_mgf1_32_test.json"
	file := readWycheproof(t, dir, name)
	f := setup(t, nb)
	pv := f.publicVerifier()
	c := newCounts()
	for _, g := range file.TestGroups {
		if g.KeySize != 2048 || g.SHA != "SHA-256" || g.MGF != "MGF1" || g.MGFSHA != "SHA-256" {
			c.skip("group parameters outside the SPI", len(g.Tests))
			continue
		}
		if g.SLen == nil || *g.SLen <= 0 {
			// PSSSaltLength 0 means "any salt" in the SPI, so a group
			// that demands exactly sLen 0 cannot be expressed.
			c.skip("with sLen 0 (0 means any salt in the SPI)", len(g.Tests))
			continue
		}
		pub := parseDER[*rsa.PublicKey](t, name+": publicKeyDer", x509.ParsePKIXPublicKey, g.PublicKeyDer)
		for _, tc := range g.Tests {
			d := sha256.Sum256(tc.Msg)
			req := &backend.VerifyRequest{Algorithm: backend.AlgRSAPSSSHA256, Digest: d[:], Signature: tc.Sig, PSSSaltLength: *g.SLen}
			accepted, detail := verifyOutcome(t, f.ctx, pv, pub, tc, req)
			c.judge(t, tc.TcID, tc.Result, tc.Flags, accepted, detail)
		}
	}
	c.log(t, name)
}

func wycheproofECDSA(t *testing.T, nb func(t *testing.T) backend.Backend, dir string) {
	const name = "ecdsa_secp256r1_sha256_test.json"
	file := readWycheproof(t, dir, name)
	f := setup(t, nb)
	pv := f.publicVerifier()
	c := newCounts()
	for _, g := range file.TestGroups {
		if g.SHA != "SHA-256" {
			c.skip("group hash is not SHA-256", len(g.Tests))
			continue
		}
		pub := parseDER[*ecdsa.PublicKey](t, name+": publicKeyDer", x509.ParsePKIXPublicKey, g.PublicKeyDer)
		for _, tc := range g.Tests {
			d := sha256.Sum256(tc.Msg)
			req := &backend.VerifyRequest{Algorithm: backend.AlgECDSAP256SHA256, Digest: d[:], Signature: tc.Sig}
			accepted, detail := verifyOutcome(t, f.ctx, pv, pub, tc, req)
			c.judge(t, tc.TcID, tc.Result, tc.Flags, accepted, detail)
		}
	}
	c.log(t, name)
}
