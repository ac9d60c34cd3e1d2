package kms_test

// Root-key rotation (issue #14 item 7): RotateRootKey re-seals every
// key's material under a new root key online, and a crash at any step
// leaves a directory that opens with exactly one of the two keys, which
// finishes or rolls the rotation back; the other is refused saying which
// key the directory is under.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/shred"
)

var newRootKey = bytes.Repeat([]byte{0x77}, memory.RootKeySize)

// rkFixture is a directory with keys of every kind and a ciphertext of
// every version, and a token-signing key.
type rkFixture struct {
	dir  string
	cts  map[string][]string // tag → ciphertexts, "pt-<tag>" under ctx "c"
	tags []string
	gen  string // the tag whose token generator is active
}

func rkSetup(t *testing.T, root []byte) *rkFixture {
	t.Helper()
	ctx := context.Background()
	f := &rkFixture{dir: t.TempDir(), cts: map[string][]string{}}
	e, err := openDir(f.dir, root)
	if err != nil {
		t.Fatal(err)
	}
	for i, spec := range []struct {
		typ        kms.KeyType
		convergent bool
		versions   int
	}{{kms.AES256, false, 3}, {kms.AES256, true, 2}, {kms.RSA2048, false, 2}, {kms.ECDSA, false, 1}, {kms.AES256, false, 1}} {
		k := createKey(t, e, fmt.Sprintf("rk%d", i), spec.typ, spec.convergent)
		f.tags = append(f.tags, k.Tag)
		for v := 1; v < spec.versions; v++ {
			if _, err := e.RotateKey(ctx, k.Tag); err != nil {
				t.Fatal(err)
			}
		}
		if spec.typ != kms.ECDSA {
			ct, err := e.Encrypt(ctx, k.Tag, []byte("pt-"+k.Tag), []byte("c"))
			if err != nil {
				t.Fatal(err)
			}
			f.cts[k.Tag] = append(f.cts[k.Tag], ct)
		}
	}
	// Ciphertexts of older versions: rotate once more and keep the old.
	for _, tag := range f.tags[:3] {
		if _, err := e.RotateKey(ctx, tag); err != nil {
			t.Fatal(err)
		}
		ct, err := e.Encrypt(ctx, tag, []byte("pt-"+tag), []byte("c"))
		if err != nil {
			t.Fatal(err)
		}
		f.cts[tag] = append(f.cts[tag], ct)
	}
	f.gen = f.tags[0]
	if _, err := e.ActivateTokenGenerator(ctx, f.gen); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

// check decrypts every ciphertext, signs with the ECDSA key, issues
// tokens, and makes a new version of every key.
func (f *rkFixture) check(t *testing.T, e *kms.Engine) {
	t.Helper()
	ctx := context.Background()
	for tag, cts := range f.cts {
		for _, ct := range cts {
			pt, err := e.Decrypt(ctx, tag, ct, []byte("c"))
			if err != nil || string(pt) != "pt-"+tag {
				t.Fatalf("decrypt %.8s: %q %v", tag, pt, err)
			}
		}
	}
	if _, err := e.Sign(ctx, f.tags[3], []byte("msg")); err != nil {
		t.Fatalf("sign: %v", err)
	}
	if _, err := e.IssueTokens(ctx, f.gen, kms.IssueTokensRequest{Subject: "s", Permissions: kms.AllPermissions()}); err != nil {
		t.Fatalf("issue tokens: %v", err)
	}
}

// rkFiles reports the rotation's leftovers in dir: the marker and next
// shred keys.
func rkLeftovers(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	if _, err := os.Stat(filepath.Join(dir, "pocketkms.rotation")); err == nil {
		out = append(out, "pocketkms.rotation")
	}
	ks, err := shred.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	nexts, err := ks.NextTags()
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range nexts {
		out = append(out, tag+shred.NextSuffix)
	}
	return out
}

func TestRotateRootKey(t *testing.T) {
	ctx := context.Background()
	f := rkSetup(t, rootKey)
	e, err := openDir(f.dir, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.RotateRootKey(ctx, newRootKey); err != nil {
		t.Fatalf("RotateRootKey: %v", err)
	}
	f.check(t, e)
	// New material after the rotation is under the new key.
	k := createKey(t, e, "after", kms.AES256, false)
	ct, err := e.Encrypt(ctx, k.Tag, []byte("pt-"+k.Tag), []byte("c"))
	if err != nil {
		t.Fatal(err)
	}
	f.cts[k.Tag] = []string{ct}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if l := rkLeftovers(t, f.dir); len(l) > 0 {
		t.Fatalf("leftovers after a finished rotation: %v", l)
	}
	// The old key is refused, saying the directory was rotated, and
	// changes nothing.
	before := dirBytes(t, f.dir)
	_, err = openDir(f.dir, rootKey)
	if !errors.Is(err, kms.ErrBackendMismatch) {
		t.Fatalf("open with the old root key after rotation: %v", err)
	}
	if after := dirBytes(t, f.dir); len(after) != len(before) {
		t.Fatal("the refused open changed the directory")
	}
	e, err = openDir(f.dir, newRootKey)
	if err != nil {
		t.Fatalf("open with the new root key: %v", err)
	}
	f.check(t, e)
	// And back again: a second rotation works the same way.
	if err := e.RotateRootKey(ctx, rootKey); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e, err = openDir(f.dir, rootKey)
	if err != nil {
		t.Fatalf("open after the second rotation: %v", err)
	}
	defer e.Close()
	f.check(t, e)
}

func TestRotateRootKeyRefusals(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e, err := openDir(dir, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	createKey(t, e, "kk1", kms.AES256, false)
	wantErr(t, e.RotateRootKey(ctx, rootKey), kms.ErrInvalidArgument)
	wantErr(t, e.RotateRootKey(ctx, newRootKey[:16]), kms.ErrInvalidArgument)
	if l := rkLeftovers(t, dir); len(l) > 0 {
		t.Fatalf("a refused rotation left %v", l)
	}
	// No directory: nothing to rotate durably.
	mem := newEngine(t)
	wantErr(t, mem.RotateRootKey(ctx, newRootKey), kms.ErrUnsupported)
	// A backend without a root key (as backend/softhsm).
	be, err := kms.New(ctx, noRootBackend{newBackend(t, rootKey)}, kms.WithDirectory(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	wantErr(t, be.RotateRootKey(ctx, newRootKey), kms.ErrUnsupported)
}

// noRootBackend hides the memory backend's rotation methods.
type noRootBackend struct{ b *memory.Backend }

func (n noRootBackend) Generate(ctx context.Context, r *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	return n.b.Generate(ctx, r)
}
func (n noRootBackend) Load(ctx context.Context, r *backend.LoadRequest) (backend.Key, error) {
	return n.b.Load(ctx, r)
}
func (n noRootBackend) Destroy(ctx context.Context, r *backend.DestroyRequest) error {
	return n.b.Destroy(ctx, r)
}
func (n noRootBackend) Close() error { return n.b.Close() }

// TestRotateRootKeyOnline: encryptions, decryptions, signatures, new keys
// and new versions go on during a rotation, with no error, and what was
// made during it opens under the new key afterwards.
func TestRotateRootKeyOnline(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e, err := openDir(dir, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for i := range 24 {
		tags = append(tags, createKey(t, e, fmt.Sprintf("on%d", i), kms.AES256, i%3 == 0).Tag)
	}
	type ctRec struct{ tag, ct, pt string }
	var (
		mu   sync.Mutex
		cts  []ctRec
		stop atomic.Bool
		wg   sync.WaitGroup
		errs = make(chan error, 16)
		ops  atomic.Int64
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				tag := tags[(w*7+i)%len(tags)]
				pt := fmt.Sprintf("w%d-%d", w, i)
				ct, err := e.Encrypt(ctx, tag, []byte(pt), []byte("c"))
				if err != nil {
					errs <- fmt.Errorf("encrypt during rotation: %w", err)
					return
				}
				got, err := e.Decrypt(ctx, tag, ct, []byte("c"))
				if err != nil || string(got) != pt {
					errs <- fmt.Errorf("decrypt during rotation: %q %w", got, err)
					return
				}
				mu.Lock()
				cts = append(cts, ctRec{tag, ct, pt})
				mu.Unlock()
				ops.Add(1)
			}
		})
	}
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			if i%2 == 0 {
				k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: fmt.Sprintf("during%d", i), Type: kms.AES256})
				if err != nil {
					errs <- fmt.Errorf("create during rotation: %w", err)
					return
				}
				ct, err := e.Encrypt(ctx, k.Tag, []byte("new"), []byte("c"))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				cts = append(cts, ctRec{k.Tag, ct, "new"})
				mu.Unlock()
			} else if _, err := e.RotateKey(ctx, tags[i%len(tags)]); err != nil {
				errs <- fmt.Errorf("rotate key during rotation: %w", err)
				return
			}
		}
	})
	// Let the load start, rotate, let it run on a little.
	for ops.Load() < 20 && len(errs) == 0 {
		time.Sleep(time.Millisecond)
	}
	rerr := e.RotateRootKey(ctx, newRootKey)
	for n := ops.Load(); ops.Load() < n+20 && len(errs) == 0; {
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if rerr != nil {
		t.Fatalf("RotateRootKey under load: %v", rerr)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = openDir(dir, newRootKey)
	if err != nil {
		t.Fatalf("open with the new root key: %v", err)
	}
	defer e.Close()
	for _, c := range cts {
		pt, err := e.Decrypt(ctx, c.tag, c.ct, []byte("c"))
		if err != nil || string(pt) != c.pt {
			t.Fatalf("after the rotation, %.8s: %q %v", c.tag, pt, err)
		}
	}
	t.Logf("%d ciphertexts made during and around the rotation decrypt under the new key", len(cts))
}

// TestRotateRootKeyCrashAtEveryStep stops a rotation at each of its steps
// as if the process died there, and checks that the directory opens with
// exactly one of the keys, that the other is refused with a message
// saying which key it is under, and that opening finishes or rolls back
// the rotation with every key intact.
func TestRotateRootKeyCrashAtEveryStep(t *testing.T) {
	ctx := context.Background()
	steps := []struct {
		step     string
		n        int
		switched bool
	}{
		{"begun", 0, false},
		{"resealed", 1, false},
		{"resealed", 4, false},
		{"resealed", 5, false}, // pass 1 done
		{"pass2", 0, false},
		{"switched", 0, true},
		{"finished", 1, true},
		{"finished", 4, true},
		{"finished", 5, true}, // before the marker goes
	}
	for _, st := range steps {
		t.Run(fmt.Sprintf("%s-%d", st.step, st.n), func(t *testing.T) {
			f := rkSetup(t, rootKey)
			e, err := openDir(f.dir, rootKey)
			if err != nil {
				t.Fatal(err)
			}
			restore := kms.SetRootRotationHook(func(step string, n int) error {
				if step == st.step && n == st.n {
					return kms.ErrRotationHookStop
				}
				return nil
			})
			err = e.RotateRootKey(ctx, newRootKey)
			restore()
			if !errors.Is(err, kms.ErrRotationHookStop) {
				t.Fatalf("the hook did not stop the rotation at %s %d: %v", st.step, st.n, err)
			}
			e.Close()
			good, bad, badSays := rootKey, newRootKey, "still under the previous root key"
			if st.switched {
				good, bad, badSays = newRootKey, rootKey, "rotated from this root key to a new one"
			}
			before := dirBytes(t, f.dir)
			_, err = openDir(f.dir, bad)
			if !errors.Is(err, kms.ErrBackendMismatch) || !strings.Contains(err.Error(), badSays) {
				t.Fatalf("open with the other key: %v, want ErrBackendMismatch saying %q", err, badSays)
			}
			if after := dirBytes(t, f.dir); len(after) != len(before) {
				t.Fatal("the refused open changed the directory")
			}
			e, err = openDir(f.dir, good)
			if err != nil {
				t.Fatalf("open with the key the directory is under: %v", err)
			}
			f.check(t, e)
			e.Close()
			if l := rkLeftovers(t, f.dir); len(l) > 0 {
				t.Fatalf("the open did not complete the recovery: %v", l)
			}
			if _, err := openDir(f.dir, bad); !errors.Is(err, kms.ErrBackendMismatch) {
				t.Fatalf("after recovery, the other key: %v", err)
			}
			// A rolled-back rotation can be run again to the end.
			if !st.switched {
				e, err = openDir(f.dir, rootKey)
				if err != nil {
					t.Fatal(err)
				}
				if err := e.RotateRootKey(ctx, newRootKey); err != nil {
					t.Fatalf("rotation after a rollback: %v", err)
				}
				e.Close()
				e, err = openDir(f.dir, newRootKey)
				if err != nil {
					t.Fatal(err)
				}
				f.check(t, e)
				e.Close()
			}
		})
	}
}

// rkDualParts returns the parts of every dual handle (see kms rootkey.go)
// among candidates.
func rkDualParts(cands [][]byte) [][]byte {
	var out [][]byte
	for _, c := range cands {
		if !bytes.HasPrefix(c, []byte("pkd1")) {
			continue
		}
		rest := c[4:]
		for len(rest) >= 12 {
			n := binary.BigEndian.Uint32(rest[8:12])
			rest = rest[12:]
			if uint64(n) > uint64(len(rest)) {
				break
			}
			out = append(out, rest[:n])
			rest = rest[n:]
		}
	}
	return out
}

// TestOldRootKeyOpensNothingAfterRotation: Badger keeps the old sealed
// handles long after the rotation rewrote them. With the old root key and
// every shred key left in the directory, none of them opens: the shred
// keys that sealed them were replaced and shredded. Before the rotation
// the same scan opens the material, so it would see a survivor.
func TestOldRootKeyOpensNothingAfterRotation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rec := &shRecord{}
	e := shOpen(t, newShBackend(t, rec), dir)
	var tags []string
	for i, typ := range []kms.KeyType{kms.AES256, kms.RSA2048} {
		k := createKey(t, e, fmt.Sprintf("old%d", i), typ, false)
		if _, err := e.RotateKey(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
		tags = append(tags, k.Tag)
	}
	if _, err := e.ActivateTokenGenerator(ctx, tags[0]); err != nil {
		t.Fatal(err)
	}
	made := rec.of(tags...)
	scan := func(withDual bool) []string {
		files := shFiles(t, dir)
		if withDual {
			for name, data := range files {
				var extra []byte
				for _, p := range rkDualParts(shCandidates(data, made)) {
					extra = append(extra, p...)
				}
				files[name] = append(bytes.Clone(data), extra...)
			}
		}
		// What unwraps under a shred key left is the new part (sealed
		// under the new root key); what counts is what the old root key
		// then opens.
		all, _ := shOpenable(t, files, made, shShredKeys(t, dir))
		var opened []string
		for _, o := range all {
			if strings.Contains(o, " opens in ") {
				opened = append(opened, o)
			}
		}
		return opened
	}
	shClose(t, e)
	if opened := scan(false); len(opened) == 0 {
		t.Fatal("the scan opens nothing before the rotation: it would not see a survivor")
	}
	e = shOpen(t, newShBackend(t, rec), dir)
	if err := e.RotateRootKey(ctx, newRootKey); err != nil {
		t.Fatal(err)
	}
	// Write on, so that Badger flushes and compacts some.
	for i := range 30 {
		createKey(t, e, fmt.Sprintf("filler%d", i), kms.AES256, false)
	}
	shClose(t, e)
	if opened := scan(true); len(opened) > 0 {
		t.Fatalf("with the old root key, after the rotation:\n%s", strings.Join(opened, "\n"))
	}
	// The new root key does open the keys.
	e, err := openDir(dir, newRootKey)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, tag := range tags[:1] {
		if _, err := e.Encrypt(ctx, tag, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBackupAcrossRootRotation: a backup taken after a root-key rotation
// restores under the new root key (and is refused under the old one,
// writing nothing); a backup taken before it still restores under the old
// key only.
func TestBackupAcrossRootRotation(t *testing.T) {
	ctx := context.Background()
	f := rkSetup(t, rootKey)
	e, err := openDir(f.dir, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	var before bytes.Buffer
	if _, err := e.Backup(ctx, &before); err != nil {
		t.Fatal(err)
	}
	if err := e.RotateRootKey(ctx, newRootKey); err != nil {
		t.Fatal(err)
	}
	var after bytes.Buffer
	if _, err := e.Backup(ctx, &after); err != nil {
		t.Fatal(err)
	}
	e.Close()
	for _, c := range []struct {
		name     string
		data     []byte
		good     []byte
		mismatch []byte
	}{{"after", after.Bytes(), newRootKey, rootKey}, {"before", before.Bytes(), rootKey, newRootKey}} {
		t.Run(c.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad")
			_, err := kms.Restore(ctx, bytes.NewReader(c.data), newBackend(t, c.mismatch), kms.WithDirectory(bad))
			if !errors.Is(err, kms.ErrBackendMismatch) {
				t.Fatalf("restore under the other root key: %v", err)
			}
			if _, err := os.Stat(bad); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refused restore left %s: %v", bad, err)
			}
			dir := filepath.Join(t.TempDir(), "restored")
			if _, err := kms.Restore(ctx, bytes.NewReader(c.data), newBackend(t, c.good), kms.WithDirectory(dir)); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			r, err := openDir(dir, c.good)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			f.check(t, r)
		})
	}
}
