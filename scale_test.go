package kms_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/cputime"
	badgerstore "github.com/pocketkms/kms/internal/store"
	"github.com/pocketkms/kms/internal/testproc"
	"github.com/pocketkms/kms/store"
)

// The scale benchmarks (issue 19) run only with -scale.keys: they build a
// data directory of that many AES256 keys once (kept under -scale.dir, by
// default in the temporary directory, and reused by later runs) and
// measure an Engine over it:
//
//	go test -run '^TestScaleResident$' -v -scale.keys 100000 .
//	go test -run '^$' -bench '^(BenchmarkRawAESGCM/1KiB|BenchmarkScale)' -cpu 1 -scale.keys 100000 .
//
// The directory is written through the store directly (a million keys
// through CreateKey would take the better part of an hour), with the
// handles as the backend makes them, not sealed under shred keys: the
// stored form of keys made before shred keys existed, or with WithStore.
// BenchmarkScaleCreateKey adds keys to it through the Engine.
var (
	scaleKeys   = flag.Int("scale.keys", 0, "run the scale benchmarks over a data directory of this many keys (0: skip them)")
	scaleEngine = flag.Bool("scale.engine", false, "build the scale directory through Engine.CreateKey (shred key files, sealed handles), as a real directory is, instead of writing records through the store")
	scaleDir    = flag.String("scale.dir", "", "where the scale benchmarks keep their data directories (default: the temporary directory)")
)

// scaleTag is the tag of the i-th key of a scale directory.
// startScaleBuild returns the backend to build dir with, after removing
// what an unfinished build left; nil and no error when a build finished.
func startScaleBuild(dir string) (*memory.Backend, error) {
	if _, err := os.Stat(filepath.Join(dir, "scale.done")); err == nil {
		return nil, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	return memory.New(rootKey)
}

// buildScaleEngine makes n AES256 keys in dir through Engine.CreateKey
// from 16 callers, as an application would (each key with its shred key
// file and sealed handle), and writes their tags, in order, to the file
// "tags". Build it on a tmpfs (-scale.dir /dev/shm) unless the syncs of
// n commits are worth waiting for.
func buildScaleEngine(dir string, n int) error {
	be, err := startScaleBuild(dir)
	if be == nil {
		return err
	}
	ctx := context.Background()
	e, err := kms.New(ctx, be, kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	if err != nil {
		return err
	}
	tags := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "scale-" + strconv.Itoa(i), Type: kms.AES256})
				if err != nil {
					errs <- err
					return
				}
				tags[i] = k.Tag
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		e.Close()
		return err
	}
	if err := e.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tags"), []byte(strings.Join(tags, "")), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "scale.done"), nil, 0o600)
}

// scaleTagsOf returns the tags of the n keys of the scale directory dir.
func scaleTagsOf(_ testing.TB, dir string, n int) scaleTags {
	if b, err := os.ReadFile(filepath.Join(dir, "tags")); err == nil {
		return scaleTags{string(b), len(b) / n}
	}
	var all strings.Builder
	for i := range n {
		all.WriteString(scaleTag(i))
	}
	return scaleTags{all.String(), len(scaleTag(0))}
}

// scaleTags holds tags of one length in one string.
type scaleTags struct {
	all  string
	size int
}

func (t scaleTags) at(i int) string { return t.all[i*t.size : (i+1)*t.size] }
func (t scaleTags) len() int        { return len(t.all) / t.size }

func scaleTag(i int) string {
	s := sha256.Sum256([]byte("pocketkms/scale/" + strconv.Itoa(i)))
	return hex.EncodeToString(s[:])
}

var scaleOnce sync.Map // dir → *sync.Once

// scaleDirectory returns the data directory of n keys, building it on
// first use.
func scaleDirectory(tb testing.TB, n int) string {
	tb.Helper()
	base := *scaleDir
	if base == "" {
		base = os.TempDir()
	}
	dir := filepath.Join(base, fmt.Sprintf("pocketkms-scale-%d", n))
	build := buildScale
	if *scaleEngine {
		dir += "-engine"
		build = buildScaleEngine
	}
	o, _ := scaleOnce.LoadOrStore(dir, new(sync.Once))
	var err error
	o.(*sync.Once).Do(func() { err = build(dir, n) })
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "scale.done")); err != nil {
		tb.Fatalf("scale directory %s was not built", dir)
	}
	return dir
}

// buildScale writes n AES256 keys into dir through the store, 200 keys
// per commit, unless an earlier run finished it.
func buildScale(dir string, n int) error {
	be, err := startScaleBuild(dir)
	if be == nil {
		return err
	}
	ctx := context.Background()
	defer be.Close()
	st, err := badgerstore.Open(badgerstore.Options{Dir: dir})
	if err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	for lo := 0; lo < n; lo += 200 {
		c := &store.Change{}
		for i := lo; i < min(n, lo+200); i++ {
			tag := scaleTag(i)
			g, err := be.Generate(ctx, &backend.GenerateRequest{Ref: backend.KeyRef{KeyTag: tag, Version: 1, Purpose: backend.PurposeCipher}, Type: kms.AES256})
			if err != nil {
				st.Close()
				return err
			}
			name := "scale-" + strconv.Itoa(i)
			c.Put(
				&store.KeyRecord{Tag: tag, Name: name, Type: string(kms.AES256), State: string(kms.StateEnabled), Seq: uint64(i + 1), CreatedAt: now, StateChangedAt: now, CurrentVersion: 1},
				&store.VersionRecord{Tag: tag, Version: 1, State: string(kms.VersionEnabled), CreatedAt: now, Handle: g.Handle},
				&store.NameRecord{Name: name, Tag: tag},
			)
		}
		if _, err := st.Apply(ctx, c); err != nil {
			st.Close()
			return err
		}
	}
	if err := st.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "scale.done"), nil, 0o600)
}

func skipScale(tb testing.TB) int {
	tb.Helper()
	if *scaleKeys <= 0 {
		tb.Skip("scale benchmark: run with -scale.keys N")
	}
	return *scaleKeys
}

func openScale(tb testing.TB, dir string) *kms.Engine {
	tb.Helper()
	e, err := kms.New(context.Background(), newBackend(tb, rootKey), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}

// BenchmarkScaleOpen is kms.New over the scale directory: every key read
// and its snapshot built (Close is not timed).
func BenchmarkScaleOpen(b *testing.B) {
	n := skipScale(b)
	dir := scaleDirectory(b, n)
	ctx := context.Background()
	for b.Loop() {
		e, err := kms.New(ctx, newBackend(b, rootKey), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := e.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkScaleEncrypt is Encrypt of 1 KiB: on the only key of a
// one-key directory (the baseline); on one key of the scale directory
// right after opening (hot), and again once every key was used (and so
// loaded) once; and on a random key of it each call, also after every key
// was used once, so that it measures the steady state, not first loads.
func BenchmarkScaleEncrypt(b *testing.B) {
	n := skipScale(b)
	ctx := context.Background()
	pt := make([]byte, 1024)
	// tags is the tags of the keys to call, in one string: a []string of
	// 100,000 tags would be as many objects of the benchmark's own for
	// the collector to walk, charged to the Engine.
	run := func(b *testing.B, e *kms.Engine, tags scaleTags, random bool) {
		b.SetBytes(1024)
		b.ReportAllocs()
		r := rand.New(rand.NewPCG(1, 2))
		defer cputime.Report(b)() // garbage collection included (-cpu 1)
		for b.Loop() {
			tag := tags.at(0)
			if random {
				tag = tags.at(r.IntN(tags.len()))
			}
			if _, err := e.Encrypt(ctx, tag, pt, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("keys=1", func(b *testing.B) {
		e := newEngine(b, kms.WithDirectory(b.TempDir()), kms.WithMaintenanceInterval(0))
		k := createKey(b, e, "one", kms.AES256, false)
		runtime.GC()
		run(b, e, scaleTags{k.Tag, len(k.Tag)}, false)
	})
	dir := scaleDirectory(b, n)
	e := openScale(b, dir)
	tags := scaleTagsOf(b, dir, n)
	hot := scaleTags{tags.at(n / 2), tags.size}
	runtime.GC()
	// The other keys are present, not loaded: as after opening.
	b.Run(fmt.Sprintf("keys=%d/hot", n), func(b *testing.B) { run(b, e, hot, false) })
	for i := range n {
		if _, err := e.Encrypt(ctx, tags.at(i), pt[:1], nil); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	// Every key loaded (used once before the timer).
	b.Run(fmt.Sprintf("keys=%d/hot-all-loaded", n), func(b *testing.B) { run(b, e, hot, false) })
	b.Run(fmt.Sprintf("keys=%d/random", n), func(b *testing.B) { run(b, e, tags, true) })
}

// BenchmarkScaleCreateKey is CreateKey through the Engine over the scale
// directory (which keeps the keys it adds), from one caller and from four
// at once.
func BenchmarkScaleCreateKey(b *testing.B) {
	n := skipScale(b)
	e := openScale(b, scaleDirectory(b, n))
	// Names are at most 15 characters: a prefix of its own per run.
	benchCreateKeys(b, e, "c"+strconv.FormatInt(time.Now().UnixNano()/1e6%(36*36*36*36*36), 36)+"-")
}

// TestScaleResident opens the scale directory in a fresh child process
// and reports its resident set: after opening, and after every key was
// used once (each key's backend key loaded).
func TestScaleResident(t *testing.T) {
	if args, ok := testproc.Child(t); ok {
		n, _ := strconv.Atoi(args[1])
		scaleResidentChild(args[0], n)
		return
	}
	n := skipScale(t)
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/status")
	}
	if raceEnabled {
		t.Skip("the race detector multiplies memory use; run without -race")
	}
	dir := scaleDirectory(t, n)
	out, r := testproc.Run(t, testproc.Options{Timeout: 10 * time.Minute}, dir, strconv.Itoa(n))
	if r.Err != nil {
		t.Fatalf("child: %v\n%s\n%s", r, strings.Join(out, "\n"), r.Stderr)
	}
	for _, line := range out {
		t.Log(line)
	}
}

func scaleResidentChild(dir string, n int) {
	fail := func(err error) {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	be, err := memory.New(rootKey)
	if err != nil {
		fail(err)
	}
	start, cpu0 := time.Now(), cputime.Process()
	e, err := kms.New(ctx, be, kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	if err != nil {
		fail(err)
	}
	defer e.Close()
	// On a busy machine the CPU time (user and system, every thread) is
	// the steadier figure.
	fmt.Printf("keys %d: opened in %v (CPU time %v)\n", n, time.Since(start).Round(time.Millisecond), (cputime.Process() - cpu0).Round(time.Millisecond))
	report := func(when string) {
		rss, peak := vmRSS()
		file := lastRSSFile
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		idle, _ := vmRSS()
		fmt.Printf("%s: resident %.1f MiB, of it %.1f MiB mapped files (%.1f MiB after a GC returned what it could; peak so far %.1f MiB), Go heap in use %.1f MiB, %.1f heap objects and %.0f live heap bytes per key\n",
			when, mib(rss), mib(file), mib(idle), mib(peak), mib(int64(ms.HeapInuse)), float64(ms.HeapObjects)/float64(n), float64(ms.HeapAlloc)/float64(n))
	}
	report("after opening")
	if p := os.Getenv("POCKETKMS_SCALE_HEAPPROFILE"); p != "" {
		// A heap profile of the opened Engine, for go tool pprof.
		if f, err := os.Create(p); err == nil {
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
	tags := scaleTagsOf(nil, dir, n)
	for i := range n {
		if _, err := e.Encrypt(ctx, tags.at(i), []byte{1}, nil); err != nil {
			fail(err)
		}
	}
	report("after one Encrypt on every key")
	if p := os.Getenv("POCKETKMS_SCALE_HEAPPROFILE"); p != "" {
		if f, err := os.Create(p + ".used"); err == nil {
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// lastRSSFile is the file-backed part of the resident set (Badger's
// mapped tables and logs) that vmRSS read last.
var lastRSSFile int64

// vmRSS returns the resident set size of this process and its peak, in
// bytes (Linux).
func vmRSS() (rss, peak int64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	kb := func(v string) int64 {
		n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		return n * 1024
	}
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			rss = kb(v)
		}
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			peak = kb(v)
		}
		if v, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			lastRSSFile = kb(v)
		}
	}
	return rss, peak
}
