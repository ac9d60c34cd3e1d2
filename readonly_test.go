//go:build unix

package kms_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/testproc"
)

// TestReadOnlyDirectory makes the store's directory read-only under a
// running Engine. Root ignores permissions, so the Engine runs in a child
// process as an unprivileged user (nobody); the test needs root to start
// it and skips otherwise. Management writes must then fail with a clear
// error, the hot path keep serving, Close must return, and after the
// directory is writable again every acknowledged change must be there.
func TestReadOnlyDirectory(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		roChild(args[0])
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the Engine as an unprivileged user")
	}
	base := t.TempDir()
	// The unprivileged child must reach the binary and the store.
	os.Chmod(filepath.Dir(base), 0o755)
	os.Chmod(base, 0o755)
	bin := filepath.Join(base, "kms.test")
	copyExecutable(t, bin)
	dir := filepath.Join(base, "store")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	os.Chown(dir, nobody, nobody)

	p := testproc.Start(t, testproc.Options{
		Binary:      bin,
		SysProcAttr: &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}},
		Stdin:       true,
		Timeout:     2 * time.Minute,
	}, dir)
	next := func() string {
		line, ok := <-p.Lines()
		if !ok {
			r := p.Wait()
			t.Fatalf("child ended early (%v):\n%s", r, r.Stderr)
		}
		return line
	}
	var tag string
	if _, err := fmt.Sscanf(next(), "READY %s", &tag); err != nil {
		t.Fatal(err)
	}
	// Everything read-only: the directory and its files.
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil {
			os.Chmod(path, info.Mode().Perm()&^0o222)
		}
		return nil
	})
	if err := p.Send("readonly"); err != nil {
		t.Fatal(err)
	}
	report := next()
	if !strings.HasPrefix(report, "WRITE-FAILED ") || !strings.Contains(report, "permission denied") {
		t.Fatalf("management write on a read-only directory: %s", report)
	}
	if hot := next(); hot != "HOT ok" {
		t.Fatalf("hot path: %s", hot)
	}
	if err := p.Send("quit"); err != nil {
		t.Fatal(err)
	}
	if r := p.Wait(); r.Err != nil {
		t.Fatalf("child after quit (Engine.Close on the read-only directory): %v\n%s", r, r.Stderr)
	}

	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil {
			os.Chmod(path, info.Mode().Perm()|0o200)
		}
		return nil
	})
	ctx := context.Background()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatalf("reopen after the directory is writable again: %v", err)
	}
	defer e.Close()
	got, err := e.GetKeyVersion(ctx, tag, 2)
	if err != nil || !got.Current {
		t.Fatalf("acknowledged rotation lost: %+v %v", got, err)
	}
	if _, err := e.GetKeyVersion(ctx, tag, 3); !errors.Is(err, kms.ErrVersionNotFound) {
		t.Fatalf("a refused rotation was stored: %v", err)
	}
}

func copyExecutable(t *testing.T, to string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// roChild opens the Engine, rotates once (acknowledged), then on
// "readonly" tries another rotation and an encryption and reports both.
func roChild(dir string) {
	ctx := context.Background()
	be, _ := memory.New(rootKey)
	e, err := kms.New(ctx, be, kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "readonly", Type: kms.AES256})
	if err == nil {
		_, err = e.RotateKey(ctx, k.Tag)
	}
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	ct, _ := e.Encrypt(ctx, k.Tag, []byte("before"), nil)
	fmt.Println("READY", k.Tag)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "readonly":
			done := make(chan error, 1)
			go func() { _, err := e.RotateKey(ctx, k.Tag); done <- err }()
			select {
			case err := <-done:
				fmt.Println("WRITE-FAILED", err)
			case <-time.After(20 * time.Second):
				fmt.Println("WEDGED")
			}
			pt, err := e.Decrypt(ctx, k.Tag, ct, nil)
			if _, err2 := e.Encrypt(ctx, k.Tag, []byte("after"), nil); err != nil || err2 != nil || string(pt) != "before" {
				fmt.Println("HOT failed", err, err2)
			} else {
				fmt.Println("HOT ok")
			}
		case "quit":
			e.Close()
			os.Exit(0)
		}
	}
}
