//go:build linux

package kms_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/testproc"
)

// bkDiskLine is the child's report of TestBackupFileDiskFull.
type bkDiskLine struct {
	Internal bool     `json:"internal"`
	Err      string   `json:"err"`
	Files    []string `json:"files"`
}

// bkDiskChild writes a backup of one key to dir/b.pkb, then, with its
// files limited (RLIMIT_FSIZE; SIGXFSZ ignored, so writes fail with
// EFBIG, as on a full disk) to a little more than that, a backup of 21
// keys over it, and reports the failure and the files left.
func bkDiskChild(dir string) {
	ctx := context.Background()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	be, err := newBackendErr(rootKey)
	if err != nil {
		fail(err)
	}
	e, err := kms.New(ctx, be, kms.WithMaintenanceInterval(0))
	if err != nil {
		fail(err)
	}
	defer e.Close()
	if _, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "first", Type: kms.AES256}); err != nil {
		fail(err)
	}
	path := filepath.Join(dir, "b.pkb")
	first, err := e.BackupFile(ctx, path)
	if err != nil {
		fail(err)
	}
	for i := range 20 {
		if _, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: fmt.Sprintf("more-%d", i), Type: kms.AES256}); err != nil {
			fail(err)
		}
	}
	signal.Ignore(syscall.SIGXFSZ)
	lim := syscall.Rlimit{Cur: uint64(first.Size) + 1024, Max: uint64(first.Size) + 1024}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		fail(err)
	}
	_, err = e.BackupFile(ctx, path)
	var l bkDiskLine
	if err != nil {
		l.Internal, l.Err = errors.Is(err, kms.ErrInternal), err.Error()
	}
	ents, _ := os.ReadDir(dir)
	for _, ent := range ents {
		l.Files = append(l.Files, ent.Name())
	}
	json.NewEncoder(os.Stdout).Encode(l)
}

// TestBackupFileDiskFull: BackupFile on a disk that fills up (a child
// process whose files may not grow past a limit) fails with ErrInternal
// saying why, removes its temporary file and leaves the previous backup
// at the path whole.
func TestBackupFileDiskFull(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		bkDiskChild(args[0])
		return
	}
	dir := t.TempDir()
	p := testproc.Start(t, testproc.Options{}, dir)
	var l *bkDiskLine
	for line := range p.Lines() {
		var got bkDiskLine
		if json.Unmarshal([]byte(line), &got) == nil {
			l = &got
		}
	}
	if r := p.Wait(); r.Err != nil {
		t.Fatalf("child: %v\n%s", r.Err, r.Stderr)
	}
	if l == nil {
		t.Fatal("the child reported nothing")
	}
	if l.Err == "" {
		t.Fatal("BackupFile succeeded past the file-size limit")
	}
	if !l.Internal || !strings.Contains(l.Err, "file too large") {
		t.Fatalf("BackupFile on a full disk: %q (ErrInternal: %v), want ErrInternal naming the cause", l.Err, l.Internal)
	}
	t.Logf("BackupFile past the limit: %s", l.Err)
	if !slices.Equal(l.Files, []string{"b.pkb"}) {
		t.Fatalf("files left: %q, want only the previous backup", l.Files)
	}
	f, err := os.Open(filepath.Join(dir, "b.pkb"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := kms.VerifyBackup(context.Background(), f)
	if err != nil || info.Keys != 1 {
		t.Fatalf("the previous backup after the failed one: %v (%v keys)", err, info)
	}
}

func newBackendErr(root []byte) (*memory.Backend, error) { return memory.New(root) }
