package shred

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/pocketkms/kms/internal/keytag"
)

func tagN(n int) string { return strings.Repeat(fmt.Sprintf("%02x", n), 32) }

func open(t *testing.T, dir string) *Keys {
	t.Helper()
	ks, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks.Close)
	return ks
}

// TestCreateGetDelete: a key is durable once Create returns (another
// Keys on the directory reads the same key), and gone once Delete
// returns, in memory and on disk.
func TestCreateGetDelete(t *testing.T) {
	dir := t.TempDir()
	ks := open(t, dir)
	if _, err := os.Stat(filepath.Join(dir, DirName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open made the directory (%v)", err)
	}
	tag := tagN(1)
	k, err := ks.Create(tag)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(slotFile(dir))
	if err != nil || fi.Size()%slotSize != 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("slot file: %v %v", fi, err)
	}
	off := slotAt(t, dir, tag, false)
	if raw := readSlots(t, dir); !bytes.Equal(raw[off+offKey:off+offKey+KeySize], k.b[:]) {
		t.Fatal("the slot does not hold the key")
	}
	if _, err := ks.Create(tag); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
	w, err := k.Wrap([]byte("handle"), "cipher", 3)
	if err != nil {
		t.Fatal(err)
	}
	if !IsWrapped(w) || len(w) != len("handle")+WrapOverhead {
		t.Fatalf("wrapped form %d bytes", len(w))
	}

	other := open(t, dir)
	k2, ok, err := other.Get(tag)
	if err != nil || !ok {
		t.Fatalf("Get from another Keys: %v %v", ok, err)
	}
	if h, err := k2.Unwrap(w, "cipher", 3); err != nil || string(h) != "handle" {
		t.Fatalf("Unwrap after reread: %q %v", h, err)
	}
	if _, err := other.Create(tag); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over a slot: %v, want ErrExists", err)
	}
	if tags, err := other.Tags(); err != nil || !slices.Equal(tags, []string{tag}) {
		t.Fatalf("Tags = %v %v", tags, err)
	}

	if err := ks.Delete(tag); err != nil {
		t.Fatal(err)
	}
	if raw := readSlots(t, dir); !allZero(raw[off : off+slotSize]) {
		t.Fatal("the key's slot is not zeros after Delete")
	}
	if _, err := k.Unwrap(w, "cipher", 3); !errors.Is(err, ErrDeleted) {
		t.Fatalf("Unwrap with a deleted key: %v", err)
	}
	if _, err := k.Wrap([]byte("x"), "cipher", 3); !errors.Is(err, ErrDeleted) {
		t.Fatalf("Wrap with a deleted key: %v", err)
	}
	if _, ok, err := open(t, dir).Get(tag); ok || err != nil {
		t.Fatalf("Get after Delete: %v %v", ok, err)
	}
	if err := ks.Delete(tag); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if err := ks.Delete(tagN(9)); err != nil {
		t.Fatalf("Delete of a tag never made: %v", err)
	}
	for _, bad := range []string{"", "AB" + tagN(1)[2:], tagN(1)[1:], "../" + tagN(1)[3:]} {
		if _, err := ks.Create(bad); !errors.Is(err, ErrInvalidTag) {
			t.Errorf("Create(%q): %v", bad, err)
		}
		if _, _, err := ks.Get(bad); !errors.Is(err, ErrInvalidTag) {
			t.Errorf("Get(%q): %v", bad, err)
		}
		if err := ks.Delete(bad); !errors.Is(err, ErrInvalidTag) {
			t.Errorf("Delete(%q): %v", bad, err)
		}
	}
	ks.Close()
	if _, err := ks.Create(tagN(2)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Create after Close: %v", err)
	}
}

// TestDamagedSlotRefused: every single-bit flip of a key's slot makes
// Get fail with ErrCorrupt (the flip names no other valid key: it lands in
// the tag, then Get of that tag finds nothing) and never fails Open; a
// slot copied over another tag's is that other tag's, not this one's.
func TestDamagedSlotRefused(t *testing.T) {
	dir := t.TempDir()
	tag := tagN(1)
	ks := open(t, dir)
	if _, err := ks.Create(tag); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Create(tagN(2)); err != nil {
		t.Fatal(err)
	}
	ks.Close()
	off := slotAt(t, dir, tag, false)
	other := slotAt(t, dir, tagN(2), false)
	good := readSlots(t, dir)
	try := func(name string, data []byte, otherToo bool) {
		t.Helper()
		if err := os.WriteFile(slotFile(dir), data, 0o600); err != nil {
			t.Fatal(err)
		}
		ks, err := Open(dir)
		if err != nil {
			t.Fatalf("%s: Open: %v", name, err)
		}
		defer ks.Close()
		k, ok, err := ks.Get(tag)
		if ok || k != nil || (err != nil && !errors.Is(err, ErrCorrupt)) {
			t.Fatalf("%s: Get = %v %v %v, want ErrCorrupt or nothing", name, k, ok, err)
		}
		if k, ok, err := ks.Get(tagN(2)); otherToo && (!ok || err != nil || k == nil) {
			t.Fatalf("%s: the other key: %v %v", name, ok, err)
		}
	}
	for i := off; i < off+slotSize; i++ {
		for bit := range 8 {
			b := bytes.Clone(good)
			b[i] ^= 1 << bit
			name := fmt.Sprintf("byte %d bit %d", i-off, bit)
			try(name, b, true)
			// Outside the tag and the kind the slot stays the tag's key's:
			// ErrCorrupt, not missing.
			if j := i - off; j != offKind && (j < offTag || j >= offTag+keytag.Len) {
				if _, _, err := open(t, dir).Get(tag); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: Get = %v, want ErrCorrupt", name, err)
				}
			}
		}
	}
	b := bytes.Clone(good)
	clear(b[off : off+slotSize])
	try("zeroed", b, true)
	try("truncated mid-slot", good[:off+slotSize/2], false)
	b = bytes.Clone(good)
	copy(b[off:off+slotSize], good[other:other+slotSize])
	try("another tag's slot", b, true)
}

// TestWrapBinding: a wrapped handle opens only under its key, for its
// tag, purpose and version, and unaltered; two wraps differ.
func TestWrapBinding(t *testing.T) {
	ks := open(t, t.TempDir())
	k1, err := ks.Create(tagN(1))
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ks.Create(tagN(2))
	if err != nil {
		t.Fatal(err)
	}
	h := []byte("a sealed backend handle")
	w, err := k1.Wrap(h, "cipher", 1)
	if err != nil {
		t.Fatal(err)
	}
	w2, _ := k1.Wrap(h, "cipher", 1)
	if bytes.Equal(w, w2) {
		t.Fatal("two wraps of one handle are equal")
	}
	if got, err := k1.Unwrap(w, "cipher", 1); err != nil || !bytes.Equal(got, h) {
		t.Fatalf("Unwrap = %q %v", got, err)
	}
	cases := []struct {
		name    string
		k       *Key
		w       []byte
		purpose string
		version uint32
	}{
		{"other key", k2, w, "cipher", 1},
		{"other purpose", k1, w, "token-signing", 1},
		{"other version", k1, w, "cipher", 2},
		{"short", k1, w[:WrapOverhead-1], "cipher", 1},
		{"no prefix", k1, append([]byte("pkw2"), w[4:]...), "cipher", 1},
		{"plain handle", k1, h, "cipher", 1},
	}
	for i := range w {
		b := bytes.Clone(w)
		b[i] ^= 0x10
		cases = append(cases, struct {
			name    string
			k       *Key
			w       []byte
			purpose string
			version uint32
		}{fmt.Sprintf("flip %d", i), k1, b, "cipher", 1})
	}
	for _, c := range cases {
		if got, err := c.k.Unwrap(c.w, c.purpose, c.version); !errors.Is(err, ErrUnwrap) || got != nil {
			t.Errorf("%s: Unwrap = %q %v, want ErrUnwrap", c.name, got, err)
		}
	}
}

// TestPrune: keys and next keys no record names go (their slots zeroed),
// as do former-layout temporary files; live keys and files that are not
// the package's stay.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	ks := open(t, dir)
	for i := 1; i <= 3; i++ {
		if _, err := ks.Create(tagN(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ks.Next(tagN(1)); err != nil {
		t.Fatal(err)
	}
	ks.Close()
	sd := filepath.Join(dir, DirName)
	for _, name := range []string{tagN(4) + ".tmp", "README"} {
		if err := os.WriteFile(filepath.Join(sd, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	gone := []int64{slotAt(t, dir, tagN(1), false), slotAt(t, dir, tagN(1), true), slotAt(t, dir, tagN(3), false)}
	removed, err := open(t, dir).Prune(func(tag string) bool { return tag == tagN(2) })
	if err != nil || !slices.Equal(removed, []string{tagN(1), tagN(3)}) {
		t.Fatalf("Prune = %v %v", removed, err)
	}
	var names []string
	ents, _ := os.ReadDir(sd)
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"README", SlotFile}) {
		t.Fatalf("left: %v", names)
	}
	raw := readSlots(t, dir)
	for _, off := range gone {
		if !allZero(raw[off : off+slotSize]) {
			t.Fatalf("slot at %d not zeroed", off)
		}
	}
	ks = open(t, dir)
	if tags, _ := ks.Tags(); !slices.Equal(tags, []string{tagN(2)}) {
		t.Fatalf("Tags after Prune = %v", tags)
	}
	if empty, err := open(t, t.TempDir()).Prune(func(string) bool { return false }); err != nil || empty != nil {
		t.Fatalf("Prune without a directory: %v %v", empty, err)
	}
}

// TestKeyRedacted: no formatting path shows the key bytes.
func TestKeyRedacted(t *testing.T) {
	ks := open(t, t.TempDir())
	k, err := ks.Create(tagN(1))
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Clone(k.b[:])
	forms := []string{string(secret), hex.EncodeToString(secret), strings.ToUpper(hex.EncodeToString(secret)), strings.Trim(fmt.Sprint(secret[:8]), "[]")}
	var outs []string
	for _, v := range []any{k, ks, struct{ K *Key }{k}, []*Key{k}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			outs = append(outs, fmt.Sprintf(verb, v))
		}
		j, _ := json.Marshal(v)
		outs = append(outs, string(j))
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("k", "key", k, "keys", ks)
	outs = append(outs, logged.String())
	for _, o := range outs {
		for _, f := range forms {
			if strings.Contains(o, f) {
				t.Fatalf("key bytes in %q", o)
			}
		}
	}
	if err := ks.Delete(k.tag); err != nil {
		t.Fatal(err)
	}
	if !k.gone || k.b != [KeySize]byte{} {
		t.Fatal("deleted key not cleared")
	}
}

// FuzzKeyFile: a key file parses only in its canonical form (parse then
// frame gives the input back), and never panics.
func FuzzKeyFile(f *testing.F) {
	tag := tagN(7)
	f.Add(marshal(tag, bytes.Repeat([]byte{1}, KeySize)))
	f.Add([]byte{})
	f.Add([]byte("PKSK\x01"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		key, err := unmarshal(tag, raw)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if !bytes.Equal(marshal(tag, key), raw) {
			t.Fatal("parsed a non-canonical key file")
		}
	})
}

// FuzzSlot: a slot parses only in its canonical form (parse then frame
// gives the input back), and never panics.
func FuzzSlot(f *testing.F) {
	good := make([]byte, slotSize)
	marshalSlot(good, kindKey, 7, tagN(7), bytes.Repeat([]byte{1}, KeySize))
	f.Add(good)
	f.Add(make([]byte, slotSize))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) < slotSize {
			raw = append(raw, make([]byte, slotSize-len(raw))...)
		}
		st, kind, seq, tag, key := parseSlot(raw)
		if st != slotValid {
			return
		}
		again := make([]byte, slotSize)
		marshalSlot(again, kind, seq, string(tag), key)
		if !bytes.Equal(again, raw[:slotSize]) {
			t.Fatal("parsed a non-canonical slot")
		}
	})
}

// FuzzUnwrap: arbitrary stored bytes never panic Unwrap, and every
// failure is ErrUnwrap.
func FuzzUnwrap(f *testing.F) {
	k := newKey(tagN(3), bytes.Repeat([]byte{3}, KeySize))
	w, err := k.Wrap([]byte("handle"), "cipher", 1)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(w)
	f.Add([]byte("pkw1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := k.Unwrap(b, "cipher", 1); err != nil && !errors.Is(err, ErrUnwrap) {
			t.Fatalf("Unwrap: %v", err)
		}
	})
}

// TestShareTags: Open reads every key; ShareTags swaps in the caller's
// tag strings (Get and Wrap keep working, with the same keys).
func TestShareTags(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir)
	want := map[string][]byte{}
	var tags []string
	for i := range 300 {
		tag := tagN(i % 256)
		if i >= 256 {
			tag = strings.Repeat("ab", 31) + fmt.Sprintf("%02x", i-256)
		}
		k, err := w.Create(tag)
		if err != nil {
			t.Fatal(err)
		}
		tags = append(tags, tag)
		want[tag] = bytes.Clone(k.b[:])
	}
	nk, err := w.Next(tags[7])
	if err != nil {
		t.Fatal(err)
	}
	wantNext := bytes.Clone(nk.b[:])
	w.Close()
	ks := open(t, dir)
	mine := make([]string, len(tags))
	for i, tag := range tags {
		mine[i] = strings.Clone(tag)
	}
	if err := ks.ShareTags(mine); err != nil {
		t.Fatal(err)
	}
	for i, tag := range tags {
		k, ok, err := ks.Get(tag)
		if err != nil || !ok || !bytes.Equal(k.b[:], want[tag]) {
			t.Fatalf("Get(%s) after ShareTags = %v %v, wrong key", tag, ok, err)
		}
		if unsafe.StringData(k.Tag()) != unsafe.StringData(mine[i]) {
			t.Fatalf("key %d does not hold the caller's tag string", i)
		}
	}
	if k, ok, err := ks.GetNext(tags[7]); err != nil || !ok || !bytes.Equal(k.b[:], wantNext) {
		t.Fatalf("GetNext of the tag with a next key = %v %v", ok, err)
	}
	if _, ok, err := ks.GetNext(tags[3]); ok || err != nil {
		t.Fatalf("GetNext of a tag without a next key = %v %v", ok, err)
	}
	ks.Close()
	if err := ks.ShareTags(tags); !errors.Is(err, ErrClosed) {
		t.Fatalf("ShareTags after Close: %v, want ErrClosed", err)
	}
}

// slotFile is the slot file under the Badger directory dir.
func slotFile(dir string) string { return filepath.Join(dir, DirName, SlotFile) }

func readSlots(t *testing.T, dir string) []byte {
	t.Helper()
	raw, err := os.ReadFile(slotFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// slotAt is the offset of tag's valid slot of the kind; it fails the test
// when there is none.
func slotAt(t *testing.T, dir, tag string, next bool) int64 {
	t.Helper()
	off, ok, err := SlotOffset(dir, tag, next)
	if err != nil || !ok {
		t.Fatalf("no slot for %s (next %v): %v", tag, next, err)
	}
	return off
}
