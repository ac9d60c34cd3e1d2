package kms_test

// A wrong root key is refused even when the store holds no key to try,
// and a refused open leaves the directory byte for byte as it was.

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
)

var otherRootKey = bytes.Repeat([]byte{0x5a}, 32)

// dirBytes reads every file under dir: name → content.
func dirBytes(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func openDir(dir string, root []byte, opts ...kms.Option) (*kms.Engine, error) {
	be, err := memory.New(root)
	if err != nil {
		return nil, err
	}
	e, err := kms.New(context.Background(), be, append([]kms.Option{kms.WithDirectory(dir), kms.WithMaintenanceInterval(0)}, opts...)...)
	if err != nil {
		be.Close()
	}
	return e, err
}

func wantRefusedUntouched(t *testing.T, dir string) {
	t.Helper()
	before := dirBytes(t, dir)
	e, err := openDir(dir, otherRootKey)
	if !errors.Is(err, kms.ErrBackendMismatch) {
		if e != nil {
			e.Close()
		}
		t.Fatalf("open with another root key: %v, want ErrBackendMismatch", err)
	}
	after := dirBytes(t, dir)
	if len(before) != len(after) {
		t.Fatalf("the refused open changed the set of files: %d before, %d after", len(before), len(after))
	}
	for p, b := range before {
		if after[p] != b {
			t.Fatalf("the refused open changed %s", filepath.Base(p))
		}
	}
}

func TestWrongRootKeyRefusedOnEmptyStore(t *testing.T) {
	dir := t.TempDir()
	e, err := openDir(dir, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	wantRefusedUntouched(t, dir)
	// The right key still opens it.
	e, err = openDir(dir, rootKey)
	if err != nil {
		t.Fatalf("open with the store's own root key: %v", err)
	}
	e.Close()
}

func TestWrongRootKeyRefusedAfterEveryKeyDestroyed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock()
	e, err := openDir(dir, rootKey, kms.WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	k := createKey(t, e, "doomed", kms.AES256, false)
	if _, err := e.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay)
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if page, err := e.ListKeys(ctx, kms.ListKeysRequest{}); err != nil || page.TotalCount != 0 {
		t.Fatalf("keys left: %v %v", page, err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	wantRefusedUntouched(t, dir)
}

// TestRootKeyCheckWrittenOnlyAfterProof: a directory made before check
// files existed gets one only once a backend has opened its material, so
// a wrong key on the first open cannot claim the directory.
func TestRootKeyCheckWrittenOnlyAfterProof(t *testing.T) {
	dir := t.TempDir()
	e, err := openDir(dir, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "kept", kms.AES256, false)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	check := filepath.Join(dir, "pocketkms.check")
	if err := os.Remove(check); err != nil {
		t.Fatalf("no check file after the first open: %v", err)
	}
	if _, err := openDir(dir, otherRootKey); !errors.Is(err, kms.ErrBackendMismatch) {
		t.Fatalf("wrong key on a store without a check file: %v", err)
	}
	if _, err := os.Stat(check); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused open wrote the check file (%v)", err)
	}
	e, err = openDir(dir, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	if _, err := os.Stat(check); err != nil {
		t.Fatalf("the proven open did not write the check file: %v", err)
	}
	wantRefusedUntouched(t, dir)
}

// TestWithMinFreeSpaceFloor: the free-space floor is at least 4 MiB.
func TestWithMinFreeSpaceFloor(t *testing.T) {
	be := newBackend(t, rootKey)
	if _, err := kms.New(context.Background(), be, kms.WithDirectory(t.TempDir()), kms.WithMinFreeSpace(4<<20-1)); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("a floor under 4 MiB: %v", err)
	}
	e, err := kms.New(context.Background(), be, kms.WithDirectory(t.TempDir()), kms.WithMinFreeSpace(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
}
