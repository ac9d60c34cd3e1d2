package store

// Tests of the integrity record file's two slots: damaged and torn slots,
// crashes at each write of the commit protocol, and the old format.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// twoCommits makes a store with two commits, closes it and returns the
// digests before and after the second.
func twoCommits(t *testing.T) (string, digest, digest) {
	t.Helper()
	dir := t.TempDir()
	s := openWithKey(t, dir, "a")
	before := s.digest
	k2 := sampleKey("b")
	if err := s.Update(func(tx *Txn) error { return tx.PutKey(&k2) }); err != nil {
		t.Fatal(err)
	}
	after := s.digest
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, before, after
}

// openWithKey opens a store in dir (the caller closes it) and commits
// the sample key of tag.
func openWithKey(t *testing.T, dir, tag string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	k := sampleKey(tag)
	if err := s.Update(func(tx *Txn) error { return tx.PutKey(&k) }); err != nil {
		t.Fatal(err)
	}
	return s
}

// slotRec is a slot's record; nil in writeSlotFile is a slot never
// written (zeros).
type slotRec struct {
	seq uint64
	in  integrity
}

func writeSlotFile(t *testing.T, dir string, recs [2]*slotRec) {
	t.Helper()
	b := make([]byte, slotFileLen)
	for i, r := range recs {
		if r != nil {
			copy(b[i*slotSize:], marshalSlot(r.seq, r.in))
		}
	}
	if err := os.WriteFile(filepath.Join(dir, integrityFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// wantSettled fails the test unless the record file is a slot file with
// both slots valid, the newest recording d as committed.
func wantSettled(t *testing.T, dir string, d digest) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, integrityFile))
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseSlots(raw)
	if err != nil {
		t.Fatalf("record file: %v", err)
	}
	if !st.valid[0] || !st.valid[1] {
		t.Fatalf("a slot is still bad after a read-write open: %v", st.valid)
	}
	if st.in != (integrity{committed: d}) {
		t.Fatalf("newest record %+v, want committed = the content", st.in)
	}
}

// TestIntegritySlotsAfterCommit: after a commit the newest slot records it
// as committed and the other still holds its pending record, which would
// accept the content before it; losing the commit is still ErrCorrupt,
// because the newest valid slot decides.
func TestIntegritySlotsAfterCommit(t *testing.T) {
	dir, before, after := twoCommits(t)
	raw, err := os.ReadFile(filepath.Join(dir, integrityFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != slotFileLen {
		t.Fatalf("record file of %d bytes, want %d", len(raw), slotFileLen)
	}
	st, err := parseSlots(raw)
	if err != nil {
		t.Fatal(err)
	}
	_, older, _ := parseSlot(raw[(1-st.newest)*slotSize:])
	if st.in != (integrity{committed: after}) || older != (integrity{committed: before, pending: after, hasPending: true}) {
		t.Fatalf("slots after a commit: newest %+v, other %+v", st.in, older)
	}
	deleteBehind(t, dir, keyKey("b"))
	if got, _ := Open(Options{Dir: dir, ReadOnly: true}); got != nil {
		got.Close()
		t.Fatal("read-only open after a lost last commit succeeded")
	}
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open after the last commit was lost: %v, want ErrCorrupt", err)
	}
}

// TestIntegrityOneSlotDamaged: one damaged slot (at any field) does not
// fail Open while the other's record matches the content; a read-only
// open leaves the file alone, a read-write one repairs the slot. When the
// valid slot does not match the content, Open fails with ErrCorrupt.
func TestIntegrityOneSlotDamaged(t *testing.T) {
	for slot := range 2 {
		for _, off := range []int{0, 7, 20, 45, 60, slotRecLen - 1} {
			t.Run(fmt.Sprintf("slot%d/byte%d", slot, off), func(t *testing.T) {
				dir, _, after := twoCommits(t)
				path := filepath.Join(dir, integrityFile)
				raw, _ := os.ReadFile(path)
				raw[slot*slotSize+off] ^= 0x40
				os.WriteFile(path, raw, 0o600)
				ro, err := Open(Options{Dir: dir, ReadOnly: true})
				if err != nil {
					t.Fatalf("read-only open with slot %d damaged: %v", slot, err)
				}
				ro.Close()
				if now, _ := os.ReadFile(path); !bytes.Equal(now, raw) {
					t.Fatal("a read-only open wrote the record file")
				}
				s, err := Open(Options{Dir: dir})
				if err != nil {
					t.Fatalf("open with slot %d damaged: %v", slot, err)
				}
				s.Close()
				wantSettled(t, dir, after)
			})
		}
	}
	t.Run("valid slot does not match", func(t *testing.T) {
		dir, before, _ := twoCommits(t)
		writeSlotFile(t, dir, [2]*slotRec{nil, {seq: 9, in: integrity{committed: before}}})
		if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("one slot bad, the other not matching: %v, want ErrCorrupt", err)
		}
	})
}

// TestIntegrityTornSlotWrite: a crash during a write of the record leaves
// the slot being written torn: its first n bytes new, the rest as they
// were, or garbage. At each write of the commit protocol (the pending
// record before Badger commits, the committed one after, and Open's
// settling of a pending record) and for n at every field boundary, the
// directory opens to the content of the side of the commit the crash fell
// on, and Open repairs the slot.
func TestIntegrityTornSlotWrite(t *testing.T) {
	defer func() { recordIntegrity = (*Store).writeRecord }()
	// Field boundaries of a slot: magic, sequence, committed, flag,
	// pending, CRC.
	ns := []int{0, 1, 5, 6, 13, 14, 45, 46, 47, 78, 79, slotRecLen - 1, slotRecLen, -1}
	// tear makes the hook tear the write whose record has the pending
	// flag pending, and fail it.
	tear := func(pending bool, n int) {
		recordIntegrity = func(s *Store, in integrity) error {
			if in.hasPending != pending {
				return s.writeRecord(in)
			}
			r := s.rec
			r.seq++
			off := int64(1-r.newest) * slotSize
			b := make([]byte, slotRecLen)
			r.f.ReadAt(b, off)
			if n < 0 {
				for i := range b {
					b[i] = byte(i*37 + 11)
				}
			} else {
				copy(b, marshalSlot(r.seq, in)[:n])
			}
			r.f.WriteAt(b, off)
			return errors.New("power lost (simulated)")
		}
	}
	name := func(n int) string {
		if n < 0 {
			return "garbage"
		}
		return fmt.Sprint(n)
	}
	for _, step := range []string{"pending", "committed", "settle"} {
		for _, n := range ns {
			t.Run(step+"/"+name(n), func(t *testing.T) {
				recordIntegrity = (*Store).writeRecord
				dir := t.TempDir()
				s := openWithKey(t, dir, "a")
				if step == "settle" {
					// Leave a record pending: the committed write fails
					// without touching its slot.
					tear(false, 0)
				} else {
					tear(step == "pending", n)
				}
				k2 := sampleKey("b")
				err := s.Update(func(tx *Txn) error { return tx.PutKey(&k2) })
				if (step == "pending") != (err != nil) {
					t.Fatalf("Update: %v", err)
				}
				// The process dies: Badger closes with what it committed.
				s.broken.Store(false)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if step == "settle" {
					tear(false, n)
					if s, err := Open(Options{Dir: dir}); err == nil {
						s.Close()
						t.Fatal("Open whose settling write failed succeeded")
					}
				}
				recordIntegrity = (*Store).writeRecord
				s2, err := Open(Options{Dir: dir})
				if err != nil {
					t.Fatalf("open after a torn write: %v", err)
				}
				_, _, err = s2.Get(keyKey("b"))
				if step == "pending" && !errors.Is(err, ErrNotFound) || step != "pending" && err != nil {
					t.Fatalf("the second key after the crash: %v", err)
				}
				k3 := sampleKey("c")
				if err := s2.Update(func(tx *Txn) error { return tx.PutKey(&k3) }); err != nil {
					t.Fatal(err)
				}
				d := s2.digest
				s2.Close()
				wantSettled(t, dir, d)
			})
		}
	}
}

// TestIntegrityOldFormat: a directory whose record file has the format of
// earlier builds (one record) opens; read-only it is left as it is, read-
// write it is converted to slots. Its damage and a lost commit are still
// ErrCorrupt.
func TestIntegrityOldFormat(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   func(before, after digest) integrity
		ok   bool
	}{
		{"committed", func(b, a digest) integrity { return integrity{committed: a} }, true},
		{"committed, pending written", func(b, a digest) integrity { return integrity{committed: b, pending: a, hasPending: true} }, true},
		{"pending never committed", func(b, a digest) integrity { return integrity{committed: a, pending: b, hasPending: true} }, true},
		{"lost commit", func(b, a digest) integrity { return integrity{committed: b} }, false},
		{"damaged", func(b, a digest) integrity { return integrity{committed: a} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, before, after := twoCommits(t)
			path := filepath.Join(dir, integrityFile)
			old := tc.in(before, after).marshal()
			if tc.name == "damaged" {
				old[20] ^= 1
			}
			if err := os.WriteFile(path, old, 0o600); err != nil {
				t.Fatal(err)
			}
			ro, err := Open(Options{Dir: dir, ReadOnly: true})
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read-only open: %v", err)
			}
			if ro != nil {
				ro.Close()
			}
			if now, _ := os.ReadFile(path); !bytes.Equal(now, old) {
				t.Fatal("a read-only open wrote the record file")
			}
			s, err := Open(Options{Dir: dir})
			if !tc.ok {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("open: %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			wantSettled(t, dir, after)
			if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("conversion left its temporary file: %v", err)
			}
		})
	}
}
