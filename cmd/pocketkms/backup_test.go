package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
)

// TestBackupRestoreDecrypts: a backup restored into a new data directory
// (root key left outside it) decrypts what the source encrypted, under
// every version, and serves its tokens; the restore says where the root
// key is.
func TestBackupRestoreDecrypts(t *testing.T) {
	data := newDataDir(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	must(t, "tokens", "activate", "-data", data, "alpha")
	tokFile := filepath.Join(t.TempDir(), "tokens.json")
	must(t, "tokens", "issue", "-data", data, "alpha", "-subject", "ci", "-out", tokFile)
	ctx := context.Background()
	e := openForTest(t, data)
	tag := findKey(t, e, "alpha")
	ct1, err := e.Encrypt(ctx, tag, []byte("one"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.RotateKey(ctx, tag); err != nil {
		t.Fatal(err)
	}
	ct2, err := e.Encrypt(ctx, tag, []byte("two"), []byte("ctx"))
	if err != nil {
		t.Fatal(err)
	}
	e.Close()

	bk := filepath.Join(t.TempDir(), "kms.backup")
	must(t, "backup", "-data", data, bk)
	if fi, err := os.Stat(bk); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	raw, _ := os.ReadFile(bk)
	rootHex, _ := os.ReadFile(filepath.Join(data, "root.key"))
	key, _ := hex.DecodeString(strings.TrimSpace(string(rootHex)))
	if bytes.Contains(raw, key) || bytes.Contains(raw, bytes.TrimSpace(rootHex)) {
		t.Fatal("the backup holds the root key")
	}
	must(t, "verify-backup", bk)

	target := filepath.Join(t.TempDir(), "new", "data")
	r := pk(t, "restore", "-data", target, "-root-key-file", filepath.Join(data, "root.key"), bk)
	if r.code != 0 || !strings.Contains(r.err, "has no root.key: pass -root-key-file") {
		t.Fatalf("restore: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(target, "root.key")); !os.IsNotExist(err) {
		t.Fatalf("restore without -copy-root-key wrote root.key: %v", err)
	}
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("restored directory: %v %v", fi, err)
	}
	// Without the root key's path, the commands refuse as serve does.
	if r := pk(t, "keys", "list", "-data", target); r.code != 1 || !strings.Contains(r.err, "root key file") {
		t.Fatalf("keys list without the root key: %+v", r)
	}
	must(t, "verify", "-data", target, "-root-key-file", filepath.Join(data, "root.key"))

	be, err := memory.NewFromFile(filepath.Join(data, "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	e2, err := kms.New(ctx, be, kms.WithDirectory(filepath.Join(target, "store")), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	for ct, want := range map[string]string{ct1: "one", ct2: "two"} {
		var encCtx []byte
		if want == "two" {
			encCtx = []byte("ctx")
		}
		pt, err := e2.Decrypt(ctx, tag, ct, encCtx)
		if err != nil || string(pt) != want {
			t.Fatalf("decrypt %q after restore: %q %v", want, pt, err)
		}
	}
	tokRaw, _ := os.ReadFile(tokFile)
	tok := strings.SplitN(strings.SplitN(string(tokRaw), `"accessToken": "`, 2)[1], `"`, 2)[0]
	if _, err := e2.WithToken(tok, netipLoopback).Encrypt(ctx, tag, []byte("x"), nil); err != nil {
		t.Fatalf("a token issued before the backup does not work after the restore: %v", err)
	}
}

// TestRestoreRefusals: another root key, a damaged backup, a target that
// holds a store and a root.key in the way of -copy-root-key are refused
// with a non-zero exit, and nothing is written anywhere.
func TestRestoreRefusals(t *testing.T) {
	data := newDataDir(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	dir := t.TempDir()
	bk := filepath.Join(dir, "kms.backup")
	must(t, "backup", "-data", data, bk)
	other := filepath.Join(dir, "other.key")
	okey, _ := memory.GenerateRootKey()
	os.WriteFile(other, []byte(hex.EncodeToString(okey)+"\n"), 0o600)
	bad := filepath.Join(dir, "bad.backup")
	raw, _ := os.ReadFile(bk)
	raw[len(raw)/2] ^= 1
	os.WriteFile(bad, raw, 0o600)
	// An existing, empty data directory holding only a root key: restore
	// may write its store, but not when refused.
	holder := filepath.Join(dir, "holder")
	os.Mkdir(holder, 0o700)
	os.WriteFile(filepath.Join(holder, "root.key"), []byte(hex.EncodeToString(okey)+"\n"), 0o600)
	rootKey := filepath.Join(data, "root.key")
	fresh := filepath.Join(dir, "fresh")

	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"wrong root key", []string{"restore", "-data", fresh, "-root-key-file", other, bk}, 1, "not the one the backup was made under"},
		{"wrong root key in the target", []string{"restore", "-data", holder, bk}, 1, "not the one the backup was made under"},
		{"wrong root key, copy", []string{"restore", "-data", fresh, "-root-key-file", other, "-copy-root-key", bk}, 1, "not the one"},
		{"damaged backup", []string{"restore", "-data", fresh, "-root-key-file", rootKey, bad}, 1, "invalid backup"},
		{"target holds a store", []string{"restore", "-data", data, bk}, 1, "not empty"},
		{"target holds a store, other key", []string{"restore", "-data", data, "-root-key-file", other, bk}, 1, "not empty"},
		{"another root.key in the target", []string{"restore", "-data", holder, "-root-key-file", rootKey, bk}, 1, "holds another root key"},
		{"root.key in the way", []string{"restore", "-data", holder, "-root-key-file", rootKey, "-copy-root-key", bk}, 1, "root.key exists"},
		{"no root key", []string{"restore", "-data", fresh, bk}, 1, "pass the root key"},
		{"no backup", []string{"restore", "-data", fresh, "-root-key-file", rootKey, filepath.Join(dir, "none")}, 1, "no such file"},
		{"copy without a key file", []string{"restore", "-data", fresh, "-copy-root-key", bk}, 2, "needs -root-key-file"},
	}
	for _, c := range cases {
		before := dirState(t, dir)
		r := pk(t, c.args...)
		if r.code != c.code || !strings.Contains(r.err, c.msg) {
			t.Errorf("%s: exit %d, want %d with %q\n%s%s", c.name, r.code, c.code, c.msg, r.out, r.err)
		}
		if after := dirState(t, dir); after != before {
			t.Errorf("%s wrote something:\nbefore:\n%s\nafter:\n%s", c.name, before, after)
		}
	}
	// The refusals left both the source and the target usable.
	must(t, "verify", "-data", data)
	must(t, "restore", "-data", fresh, "-root-key-file", rootKey, "-copy-root-key", bk)
	must(t, "keys", "show", "-data", fresh, "alpha")
	if fi, err := os.Stat(filepath.Join(fresh, "root.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("copied root key: %v %v", fi, err)
	}
}

// TestBackupRefusals: an existing file without -force, a directory a
// server holds (exit 3, saying what to do) and a file that cannot be
// written leave no backup behind.
func TestBackupRefusals(t *testing.T) {
	data := newDataDir(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	dir := t.TempDir()
	bk := filepath.Join(dir, "kms.backup")
	os.WriteFile(bk, []byte("precious"), 0o600)
	if r := pk(t, "backup", "-data", data, bk); r.code != 1 || !strings.Contains(r.err, "-force") {
		t.Fatalf("backup over a file: %+v", r)
	}
	if got, _ := os.ReadFile(bk); string(got) != "precious" {
		t.Fatal("backup without -force replaced the file")
	}
	if r := pk(t, "backup", "-data", data, filepath.Join(dir, "no", "such", "dir", "b")); r.code != 1 {
		t.Fatalf("backup into a missing directory: %+v", r)
	}
	before := dirState(t, data)
	if r := pk(t, "backup", "-data", data, filepath.Join(data, "store", "kms.backup")); r.code != 1 || !strings.Contains(r.err, "inside the key store") {
		t.Fatalf("backup into the store: %+v", r)
	}
	if after := dirState(t, data); after != before {
		t.Fatalf("a refused backup changed the data directory:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	ts := startServer(t, data)
	before = dirState(t, dir)
	r := pk(t, "backup", "-data", data, "-force", bk)
	if r.code != exitInUse || !strings.Contains(r.err, "in use") || !strings.Contains(r.err, "Engine.Backup") {
		t.Fatalf("backup while serving: %+v", r)
	}
	if after := dirState(t, dir); after != before {
		t.Fatalf("a refused backup wrote something:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	must(t, "backup", "-data", data, "-force", bk)
	must(t, "verify-backup", bk)
}

// TestVerifyBackupInvalid: a truncated, altered or foreign file exits 4
// and says why (with -o json too); a file that cannot be read exits 1.
func TestVerifyBackupInvalid(t *testing.T) {
	data := newDataDir(t)
	must(t, "keys", "create", "-data", data, "-name", "alpha")
	dir := t.TempDir()
	bk := filepath.Join(dir, "kms.backup")
	must(t, "backup", "-data", data, bk)
	raw, _ := os.ReadFile(bk)
	flipped := bytes.Clone(raw)
	flipped[len(flipped)-40] ^= 0x80
	for name, content := range map[string][]byte{
		"truncated": raw[:len(raw)-1],
		"half":      raw[:len(raw)/2],
		"altered":   flipped,
		"trailing":  append(bytes.Clone(raw), '\n'),
		"foreign":   []byte("not a backup at all\n"),
		"empty":     nil,
	} {
		f := filepath.Join(dir, name)
		os.WriteFile(f, content, 0o600)
		r := pk(t, "verify-backup", f)
		if r.code != exitProblems || !strings.Contains(r.err, "invalid backup") {
			t.Errorf("%s: %+v", name, r)
		}
		r = pk(t, "verify-backup", "-o", "json", f)
		if r.code != exitProblems || !strings.Contains(r.out, `"ok": false`) || !strings.Contains(r.out, "invalid backup") {
			t.Errorf("%s, json: %+v", name, r)
		}
	}
	if r := pk(t, "verify-backup", filepath.Join(dir, "none")); r.code != 1 {
		t.Errorf("missing file: %+v", r)
	}
	for _, args := range [][]string{{}, {bk, bk}, {bk, "-data", data}, {bk, "-o", "yaml"}} {
		if r := pk(t, append([]string{"verify-backup"}, args...)...); r.code != 2 {
			t.Errorf("verify-backup %q: %+v", args, r)
		}
	}
}
