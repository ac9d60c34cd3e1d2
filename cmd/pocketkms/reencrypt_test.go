package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pocketkms/kms"
)

var reencryptLines = flag.Int("reencrypt-lines", 100_000, "ciphertexts in TestReencryptLarge (1,000 under -short)")

// fixture is a data directory with key "alpha" rotated once after n
// ciphertexts of "msg-<i>" were made under version 1.
type fixture struct {
	data, tag string
	cts       []string
}

func newFixture(t testing.TB, n int) *fixture {
	t.Helper()
	data := newDataDir(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	ctx := context.Background()
	e := openForTest(t, data)
	defer e.Close()
	f := &fixture{data: data, tag: findKey(t, e, "alpha")}
	items := make([]kms.EncryptItem, 0, kms.MaxBatchItems)
	for i := 0; i < n; i += kms.MaxBatchItems {
		items = items[:0]
		for j := i; j < min(n, i+kms.MaxBatchItems); j++ {
			items = append(items, kms.EncryptItem{Plaintext: []byte("msg-" + strconv.Itoa(j))})
		}
		cts, err := e.BatchEncrypt(ctx, f.tag, items)
		if err != nil {
			t.Fatal(err)
		}
		f.cts = append(f.cts, cts...)
	}
	if _, err := e.RotateKey(ctx, f.tag); err != nil {
		t.Fatal(err)
	}
	return f
}

// plainInput writes the ciphertexts one a line.
func (f *fixture) plainInput(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cts.txt")
	var b bytes.Buffer
	for _, ct := range f.cts {
		b.WriteString(ct + "\n")
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkOutput checks that path holds want lines, each at version 2 and
// decrypting to msg-<i>, checking every step-th line.
func (f *fixture) checkOutput(t testing.TB, path string, step int) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) != len(f.cts) {
		t.Fatalf("%s has %d lines, want %d", path, len(lines), len(f.cts))
	}
	e := openForTest(t, f.data)
	defer e.Close()
	for i, l := range lines {
		if !strings.HasPrefix(l, "ncpkms:v2:") {
			t.Fatalf("line %d is not at version 2: %.20s…", i+1, l)
		}
		if i%step != 0 && i != len(lines)-1 {
			continue
		}
		pt, err := e.Decrypt(context.Background(), f.tag, l, nil)
		if err != nil || string(pt) != "msg-"+strconv.Itoa(i) {
			t.Fatalf("line %d decrypts to %q, %v", i+1, pt, err)
		}
	}
}

func fileBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReencryptLarge re-encrypts 100,000 ciphertexts (-reencrypt-lines;
// 1,000 under -short) with the progress bar forced on: the bar is drawn
// and redrawn up to 100%, the summary line counts every line, the output
// decrypts, the input is unchanged and no work file is left.
func TestReencryptLarge(t *testing.T) {
	n := *reencryptLines
	if testing.Short() {
		n = 1000
	}
	f := newFixture(t, n)
	in := f.plainInput(t)
	before := fileBytes(t, in)
	out := filepath.Join(filepath.Dir(in), "out.txt")
	r := pk(t, "reencrypt", "-data", f.data, "-out", out, "-progress", "bar", "alpha", in)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	for _, want := range []string{"\r[", "  1% ", " 50% ", "100% " + strconv.Itoa(n) + " lines", "[" + strings.Repeat("=", barWidth) + "]"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("progress lacks %q: %q", want, r.err[max(0, len(r.err)-300):])
		}
	}
	if want := fmt.Sprintf(": %d lines, %d re-encrypted to version 2, 0 already current, 0 blank\n", n, n); !strings.HasSuffix(r.out, want) {
		t.Errorf("summary %q, want …%q", r.out, want)
	}
	if !bytes.Equal(fileBytes(t, in), before) {
		t.Fatal("the input changed")
	}
	f.checkOutput(t, out, max(1, n/1000))
	for _, suffix := range []string{partialSuffix, checkpointSuffix} {
		if _, err := os.Stat(out + suffix); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", suffix, err)
		}
	}

	// Again on its own output: every line is current and copied as is;
	// without a terminal there is no bar, only the summary (JSON here).
	out2 := out + ".2"
	r = pk(t, "reencrypt", "-data", f.data, "-out", out2, "-o", "json", "alpha", out)
	if r.code != 0 || strings.Contains(r.err, "\r") {
		t.Fatalf("second pass: %+v", r)
	}
	var sum reencryptJSON
	if err := json.Unmarshal([]byte(r.out), &sum); err != nil || sum.Lines != int64(n) || sum.Current != int64(n) || sum.Reencrypted != 0 {
		t.Fatalf("second pass summary %s: %v", r.out, err)
	}
	if !bytes.Equal(fileBytes(t, out2), fileBytes(t, out)) {
		t.Fatal("current ciphertexts were changed")
	}
	// An existing output is not replaced without -force.
	if r := pk(t, "reencrypt", "-data", f.data, "-out", out2, "alpha", out); r.code != 1 || !strings.Contains(r.err, "-force") {
		t.Fatalf("existing output: %+v", r)
	}
}

// interruptAt makes the next reencrypt cancel its context at the first
// checkpoint covering at least line lines.
func interruptAt(t *testing.T, line int64) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	reencryptCheckpointed = func(done int64) {
		if done >= line {
			cancel()
		}
	}
	t.Cleanup(func() { reencryptCheckpointed = nil; cancel() })
	return ctx
}

// TestReencryptResume interrupts reencrypt part way (as Ctrl-C does),
// adds lines to the partial output past the checkpoint (as a kill between
// a write and the next checkpoint leaves them), and resumes: the result is
// the whole file, and neither the input nor the output was ever a partial
// result. In place, the input stays byte for byte what it was until the
// complete output replaces it.
func TestReencryptResume(t *testing.T) {
	const n = 1000
	f := newFixture(t, n)
	for _, inPlace := range []bool{false, true} {
		t.Run(fmt.Sprintf("in-place=%v", inPlace), func(t *testing.T) {
			in := f.plainInput(t)
			before := fileBytes(t, in)
			out := filepath.Join(filepath.Dir(in), "out.txt")
			args := []string{"reencrypt", "-data", f.data, "-checkpoint-every", "100", "-progress", "none", "alpha", in}
			if inPlace {
				args = append(args, "-in-place")
				out = in
			} else {
				args = append(args, "-out", out)
			}
			r := pkCtx(interruptAt(t, 300), t, args...)
			if r.code != exitInterrupted || !strings.Contains(r.err, "after line 300") || !strings.Contains(r.err, "resume") {
				t.Fatalf("interrupted run: %+v", r)
			}
			reencryptCheckpointed = nil
			if !bytes.Equal(fileBytes(t, in), before) {
				t.Fatal("the input changed while interrupted")
			}
			if !inPlace {
				if _, err := os.Stat(out); !os.IsNotExist(err) {
					t.Fatalf("output exists while interrupted: %v", err)
				}
			}
			var ck checkpoint
			if err := json.Unmarshal(fileBytes(t, out+checkpointSuffix), &ck); err != nil || ck.Line != 300 {
				t.Fatalf("checkpoint %+v %v", ck, err)
			}
			// Lines written after the checkpoint, then a kill.
			pf, err := os.OpenFile(out+partialSuffix, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			pf.WriteString("ncpkms:v2:half-written-line")
			pf.Close()

			r = pk(t, args...)
			if r.code != 0 || !strings.Contains(r.err, "resuming") || !strings.Contains(r.out, "(resumed at line 301)") ||
				!strings.Contains(r.out, "1000 lines, 1000 re-encrypted") {
				t.Fatalf("resumed run: %+v", r)
			}
			f.checkOutput(t, out, 1)
			if !inPlace && !bytes.Equal(fileBytes(t, in), before) {
				t.Fatal("the input changed")
			}
			for _, suffix := range []string{partialSuffix, checkpointSuffix} {
				if _, err := os.Stat(out + suffix); !os.IsNotExist(err) {
					t.Errorf("%s left behind: %v", suffix, err)
				}
			}
		})
	}
}

// TestReencryptCheckpointOfAnotherJob: a checkpoint left by another job
// (here: the key rotated, then the input changed since) is refused until
// -restart.
func TestReencryptCheckpointOfAnotherJob(t *testing.T) {
	f := newFixture(t, 300)
	in := f.plainInput(t)
	out := in + ".out"
	args := []string{"reencrypt", "-data", f.data, "-checkpoint-every", "50", "-out", out, "alpha", in}
	if r := pkCtx(interruptAt(t, 100), t, args...); r.code != exitInterrupted {
		t.Fatalf("interrupted run: %+v", r)
	}
	reencryptCheckpointed = nil
	must(t, "keys", "rotate", "-data", f.data, "alpha")
	if r := pk(t, args...); r.code != 1 || !strings.Contains(r.err, "-restart") {
		t.Fatalf("key rotated: %+v", r)
	}
	must(t, "keys", "rotate", "-data", f.data, "alpha")
	os.WriteFile(in, append(fileBytes(t, in), '\n'), 0o600)
	if r := pk(t, args...); r.code != 1 || !strings.Contains(r.err, "-restart") {
		t.Fatalf("changed input: %+v", r)
	}
	if r := pk(t, append(args, "-restart")...); r.code != 0 || !strings.Contains(r.out, "301 lines, 300 re-encrypted to version 4") || !strings.Contains(r.out, "1 blank") {
		t.Fatalf("restart: %+v", r)
	}
}

// TestReencryptJSONField: -field picks the ciphertext out of JSON Lines and
// changes nothing else on the line; blank lines are kept.
func TestReencryptJSONField(t *testing.T) {
	f := newFixture(t, 3)
	in := filepath.Join(t.TempDir(), "rows.jsonl")
	var b strings.Builder
	fmt.Fprintf(&b, `{"id":0, "data": {"note":"a \"quoted\" ct","ct" : %q,"n":[1,2]}, "ct":"top"}`+"\n", f.cts[0])
	b.WriteString("\n")
	fmt.Fprintf(&b, `{"data":{"ct":%q}}`+"\r\n", f.cts[1])
	fmt.Fprintf(&b, `{"data":{"x":{"ct":"nested-elsewhere"},"ct":%q}}`, f.cts[2])
	os.WriteFile(in, []byte(b.String()), 0o600)
	out := in + ".out"
	r := pk(t, "reencrypt", "-data", f.data, "-field", "data.ct", "-out", out, "alpha", in)
	if r.code != 0 || !strings.Contains(r.out, "4 lines, 3 re-encrypted to version 2, 0 already current, 1 blank") {
		t.Fatalf("%+v", r)
	}
	got := strings.Split(string(fileBytes(t, out)), "\n")
	e := openForTest(t, f.data)
	for i, li := range []int{0, 2, 3} {
		var row struct {
			Data struct{ CT string } `json:"data"`
		}
		if err := json.Unmarshal([]byte(got[li]), &row); err != nil {
			t.Fatalf("line %d: %v: %s", li+1, err, got[li])
		}
		if pt, err := e.Decrypt(context.Background(), f.tag, row.Data.CT, nil); err != nil || string(pt) != "msg-"+strconv.Itoa(i) || !strings.HasPrefix(row.Data.CT, "ncpkms:v2:") {
			t.Fatalf("line %d: %q %v", li+1, pt, err)
		}
		// Everything but the ciphertext is as it was.
		orig := strings.Split(b.String(), "\n")[li]
		if strings.Replace(orig, f.cts[i], row.Data.CT, 1) != got[li] {
			t.Fatalf("line %d changed beyond its ciphertext:\n%s\n%s", li+1, orig, got[li])
		}
	}
	e.Close()
	if got[1] != "" || !strings.HasSuffix(got[2], "\r") {
		t.Fatal("blank line or CRLF not kept")
	}

	// A line without the member, or where it is not a string, stops the
	// run at that line; nothing is written to the output.
	for _, bad := range []string{`{"data":{"other":1}}`, `{"data":{"ct":5}}`, `{"data":"ct"}`, `not json`} {
		in2 := filepath.Join(t.TempDir(), "bad.jsonl")
		os.WriteFile(in2, []byte(fmt.Sprintf(`{"data":{"ct":%q}}`+"\n%s\n", f.cts[0], bad)), 0o600)
		r := pk(t, "reencrypt", "-data", f.data, "-field", "data.ct", "-out", in2+".out", "alpha", in2)
		if r.code != 1 || !strings.Contains(r.err, "line 2:") {
			t.Errorf("%s: %+v", bad, r)
		}
		if _, err := os.Stat(in2 + ".out"); !os.IsNotExist(err) {
			t.Errorf("%s: output written: %v", bad, err)
		}
	}
}

// TestReencryptFailedLineResumes: a ciphertext that does not decrypt (its
// version is disabled) stops the run there; once the version is enabled
// again the same command resumes and finishes.
func TestReencryptFailedLineResumes(t *testing.T) {
	f := newFixture(t, 5)
	ctx := context.Background()
	e := openForTest(t, f.data)
	mixed := append([]string{}, f.cts[:2]...)
	ct3, _ := e.Encrypt(ctx, f.tag, []byte("msg-2"), nil) // version 2
	mixed = append(mixed, ct3)
	if _, err := e.RotateKey(ctx, f.tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DisableKeyVersion(ctx, f.tag, 2); err != nil {
		t.Fatal(err)
	}
	e.Close()
	in := filepath.Join(t.TempDir(), "in.txt")
	os.WriteFile(in, []byte(strings.Join(mixed, "\n")+"\n"), 0o600)
	out := in + ".out"
	args := []string{"reencrypt", "-data", f.data, "-out", out, "alpha", in}
	r := pk(t, args...)
	if r.code != 1 || !strings.Contains(r.err, "line 3:") || strings.Contains(r.err, ct3) {
		t.Fatalf("disabled version: %+v", r)
	}
	must(t, "versions", "enable", "-data", f.data, "alpha", "2")
	r = pk(t, args...)
	if r.code != 0 || !strings.Contains(r.out, "3 lines, 3 re-encrypted to version 3") || !strings.Contains(r.out, "resumed at line 3") {
		t.Fatalf("resumed: %+v", r)
	}
}
