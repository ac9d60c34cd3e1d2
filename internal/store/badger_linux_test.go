package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pocketkms/kms/internal/testproc"
)

// TestCommitFailureLeavesStoreBroken makes Badger fail a commit part-way:
// a child process may not write files over 1 MiB (RLIMIT_FSIZE), so once
// Badger's memtable is full it cannot create the next write-ahead-log
// file. That commit must be ErrUncertain (with ErrBroken, saying why); the
// store must then refuse writes without reaching Badger, whose next write
// would end the process (D1), refuse reads too with ErrBroken instead of
// reaching Badger, whose memtable is gone (D4: Load panicked), and say on
// Close that it left Badger open. After the restart the directory must
// open (D2: the failure leaves an empty memtable file, which Badger
// refuses) with every acknowledged record, at most the uncertain one
// besides, and take writes.
func TestCommitFailureLeavesStoreBroken(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		commitFailureChild(t, args[0])
		return
	}
	dir := t.TempDir()
	out, r := testproc.Run(t, testproc.Options{Timeout: 2 * time.Minute}, dir)
	if r.Err != nil {
		t.Fatalf("child: %v; it printed last:\n%s\n%s", r, testproc.Tail(strings.Join(out, "\n"), 8), testproc.Tail(r.Stderr, 30))
	}
	acked := map[string]bool{}
	uncertain, readFailed := "", ""
	for _, line := range out {
		if why, ok := strings.CutPrefix(line, "READ-FAILED "); ok {
			readFailed = why
		}
		if i, ok := strings.CutPrefix(line, "ACK "); ok {
			n, _ := strconv.Atoi(i)
			acked[sampleTag(n)] = true
		}
		if i, ok := strings.CutPrefix(line, "UNCERTAIN "); ok {
			n, _ := strconv.Atoi(i)
			uncertain = sampleTag(n)
		}
	}
	if uncertain == "" {
		t.Fatalf("the child reported no failed commit after %d acknowledged", len(acked))
	}
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	empty := 0
	for _, m := range mems {
		if fi, err := os.Stat(m); err == nil && fi.Size() == 0 {
			empty++
		}
	}
	if empty == 0 {
		t.Errorf("no empty memtable file after the failed commit (%v): Badger changed, and the check that Open survives one tests nothing", mems)
	}

	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("reopen after the failed commit: %v", err)
	}
	defer s.Close()
	c, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, k := range c.Keys {
		stored[k.Key.Tag] = true
		if !acked[k.Key.Tag] && k.Key.Tag != uncertain {
			t.Errorf("record %.8s… was never written", k.Key.Tag)
		}
	}
	for tag := range acked {
		if !stored[tag] {
			t.Errorf("acknowledged record %.8s… lost", tag)
		}
	}
	t.Logf("%d commits acknowledged before the failure; the uncertain one was stored: %v", len(acked), stored[uncertain])
	if err := writeSample(s, 100000, 10); err != nil {
		t.Errorf("write after the restart: %v", err)
	}
	if readFailed != "" {
		t.Errorf("Load of the broken store: %s; want ErrBroken and no panic (D4)", readFailed)
	}
}

// commitFailureChild is TestCommitFailureLeavesStoreBroken's child: it
// prints "ACK i" for each acknowledged sample record, "UNCERTAIN i" for
// the one whose commit failed, and "READ-FAILED why" if the broken store
// could not be read.
func commitFailureChild(t *testing.T, dir string) {
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	signal.Ignore(syscall.SIGXFSZ) // fail the write with EFBIG instead
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	// Records of 14 KB fill the 4 MiB memtable in about 300 commits.
	acked := 0
	for i := 0; ; i++ {
		if i == 3000 {
			t.Fatalf("no commit failed in %d: the limit was not reached", i)
		}
		err := writeSample(s, i, 14<<10)
		if err == nil {
			fmt.Println("ACK", i)
			acked++
			continue
		}
		fmt.Println("UNCERTAIN", i)
		if !errors.Is(err, ErrUncertain) || !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "file too large") {
			t.Errorf("the commit Badger failed: %v; want ErrBroken and ErrUncertain, saying why", err)
		}
		break
	}
	if err := writeSample(s, 0, 10); !errors.Is(err, ErrBroken) || errors.Is(err, ErrUncertain) {
		t.Errorf("write after the failed commit: %v; want ErrBroken, not ErrUncertain (nothing reached Badger)", err)
	}
	// Reads must be refused cleanly (D4: Badger's memtable is gone, and
	// Load used to panic in it). Report anything else to the parent
	// instead of dying of it.
	err = func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("Load panicked: %v", r)
			}
		}()
		_, err = s.Load(context.Background())
		if !errors.Is(err, ErrBroken) {
			return fmt.Errorf("Load = %v", err)
		}
		return nil
	}()
	if err != nil {
		fmt.Println("READ-FAILED", err)
	}
	if err := s.Close(); !errors.Is(err, ErrBroken) {
		t.Errorf("Close of the broken store: %v; want ErrBroken", err)
	}
}
