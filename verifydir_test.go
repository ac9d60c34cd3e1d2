package kms_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pocketkms/kms"
)

// treeState is every file under dir with its size, mode, modification
// time and content hash, and the directories' modification times.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d %d", path, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %x", sha256.Sum256(data))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestVerifyDirectory: a sound directory verifies clean and is left
// exactly as it was (not a byte, not a modification time); a missing
// shred key and another root key are reported as problems; a directory
// held by an Engine of this process is an error, not a finding.
func TestVerifyDirectory(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, typ := range []kms.KeyType{kms.AES256, kms.RSA2048, kms.ECDSA} {
		k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "k" + strings.ToLower(string(typ)), Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.RotateKey(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
		tags = append(tags, k.Tag)
	}
	if _, err := e.ActivateTokenGenerator(ctx, tags[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := kms.VerifyDirectory(ctx, newBackend(t, rootKey), dir); err == nil || !strings.Contains(err.Error(), "already open") {
		t.Fatalf("verify while an Engine holds the directory: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	before := treeState(t, dir)
	rep, err := kms.VerifyDirectory(ctx, newBackend(t, rootKey), dir)
	if err != nil || len(rep.Problems) != 0 || rep.Keys != 3 || rep.Versions != 6 {
		t.Fatalf("sound directory: %+v %v", rep, err)
	}
	if after := treeState(t, dir); after != before {
		t.Fatalf("verify changed the directory:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	other := newBackend(t, bytes.Repeat([]byte{0x17}, len(rootKey)))
	rep, err = kms.VerifyDirectory(ctx, other, dir)
	if err != nil || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0].Problem, kms.ErrBackendMismatch.Error()) {
		t.Fatalf("another root key: %+v %v", rep, err)
	}

	// A shred key gone: that key (and only it) is reported.
	saved, err := os.ReadFile(shSlotFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	shEditSlot(t, dir, tags[1], false, func(b []byte) { clear(b) })
	rep, err = kms.VerifyDirectory(ctx, newBackend(t, rootKey), dir)
	if err != nil || len(rep.Problems) != 1 || rep.Problems[0].KeyTag != tags[1] || !strings.Contains(rep.Problems[0].Problem, "missing") {
		t.Fatalf("shred key gone: %+v %v", rep, err)
	}
	// A damaged shred key: the key's handles do not open.
	os.WriteFile(shSlotFile(dir), saved, 0o600)
	shEditSlot(t, dir, tags[1], false, func(b []byte) { b[len(b)-1] ^= 1 })
	rep, err = kms.VerifyDirectory(ctx, newBackend(t, rootKey), dir)
	if err != nil || len(rep.Problems) != 1 || rep.Problems[0].KeyTag != tags[1] {
		t.Fatalf("shred key damaged: %+v %v", rep, err)
	}
	os.WriteFile(shSlotFile(dir), saved, 0o600)

	// A damaged table: the store does not open, which is a finding.
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Skip("no table file to damage")
	}
	for _, tbl := range tables {
		raw, _ := os.ReadFile(tbl)
		raw[len(raw)/2] ^= 0xff
		os.WriteFile(tbl, raw, 0o644)
	}
	rep, err = kms.VerifyDirectory(ctx, newBackend(t, rootKey), dir)
	if err != nil || len(rep.Problems) == 0 {
		t.Fatalf("damaged tables: %+v %v", rep, err)
	}
	t.Logf("damaged tables: %s", rep.Problems[0].Problem)

	if _, err := kms.VerifyDirectory(ctx, newBackend(t, rootKey), filepath.Join(dir, "none")); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("missing directory: %v", err)
	}
}
