package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
)

// rrData makes a data directory with a root key file, a store holding
// one key, and a ciphertext of it.
func rrData(t *testing.T) (data, tag, ct string) {
	t.Helper()
	ctx := context.Background()
	data = t.TempDir()
	key, _ := memory.GenerateRootKey()
	if err := memory.WriteRootKeyFile(filepath.Join(data, "root.key"), key); err != nil {
		t.Fatal(err)
	}
	e := rrOpen(t, data, key)
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "rrkey", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	if ct, err = e.Encrypt(ctx, k.Tag, []byte("secret"), nil); err != nil {
		t.Fatal(err)
	}
	e.Close()
	return data, k.Tag, ct
}

func rrOpen(t *testing.T, data string, key []byte) *kms.Engine {
	t.Helper()
	be, err := memory.New(key)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kms.New(context.Background(), be, kms.WithDirectory(filepath.Join(data, "store")))
	if err != nil {
		t.Fatalf("open the store: %v", err)
	}
	return e
}

func rrCheck(t *testing.T, data, tag, ct string, old []byte) {
	t.Helper()
	key, err := memory.ReadRootKeyFile(filepath.Join(data, "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(key, old) {
		t.Fatal("root.key was not replaced")
	}
	if _, err := os.Stat(filepath.Join(data, "root.key.new")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("root.key.new left: %v", err)
	}
	e := rrOpen(t, data, key)
	defer e.Close()
	if pt, err := e.Decrypt(context.Background(), tag, ct, nil); err != nil || string(pt) != "secret" {
		t.Fatalf("decrypt after rotate-root: %q %v", pt, err)
	}
}

func TestRotateRootCommand(t *testing.T) {
	data, tag, ct := rrData(t)
	old, _ := memory.ReadRootKeyFile(filepath.Join(data, "root.key"))
	var out bytes.Buffer
	if err := run(context.Background(), []string{"rotate-root", "-data", data}, &out); err != nil {
		t.Fatalf("rotate-root: %v\n%s", err, out.String())
	}
	rrCheck(t, data, tag, ct, old)
	if bytes.Contains(out.Bytes(), []byte("root key rotated")) == false {
		t.Fatalf("output: %s", out.String())
	}
}

// TestRotateRootCommandResumes: a run killed after the store switched but
// before root.key was replaced leaves root.key.new; the next run finishes.
func TestRotateRootCommandResumes(t *testing.T) {
	ctx := context.Background()
	data, tag, ct := rrData(t)
	old, _ := memory.ReadRootKeyFile(filepath.Join(data, "root.key"))
	next, _ := memory.GenerateRootKey()
	if err := memory.WriteRootKeyFile(filepath.Join(data, "root.key.new"), next); err != nil {
		t.Fatal(err)
	}
	e := rrOpen(t, data, old)
	if err := e.RotateRootKey(ctx, next); err != nil {
		t.Fatal(err)
	}
	e.Close()
	var out bytes.Buffer
	if err := run(ctx, []string{"rotate-root", "-data", data}, &out); err != nil {
		t.Fatalf("rotate-root after an interrupted run: %v\n%s", err, out.String())
	}
	rrCheck(t, data, tag, ct, old)
	got, _ := memory.ReadRootKeyFile(filepath.Join(data, "root.key"))
	if !bytes.Equal(got, next) {
		t.Fatal("root.key is not the key the store was rotated to")
	}
}
