package kms_test

// Destroyed means unrecoverable (issue #14 item 1): once a key is
// destroyed, nothing in its data directory — Badger's tables and logs
// keep old values long after their records were deleted — opens its
// material, even with the root key.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/shred"
	badgerstore "github.com/pocketkms/kms/internal/store"
	kstore "github.com/pocketkms/kms/store"
)

// shMade is one piece of material a backend made: what it was made for,
// and the sealed handle the backend returned.
type shMade struct {
	ref        backend.KeyRef
	typ        backend.KeyType
	convergent bool
	handle     []byte
}

// shRecord is what shBackends sharing it were asked for.
type shRecord struct {
	mu        sync.Mutex
	made      []shMade
	destroyed []backend.DestroyRequest
}

// shBackend is the memory backend under rootKey, recording every handle
// it makes and every Destroy it is asked for. The Engine closes its
// backend; a new shBackend on the same record continues it.
type shBackend struct {
	*memory.Backend
	*shRecord
}

func newShBackend(t *testing.T, rec *shRecord) *shBackend {
	return &shBackend{Backend: newBackend(t, rootKey), shRecord: rec}
}

func (b *shBackend) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	resp, err := b.Backend.Generate(ctx, req)
	if err == nil {
		b.mu.Lock()
		b.made = append(b.made, shMade{req.Ref, req.Type, req.Convergent, bytes.Clone(resp.Handle)})
		b.mu.Unlock()
	}
	return resp, err
}

func (b *shBackend) Destroy(ctx context.Context, req *backend.DestroyRequest) error {
	b.mu.Lock()
	b.destroyed = append(b.destroyed, backend.DestroyRequest{Ref: req.Ref, Type: req.Type, Handle: bytes.Clone(req.Handle)})
	b.mu.Unlock()
	return b.Backend.Destroy(ctx, req)
}

// of returns what was made for the key tags given.
func (b *shRecord) of(tags ...string) []shMade {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []shMade
	for _, m := range b.made {
		if slices.Contains(tags, m.ref.KeyTag) {
			out = append(out, m)
		}
	}
	return out
}

func shOpen(t *testing.T, be backend.Backend, dir string, opts ...kms.Option) *kms.Engine {
	t.Helper()
	e, err := kms.New(context.Background(), be, append([]kms.Option{kms.WithDirectory(dir), kms.WithMaintenanceInterval(0)}, opts...)...)
	if err != nil {
		t.Fatalf("open %s: %v", filepath.Base(dir), err)
	}
	return e
}

func shClose(t *testing.T, e *kms.Engine) {
	t.Helper()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// shFiles reads every file under dir, recursively (Badger's tables, logs
// and manifest, the integrity and check records, the shred keys), without
// the zeros Badger preallocates at their ends.
func shFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = bytes.TrimRight(b, "\x00")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// shShredKeys returns every shred key still in dir.
func shShredKeys(t *testing.T, dir string) []*shred.Key {
	t.Helper()
	ks, err := shred.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks.Close)
	tags, err := ks.Tags()
	if err != nil {
		t.Fatal(err)
	}
	var out []*shred.Key
	for _, tag := range tags {
		k, ok, err := ks.Get(tag)
		if err != nil || !ok {
			t.Fatalf("shred key %s: %v %v", tag, ok, err)
		}
		out = append(out, k)
	}
	return out
}

// shPlainLeaks returns where a plain sealed handle (or a 16-byte window of
// one, raw or in the base64 the store's JSON records use) appears.
func shPlainLeaks(files map[string][]byte, made []shMade) []string {
	var out []string
	for name, data := range files {
		for _, m := range made {
			b64 := base64.StdEncoding.EncodeToString(m.handle)
			hit := false
			for off := 0; off+16 <= len(m.handle) && !hit; off += 8 {
				hit = bytes.Contains(data, m.handle[off:off+16])
			}
			for off := 0; off+24 <= len(b64) && !hit; off += 8 {
				hit = bytes.Contains(data, []byte(b64[off:off+24]))
			}
			if hit {
				out = append(out, fmt.Sprintf("%s holds the plain handle of %s", name, m.ref))
			}
		}
	}
	slices.Sort(out)
	return out
}

var shBase64Run = regexp.MustCompile(`[A-Za-z0-9+/]{16,}={0,2}`)

// shCandidates returns every value in data that may be a stored handle:
// each base64 run decoded (the store's records are JSON, where handles
// are base64), and each raw window that starts like a handle (0x01 for
// the memory backend's, "pkw1" for a wrapped one) of a length one of
// made's handles has, plain or wrapped.
func shCandidates(data []byte, made []shMade) [][]byte {
	var out [][]byte
	for _, run := range shBase64Run.FindAll(data, -1) {
		for skip := 0; skip < 4 && skip < len(run); skip++ {
			if b, err := base64.StdEncoding.DecodeString(string(run[skip:])); err == nil {
				out = append(out, b)
				break
			}
		}
	}
	lens := map[int]bool{}
	for _, m := range made {
		lens[len(m.handle)] = true
		lens[len(m.handle)+shred.WrapOverhead] = true
	}
	for i := range data {
		if data[i] != 0x01 && !shred.IsWrapped(data[i:]) {
			continue
		}
		for n := range lens {
			if i+n <= len(data) {
				out = append(out, data[i:i+n])
			}
		}
	}
	return out
}

// shOpenable tries to open every candidate value of every file as the
// material of each of made: with the root key (the memory backend's Load
// for the KeyRef, type and flag the material was made for), and, for a
// wrapped value, first unwrapped under every shred key given (whatever
// its tag). It returns what opened, and the wrapped values that unwrapped
// under their own key's shred key.
func shOpenable(t *testing.T, files map[string][]byte, made []shMade, keys []*shred.Key) (opened []string, wrapped [][]byte) {
	t.Helper()
	ctx := context.Background()
	be := newBackend(t, rootKey)
	found := map[string]bool{}
	load := func(name string, m shMade, h []byte, how string) {
		if k, err := be.Load(ctx, &backend.LoadRequest{Ref: m.ref, Type: m.typ, Convergent: m.convergent, Handle: h}); err == nil && k != nil {
			found[fmt.Sprintf("%s opens in %s%s", m.ref, name, how)] = true
		}
	}
	for name, data := range files {
		for _, c := range shCandidates(data, made) {
			for _, m := range made {
				if !shred.IsWrapped(c) {
					if len(c) == len(m.handle) {
						load(name, m, c, "")
					}
					continue
				}
				for _, k := range keys {
					// A shred key binds its own tag: what another key's
					// opens is that key's handle, which the Load for m's
					// KeyRef then refuses.
					if h, err := k.Unwrap(c, string(m.ref.Purpose), m.ref.Version); err == nil {
						if k.Tag() == m.ref.KeyTag {
							found[fmt.Sprintf("%s unwraps under its shred key in %s", m.ref, name)] = true
							if !slices.ContainsFunc(wrapped, func(w []byte) bool { return bytes.Equal(w, c) }) {
								wrapped = append(wrapped, bytes.Clone(c))
							}
						}
						load(name, m, h, " once unwrapped")
					}
				}
			}
		}
	}
	for f := range found {
		opened = append(opened, f)
	}
	slices.Sort(opened)
	return opened, wrapped
}

// shContains reports whether a file holds v, raw or in base64.
func shContains(files map[string][]byte, v []byte) bool {
	b64 := []byte(base64.StdEncoding.EncodeToString(v))
	for _, data := range files {
		if bytes.Contains(data, v) || bytes.Contains(data, b64) {
			return true
		}
	}
	return false
}

// TestDestroyedKeyUnrecoverable is issue #14 item 1's test. Two keys (an
// AES256 key with three versions and a rotated token generator, and an
// RSA2048 key) are destroyed beside a key that stays; the directory is
// then reopened and written to several times. Every file of the directory
// is scanned for anything that could be a stored handle, and each is
// tried as the destroyed keys' material: with the root key, and unwrapped
// under every shred key left. Nothing opens; the backend's plain handles
// never appear in any file, before or after; and before the destruction
// the same scan does open the keys' current material, so it would see a
// handle that survived.
func TestDestroyedKeyUnrecoverable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock()
	be := &shRecord{}
	e := shOpen(t, newShBackend(t, be), dir, kms.WithClock(clk))
	doomed := createKey(t, e, "doomed", kms.AES256, false)
	doomedRSA := createKey(t, e, "doomedrsa", kms.RSA2048, false)
	kept := createKey(t, e, "kept", kms.AES256, true)
	for range 2 {
		if _, err := e.RotateKey(ctx, doomed.Tag); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.ActivateTokenGenerator(ctx, doomed.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.RotateTokenGenerator(ctx, doomed.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.IssueTokens(ctx, doomed.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "s"}); err != nil {
		t.Fatal(err)
	}
	ct, err := e.Encrypt(ctx, doomed.Tag, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	keptCT, err := e.Encrypt(ctx, kept.Tag, []byte("kept"), []byte("c"))
	if err != nil {
		t.Fatal(err)
	}
	shClose(t, e)
	made := be.of(doomed.Tag, doomedRSA.Tag)
	if len(made) != 6 {
		t.Fatalf("%d pieces of material made for the doomed keys, want 6", len(made))
	}

	// Before: the handles are stored wrapped only, and the scan opens the
	// current material of both keys (version 3 of doomed is its newest
	// version, generation 2 its current generator).
	files := shFiles(t, dir)
	if leaks := shPlainLeaks(files, be.of(doomed.Tag, doomedRSA.Tag, kept.Tag)); len(leaks) > 0 {
		t.Errorf("before destruction, a backend handle is stored unwrapped:\n%s", strings.Join(leaks, "\n"))
	}
	before, storedWrapped := shOpenable(t, files, made, shShredKeys(t, dir))
	for _, want := range []backend.KeyRef{
		{KeyTag: doomed.Tag, Version: 3, Purpose: backend.PurposeCipher},
		{KeyTag: doomed.Tag, Version: 2, Purpose: backend.PurposeTokenSigning},
		{KeyTag: doomedRSA.Tag, Version: 1, Purpose: backend.PurposeCipher},
	} {
		if !slices.ContainsFunc(before, func(s string) bool { return strings.HasPrefix(s, want.String()+" opens in ") }) {
			t.Fatalf("before destruction the scan does not open %s: it would miss a surviving handle (found: %v)", want, before)
		}
	}

	e = shOpen(t, newShBackend(t, be), dir, kms.WithClock(clk))
	for _, k := range []*kms.Key{doomed, doomedRSA} {
		if _, err := e.RequestKeyDeletion(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(kms.DeletionDelay)
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	shClose(t, e)
	// Reopen-and-write cycles: Badger flushes, rewrites its logs and
	// compacts as it likes; none of that may bring anything back.
	for i := range 4 {
		e = shOpen(t, newShBackend(t, be), dir, kms.WithClock(clk))
		createKey(t, e, fmt.Sprintf("cycle%d", i), kms.ECDSA, false)
		if _, err := e.RotateKey(ctx, kept.Tag); err != nil {
			t.Fatal(err)
		}
		if _, err := e.AddAllowedIPs(ctx, kept.Tag, []string{fmt.Sprintf("10.0.%d.0/24", i)}); err != nil {
			t.Fatal(err)
		}
		shClose(t, e)
	}

	files = shFiles(t, dir)
	keys := shShredKeys(t, dir)
	for _, k := range keys {
		if k.Tag() == doomed.Tag || k.Tag() == doomedRSA.Tag {
			t.Fatalf("the shred key of destroyed key %s is still in the directory", k.Tag())
		}
	}
	if len(keys) != 5 {
		t.Errorf("%d shred keys left, want 5 (kept and four cycle keys)", len(keys))
	}
	if leaks := shPlainLeaks(files, be.of(doomed.Tag, doomedRSA.Tag, kept.Tag)); len(leaks) > 0 {
		t.Errorf("a backend handle is stored unwrapped:\n%s", strings.Join(leaks, "\n"))
	}
	if opened, _ := shOpenable(t, files, made, keys); len(opened) > 0 {
		t.Errorf("material of a destroyed key opens from the directory:\n%s", strings.Join(opened, "\n"))
	}
	// The wrapped handles themselves may well still be in Badger's files:
	// say how many, so a reader sees what the test defends against.
	left := 0
	for _, w := range storedWrapped {
		if shContains(files, w) {
			left++
		}
	}
	t.Logf("%d of the %d wrapped handles of the destroyed keys seen before the destruction are still in Badger's files; none opens", left, len(storedWrapped))

	e = shOpen(t, newBackend(t, rootKey), dir, kms.WithClock(clk))
	defer e.Close()
	for _, k := range []*kms.Key{doomed, doomedRSA} {
		if _, err := e.GetKey(ctx, k.Tag); !errors.Is(err, kms.ErrKeyNotFound) {
			t.Fatalf("destroyed key after reopen: %v", err)
		}
	}
	if _, err := e.Decrypt(ctx, doomed.Tag, ct, nil); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("decrypt with the destroyed key: %v", err)
	}
	if pt, err := e.Decrypt(ctx, kept.Tag, keptCT, []byte("c")); err != nil || string(pt) != "kept" {
		t.Fatalf("the kept key: %q %v", pt, err)
	}
}

// shDueKey makes, in a new directory, an AES256 key with two versions and
// an active token generator, requests its deletion and moves the clock
// past its destruction time; the Engine is closed.
func shDueKey(t *testing.T, be backend.Backend) (dir string, clk *fakeClock, tag string) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	clk = newFakeClock()
	e := shOpen(t, be, dir, kms.WithClock(clk))
	k := createKey(t, e, "doomed", kms.AES256, false)
	if _, err := e.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "kept", kms.ECDSA, false)
	if _, err := e.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	shClose(t, e)
	clk.Advance(kms.DeletionDelay)
	return dir, clk, k.Tag
}

// TestDestroyDueKeyAfterReopen: a key loaded already due for destruction
// is loaded without opening its handles, whatever became of its shred
// key, and the next Maintain destroys it without error. With the shred
// key intact the backend is given the plain handles (as an HSM needs
// them); with it gone — a destruction interrupted after deleting it, once
// the backend material was destroyed — or damaged, the records go
// without a backend call. The shred key's slot is zeros afterwards.
func TestDestroyDueKeyAfterReopen(t *testing.T) {
	for _, tc := range []struct {
		name     string
		damage   func(t *testing.T, dir, tag string)
		backend  bool // the backend is asked to destroy the material
		shredded bool // the shred key is gone before
	}{
		{"intact", func(*testing.T, string, string) {}, true, false},
		{"shred key deleted", func(t *testing.T, dir, tag string) {
			shEditSlot(t, dir, tag, false, func(b []byte) { clear(b) })
		}, false, true},
		{"shred key damaged", func(t *testing.T, dir, tag string) {
			shEditSlot(t, dir, tag, false, func(b []byte) { b[7] ^= 1 })
		}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			made := &shRecord{}
			dir, clk, tag := shDueKey(t, newShBackend(t, made))
			off, _, err := shred.SlotOffset(dir, tag, false)
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, dir, tag)
			be := newShBackend(t, &shRecord{})
			e := shOpen(t, be, dir, kms.WithClock(clk))
			if k, err := e.GetKey(ctx, tag); err != nil || k.State != kms.StateRevoked {
				t.Fatalf("due key after reopen: %+v %v", k, err)
			}
			if err := e.Maintain(ctx); err != nil {
				t.Fatalf("Maintain: %v", err)
			}
			if _, err := e.GetKey(ctx, tag); !errors.Is(err, kms.ErrKeyNotFound) {
				t.Fatalf("after Maintain: %v", err)
			}
			raw, err := os.ReadFile(shSlotFile(dir))
			if err != nil {
				t.Fatal(err)
			}
			if shHasShredKey(t, dir, tag, false) || !bytes.Equal(raw[off:off+shred.SlotSize], make([]byte, shred.SlotSize)) {
				t.Fatal("the shred key's slot is not zeros after destruction")
			}
			var want []backend.DestroyRequest
			if tc.backend {
				for _, m := range made.of(tag) {
					want = append(want, backend.DestroyRequest{Ref: m.ref, Type: m.typ, Handle: m.handle})
				}
			}
			got := be.destroyed
			if len(got) != len(want) {
				t.Fatalf("%d backend Destroy calls, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i].Ref != want[i].Ref || !bytes.Equal(got[i].Handle, want[i].Handle) {
					t.Fatalf("Destroy %d: %s, want %s with the handle the backend made", i, got[i].Ref, want[i].Ref)
				}
			}
			shClose(t, e)
			e = shOpen(t, newBackend(t, rootKey), dir, kms.WithClock(clk))
			defer e.Close()
			if _, err := e.GetKey(ctx, tag); !errors.Is(err, kms.ErrKeyNotFound) {
				t.Fatalf("destroyed key after another reopen: %v", err)
			}
			if p, err := e.ListKeys(ctx, kms.ListKeysRequest{}); err != nil || p.TotalCount != 1 {
				t.Fatalf("keys left: %+v %v", p, err)
			}
		})
	}
}

// TestShredKeyLossRefusesKey: a key that is not due for destruction and
// whose shred key is missing, damaged or another key's fails New with
// ErrInternal naming the key, removes no shred key, and opens again once
// the file is back.
func TestShredKeyLossRefusesKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := shOpen(t, newBackend(t, rootKey), dir)
	k := createKey(t, e, "victim", kms.AES256, false)
	other := createKey(t, e, "other", kms.AES256, false)
	ct, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	shClose(t, e)
	good, err := os.ReadFile(shSlotFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	var otherSlot []byte
	shEditSlot(t, dir, other.Tag, false, func(b []byte) { otherSlot = bytes.Clone(b) })
	for _, tc := range []struct {
		name   string
		damage func(slot []byte)
	}{
		{"missing", func(b []byte) { clear(b) }},
		{"damaged", func(b []byte) { b[100] ^= 0x40 }},
		{"another key's", func(b []byte) { copy(b, otherSlot) }},
		{"torn", func(b []byte) { clear(b[90:]) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(shSlotFile(dir), good, 0o600); err != nil {
				t.Fatal(err)
			}
			shEditSlot(t, dir, k.Tag, false, tc.damage)
			before := dirBytes(t, filepath.Join(dir, shred.DirName))
			_, err := openDir(dir, rootKey)
			if !errors.Is(err, kms.ErrInternal) || !strings.Contains(err.Error(), k.Tag) {
				t.Fatalf("New: %v, want ErrInternal naming %s", err, k.Tag)
			}
			var ke *kms.Error
			if !errors.As(err, &ke) || ke.KeyTag != k.Tag {
				t.Fatalf("New: %v is not a *kms.Error for the key", err)
			}
			if after := dirBytes(t, filepath.Join(dir, shred.DirName)); !maps.Equal(before, after) {
				t.Fatal("the refused open changed the shred directory")
			}
		})
	}
	if err := os.WriteFile(shSlotFile(dir), good, 0o600); err != nil {
		t.Fatal(err)
	}
	e, err = openDir(dir, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if pt, err := e.Decrypt(ctx, k.Tag, ct, nil); err != nil || string(pt) != "x" {
		t.Fatalf("decrypt once the shred key is back: %q %v", pt, err)
	}
}

// TestOrphanShredKeysRemoved: a shred key no record names (its key's
// commit never landed) and the temporary file of an interrupted creation
// are removed when the Engine opens; a creation whose commit fails
// removes its shred key at once; the keys of live keys stay.
func TestOrphanShredKeysRemoved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := shOpen(t, newBackend(t, rootKey), dir)
	k := createKey(t, e, "live", kms.AES256, false)
	// A commit refused by the store (the name is taken) leaves nothing.
	if _, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "LIVE", Type: kms.AES256}); !errors.Is(err, kms.ErrAlreadyExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	names := func() []string {
		ents, err := os.ReadDir(filepath.Join(dir, shred.DirName))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	tags := func() []string {
		ks, err := shred.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer ks.Close()
		tags, err := ks.Tags()
		if err != nil {
			t.Fatal(err)
		}
		return tags
	}
	if got, names := tags(), names(); !slices.Equal(got, []string{k.Tag}) || !slices.Equal(names, []string{shred.SlotFile}) {
		t.Fatalf("shred keys after a failed create: %v in %v", got, names)
	}
	shClose(t, e)

	orphan := strings.Repeat("0f", 32)
	ks, err := shred.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Create(orphan); err != nil {
		t.Fatal(err)
	}
	ks.Close()
	tmp := strings.Repeat("1e", 32) + ".tmp"
	if err := os.WriteFile(filepath.Join(dir, shred.DirName, tmp), []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A refused open removes nothing.
	if _, err := openDir(dir, otherRootKey); !errors.Is(err, kms.ErrBackendMismatch) {
		t.Fatalf("wrong root key: %v", err)
	}
	if got, names := tags(), names(); len(got) != 2 || len(names) != 2 {
		t.Fatalf("a refused open changed the shred directory: %v in %v", got, names)
	}
	e = shOpen(t, newBackend(t, rootKey), dir)
	defer e.Close()
	if got, names := tags(), names(); !slices.Equal(got, []string{k.Tag}) || !slices.Equal(names, []string{shred.SlotFile}) {
		t.Fatalf("shred keys after open: %v in %v, want only the live key's", got, names)
	}
	if _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
}

// TestHandlesWithoutShredKey: a key whose handles were stored as the
// backend made them (a store written before shred keys existed; here
// Badger given with WithStore, which keeps none) loads and works in a
// directory Engine, keeps its new handles as they are, and is destroyed
// without error. An in-memory Engine makes no shred directory either.
func TestHandlesWithoutShredKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock()
	st, err := badgerstore.Open(badgerstore.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithStore(st), kms.WithClock(clk), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	old := createKey(t, e, "legacy", kms.AES256, false)
	ct, err := e.Encrypt(ctx, old.Tag, []byte("old"), nil)
	if err != nil {
		t.Fatal(err)
	}
	shClose(t, e)
	if _, err := os.Stat(filepath.Join(dir, shred.DirName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("WithStore made a shred directory (%v)", err)
	}

	e = shOpen(t, newBackend(t, rootKey), dir, kms.WithClock(clk))
	if pt, err := e.Decrypt(ctx, old.Tag, ct, nil); err != nil || string(pt) != "old" {
		t.Fatalf("legacy key: %q %v", pt, err)
	}
	if _, err := e.RotateKey(ctx, old.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ActivateTokenGenerator(ctx, old.Tag); err != nil {
		t.Fatal(err)
	}
	fresh := createKey(t, e, "fresh", kms.AES256, false)
	shClose(t, e)

	st, err = badgerstore.Open(badgerstore.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Load(ctx)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	wrapped := func(kd *kstore.KeyData) []bool {
		var out []bool
		for _, v := range kd.Versions {
			out = append(out, shred.IsWrapped(v.Handle))
		}
		if kd.Generator != nil {
			out = append(out, shred.IsWrapped(kd.Generator.Handle))
		}
		return out
	}
	for _, kd := range c.Keys {
		want := []bool{false, false, false}
		if kd.Key.Tag == fresh.Tag {
			want = []bool{true}
		}
		if got := wrapped(kd); !slices.Equal(got, want) {
			t.Fatalf("key %s: handles wrapped %v, want %v", kd.Key.Name, got, want)
		}
	}

	e = shOpen(t, newBackend(t, rootKey), dir, kms.WithClock(clk))
	if _, err := e.RequestKeyDeletion(ctx, old.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay)
	if err := e.Maintain(ctx); err != nil {
		t.Fatalf("destroying a key without a shred key: %v", err)
	}
	shClose(t, e)

	mem := newEngine(t)
	createKey(t, mem, "inmemory", kms.AES256, false)
	if _, err := os.Stat(shred.DirName); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an in-memory Engine made a shred directory (%v)", err)
	}
}

// shSlotFile is the shred slot file of the data directory dir.
func shSlotFile(dir string) string { return filepath.Join(dir, shred.DirName, shred.SlotFile) }

// shEditSlot applies edit to the slot holding tag's shred key (next: its
// next key) in dir's slot file, and writes the file back; it fails the
// test when tag has no such slot. It returns the slot's offset.
func shEditSlot(t *testing.T, dir, tag string, next bool, edit func(slot []byte)) int64 {
	t.Helper()
	off, ok, err := shred.SlotOffset(dir, tag, next)
	if err != nil || !ok {
		t.Fatalf("no shred key slot for %s: %v", tag, err)
	}
	raw, err := os.ReadFile(shSlotFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	edit(raw[off : off+shred.SlotSize])
	if err := os.WriteFile(shSlotFile(dir), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return off
}

// shHasShredKey reports whether tag has a shred key (next: a next key)
// in dir: a valid slot, or a file of the former one-file-per-key layout.
func shHasShredKey(t *testing.T, dir, tag string, next bool) bool {
	t.Helper()
	if _, ok, err := shred.SlotOffset(dir, tag, next); err != nil || ok {
		if err != nil {
			t.Fatal(err)
		}
		return true
	}
	name := tag
	if next {
		name += shred.NextSuffix
	}
	_, err := os.Stat(filepath.Join(dir, shred.DirName, name))
	return err == nil
}

// shToLegacy rewrites dir's shred keys in the layout written before the
// slot file (one file per key: <tag>, <tag>.next, each "PKSK" ‖ 0x01 ‖
// key ‖ CRC-32C("PKSK" ‖ 0x01 ‖ tag ‖ key)) and removes the slot file:
// a directory as the former code left it. It reads the slots as the
// package documentation lays them out.
func shToLegacy(t *testing.T, dir string) {
	t.Helper()
	raw, err := os.ReadFile(shSlotFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	crc := crc32.MakeTable(crc32.Castagnoli)
	for off := 0; off+shred.SlotSize <= len(raw); off += shred.SlotSize {
		slot := raw[off : off+shred.SlotSize]
		if string(slot[:4]) != "PKSS" {
			continue
		}
		tag, key := string(slot[16:80]), slot[80:112]
		name := tag
		if slot[5] == 2 {
			name += shred.NextSuffix
		}
		frame := append([]byte("PKSK\x01"), key...)
		sum := crc32.Update(crc32.Update(crc32.Checksum([]byte("PKSK\x01"), crc), crc, []byte(tag)), crc, key)
		frame = binary.BigEndian.AppendUint32(frame, sum)
		if err := os.WriteFile(filepath.Join(dir, shred.DirName, name), frame, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(shSlotFile(dir)); err != nil {
		t.Fatal(err)
	}
}

// TestShredLegacyLayout: a directory whose shred keys are one file per
// key (written before the slot file) is verified read-only without a
// write, and the first New moves the keys into the slot file (the files
// shredded): every key decrypts what it encrypted before, a backup of it
// restores into a new directory in the slot layout, and a destruction
// shreds the moved key.
func TestShredLegacyLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock()
	e := shOpen(t, newBackend(t, rootKey), dir, kms.WithClock(clk))
	var keys []*kms.Key
	var cts []string
	for _, name := range []string{"alpha", "bravo", "charlie"} {
		k := createKey(t, e, name, kms.AES256, false)
		ct, err := e.Encrypt(ctx, k.Tag, []byte(name), nil)
		if err != nil {
			t.Fatal(err)
		}
		keys, cts = append(keys, k), append(cts, ct)
	}
	shClose(t, e)
	shToLegacy(t, dir)

	before := treeState(t, dir)
	rep, err := kms.VerifyDirectory(ctx, newBackend(t, rootKey), dir)
	if err != nil || len(rep.Problems) != 0 || rep.Keys != 3 {
		t.Fatalf("verify of the former layout: %+v %v", rep, err)
	}
	if after := treeState(t, dir); after != before {
		t.Fatalf("verify changed the directory:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	e = shOpen(t, newBackend(t, rootKey), dir, kms.WithClock(clk))
	ents, err := os.ReadDir(filepath.Join(dir, shred.DirName))
	if err != nil || len(ents) != 1 || ents[0].Name() != shred.SlotFile {
		t.Fatalf("shred directory after the migrating open: %v %v", ents, err)
	}
	for i, k := range keys {
		if pt, err := e.Decrypt(ctx, k.Tag, cts[i], nil); err != nil || string(pt) != k.Name {
			t.Fatalf("key %s after migration: %q %v", k.Name, pt, err)
		}
	}
	// A backup of it restores into a new directory in the slot layout.
	var backup bytes.Buffer
	if _, err := e.Backup(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	if _, err := kms.Restore(ctx, &backup, newBackend(t, rootKey), kms.WithDirectory(restored)); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(filepath.Join(restored, shred.DirName)); err != nil || len(ents) != 1 || ents[0].Name() != shred.SlotFile {
		t.Fatalf("restored shred directory: %v %v", ents, err)
	}
	for _, k := range keys {
		if !shHasShredKey(t, restored, k.Tag, false) {
			t.Fatalf("restored key %s has no shred key slot", k.Name)
		}
	}
	re := shOpen(t, newBackend(t, rootKey), restored, kms.WithClock(clk))
	for i, k := range keys {
		if pt, err := re.Decrypt(ctx, k.Tag, cts[i], nil); err != nil || string(pt) != k.Name {
			t.Fatalf("restored key %s: %q %v", k.Name, pt, err)
		}
	}
	shClose(t, re)
	if _, err := e.RequestKeyDeletion(ctx, keys[0].Tag); err != nil {
		t.Fatal(err)
	}
	shClose(t, e)
	if !shHasShredKey(t, dir, keys[0].Tag, false) {
		t.Fatal("a key pending deletion lost its shred key")
	}
	clk.Advance(kms.DeletionDelay + time.Hour)
	e = shOpen(t, newBackend(t, rootKey), dir, kms.WithClock(clk))
	defer e.Close()
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if shHasShredKey(t, dir, keys[0].Tag, false) {
		t.Fatal("the destroyed key's shred key is left")
	}
	for i, k := range keys[1:] {
		if pt, err := e.Decrypt(ctx, k.Tag, cts[i+1], nil); err != nil || string(pt) != k.Name {
			t.Fatalf("key %s after reopen: %q %v", k.Name, pt, err)
		}
	}
}
