package kms_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/testproc"
	"github.com/pocketkms/kms/ratelimit"
)

var corFlipsPerFile = flag.Int("corrupt.flips", 0, "bytes flipped per store file by TestStoreCorruption (0: a default that keeps the test short; -1: every byte of each file's used part)")

// corSpec is what the corruption fixture holds, as data, so that a child
// process can rebuild the probes.
type corSpec struct {
	Keys     []corSpecKey `json:"keys"`
	Decrypts []corSpecCT  `json:"decrypts"`
	Verifies []corSpecSig `json:"verifies"`
	Tokens   []corSpecTok `json:"tokens"`
}

type corSpecKey struct {
	Tag  string      `json:"tag"`
	Name string      `json:"name"`
	Type kms.KeyType `json:"type"`
}

type corSpecCT struct {
	Tag string `json:"tag"`
	CT  string `json:"ct"`
	Ctx []byte `json:"ctx"`
}

type corSpecSig struct {
	Tag  string `json:"tag"`
	Sig  string `json:"sig"`
	Data string `json:"data"`
}

type corSpecTok struct {
	Name string      `json:"name"`
	Tag  string      `json:"tag"`
	Type kms.KeyType `json:"type"`
	Tok  string      `json:"tok"`
	Addr string      `json:"addr"`
}

// corProbe observes one thing of an Engine. exact probes describe state
// (keys, versions, ACLs, generators, limits, public keys): after a
// corruption that New did not refuse they must answer exactly as before.
// The others are cipher and token outcomes: they may fail where they
// succeeded, but never succeed where they failed, nor give another value.
type corProbe struct {
	name  string
	exact bool
	run   func(ctx context.Context, e *kms.Engine) (string, error)
}

// corResult is a probe's answer: a value, or the class of its error.
type corResult struct {
	Val string `json:"val,omitempty"`
	Err string `json:"err,omitempty"`
}

func (r corResult) String() string {
	if r.Err != "" {
		return "error(" + r.Err + ")"
	}
	return r.Val
}

// corKinds are the sentinels an outcome is reported by.
var corKinds = []error{
	kms.ErrInvalidArgument, kms.ErrWrongKeyType, kms.ErrDecryptionFailed, kms.ErrKeyNotFound,
	kms.ErrVersionNotFound, kms.ErrAlreadyExists, kms.ErrKeyNotEnabled, kms.ErrInvalidState,
	kms.ErrVersionDisabled, kms.ErrVersionLimit, kms.ErrAccessDenied, kms.ErrPermissionDenied,
	kms.ErrTokenInvalid, kms.ErrTokenExpired, kms.ErrRateLimited, kms.ErrClosed,
	kms.ErrBackendMismatch, kms.ErrConflict, kms.ErrCanceled, kms.ErrUnavailable,
	kms.ErrVersionBelowMinimum, kms.ErrInternal,
}

func corKind(err error) string {
	var ke *kms.Error
	if !errors.As(err, &ke) {
		return "UNTYPED " + err.Error()
	}
	for _, k := range corKinds {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	return "UNKNOWN KIND " + err.Error()
}

func (s *corSpec) probes() []corProbe {
	var ps []corProbe
	for _, c := range s.Decrypts {
		ps = append(ps, corProbe{name: "decrypt " + c.CT[:16], run: func(ctx context.Context, e *kms.Engine) (string, error) {
			pt, err := e.Decrypt(ctx, c.Tag, c.CT, c.Ctx)
			return string(pt), err
		}})
	}
	for _, v := range s.Verifies {
		ps = append(ps, corProbe{name: "verify " + v.Sig[:16] + " " + v.Data, run: func(ctx context.Context, e *kms.Engine) (string, error) {
			ok, err := e.Verify(ctx, v.Tag, []byte(v.Data), v.Sig)
			return fmt.Sprint(ok), err
		}})
	}
	for _, tk := range s.Tokens {
		addr := netip.MustParseAddr(tk.Addr)
		ps = append(ps, corProbe{name: "token " + tk.Name, run: func(ctx context.Context, e *kms.Engine) (string, error) {
			c := e.WithToken(tk.Tok, addr)
			if tk.Type != kms.AES256 {
				return c.GetPublicKey(ctx, tk.Tag, 0)
			}
			ct, err := c.Encrypt(ctx, tk.Tag, []byte("via token"), []byte("c"))
			if err != nil {
				return "", err
			}
			pt, err := e.Decrypt(ctx, tk.Tag, ct, []byte("c"))
			return "encrypted " + string(pt), err
		}})
	}
	ps = append(ps, corProbe{name: "key list", exact: true, run: func(ctx context.Context, e *kms.Engine) (string, error) {
		p, err := e.ListKeys(ctx, kms.ListKeysRequest{PageSize: 200})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d %+v", p.TotalCount, p.Keys), nil
	}})
	for _, k := range s.Keys {
		tag := k.Tag
		ps = append(ps,
			corProbe{name: k.Name + " key", exact: true, run: func(ctx context.Context, e *kms.Engine) (string, error) {
				k, err := e.GetKey(ctx, tag)
				return fmt.Sprintf("%+v", k), err
			}},
			corProbe{name: k.Name + " versions", exact: true, run: func(ctx context.Context, e *kms.Engine) (string, error) {
				vs, err := e.ListKeyVersions(ctx, tag)
				return fmt.Sprintf("%+v", vs), err
			}},
			corProbe{name: k.Name + " acl", exact: true, run: func(ctx context.Context, e *kms.Engine) (string, error) {
				a, err := e.GetKeyACL(ctx, tag)
				return fmt.Sprintf("%+v", a), err
			}},
			corProbe{name: k.Name + " generator", exact: true, run: func(ctx context.Context, e *kms.Engine) (string, error) {
				g, err := e.GetTokenGenerator(ctx, tag)
				return fmt.Sprintf("%+v", g), err
			}},
			corProbe{name: k.Name + " rate limit", exact: true, run: func(ctx context.Context, e *kms.Engine) (string, error) {
				l, err := e.GetKeyRateLimit(ctx, tag)
				return fmt.Sprintf("%+v", l), err
			}},
			corProbe{name: k.Name + " round trip", run: func(ctx context.Context, e *kms.Engine) (string, error) {
				ct, err := e.Encrypt(ctx, tag, []byte("fresh"), []byte("c"))
				if err != nil {
					return "", err
				}
				pt, err := e.Decrypt(ctx, tag, ct, []byte("c"))
				return string(pt), err
			}},
		)
		if k.Type != kms.AES256 {
			for v := uint32(0); v <= 1; v++ {
				ps = append(ps, corProbe{name: fmt.Sprintf("%s public key v%d", k.Name, v), exact: true, run: func(ctx context.Context, e *kms.Engine) (string, error) {
					return e.GetPublicKey(ctx, tag, v)
				}})
			}
		}
	}
	return ps
}

// corFixture builds a store holding every record type in several states
// and returns what it holds. The Engine is left open.
func corFixture(t *testing.T, dir string) (*kms.Engine, *corSpec) {
	t.Helper()
	ctx := context.Background()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	spec := &corSpec{}
	key := func(name string, typ kms.KeyType, convergent bool) *kms.Key {
		k := createKey(t, e, name, typ, convergent)
		spec.Keys = append(spec.Keys, corSpecKey{k.Tag, k.Name, k.Type})
		return k
	}
	enc := func(tag, pt string, encCtx []byte) string {
		t.Helper()
		ct, err := e.Encrypt(ctx, tag, []byte(pt), encCtx)
		must(err)
		spec.Decrypts = append(spec.Decrypts, corSpecCT{tag, ct, encCtx})
		return ct
	}

	aes := key("coraes", kms.AES256, false)
	enc(aes.Tag, "aes v1", nil)
	_, err = e.RotateKey(ctx, aes.Tag)
	must(err)
	enc(aes.Tag, "aes v2", nil)
	_, err = e.RotateKey(ctx, aes.Tag)
	must(err)
	enc(aes.Tag, "aes v3", nil)
	_, err = e.DisableKeyVersion(ctx, aes.Tag, 1)
	must(err)

	conv := key("corconv", kms.AES256, true)
	cct := enc(conv.Tag, "convergent", []byte("ctx-1"))
	spec.Decrypts = append(spec.Decrypts, corSpecCT{conv.Tag, cct, []byte("ctx-2")})

	ec := key("corec", kms.ECDSA, false)
	rsa := key("corrsa", kms.RSA2048, false)
	enc(rsa.Tag, "rsa", nil)
	for _, k := range []*kms.Key{ec, rsa} {
		sig, err := e.Sign(ctx, k.Tag, []byte("signed"))
		must(err)
		spec.Verifies = append(spec.Verifies, corSpecSig{k.Tag, sig, "signed"}, corSpecSig{k.Tag, sig, "other"})
	}

	dis := key("cordis", kms.AES256, false)
	enc(dis.Tag, "disabled", nil)
	_, err = e.DisableKey(ctx, dis.Tag)
	must(err)
	rev := key("correv", kms.AES256, false)
	enc(rev.Tag, "revoked", nil)
	_, err = e.RequestKeyDeletion(ctx, rev.Tag)
	must(err)

	// Tokens: a live set on aes behind an ACL, a set from a rotated
	// generator and a live one on conv, a set from a deactivated generator
	// on ec.
	types := map[string]kms.KeyType{}
	for _, k := range spec.Keys {
		types[k.Tag] = k.Type
	}
	tok := func(name, tag, tok, addr string) {
		spec.Tokens = append(spec.Tokens, corSpecTok{name, tag, types[tag], tok, addr})
	}
	issue := func(tag string) (access, refresh string) {
		t.Helper()
		set, err := e.IssueTokens(ctx, tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "corruption"})
		must(err)
		return set.Access, set.Refresh
	}
	_, err = e.ActivateTokenGenerator(ctx, aes.Tag)
	must(err)
	acc, ref := issue(aes.Tag)
	_, err = e.AddAllowedIPs(ctx, aes.Tag, []string{"10.1.2.3", "10.9.0.0/16"})
	must(err)
	_, err = e.SetKeyACLEnabled(ctx, aes.Tag, true)
	must(err)
	must(e.SetKeyRateLimit(ctx, aes.Tag, ratelimit.Limit{Rate: 50, Burst: 100}))
	tok("aes access", aes.Tag, acc, "10.1.2.3")
	tok("aes access in a listed prefix", aes.Tag, acc, "10.9.8.7")
	tok("aes access outside the acl", aes.Tag, acc, "10.2.0.1")
	tok("aes refresh as access", aes.Tag, ref, "10.1.2.3")
	parts := strings.Split(acc, ".")
	tok("aes forged signature", aes.Tag, parts[0]+"."+parts[1]+"."+strings.Repeat("A", len(parts[2])), "10.1.2.3")
	tok("aes unsigned", aes.Tag, parts[0]+"."+parts[1]+".", "10.1.2.3")

	_, err = e.ActivateTokenGenerator(ctx, conv.Tag)
	must(err)
	oldAcc, _ := issue(conv.Tag)
	_, err = e.RotateTokenGenerator(ctx, conv.Tag)
	must(err)
	newAcc, _ := issue(conv.Tag)
	tok("conv before generator rotation", conv.Tag, oldAcc, "10.1.2.3")
	tok("conv after generator rotation", conv.Tag, newAcc, "10.1.2.3")
	tok("conv token on aes", aes.Tag, newAcc, "10.1.2.3")

	_, err = e.ActivateTokenGenerator(ctx, ec.Tag)
	must(err)
	ecAcc, _ := issue(ec.Tag)
	_, err = e.DeactivateTokenGenerator(ctx, ec.Tag)
	must(err)
	tok("ec deactivated generator", ec.Tag, ecAcc, "10.1.2.3")
	return e, spec
}

func corRun(ctx context.Context, e *kms.Engine, probes []corProbe) []corResult {
	out := make([]corResult, len(probes))
	for i, p := range probes {
		v, err := p.run(ctx, e)
		if err != nil {
			out[i] = corResult{Err: corKind(err)}
		} else {
			out[i] = corResult{Val: v}
		}
	}
	return out
}

// corCompare returns what is wrong with got against the intact store's
// results ("" when every probe answered acceptably), each problem named by
// its kind: "state" (an exact probe changed), "accepted" (a call refused
// before succeeded), "value" (a call gave another value) and "untyped" (an
// error that is not a *kms.Error).
func corCompare(probes []corProbe, golden, got []corResult) string {
	var bad []string
	add := func(kind, msg string) { bad = append(bad, kind+": "+msg) }
	for i, p := range probes {
		g, w := got[i], golden[i]
		switch {
		case strings.HasPrefix(g.Err, "UN"):
			add("untyped", fmt.Sprintf("%s: %s", p.name, g.Err))
		case p.exact && g != w:
			add("state", fmt.Sprintf("%s: %.200s, was %.200s", p.name, g, w))
		case g.Err != "":
			// Detected on use: acceptable for a cipher or token outcome.
		case w.Err != "":
			add("accepted", fmt.Sprintf("%s: succeeded (%.100q), was refused: %s", p.name, g.Val, w))
		case g.Val != w.Val:
			add("value", fmt.Sprintf("%s: %q, was %q", p.name, g.Val, w.Val))
		}
	}
	return strings.Join(bad, "; ")
}

// corFile is one file of a store.
type corFile struct {
	Rel  string `json:"rel"`
	data []byte
}

func corReadFiles(dir string) ([]corFile, error) {
	var files []corFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "LOCK" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		files = append(files, corFile{rel, b})
		return err
	})
	slices.SortFunc(files, func(a, b corFile) int { return strings.Compare(a.Rel, b.Rel) })
	return files, err
}

func corWriteFiles(dir string, files []corFile) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for _, f := range files {
		p := filepath.Join(dir, f.Rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := corWriteSparse(p, f.data); err != nil {
			return err
		}
	}
	return nil
}

// corWriteSparse writes data up to its last non-zero byte and extends the
// file to its full size without writing the zeros: Badger preallocates
// tens of megabytes it has not used yet.
func corWriteSparse(path string, data []byte) error {
	used := len(data)
	for used > 0 && data[used-1] == 0 {
		used--
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data[:used]); err != nil {
		f.Close()
		return err
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func corReadDir(t testing.TB, dir string) []corFile {
	t.Helper()
	files, err := corReadFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func corWriteDir(t testing.TB, dir string, files []corFile) {
	t.Helper()
	if err := corWriteFiles(dir, files); err != nil {
		t.Fatal(err)
	}
}

// corFlip is one corruption: data[Pos] ^= Mask in file File.
type corFlip struct {
	File int  `json:"file"`
	Pos  int  `json:"pos"`
	Mask byte `json:"mask"`
}

// corPositions picks the bytes to flip in each file (whose name ends in
// only, if given): every byte of small files; otherwise the first and
// last edge bytes of the file and of its used part (headers, footers,
// checksums; the used part ends at the last non-zero byte, as Badger
// preallocates and zero-fills), n evenly spaced bytes of the used part,
// and a few random ones anywhere. n < 0 flips every byte of the used
// part.
func corPositions(files []corFile, n, edge int, only string, rng *rand.Rand) []corFlip {
	var out []corFlip
	for fi, f := range files {
		if only != "" && !strings.HasSuffix(f.Rel, only) {
			continue
		}
		size := len(f.data)
		used := size
		for used > 0 && f.data[used-1] == 0 {
			used--
		}
		seen := map[int]bool{}
		add := func(p int) {
			if p >= 0 && p < size && !seen[p] {
				seen[p] = true
				out = append(out, corFlip{fi, p, byte(1 << rng.IntN(8))})
			}
		}
		if f.Rel == "MANIFEST" {
			// Badger's table of contents: every bit of it. Its record
			// lengths and checksums decide which tables exist.
			for p := range size {
				for bit := range 8 {
					out = append(out, corFlip{fi, p, byte(1 << bit)})
				}
			}
			continue
		}
		if size <= 256 {
			for p := range size {
				add(p)
			}
			continue
		}
		for p := range edge {
			add(p)
			add(size - 1 - p)
			add(used - 1 - p)
		}
		if n < 0 {
			for p := range used {
				add(p)
			}
		}
		for i := range max(n, 0) {
			add(i * used / n)
		}
		for range 4 {
			add(rng.IntN(size))
		}
	}
	return out
}

// corJob is what the parent hands a child: the intact store, the probes'
// answers on it and the flips to try.
type corJob struct {
	Src    string      `json:"src"`
	Spec   corSpec     `json:"spec"`
	Golden []corResult `json:"golden"`
	Flips  []corFlip   `json:"flips"`
}

// corLine is a child's report on one flip.
type corLine struct {
	Phase   string `json:"phase"` // BEGIN or DONE
	I       int    `json:"i"`
	Outcome string `json:"outcome,omitempty"`
	Msg     string `json:"msg,omitempty"`
}

// The outcomes of one flip.
const (
	corRefused  = "refused by New"
	corDetected = "detected on use"
	corNoEffect = "no effect"
	corWrong    = "WRONG"
	corCrashed  = "CRASHED"
)

// corChild tries the flips of the job in dir/job.json, one at a time,
// reporting each before and after: a flip that kills the process is the
// one begun and not done.
func corChild(dir string) {
	raw, err := os.ReadFile(filepath.Join(dir, "job.json"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var job corJob
	if err := json.Unmarshal(raw, &job); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	files, err := corReadFiles(job.Src)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	probes := job.Spec.probes()
	work := filepath.Join(dir, "db")
	ctx := context.Background()
	enc := json.NewEncoder(os.Stdout)
	for i, fl := range job.Flips {
		enc.Encode(corLine{Phase: "BEGIN", I: i})
		f := &files[fl.File]
		f.data[fl.Pos] ^= fl.Mask
		if err := corWriteFiles(work, files); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		f.data[fl.Pos] ^= fl.Mask
		be, err := memory.New(rootKey)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		line := corLine{Phase: "DONE", I: i}
		e, err := kms.New(ctx, be, kms.WithDirectory(work), kms.WithMaintenanceInterval(0))
		if err != nil {
			line.Outcome = corRefused
			if k := corKind(err); strings.HasPrefix(k, "UN") {
				line.Outcome, line.Msg = corWrong, "New: untyped: "+k
			}
			enc.Encode(line)
			continue
		}
		got := corRun(ctx, e, probes)
		e.Close()
		switch msg := corCompare(probes, job.Golden, got); {
		case msg != "":
			line.Outcome, line.Msg = corWrong, msg
		case slices.Equal(got, job.Golden):
			line.Outcome = corNoEffect
		default:
			line.Outcome = corDetected
		}
		enc.Encode(line)
	}
	os.Exit(0)
}

// TestStoreCorruption flips single bytes of a store's files and reopens
// it: either New refuses the directory, or every answer is the one the
// intact store gives, except that a cipher or token call may fail where it
// succeeded. A wrong plaintext, a changed state, a token accepted that
// was refused, or a crashed process fails the test. It runs on a cleanly
// closed store and on a copy taken while the Engine was open (records
// still in Badger's write-ahead log). The reopen runs in child processes,
// so that a crash is reported instead of ending the test run.
func TestStoreCorruption(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		corChild(args[0])
		return
	}
	ctx := context.Background()
	src := t.TempDir()
	e, spec := corFixture(t, src)
	live := corReadDir(t, src)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	closed := corReadDir(t, src)
	n := *corFlipsPerFile
	if n == 0 {
		n = 60
		if testing.Short() {
			n = 10
		}
	}
	probes := spec.probes()
	// The open store differs from the closed one by its write-ahead log
	// (*.mem), whose flips are what it adds. A reopen there replays the
	// log and flushes it on close, which costs more (most under -race):
	// it gets a third of the flips by default.
	openN, edge := n, 32
	if *corFlipsPerFile == 0 {
		openN, edge = n/3, 8
	}
	for _, mode := range []struct {
		name  string
		files []corFile
		n     int
		edge  int
		only  string
	}{{"closed", closed, n, 32, ""}, {"open", live, openN, edge, ".mem"}} {
		t.Run(mode.name, func(t *testing.T) {
			base := t.TempDir()
			intact := filepath.Join(base, "intact")
			corWriteDir(t, intact, mode.files)
			check := filepath.Join(base, "check")
			corWriteDir(t, check, mode.files)
			e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(check), kms.WithMaintenanceInterval(0))
			if err != nil {
				t.Fatalf("intact copy: %v", err)
			}
			golden := corRun(ctx, e, probes)
			e.Close()
			for i, r := range golden {
				if strings.HasPrefix(r.Err, "UN") {
					t.Fatalf("intact copy: %s: %s", probes[i].name, r.Err)
				}
			}
			for _, f := range mode.files {
				t.Logf("%s: %d bytes", f.Rel, len(f.data))
			}
			flips := corPositions(mode.files, mode.n, mode.edge, mode.only, rand.New(rand.NewPCG(1, 2)))
			job := corJob{Src: intact, Spec: *spec, Golden: golden}
			counts := map[string]int{}
			byFile := map[string]map[string]int{}
			bad := func(name string, fl corFlip, outcome, msg string) {
				t.Errorf("%s[%d]^%#02x: %s: %s", name, fl.Pos, fl.Mask, outcome, msg)
			}
			count := func(name, outcome string) {
				counts[outcome]++
				if byFile[name] == nil {
					byFile[name] = map[string]int{}
				}
				byFile[name][outcome]++
			}
			start := time.Now()
			for next := 0; next < len(flips); {
				job.Flips = flips[next:]
				done, crashed, stderr := corSpawn(t, base, &job, func(l corLine) {
					fl := job.Flips[l.I]
					name := mode.files[fl.File].Rel
					count(name, l.Outcome)
					if l.Outcome == corWrong {
						bad(name, fl, l.Outcome, l.Msg)
					}
				})
				if crashed >= 0 {
					fl := job.Flips[crashed]
					name := mode.files[fl.File].Rel
					count(name, corCrashed)
					bad(name, fl, corCrashed, "the process crashed: "+corPanicLine(stderr))
					done = crashed + 1
				}
				if done == 0 {
					t.Fatalf("child made no progress: %s", stderr)
				}
				next += done
			}
			t.Logf("%d flips in %v: %v", len(flips), time.Since(start).Round(time.Millisecond), counts)
			for _, f := range mode.files {
				if c := byFile[f.Rel]; c != nil {
					t.Logf("  %s: %v", f.Rel, c)
				}
			}
			if counts[corRefused]+counts[corDetected] == 0 {
				t.Error("no flip was detected: the test corrupts nothing that is read")
			}
		})
	}
}

// corSpawn runs a child on job and reports each finished flip; it returns
// how many flips finished, the index of the flip that crashed the child
// (-1 if none) and the child's standard error.
func corSpawn(t *testing.T, base string, job *corJob, report func(corLine)) (done, crashed int, stderr string) {
	t.Helper()
	dir, err := os.MkdirTemp(base, "child")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	raw, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "job.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	p := testproc.Start(t, testproc.Options{}, dir)
	begun := -1
	for line := range p.Lines() {
		var l corLine
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch l.Phase {
		case "BEGIN":
			begun = l.I
		case "DONE":
			report(l)
			done = l.I + 1
			begun = -1
		}
	}
	r := p.Wait()
	if r.Err == nil && done == len(job.Flips) {
		return done, -1, r.Stderr
	}
	if begun < 0 {
		t.Fatalf("child failed between flips: %v\n%s", r, r.Stderr)
	}
	return done, begun, r.Stderr
}

// corPanicLine picks the informative lines of a crashed child's stderr.
func corPanicLine(stderr string) string {
	lines := strings.Split(stderr, "\n")
	var keep []string
	for i, l := range lines {
		if strings.HasPrefix(l, "panic:") || strings.Contains(l, "FATAL") || strings.Contains(l, "Assert failed") ||
			(strings.HasPrefix(l, "github.com/dgraph-io/badger") && len(keep) < 6) {
			keep = append(keep, strings.TrimSpace(l))
			if i+1 < len(lines) && strings.HasPrefix(l, "github.com") {
				keep = append(keep, strings.TrimSpace(lines[i+1]))
			}
		}
	}
	if len(keep) == 0 {
		return fmt.Sprintf("%.400s", stderr)
	}
	return strings.Join(keep, " | ")
}
