package main

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pocketkms/kms/backend/memory"
)

// TestRotateRootRefusals: while a server holds the directory rotate-root
// exits 3 and writes nothing (no pending key file either); a new key file
// readable by others is refused before the store changes.
func TestRotateRootRefusals(t *testing.T) {
	data := newDataDir(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	rootBefore, _ := os.ReadFile(filepath.Join(data, "root.key"))
	ts := startServer(t, data)
	r := pk(t, "rotate-root", "-data", data)
	if r.code != exitInUse || !strings.Contains(r.err, "in use") {
		t.Fatalf("rotate-root while serving: %+v", r)
	}
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	// The server's own files changed while it ran: what rotate-root could
	// have touched is the root key and a pending key file.
	if got, _ := os.ReadFile(filepath.Join(data, "root.key")); !bytes.Equal(got, rootBefore) {
		t.Fatal("a refused rotate-root replaced root.key")
	}
	if _, err := os.Stat(filepath.Join(data, "root.key.new")); !os.IsNotExist(err) {
		t.Fatalf("a refused rotate-root left root.key.new: %v", err)
	}

	loose := filepath.Join(t.TempDir(), "loose.key")
	k, _ := memory.GenerateRootKey()
	os.WriteFile(loose, []byte(hex.EncodeToString(k)+"\n"), 0o644)
	before := dirState(t, data)
	if r := pk(t, "rotate-root", "-data", data, "-new-root-key-file", loose); r.code != 1 || !strings.Contains(r.err, "mode") {
		t.Fatalf("a new key file readable by others: %+v", r)
	}
	if after := dirState(t, data); after != before {
		t.Fatalf("a refused rotate-root changed the directory:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	must(t, "verify", "-data", data)
}

// TestRotateRootBackups: after rotate-root the directory works under the
// new key (root.key replaced, 0600, no pending file); a backup made
// before restores only with the old key, one made after with the new.
func TestRotateRootBackups(t *testing.T) {
	data := newDataDir(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	dir := t.TempDir()
	oldKey := filepath.Join(dir, "old.key")
	raw, _ := os.ReadFile(filepath.Join(data, "root.key"))
	os.WriteFile(oldKey, raw, 0o600)
	before := filepath.Join(dir, "before.backup")
	must(t, "backup", "-data", data, before)

	out := must(t, "rotate-root", "-data", data, "-o", "json")
	if !strings.Contains(out, `"resumed": false`) {
		t.Fatalf("rotate-root -o json: %s", out)
	}
	now, _ := os.ReadFile(filepath.Join(data, "root.key"))
	if bytes.Equal(now, raw) {
		t.Fatal("root.key unchanged")
	}
	if bytes.Contains([]byte(out), bytes.TrimSpace(now)) {
		t.Fatal("rotate-root printed the new root key")
	}
	if fi, _ := os.Stat(filepath.Join(data, "root.key")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("root.key mode %v", fi.Mode())
	}
	if _, err := os.Stat(filepath.Join(data, "root.key.new")); !os.IsNotExist(err) {
		t.Fatalf("root.key.new left: %v", err)
	}
	must(t, "verify", "-data", data)
	must(t, "keys", "show", "-data", data, "alpha")
	if r := pk(t, "verify", "-data", data, "-root-key-file", oldKey); r.code == 0 {
		t.Fatalf("the old root key still opens the directory: %+v", r)
	}

	if r := pk(t, "restore", "-data", filepath.Join(dir, "r1"), "-root-key-file", filepath.Join(data, "root.key"), before); r.code != 1 || !strings.Contains(r.err, "not the one") {
		t.Fatalf("an old backup with the new key: %+v", r)
	}
	must(t, "restore", "-data", filepath.Join(dir, "r2"), "-root-key-file", oldKey, before)
	after := filepath.Join(dir, "after.backup")
	must(t, "backup", "-data", data, after)
	must(t, "restore", "-data", filepath.Join(dir, "r3"), "-root-key-file", filepath.Join(data, "root.key"), after)

	// A run that had replaced root.key but not yet removed the pending
	// file: the next run only removes it.
	os.WriteFile(filepath.Join(data, "root.key.new"), now, 0o600)
	out = must(t, "rotate-root", "-data", data)
	if !strings.Contains(out, "had finished") {
		t.Fatalf("rotate-root with the pending key already in place: %s", out)
	}
	if again, _ := os.ReadFile(filepath.Join(data, "root.key")); !bytes.Equal(again, now) {
		t.Fatal("root.key changed")
	}
	if _, err := os.Stat(filepath.Join(data, "root.key.new")); !os.IsNotExist(err) {
		t.Fatalf("root.key.new left: %v", err)
	}
}
