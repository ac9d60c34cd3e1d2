package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func openT(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sampleKey(tag string) KeyRecord {
	return KeyRecord{Tag: tag, Name: "orders", Type: "AES256", State: "ENABLED", Seq: 1, CreatedAt: 1700000000000, CurrentVersion: 1}
}

func TestPersistAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	tag := "ab" + string(bytes.Repeat([]byte("0"), 62))
	k := sampleKey(tag)
	v := VersionRecord{Tag: tag, Version: 1, State: "ENABLED", CreatedAt: 1, Handle: []byte{1, 2, 3}}
	if err := s.Update(func(tx *Txn) error {
		if err := tx.ClaimName("Orders", tag); err != nil {
			return err
		}
		if err := tx.PutKey(&k); err != nil {
			return err
		}
		return tx.PutVersion(&v)
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s2 := openT(t, dir)
	c, err := s2.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Keys) != 1 || c.Keys[0].Key != k {
		t.Fatalf("keys = %+v", c.Keys)
	}
	if got := c.Keys[0].Versions; len(got) != 1 || !bytes.Equal(got[0].Handle, v.Handle) {
		t.Fatalf("versions = %+v", got)
	}
	if c.Names["orders"] != tag {
		t.Fatalf("names = %v", c.Names)
	}
}

func TestClaimName(t *testing.T) {
	s := openT(t, t.TempDir())
	if err := s.Update(func(tx *Txn) error { return tx.ClaimName("Keys", "a") }); err != nil {
		t.Fatal(err)
	}
	err := s.Update(func(tx *Txn) error { return tx.ClaimName("KEYS", "b") })
	if !errors.Is(err, ErrNameTaken) {
		t.Fatalf("case-variant claim by another tag: %v", err)
	}
	if err := s.Update(func(tx *Txn) error { return tx.ClaimName("keys", "a") }); err != nil {
		t.Fatalf("re-claim by owner: %v", err)
	}
	if err := s.Update(func(tx *Txn) error { return tx.ReleaseName("kEyS") }); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Txn) error { return tx.ClaimName("keys", "b") }); err != nil {
		t.Fatalf("claim after release: %v", err)
	}
}

func TestFailedUpdateWritesNothing(t *testing.T) {
	s := openT(t, t.TempDir())
	k := sampleKey("t1")
	boom := errors.New("boom")
	err := s.Update(func(tx *Txn) error {
		if err := tx.PutKey(&k); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	c, err := s.Load(context.Background())
	if err != nil || len(c.Keys) != 0 {
		t.Fatalf("Load after failed update: %v, %d keys", err, len(c.Keys))
	}
}

func TestCodecDetectsCorruption(t *testing.T) {
	key := []byte("k/abc")
	rec := sampleKey("abc")
	data, err := encode(key, &rec)
	if err != nil {
		t.Fatal(err)
	}
	var back KeyRecord
	if err := decode(key, data, &back); err != nil || back != rec {
		t.Fatalf("decode: %v %+v", err, back)
	}
	for i := range data {
		for _, bit := range []byte{0x01, 0x80} {
			mut := bytes.Clone(data)
			mut[i] ^= bit
			if err := decode(key, mut, &back); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip of bit %#x at byte %d not detected: %v", bit, i, err)
			}
		}
	}
	if err := decode([]byte("k/abd"), data, &back); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("record under another key not detected: %v", err)
	}
	if err := decode(key, data[:len(data)-1], &back); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncation not detected: %v", err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if err := s.Update(func(tx *Txn) error { return tx.put(keySchema, SchemaVersion+1) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open of newer schema: %v", err)
	}
}

func TestInMemory(t *testing.T) {
	s, err := Open(Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := sampleKey("m1")
	if err := s.Update(func(tx *Txn) error { return tx.PutKey(&k) }); err != nil {
		t.Fatal(err)
	}
	c, err := s.Load(context.Background())
	if err != nil || len(c.Keys) != 1 {
		t.Fatalf("Load: %v %v", err, c)
	}
}

func TestOpenNeedsDirectory(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Fatal("Open without a directory succeeded")
	}
}

func TestUpdateAfterClose(t *testing.T) {
	s, err := Open(Options{Dir: filepath.Join(t.TempDir(), "db")})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Update(func(*Txn) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Update after Close: %v", err)
	}
}

// FuzzDecode: arbitrary bytes never panic, and whatever decodes re-encodes
// to exactly the same bytes (the codec has one canonical form).
func FuzzDecode(f *testing.F) {
	key := []byte("k/abc")
	rec := sampleKey("abc")
	good, _ := encode(key, &rec)
	f.Add(good)
	f.Add([]byte{'P', 1, '{', '}', 0, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r KeyRecord
		if err := decode(key, data, &r); err != nil {
			return
		}
		if r.StoreKey() != string(key) {
			return // Load refuses it (kstore.Decode): stored under the wrong key
		}
		again, err := encode(key, &r)
		if err != nil {
			t.Fatal(err)
		}
		var r2 KeyRecord
		if err := decode(key, again, &r2); err != nil || !reflect.DeepEqual(r2, r) {
			t.Fatalf("re-encoded record does not decode to itself: %v", err)
		}
	})
}

// TestIntegrityDetectsLostCommit: content that no longer matches the
// integrity record — as when Badger drops acknowledged transactions after
// damage to its log or manifest — fails Open with ErrCorrupt.
func TestIntegrityDetectsLostCommit(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	k := sampleKey("lost")
	if err := s.Update(func(tx *Txn) error { return tx.PutKey(&k) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Remove the record behind the store's back (what a rollback does).
	deleteBehind(t, dir, keyKey("lost"))
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open after a lost commit: %v, want ErrCorrupt", err)
	}
}

// TestIntegrityCrashBetweenWrites: a commit whose second integrity write
// never happened (the process died) opens, whichever side of the commit
// the crash fell on, and keeps working; a record file whose slots are
// both damaged (or that is not a record file at all) is ErrCorrupt.
func TestIntegrityCrashBetweenWrites(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   func(before, after digest) integrity
	}{
		{"committed, pending written", func(b, a digest) integrity { return integrity{committed: b, pending: a, hasPending: true} }},
		{"pending never committed", func(b, a digest) integrity { return integrity{committed: a, pending: b, hasPending: true} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, before, after := twoCommits(t)
			// The newest slot holds the record the crash left; the other
			// the one before it.
			writeSlotFile(t, dir, [2]*slotRec{{seq: 7, in: integrity{committed: before}}, {seq: 8, in: tc.in(before, after)}})
			s2, err := Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			k3 := sampleKey("c")
			if err := s2.Update(func(tx *Txn) error { return tx.PutKey(&k3) }); err != nil {
				t.Fatal(err)
			}
			s2.Close()
			if s3, err := Open(Options{Dir: dir}); err != nil {
				t.Fatalf("reopen after settling: %v", err)
			} else {
				s3.Close()
			}
			// A damaged integrity file is corruption too: junk, and a
			// record file with both slots damaged.
			raw, _ := os.ReadFile(filepath.Join(dir, integrityFile))
			os.WriteFile(filepath.Join(dir, integrityFile), []byte("junk"), 0o600)
			if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("damaged integrity file: %v", err)
			}
			raw[10] ^= 1
			raw[slotSize+10] ^= 1
			os.WriteFile(filepath.Join(dir, integrityFile), raw, 0o600)
			if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("both slots damaged: %v", err)
			}
		})
	}
}

// TestIntegrityTracksEveryChange: after puts, overwrites within one
// transaction, deletes and name changes, the running digest equals a
// recomputation from scratch.
func TestIntegrityTracksEveryChange(t *testing.T) {
	s := openT(t, t.TempDir())
	k := sampleKey("t1")
	steps := []func(tx *Txn) error{
		func(tx *Txn) error { return tx.PutKey(&k) },
		func(tx *Txn) error {
			k.Memo = "one"
			if err := tx.PutKey(&k); err != nil {
				return err
			}
			k.Memo = "two"
			return tx.PutKey(&k)
		},
		func(tx *Txn) error { return tx.ClaimName("n1", "t1") },
		func(tx *Txn) error { return tx.ReleaseName("n1") },
		func(tx *Txn) error { return tx.DeleteKey("t1", []uint32{1, 2}) },
		func(tx *Txn) error { return tx.PutACL(&ACLRecord{Tag: "t2", Entries: []string{"10.0.0.1"}}) },
	}
	for i, step := range steps {
		if err := s.Update(step); err != nil {
			t.Fatal(err)
		}
		got, err := contentDigest(s.db)
		if err != nil {
			t.Fatal(err)
		}
		if got != s.digest {
			t.Fatalf("step %d: running digest differs from the content's", i)
		}
	}
}

// TestCommittedDespiteIntegrityFailure: when the integrity record cannot
// be written after Badger committed, the change stands and Update reports
// success: callers must not undo a durable change. The store keeps
// working, and a reopen accepts the content.
func TestCommittedDespiteIntegrityFailure(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	fail := true
	recordIntegrity = func(s *Store, in integrity) error {
		if fail && !in.hasPending {
			fail = false
			// A failed write may leave anything in its slot.
			s.rec.seq++
			s.rec.f.WriteAt(bytes.Repeat([]byte{0xee}, slotRecLen), int64(1-s.rec.newest)*slotSize)
			return errors.New("EIO (simulated)")
		}
		return s.writeRecord(in)
	}
	defer func() { recordIntegrity = (*Store).writeRecord }()
	tag := "cd" + string(bytes.Repeat([]byte("0"), 62))
	k := sampleKey(tag)
	if err := s.Update(func(tx *Txn) error { return tx.PutKey(&k) }); err != nil {
		t.Fatalf("Update whose commit landed: %v, want nil", err)
	}
	if fail {
		t.Fatal("the failure was not injected")
	}
	k2 := k
	k2.Memo = "second"
	if err := s.Update(func(tx *Txn) error { return tx.PutKey(&k2) }); err != nil {
		t.Fatalf("the next Update: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := openT(t, dir).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Keys) != 1 || c.Keys[0].Key.Memo != "second" {
		t.Fatalf("after reopen: %+v", c.Keys)
	}
}

// TestPendingFailureIsCertain: when the integrity record is refused before
// the commit, nothing was written and the error says so (not
// ErrUncertain); the store refuses later changes and says so on Close.
// (A failure inside Badger's commit, which is ErrUncertain, is exercised
// by the root package's TestDiskFull.)
func TestPendingFailureIsCertain(t *testing.T) {
	s := openT(t, t.TempDir())
	recordIntegrity = func(*Store, integrity) error { return errors.New("EROFS (simulated)") }
	defer func() { recordIntegrity = (*Store).writeRecord }()
	k := sampleKey("ef" + string(bytes.Repeat([]byte("0"), 62)))
	err := s.Update(func(tx *Txn) error { return tx.PutKey(&k) })
	if !errors.Is(err, ErrBroken) || errors.Is(err, ErrUncertain) {
		t.Fatalf("integrity record refused before the commit: %v, want ErrBroken and not ErrUncertain", err)
	}
	if err := s.Close(); !errors.Is(err, ErrBroken) {
		t.Fatalf("Close of a broken store: %v, want ErrBroken", err)
	}
}

// TestOpenTwiceInProcess: a second Open of a directory this process holds
// says so, also when the holder is a broken store that cannot be closed.
func TestOpenTwiceInProcess(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrInUse) || errors.Is(err, ErrBroken) {
		t.Fatalf("second Open: %v, want ErrInUse", err)
	}
	if _, err := Open(Options{Dir: dir + "/."}); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open by another spelling: %v, want ErrInUse", err)
	}
	s.broken.Store(true)
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrInUse) || !errors.Is(err, ErrBroken) {
		t.Fatalf("Open while a broken store holds it: %v, want ErrInUse and ErrBroken", err)
	}
	s.broken.Store(false)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	openT(t, dir)
}

// deleteBehind deletes key from the closed store in dir through Badger
// itself, as a rollback or a lost commit would leave it.
func deleteBehind(t *testing.T, dir, key string) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Delete([]byte(key)) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}
