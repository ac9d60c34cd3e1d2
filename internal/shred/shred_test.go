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
	fi, err := os.Stat(filepath.Join(dir, DirName, tag))
	if err != nil || fi.Size() != int64(fileSize) || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
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
		t.Fatalf("Create over a file: %v, want ErrExists", err)
	}
	if tags, err := other.Tags(); err != nil || !slices.Equal(tags, []string{tag}) {
		t.Fatalf("Tags = %v %v", tags, err)
	}

	if err := ks.Delete(tag); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, DirName, tag)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("key file after Delete: %v", err)
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

// TestDamagedFileRefused: every single-bit flip, a truncation, an
// extension and a file moved to another tag's name are ErrCorrupt.
func TestDamagedFileRefused(t *testing.T) {
	dir := t.TempDir()
	tag := tagN(1)
	if _, err := open(t, dir).Create(tag); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, DirName, tag)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	try := func(name string, data []byte, as string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, DirName, as), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if k, ok, err := open(t, dir).Get(as); !errors.Is(err, ErrCorrupt) || ok || k != nil {
			t.Fatalf("%s: Get = %v %v %v, want ErrCorrupt", name, k, ok, err)
		}
	}
	for i := range good {
		for bit := range 8 {
			b := bytes.Clone(good)
			b[i] ^= 1 << bit
			try(fmt.Sprintf("byte %d bit %d", i, bit), b, tag)
		}
	}
	try("truncated", good[:len(good)-1], tag)
	try("extended", append(bytes.Clone(good), 0), tag)
	try("empty", nil, tag)
	try("another tag's file", good, tagN(2))
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

// TestPrune: keys no record names and temporary files go; live keys and
// files that are not the package's stay.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	ks := open(t, dir)
	for i := 1; i <= 3; i++ {
		if _, err := ks.Create(tagN(i)); err != nil {
			t.Fatal(err)
		}
	}
	sd := filepath.Join(dir, DirName)
	for _, name := range []string{tagN(4) + ".tmp", "README"} {
		if err := os.WriteFile(filepath.Join(sd, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := open(t, dir).Prune(func(tag string) bool { return tag == tagN(2) })
	if err != nil || !slices.Equal(removed, []string{tagN(1), tagN(3)}) {
		t.Fatalf("Prune = %v %v", removed, err)
	}
	var names []string
	ents, _ := os.ReadDir(sd)
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{tagN(2), "README"}) {
		t.Fatalf("left: %v", names)
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

// TestPreload: after Preload, Get and GetNext return the keys the files
// hold without reading them again (the files can be removed and the keys
// still come back), a damaged file is left out so that Get still reports
// it, a tag Preload found without a next key gets one from Next, and
// EndPreload makes GetNext look at the directory again.
func TestPreload(t *testing.T) {
	dir := t.TempDir()
	w := open(t, dir)
	var tags []string
	want := map[string][]byte{}
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
	withNext := tags[7]
	nk, err := w.Next(withNext)
	if err != nil {
		t.Fatal(err)
	}
	wantNext := bytes.Clone(nk.b[:])
	damaged := tags[9]
	path := filepath.Join(dir, DirName, damaged)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[5] ^= 1
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	ks := open(t, dir)
	if err := ks.Preload(tags, 4); err != nil {
		t.Fatal(err)
	}
	// The files are not read again: remove every good one.
	for _, tag := range tags {
		if tag != damaged {
			if err := os.Remove(filepath.Join(dir, DirName, tag)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tag := range tags {
		k, ok, err := ks.Get(tag)
		if tag == damaged {
			if !errors.Is(err, ErrCorrupt) || ok {
				t.Fatalf("damaged file: Get = %v %v, want ErrCorrupt", ok, err)
			}
			continue
		}
		if err != nil || !ok || !bytes.Equal(k.b[:], want[tag]) {
			t.Fatalf("Get(%s) after Preload = %v %v, wrong key", tag, ok, err)
		}
	}
	if k, ok, err := ks.GetNext(withNext); err != nil || !ok || !bytes.Equal(k.b[:], wantNext) {
		t.Fatalf("GetNext of the tag with a next key = %v %v", ok, err)
	}
	other := tags[3]
	if _, ok, err := ks.GetNext(other); ok || err != nil {
		t.Fatalf("GetNext of a tag without a next key = %v %v", ok, err)
	}
	// A next key made after Preload is found.
	made, err := ks.Next(other)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok, err := ks.GetNext(other); err != nil || !ok || k != made {
		t.Fatalf("GetNext after Next = %v %v", ok, err)
	}
	// Written behind the Keys' back: seen only once EndPreload forgot the
	// listing.
	third := tags[4]
	if _, err := w.Next(third); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := ks.GetNext(third); ok {
		t.Fatal("GetNext saw a next key Preload had listed as absent")
	}
	ks.EndPreload()
	if _, ok, err := ks.GetNext(third); !ok || err != nil {
		t.Fatalf("GetNext after EndPreload = %v %v", ok, err)
	}
	ks.Close()
	if err := ks.Preload(tags, 2); !errors.Is(err, ErrClosed) {
		t.Fatalf("Preload after Close: %v, want ErrClosed", err)
	}
}
