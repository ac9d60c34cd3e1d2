package kms_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/testproc"
)

// maxResidentBytes is the budget for an Engine on an empty persisted
// directory (Badger's defaults alone would reserve about 88 MB).
const maxResidentBytes = 40 << 20

// TestResidentMemory opens an Engine on an empty directory in a fresh child
// process and reads its resident set size from /proc.
func TestResidentMemory(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		footprintChild(args[0])
		return
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/status")
	}
	if raceEnabled {
		t.Skip("the race detector multiplies memory use; run without -race")
	}
	out, r := testproc.Run(t, testproc.Options{Timeout: time.Minute}, t.TempDir())
	if r.Err != nil {
		t.Fatalf("child: %v\n%s\n%s", r, strings.Join(out, "\n"), r.Stderr)
	}
	var rss int64
	for _, line := range out {
		if v, ok := strings.CutPrefix(line, "RSS "); ok {
			rss, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if rss == 0 {
		t.Fatalf("child printed no RSS:\n%s\n%s", strings.Join(out, "\n"), r.Stderr)
	}
	t.Logf("resident set of an Engine on an empty directory: %.1f MiB", float64(rss)/(1<<20))
	if rss > maxResidentBytes {
		t.Fatalf("resident set %d bytes exceeds %d", rss, maxResidentBytes)
	}
}

func footprintChild(dir string) {
	be, err := memory.New(rootKey)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	e, err := kms.New(context.Background(), be, kms.WithDirectory(dir))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	defer e.Close()
	runtime.GC()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			fmt.Printf("RSS %d\n", kb*1024)
		}
	}
}
