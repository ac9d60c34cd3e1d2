package store

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
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
	c, err := s2.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Keys) != 1 || c.Keys[0] != k {
		t.Fatalf("keys = %+v", c.Keys)
	}
	if got := c.Versions[tag]; len(got) != 1 || !bytes.Equal(got[0].Handle, v.Handle) {
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
	c, err := s.Load()
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
	c, err := s.Load()
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
