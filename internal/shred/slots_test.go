package shred

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// dirFiles returns the files of the shred directory under dir and their
// bytes.
func dirFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(filepath.Join(dir, DirName))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, DirName, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

func writeSlotsFile(t *testing.T, dir string, raw []byte) {
	t.Helper()
	if err := os.WriteFile(slotFile(dir), raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTornCreate: a slot write torn at any byte (a crash in Create, before
// any record names the key) never fails Open, never disturbs other keys,
// and is either nothing or a damaged key that Get reports and Prune
// zeroes once no record names it; a torn next key is nothing.
func TestTornCreate(t *testing.T) {
	dir := t.TempDir()
	ks := open(t, dir)
	live, torn := tagN(1), tagN(2)
	lk, err := ks.Create(live)
	if err != nil {
		t.Fatal(err)
	}
	liveKey := bytes.Clone(lk.b[:])
	ks.Close()
	base := readSlots(t, dir)
	off := slotAt(t, dir, live, false) + slotSize // a free slot
	for _, kind := range []byte{kindKey, kindNext} {
		full := make([]byte, slotSize)
		marshalSlot(full, kind, 99, torn, bytes.Repeat([]byte{7}, KeySize))
		for cut := 1; cut < slotSize; cut++ {
			raw := bytes.Clone(base)
			copy(raw[off:], full[:cut])
			writeSlotsFile(t, dir, raw)
			ks, err := Open(dir)
			if err != nil {
				t.Fatalf("kind %d cut %d: Open: %v", kind, cut, err)
			}
			if k, ok, err := ks.Get(live); !ok || err != nil || !bytes.Equal(k.b[:], liveKey) {
				t.Fatalf("kind %d cut %d: the live key: %v %v", kind, cut, ok, err)
			}
			_, ok, kerr := ks.Get(torn)
			_, nok, nerr := ks.GetNext(torn)
			if ok || nok || nerr != nil || (kerr != nil && !errors.Is(kerr, ErrCorrupt)) {
				t.Fatalf("kind %d cut %d: torn slot read as %v %v / %v %v", kind, cut, ok, kerr, nok, nerr)
			}
			if kind == kindNext && kerr != nil {
				t.Fatalf("cut %d: a torn next key reported as a damaged key", cut)
			}
			if _, err := ks.Prune(func(tag string) bool { return tag == live }); err != nil {
				t.Fatal(err)
			}
			ks.Close()
			if kind == kindKey && kerr != nil {
				if got := readSlots(t, dir); !allZero(got[off : off+slotSize]) {
					t.Fatalf("cut %d: Prune left the damaged slot", cut)
				}
				ks = open(t, dir)
				if _, err := ks.Create(torn); err != nil {
					t.Fatalf("cut %d: Create after Prune: %v", cut, err)
				}
				ks.Close()
			}
		}
	}
	// A damaged key Badger names is kept by Prune (Get keeps reporting it)
	// and refused by Create.
	raw := bytes.Clone(base)
	full := make([]byte, slotSize)
	marshalSlot(full, kindKey, 99, torn, bytes.Repeat([]byte{7}, KeySize))
	full[offKey] ^= 1
	copy(raw[off:], full)
	writeSlotsFile(t, dir, raw)
	ks = open(t, dir)
	if _, err := ks.Prune(func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ks.Get(torn); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged live key after Prune: %v", err)
	}
	if _, err := ks.Create(torn); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over a damaged key: %v", err)
	}
	if tags, _ := ks.Tags(); !slices.Equal(tags, []string{live, torn}) {
		t.Fatalf("Tags = %v", tags)
	}
	if err := ks.Delete(torn); err != nil {
		t.Fatal(err)
	}
	if got := readSlots(t, dir); !allZero(got[off : off+slotSize]) {
		t.Fatal("Delete left the damaged slot")
	}
}

// TestDuplicateSlots: two valid slots of one tag and kind resolve to the
// highest sequence number wherever they lie, then to the lower slot;
// Prune zeroes the loser, Delete both.
func TestDuplicateSlots(t *testing.T) {
	dir := t.TempDir()
	ks := open(t, dir)
	tag := tagN(5)
	if _, err := ks.Create(tag); err != nil {
		t.Fatal(err)
	}
	ks.Close()
	base := readSlots(t, dir)
	a, b := bytes.Repeat([]byte{0xa}, KeySize), bytes.Repeat([]byte{0xb}, KeySize)
	for _, tc := range []struct {
		seqLow, seqHigh uint64 // at slots 3 and 9
		want            []byte
	}{{5, 6, b}, {6, 5, a}, {7, 7, a}} {
		raw := bytes.Clone(base)
		clear(raw)
		marshalSlot(raw[3*slotSize:], kindKey, tc.seqLow, tag, a)
		marshalSlot(raw[9*slotSize:], kindKey, tc.seqHigh, tag, b)
		writeSlotsFile(t, dir, raw)
		ks := open(t, dir)
		k, ok, err := ks.Get(tag)
		if !ok || err != nil || !bytes.Equal(k.b[:], tc.want) {
			t.Fatalf("seq %d/%d: wrong key won (%v %v)", tc.seqLow, tc.seqHigh, ok, err)
		}
		if _, err := ks.Prune(func(string) bool { return true }); err != nil {
			t.Fatal(err)
		}
		loser := 9
		if bytes.Equal(tc.want, b) {
			loser = 3
		}
		got := readSlots(t, dir)
		if !allZero(got[loser*slotSize : (loser+1)*slotSize]) {
			t.Fatalf("seq %d/%d: Prune left the losing slot", tc.seqLow, tc.seqHigh)
		}
		if k2, ok, _ := open(t, dir).Get(tag); !ok || !bytes.Equal(k2.b[:], tc.want) {
			t.Fatal("the winner changed after Prune")
		}
		// Delete zeroes every copy.
		writeSlotsFile(t, dir, raw)
		ks = open(t, dir)
		if err := ks.Delete(tag); err != nil {
			t.Fatal(err)
		}
		if !allZero(readSlots(t, dir)) {
			t.Fatalf("seq %d/%d: Delete left a copy", tc.seqLow, tc.seqHigh)
		}
	}
}

// TestPromoteCrash: a crash after Promote wrote the new key's slot and
// before it zeroed the old ones leaves the promoted key as the key (the
// next key still there, the same bytes); Promote again completes it.
func TestPromoteCrash(t *testing.T) {
	dir := t.TempDir()
	ks := open(t, dir)
	tag := tagN(3)
	if _, err := ks.Create(tag); err != nil {
		t.Fatal(err)
	}
	n, err := ks.Next(tag)
	if err != nil {
		t.Fatal(err)
	}
	next := bytes.Clone(n.b[:])
	before := readSlots(t, dir)
	if err := ks.Promote(tag); err != nil {
		t.Fatal(err)
	}
	ks.Close()
	after := readSlots(t, dir)
	c := slotAt(t, dir, tag, false)
	crashed := bytes.Clone(before)
	copy(crashed[c:c+slotSize], after[c:c+slotSize])
	writeSlotsFile(t, dir, crashed)
	ks = open(t, dir)
	if k, ok, err := ks.Get(tag); !ok || err != nil || !bytes.Equal(k.b[:], next) {
		t.Fatalf("key after the crash: %v %v, want the promoted key", ok, err)
	}
	if k, ok, err := ks.GetNext(tag); !ok || err != nil || !bytes.Equal(k.b[:], next) {
		t.Fatalf("next key after the crash: %v %v", ok, err)
	}
	if err := ks.Promote(tag); err != nil {
		t.Fatal(err)
	}
	ks.Close()
	raw := readSlots(t, dir)
	valid := 0
	for i := 0; i < len(raw); i += slotSize {
		if st, _, _, _, _ := parseSlot(raw[i:]); st == slotValid {
			valid++
		}
	}
	if k, ok, _ := open(t, dir).Get(tag); valid != 1 || !ok || !bytes.Equal(k.b[:], next) {
		t.Fatalf("after the second Promote: %d valid slots, key %v", valid, ok)
	}
}

// writeLegacy writes the former layout's file of tag (next: its next key)
// holding key.
func writeLegacy(t *testing.T, dir, tag string, next bool, key []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, DirName), 0o700); err != nil {
		t.Fatal(err)
	}
	name := tag
	if next {
		name += NextSuffix
	}
	if err := os.WriteFile(filepath.Join(dir, DirName, name), marshal(tag, key), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMigrate: a directory of the former layout (one file per key) opens
// without a write, every key readable; Migrate moves the keys into slots
// and shreds the files; a crash after any step of it leaves every key
// readable with its bytes, and the next Migrate finishes. A damaged file
// stays (reported), and Prune removes it once no record names it.
func TestMigrate(t *testing.T) {
	keyOf := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, KeySize) }
	build := func(t *testing.T) string {
		dir := t.TempDir()
		for i := 1; i <= 70; i++ { // more than batchSync files
			writeLegacy(t, dir, tagN(i), false, keyOf(i))
		}
		writeLegacy(t, dir, tagN(2), true, keyOf(102))
		bad := marshal(tagN(90), keyOf(90))
		bad[6] ^= 1
		if err := os.WriteFile(filepath.Join(dir, DirName, tagN(90)), bad, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{tagN(95) + ".tmp", "README"} {
			if err := os.WriteFile(filepath.Join(dir, DirName, name), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	check := func(t *testing.T, dir, when string) {
		t.Helper()
		ks := open(t, dir)
		for i := 1; i <= 70; i++ {
			if k, ok, err := ks.Get(tagN(i)); !ok || err != nil || !bytes.Equal(k.b[:], keyOf(i)) {
				t.Fatalf("%s: key %d: %v %v", when, i, ok, err)
			}
		}
		if k, ok, err := ks.GetNext(tagN(2)); !ok || err != nil || !bytes.Equal(k.b[:], keyOf(102)) {
			t.Fatalf("%s: next key: %v %v", when, ok, err)
		}
		if _, _, err := ks.Get(tagN(90)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: damaged file: %v", when, err)
		}
	}

	t.Run("read-only open writes nothing", func(t *testing.T) {
		dir := build(t)
		before := dirFiles(t, dir)
		check(t, dir, "before")
		if after := dirFiles(t, dir); !maps.Equal(before, after) {
			t.Fatal("Open and Get changed the directory")
		}
	})
	for _, stop := range []string{"slots", "zeroed", "unlinked"} {
		t.Run("crash after "+stop, func(t *testing.T) {
			dir := build(t)
			migrateHook = func(step string) error {
				if step == stop {
					return errors.New("crash")
				}
				return nil
			}
			_, err := open(t, dir).Migrate()
			migrateHook = nil
			if err == nil {
				t.Fatal("the hook did not stop Migrate")
			}
			check(t, dir, "after the crash")
			n, err := open(t, dir).Migrate()
			if err != nil {
				t.Fatal(err)
			}
			if stop != "slots" && n != 0 {
				t.Fatalf("the second Migrate moved %d keys, want 0 (all have slots)", n)
			}
			check(t, dir, "after the second Migrate")
		})
	}
	t.Run("complete", func(t *testing.T) {
		dir := build(t)
		n, err := open(t, dir).Migrate()
		if err != nil || n != 71 {
			t.Fatalf("Migrate = %d %v, want 71", n, err)
		}
		check(t, dir, "after Migrate")
		names := slices.Sorted(maps.Keys(dirFiles(t, dir)))
		if want := []string{tagN(90), "README", SlotFile}; !slices.Equal(names, want) {
			t.Fatalf("left: %v, want %v", names, want)
		}
		if n, err := open(t, dir).Migrate(); n != 0 || err != nil {
			t.Fatalf("Migrate again = %d %v", n, err)
		}
		ks := open(t, dir)
		if removed, err := ks.Prune(func(tag string) bool { return tag != tagN(90) }); err != nil || !slices.Equal(removed, []string{tagN(90)}) {
			t.Fatalf("Prune = %v %v", removed, err)
		}
		if names := slices.Sorted(maps.Keys(dirFiles(t, dir))); !slices.Equal(names, []string{"README", SlotFile}) {
			t.Fatalf("after Prune: %v", names)
		}
	})
	t.Run("not migrated: Delete and Promote shred the files", func(t *testing.T) {
		dir := build(t)
		ks := open(t, dir)
		if err := ks.Delete(tagN(1)); err != nil {
			t.Fatal(err)
		}
		if err := ks.Promote(tagN(2)); err != nil {
			t.Fatal(err)
		}
		files := dirFiles(t, dir)
		for _, name := range []string{tagN(1), tagN(2), tagN(2) + NextSuffix} {
			if _, ok := files[name]; ok {
				t.Fatalf("%s left", name)
			}
		}
		ks.Close()
		ks = open(t, dir)
		if _, ok, _ := ks.Get(tagN(1)); ok {
			t.Fatal("deleted key back")
		}
		if k, ok, _ := ks.Get(tagN(2)); !ok || !bytes.Equal(k.b[:], keyOf(102)) {
			t.Fatal("promoted key wrong")
		}
	})
}

// TestConcurrentCreate: creations from many goroutines (sharing syncs)
// are all durable and distinct, and the file grows in whole slots; slots
// freed by Delete are reused.
func TestConcurrentCreate(t *testing.T) {
	dir := t.TempDir()
	ks := open(t, dir)
	var wg sync.WaitGroup
	keys := make([][]byte, 400)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(keys); i += 8 {
				k, err := ks.Create(tagN(i % 256)[:62] + fmt.Sprintf("%02x", i/256))
				if err != nil {
					t.Error(err)
					return
				}
				keys[i] = bytes.Clone(k.b[:])
			}
		})
	}
	wg.Wait()
	ks.Close()
	fi, err := os.Stat(slotFile(dir))
	if err != nil || fi.Size()%slotSize != 0 || fi.Size() < int64(len(keys))*slotSize {
		t.Fatalf("slot file: %v %v", fi, err)
	}
	ks = open(t, dir)
	for i := range keys {
		k, ok, err := ks.Get(tagN(i % 256)[:62] + fmt.Sprintf("%02x", i/256))
		if !ok || err != nil || !bytes.Equal(k.b[:], keys[i]) {
			t.Fatalf("key %d after reopen: %v %v", i, ok, err)
		}
	}
	for i := range 100 {
		if err := ks.Delete(tagN(i)[:62] + "00"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		if _, err := ks.Create(tagN(i)[:62] + "ff"); err != nil {
			t.Fatal(err)
		}
	}
	if fi2, _ := os.Stat(slotFile(dir)); fi2.Size() != fi.Size() {
		t.Fatalf("the file grew from %d to %d with 100 free slots", fi.Size(), fi2.Size())
	}
}
