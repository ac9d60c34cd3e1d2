package store

// The store's guards against Badger v4's own failure modes, checked on the
// store itself (TESTING.md: C1, D1, D2). The root package's corruption and
// disk-full harnesses found them through the Engine and still check what
// the Engine makes of them; here each guard is exercised directly, in a
// child process (internal/testproc), because without the guard Badger
// ends the process:
//
//   - a damaged table is refused with ErrCorrupt; Badger panics in a
//     goroutine it starts while opening (C1, TestDamagedTableRefused);
//   - a commit Badger fails part-way is ErrUncertain and leaves the store
//     refusing writes; Badger's next write calls log.Fatal (D1), and the
//     empty memtable file the failure leaves makes its next open fail (D2)
//     (TestCommitFailureLeavesStoreBroken, Linux).
//
// Every write of these tests goes through writeSample: the one place to
// adapt when the store's write API changes.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/pocketkms/kms/internal/testproc"
)

// sampleTag is the key tag of sample record i.
func sampleTag(i int) string { return fmt.Sprintf("%064x", i) }

// writeSample commits sample key record i, with a memo of memo bytes to
// make it as large as needed.
func writeSample(s *Store, i, memo int) error {
	k := KeyRecord{
		Tag: sampleTag(i), Name: "sample-" + strconv.Itoa(i), Type: "AES256", State: "ENABLED",
		Seq: uint64(i), CreatedAt: 1700000000000, CurrentVersion: 1, Memo: strings.Repeat("m", memo),
	}
	return s.Update(func(tx *Txn) error { return tx.PutKey(&k) })
}

// TestDamagedTableRefused flips one bit at a time in every byte of a
// closed store's tables (every seventh byte with -short) and opens the
// store: Open must refuse it with ErrCorrupt, and the process must live.
// The opens run in a child process, which prints each flip before trying
// it, so a crash names the flip.
func TestDamagedTableRefused(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		damagedTableChild(t, args[0], args[1])
		return
	}
	intact := filepath.Join(t.TempDir(), "intact")
	s, err := Open(Options{Dir: intact})
	if err != nil {
		t.Fatal(err)
	}
	// A few records: a table of about a kilobyte, with every part a
	// larger one has (a data block, its offsets and checksum, the index,
	// its checksum, the footer).
	for i := range 4 {
		if err := writeSample(s, i, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Close flushes the memtable into a table.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	step := 1
	if testing.Short() {
		step = 7
	}
	out, r := testproc.Run(t, testproc.Options{}, intact, strconv.Itoa(step))
	if r.Err != nil {
		t.Fatalf("child: %v; it printed last:\n%s\n%s", r, testproc.Tail(strings.Join(out, "\n"), 8), testproc.Tail(r.Stderr, 30))
	}
	for _, line := range out {
		if strings.Contains(line, "every one refused") {
			t.Log(line)
		}
	}
}

// damagedTableChild is TestDamagedTableRefused's child: it damages the
// tables of a copy of intact, every step-th byte in turn.
func damagedTableChild(t *testing.T, intact, stepArg string) {
	step, err := strconv.Atoi(stepArg)
	if err != nil || step < 1 {
		t.Fatalf("step %q", stepArg)
	}
	work := filepath.Join(t.TempDir(), "db")
	restore := func() {
		t.Helper()
		if err := os.RemoveAll(work); err != nil {
			t.Fatal(err)
		}
		if err := os.CopyFS(work, os.DirFS(intact)); err != nil {
			t.Fatal(err)
		}
	}
	restore()
	s, err := Open(Options{Dir: work})
	if err != nil {
		t.Fatalf("intact copy: %v", err)
	}
	want, err := s.Load(context.Background())
	s.Close()
	if err != nil {
		t.Fatalf("intact copy: %v", err)
	}
	tables, err := filepath.Glob(filepath.Join(intact, "*.sst"))
	if err != nil || len(tables) == 0 {
		t.Fatalf("no table in the intact store (%v)", err)
	}
	flips := 0
	for _, table := range tables {
		data, err := os.ReadFile(table)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(table)
		for pos := 0; pos < len(data); pos += step {
			mask := byte(1) << (pos % 8)
			fmt.Printf("flip %s[%d]^%#02x\n", name, pos, mask)
			damaged := bytes.Clone(data)
			damaged[pos] ^= mask
			if err := os.WriteFile(filepath.Join(work, name), damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			flips++
			s, err := Open(Options{Dir: work})
			switch {
			case err == nil:
				got, err := s.Load(context.Background())
				s.Close()
				same := err == nil && reflect.DeepEqual(got, want)
				t.Errorf("%s[%d]^%#02x: Open accepted a damaged table (Load: %v, content unchanged: %v)", name, pos, mask, err, same)
			case !errors.Is(err, ErrCorrupt):
				t.Errorf("%s[%d]^%#02x: Open: %v, want ErrCorrupt", name, pos, mask, err)
			case strings.Contains(err.Error(), "table "+name):
				// Refused before Badger opened: only the table changed.
				continue
			}
			restore() // Badger opened the directory and may have changed it
		}
	}
	fmt.Printf("%d flips in %d tables, every one refused with ErrCorrupt\n", flips, len(tables))
}
