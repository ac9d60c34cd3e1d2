package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/shred"
	"github.com/pocketkms/kms/internal/testclock"
)

var netipLoopback = netip.MustParseAddr("127.0.0.1")

var update = flag.Bool("update", false, "rewrite testdata/*.golden from this run's output")

// result is one run of the program through runWith, as main would end it.
type result struct {
	out, err string
	code     int
}

// pk runs the program with args and returns what it printed and its exit
// code; the error main would print goes to err.
func pk(t testing.TB, args ...string) result {
	t.Helper()
	return pkCtx(context.Background(), t, args...)
}

func pkCtx(ctx context.Context, t testing.TB, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	err := runWith(ctx, args, &stdio{out: &out, err: &errb})
	code := exitCode(err)
	if code != 0 {
		fmt.Fprintln(&errb, "pocketkms:", err)
	}
	return result{out.String(), errb.String(), code}
}

// must runs the program and fails the test unless it exits 0.
func must(t testing.TB, args ...string) string {
	t.Helper()
	r := pk(t, args...)
	if r.code != 0 {
		t.Fatalf("pocketkms %q: exit %d\n%s%s", args, r.code, r.out, r.err)
	}
	return r.out
}

// newDataDir makes a data directory with `pocketkms init`.
func newDataDir(t testing.TB) string {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	must(t, "init", "-data", data)
	return data
}

// deterministic makes the Engines the commands open use a fake clock and a
// seeded source for key tags, for golden outputs; undone at cleanup.
func deterministic(t *testing.T) *testclock.Clock {
	clk := testclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	rnd := rand.NewChaCha8([32]byte{'p', 'o', 'c', 'k', 'e', 't'})
	var mu sync.Mutex
	engineOptions = []kms.Option{kms.WithClock(clk), kms.WithRandom(lockedReader{&mu, rnd})}
	caller := cliCaller
	cliCaller = func() string { return "pocketkms:tester" }
	t.Cleanup(func() { engineOptions, cliCaller = nil, caller })
	return clk
}

type lockedReader struct {
	mu *sync.Mutex
	r  *rand.ChaCha8
}

func (l lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

// golden compares got with testdata/name.golden, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept):\n%s", path, diffLines(string(want), got))
	}
}

// diffLines shows the first lines where want and got differ.
func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 10; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %q\n  got  %q\n", i+1, wl, gl)
			shown++
		}
	}
	return b.String()
}

// TestAdminGolden runs the admin commands one after another on one data
// directory, with a fake clock and seeded key tags, and compares
// everything they print with testdata/admin.golden.
func TestAdminGolden(t *testing.T) {
	data := newDataDir(t)
	clk := deterministic(t)
	tokFile := filepath.Join(t.TempDir(), "tokens.json")
	bk := filepath.Join(t.TempDir(), "kms.backup")
	restored := filepath.Join(t.TempDir(), "restored")
	steps := [][]string{
		{"keys", "create", "-name", "alpha"},
		{"keys", "create", "-name", "beta", "-type", "ecdsa", "-memo", "signs releases", "-o", "json"},
		{"keys", "create", "-name", "gamma", "-auto-rotation", "-rotation-days", "30"},
		{"keys", "list"},
		{"keys", "list", "-o", "json"},
		{"keys", "rotate", "alpha"},
		{"keys", "rotate", "alpha", "-o", "json"},
		{"versions", "list", "alpha"},
		{"versions", "show", "alpha", "2", "-o", "json"},
		{"keys", "min-decryption-version", "alpha", "2"},
		{"versions", "list", "alpha", "-o", "json"},
		{"keys", "show", "beta"},
		{"keys", "disable", "beta"},
		{"keys", "enable", "beta"},
		{"keys", "delete", "beta"},
		{"keys", "cancel-deletion", "beta", "-o", "json"},
		{"tokens", "show", "alpha"},
		{"tokens", "activate", "alpha"},
		{"tokens", "issue", "alpha", "-subject", "ci", "-permissions", "encrypt,decrypt", "-access-ttl", "60", "-out", tokFile},
		{"tokens", "show", "alpha", "-o", "json"},
		{"tokens", "deactivate", "alpha"},
		{"acl", "show", "alpha"},
		{"acl", "set", "alpha", "10.0.0.0/8", "192.0.2.1"},
		{"acl", "enable", "alpha"},
		{"acl", "set", "alpha", "192.0.2.1", "-o", "json"},
		{"acl", "disable", "alpha"},
		{"limits", "show", "alpha"},
		{"limits", "set", "alpha", "-rate", "50", "-burst", "100"},
		{"limits", "set", "alpha", "-unlimited", "-o", "json"},
		{"limits", "set", "alpha", "-clear"},
		{"verify"},
		{"verify", "-o", "json"},
		{"audit", "alpha"},
		{"audit", "alpha", "-size", "3", "-page", "1", "-o", "json"},
		{"audit", "beta", "-size", "2"},
		{"usage", "alpha"},
		{"usage", "beta", "-o", "json"},
		{"rotate-root"},
		{"rotate-root", "-o", "json"},
		{"verify"},
		{"backup", bk},
		{"backup", bk},
		{"backup", bk, "-force", "-o", "json"},
		{"verify-backup", bk},
		{"verify-backup", "-o", "json", bk},
		{"restore", bk},
		{"restore", bk, "-data", restored, "-root-key-file", filepath.Join(data, "root.key"), "-copy-root-key"},
		{"keys", "list", "-data", restored},
		{"verify", "-data", restored},
		{"keys", "show", "nosuchkey"},
		{"keys", "rotate", "beta"},
	}
	var b strings.Builder
	for _, args := range steps {
		full := slices.Clone(args)
		// A step that names its own -data keeps it; verify-backup has none.
		if !slices.Contains(args, "-data") && args[0] != "verify-backup" {
			full = append(full, "-data", data)
		}
		r := pk(t, full...)
		fmt.Fprintf(&b, "$ pocketkms %s\n%s", strings.Join(args, " "), r.out)
		if r.code != 0 {
			fmt.Fprintf(&b, "%s[exit %d]\n", r.err, r.code)
		}
		b.WriteString("\n")
		clk.Advance(time.Minute)
	}
	got := strings.ReplaceAll(b.String(), restored, "$RESTORED")
	got = strings.ReplaceAll(got, data, "$DATA")
	got = strings.ReplaceAll(got, tokFile, "$TOKENS")
	got = strings.ReplaceAll(got, bk, "$BACKUP")
	// A backup's digest covers material sealed under this run's random
	// root key: the only part of the output that differs between runs.
	got = regexp.MustCompile(`(sha256(?:": "|:\s+| ))[0-9a-f]{64}`).ReplaceAllString(got, "${1}$$SHA256")
	golden(t, "admin", got)

	// The token file holds the set; no output above showed a token.
	raw, err := os.ReadFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(tokFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %04o", fi.Mode().Perm())
	}
	tok := regexp.MustCompile(`"accessToken": "([^"]+)"`).FindSubmatch(raw)
	if tok == nil {
		t.Fatalf("token file lacks the access token:\n%s", raw)
	}
	if strings.Contains(b.String(), string(tok[1])) {
		t.Fatal("a token was printed without -reveal")
	}
}

// TestTokensReveal: -reveal prints the tokens (and only then), and the
// printed token is one the Engine accepts.
func TestTokensReveal(t *testing.T) {
	data := newDataDir(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	must(t, "tokens", "activate", "-data", data, "alpha")
	out := must(t, "tokens", "issue", "-data", data, "alpha", "-subject", "me", "-reveal", "-o", "json")
	m := regexp.MustCompile(`"accessToken": "([^"]+)"`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no token with -reveal:\n%s", out)
	}
	e := openForTest(t, data)
	defer e.Close()
	k := findKey(t, e, "alpha")
	if _, err := e.WithToken(m[1], netipLoopback).Encrypt(context.Background(), k, []byte("x"), nil); err != nil {
		t.Fatalf("the revealed token does not work: %v", err)
	}
	// A file that exists is refused before anything is issued.
	f := filepath.Join(t.TempDir(), "exists")
	os.WriteFile(f, nil, 0o600)
	if r := pk(t, "tokens", "issue", "-data", data, "alpha", "-subject", "me", "-out", f); r.code != 1 {
		t.Fatalf("issue to an existing file: %+v", r)
	}
}

// openForTest opens the data directory's Engine as the commands do.
func openForTest(t testing.TB, data string) *kms.Engine {
	t.Helper()
	be, err := memory.NewFromFile(filepath.Join(data, "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kms.New(context.Background(), be, kms.WithDirectory(filepath.Join(data, "store")), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func findKey(t testing.TB, e *kms.Engine, name string) string {
	t.Helper()
	tag, err := resolveKey(context.Background(), e, name)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// TestEveryCommandHelp: -h, -help and --help exit 0 and print the usage
// on every command and subcommand, and `help <command>` too.
func TestEveryCommandHelp(t *testing.T) {
	var paths [][]string
	for _, c := range commands {
		paths = append(paths, []string{c.name})
		for _, sub := range groups[c.name] {
			paths = append(paths, []string{c.name, sub.name})
		}
	}
	if len(paths) < 25 {
		t.Fatalf("only %d commands", len(paths))
	}
	for _, p := range paths {
		for _, h := range []string{"-h", "-help", "--help"} {
			r := pk(t, append(slices.Clone(p), h)...)
			if r.code != 0 || !strings.Contains(r.out, "usage: pocketkms "+strings.Join(p, " ")) {
				t.Errorf("pocketkms %s %s: exit %d\n%s%s", strings.Join(p, " "), h, r.code, r.out, r.err)
			}
		}
		r := pk(t, append([]string{"help"}, p...)...)
		if r.code != 0 || !strings.Contains(r.out, "usage: pocketkms "+strings.Join(p, " ")) {
			t.Errorf("pocketkms help %s: exit %d\n%s", strings.Join(p, " "), r.code, r.out)
		}
	}
	golden(t, "usage", pk(t, "-h").out)
}

// dirState is every file under dir with its size, mode, modification time
// and content hash.
func dirState(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d %d", path, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			h := sha256.Sum256(data)
			b.WriteString(" " + hex.EncodeToString(h[:8]))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestUsageErrorsChangeNothing: unknown or malformed flags and arguments
// exit 2 and leave the data directory exactly as it was (no file written,
// touched or created).
func TestUsageErrorsChangeNothing(t *testing.T) {
	data := newDataDir(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	in := filepath.Join(t.TempDir(), "in.txt")
	os.WriteFile(in, []byte("ncpkms:v1:AAAA\n"), 0o600)
	before := dirState(t, filepath.Dir(data))
	for _, args := range [][]string{
		{"keys"},
		{"keys", "frobnicate"},
		{"keys", "create"},
		{"keys", "create", "-name", "x", "-type", "DES"},
		{"keys", "create", "-name", "x", "-nosuchflag"},
		{"keys", "create", "-name", "x", "-rotation-days", "ten"},
		{"keys", "create", "-name", "x", "stray"},
		{"keys", "list", "extra"},
		{"keys", "list", "-o", "yaml"},
		{"keys", "show"},
		{"keys", "show", "alpha", "beta"},
		{"keys", "rotate"},
		{"keys", "delete", "alpha", "-force"},
		{"keys", "min-decryption-version", "alpha", "two"},
		{"keys", "min-decryption-version", "alpha"},
		{"versions", "show", "alpha", "0"},
		{"versions", "show", "alpha", "-1"},
		{"versions", "list"},
		{"tokens", "issue", "alpha"},
		{"tokens", "issue", "alpha", "-subject", "me"},
		{"tokens", "issue", "alpha", "-subject", "me", "-reveal", "-permissions", "encrypt,fly"},
		{"tokens", "issue", "alpha", "-subject", "me", "-reveal", "-access-ttl", "-5"},
		{"tokens", "revoke", "alpha"},
		{"acl", "enable"},
		{"acl", "show", "alpha", "-v"},
		{"limits", "set", "alpha"},
		{"limits", "set", "alpha", "-rate", "5", "-unlimited"},
		{"limits", "set", "alpha", "-rate", "-5"},
		{"limits", "set", "alpha", "-rate", "NaN"},
		{"limits", "set", "alpha", "-clear", "-burst", "3"},
		{"verify", "extra"},
		{"reencrypt", "alpha"},
		{"reencrypt", "alpha", in},
		{"reencrypt", "alpha", in, "-out", in},
		{"reencrypt", "alpha", in, "-in-place", "-out", in + ".new"},
		{"reencrypt", "alpha", in, "-in-place", "-progress", "fancy"},
		{"reencrypt", "alpha", in, "-in-place", "-field", "data..ct"},
		{"reencrypt", "alpha", in, "-in-place", "-checkpoint-every", "0"},
		{"backup"},
		{"backup", in + ".bk", "extra"},
		{"backup", in + ".bk", "-force=maybe"},
		{"backup", in + ".bk", "-o", "xml"},
		{"restore"},
		{"restore", in, "extra"},
		{"restore", in, "-copy-root-key"},
		{"restore", in, "-root-key-file", in, "-copy-root-key=perhaps"},
		{"verify-backup"},
		{"audit"},
		{"audit", "alpha", "extra"},
		{"audit", "alpha", "-page", "-1"},
		{"audit", "alpha", "-size", "0"},
		{"audit", "alpha", "-size", "101"},
		{"audit", "alpha", "-page", "one"},
		{"usage"},
		{"usage", "alpha", "extra"},
		{"rotate-root", "extra"},
		{"rotate-root", "-new-root-key-file"},
		{"rotate-root", "-o", "yaml"},
		{"init", "extra"},
		{"frobnicate"},
	} {
		full := append(slices.Clone(args), "-data", data)
		if r := pk(t, full...); r.code != 2 {
			t.Errorf("pocketkms %q: exit %d, want 2\n%s%s", args, r.code, r.out, r.err)
		}
	}
	if after := dirState(t, filepath.Dir(data)); after != before {
		t.Fatalf("a usage error changed the directory:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestNotADataDirectory: the admin commands never create a data directory.
func TestNotADataDirectory(t *testing.T) {
	data := filepath.Join(t.TempDir(), "none")
	for _, args := range [][]string{{"keys", "list"}, {"verify"}, {"keys", "create", "-name", "alpha"}} {
		r := pk(t, append(args, "-data", data)...)
		if r.code != 1 || !strings.Contains(r.err, "not a pocketkms data directory") {
			t.Errorf("%q: %+v", args, r)
		}
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("a command created %s: %v", data, err)
	}
	d := newDataDir(t)
	if r := pk(t, "init", "-data", d); r.code != 1 || !strings.Contains(r.err, "already holds") {
		t.Fatalf("init twice: %+v", r)
	}
}

// TestDirectoryInUse: while serve holds a data directory, admin commands
// and verify refuse with exit 3 and say why.
func TestDirectoryInUse(t *testing.T) {
	data := newDataDir(t)
	ts := startServer(t, data)
	for _, args := range [][]string{{"keys", "list"}, {"verify"}} {
		r := pk(t, append(args, "-data", data)...)
		if r.code != exitInUse || !strings.Contains(r.err, "in use") {
			t.Errorf("%q while serving: %+v", args, r)
		}
	}
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	must(t, "keys", "list", "-data", data)
}

// TestVerifyFindsProblems: verify reports a key whose shred key is gone
// and a store opened with another root key, exits non-zero, and writes
// nothing.
func TestVerifyFindsProblems(t *testing.T) {
	data := newDataDir(t)
	deterministic(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	must(t, "keys", "create", "-data", data, "-name", "beta")
	must(t, "verify", "-data", data)

	// Another root key: refused as a whole.
	other := filepath.Join(t.TempDir(), "other.key")
	key, _ := memory.GenerateRootKey()
	os.WriteFile(other, []byte(hex.EncodeToString(key)+"\n"), 0o600)
	if r := pk(t, "verify", "-data", data, "-root-key-file", other); r.code != exitProblems || !strings.Contains(r.out, "root key does not open") {
		t.Fatalf("verify with another root key: %+v", r)
	}

	// A missing shred key: that key is reported.
	e := openForTest(t, data)
	beta := findKey(t, e, "beta")
	e.Close()
	store := filepath.Join(data, "store")
	off, ok, err := shred.SlotOffset(store, beta, false)
	if err != nil || !ok {
		t.Fatalf("beta's shred key slot: %v %v", ok, err)
	}
	slots := filepath.Join(store, shred.DirName, shred.SlotFile)
	raw, err := os.ReadFile(slots)
	if err != nil {
		t.Fatal(err)
	}
	clear(raw[off : off+shred.SlotSize])
	if err := os.WriteFile(slots, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	before := dirState(t, data)
	r := pk(t, "verify", "-data", data, "-o", "json")
	if r.code != exitProblems || !strings.Contains(r.out, beta) || !strings.Contains(r.out, `"ok": false`) {
		t.Fatalf("verify with a shred key gone: %+v", r)
	}
	if after := dirState(t, data); after != before {
		t.Fatalf("verify changed the directory:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	r = pk(t, "verify", "-data", data)
	golden(t, "verify-problems", strings.ReplaceAll(r.out, data, "$DATA")+fmt.Sprintf("[exit %d]\n", r.code))
}
