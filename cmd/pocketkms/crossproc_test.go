//go:build unix

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pocketkms/kms/internal/testproc"
)

// TestDirectoryLockedByAnotherProcess: while `pocketkms serve` runs in
// another process, admin commands and verify exit 3, say the directory is
// in use, and change nothing.
func TestDirectoryLockedByAnotherProcess(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		out := &syncBuffer{}
		go func() {
			_ = run(context.Background(), []string{"serve", "-addr", "127.0.0.1:0", "-data", args[0]}, out)
		}()
		for !strings.Contains(out.String(), "listening on") {
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Println("SERVING")
		select {}
	}
	data := newDataDir(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	p := testproc.Start(t, testproc.Options{Timeout: 2 * time.Minute}, data)
	if line := <-p.Lines(); line != "SERVING" {
		t.Fatalf("child: %q\n%s", line, p.Wait().Stderr)
	}
	for _, args := range [][]string{{"keys", "list"}, {"keys", "rotate", "alpha"}, {"verify"}} {
		r := pk(t, append(args, "-data", data)...)
		if r.code != exitInUse || !strings.Contains(r.err, "in use by another process") {
			t.Errorf("%q while another process serves: %+v", args, r)
		}
	}
	p.Kill()
	p.Wait()
	// The refused rotation did not happen.
	if out := must(t, "keys", "rotate", "-data", data, "alpha"); !strings.Contains(out, "version:        2") {
		t.Fatalf("rotation after the server stopped:\n%s", out)
	}
	must(t, "verify", "-data", data)
}

// TestReencryptKilled: reencrypt killed with SIGKILL part way (a child
// process) leaves the input as it was and no output file; the same command
// then resumes from the last checkpoint and produces the whole output.
func TestReencryptKilled(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		reencryptCheckpointed = func(lines int64) {
			if lines > 1000 {
				select {} // the parent kills us from here at the latest
			}
			fmt.Println("CHECKPOINT", lines) // and goes on writing lines
		}
		r := pk(t, args...)
		fmt.Println("FINISHED", r.code)
		return
	}
	const n = 20000
	f := newFixture(t, n)
	in := f.plainInput(t)
	before := fileBytes(t, in)
	out := filepath.Join(filepath.Dir(in), "out.txt")
	args := []string{"reencrypt", "-data", f.data, "-checkpoint-every", "1000", "-progress", "none", "-out", out, "alpha", in}
	p := testproc.Start(t, testproc.Options{Timeout: 2 * time.Minute}, args...)
	for line := range p.Lines() {
		if strings.HasPrefix(line, "CHECKPOINT") {
			p.Kill()
			break
		}
		t.Fatalf("child: %q", line)
	}
	p.Wait()
	if _, err := os.Stat(out + checkpointSuffix); err != nil {
		t.Fatalf("no checkpoint after the kill: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("output exists after the kill: %v", err)
	}
	if !bytes.Equal(fileBytes(t, in), before) {
		t.Fatal("the input changed")
	}
	r := pk(t, args...)
	if r.code != 0 || !strings.Contains(r.err, "resuming") || !strings.Contains(r.out, fmt.Sprintf("%d lines, %d re-encrypted", n, n)) {
		t.Fatalf("resume after the kill: %+v", r)
	}
	f.checkOutput(t, out, 97)
}
