package kms_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/store/storetest"
	"github.com/pocketkms/kms/token"
)

// bkMsg is what the fixture encrypts and signs.
var bkMsg = []byte("kept across a backup")

// bkCT is a ciphertext and what it decrypts to.
type bkCT struct {
	tag, ct string
	ctx     []byte
}

// bkSig is a signature of bkMsg.
type bkSig struct{ tag, sig string }

// bkFixture is what a source Engine made and a restored one must still
// do.
type bkFixture struct {
	cts     []bkCT
	sigs    []bkSig
	conv    bkCT // a convergent ciphertext: the restored key makes the same
	tok     string
	revoked string
	tokTag  string
	acl     *kms.ACL
	limit   *kms.KeyRateLimit
	keys    map[string]*kms.Key // tag → key as the source reports it
	gone    string              // the tag of a key destroyed before the backup
}

// bkPopulate makes keys of every type on e: rotated versions with a
// ciphertext each, signatures, a convergent key, a token generator with a
// revoked token, an allow-list, a rate limit, a disabled key and version,
// and a key destroyed (clk past its deletion time, then Maintain).
func bkPopulate(t testing.TB, e *kms.Engine, clk *fakeClock) *bkFixture {
	t.Helper()
	ctx := context.Background()
	fx := &bkFixture{keys: map[string]*kms.Key{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	gone := createKey(t, e, "gone", kms.AES256, false)
	fx.gone = gone.Tag
	_, err := e.RequestKeyDeletion(ctx, gone.Tag)
	must(err)
	clk.Advance(kms.DeletionDelay + time.Minute)
	must(e.Maintain(ctx))
	if _, err := e.GetKey(ctx, gone.Tag); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("the destroyed key is still there: %v", err)
	}
	aes := createKey(t, e, "aes", kms.AES256, false)
	for i := range 3 {
		c := []byte{byte(i)}
		ct, err := e.Encrypt(ctx, aes.Tag, bkMsg, c)
		must(err)
		fx.cts = append(fx.cts, bkCT{aes.Tag, ct, c})
		_, err = e.RotateKey(ctx, aes.Tag)
		must(err)
	}
	_, err = e.DisableKeyVersion(ctx, aes.Tag, 2)
	must(err)
	conv := createKey(t, e, "conv", kms.AES256, true)
	fx.conv.ct, err = e.Encrypt(ctx, conv.Tag, bkMsg, []byte("c"))
	must(err)
	fx.conv.tag, fx.conv.ctx = conv.Tag, []byte("c")
	fx.cts = append(fx.cts, fx.conv)
	for _, typ := range []kms.KeyType{kms.RSA2048, kms.ECDSA} {
		k := createKey(t, e, "sig-"+string(typ), typ, false)
		for range 2 {
			sig, err := e.Sign(ctx, k.Tag, bkMsg)
			must(err)
			fx.sigs = append(fx.sigs, bkSig{k.Tag, sig})
			if typ == kms.RSA2048 {
				ct, err := e.Encrypt(ctx, k.Tag, bkMsg, nil)
				must(err)
				fx.cts = append(fx.cts, bkCT{k.Tag, ct, nil})
			}
			_, err = e.RotateKey(ctx, k.Tag)
			must(err)
		}
	}
	tk := createKey(t, e, "tokens", kms.AES256, false)
	fx.tokTag = tk.Tag
	_, err = e.ActivateTokenGenerator(ctx, tk.Tag)
	must(err)
	set, err := e.IssueTokens(ctx, tk.Tag, kms.IssueTokensRequest{Subject: "svc", Permissions: kms.AllPermissions()})
	must(err)
	clk.Advance(time.Second) // another second: another token
	bad, err := e.IssueTokens(ctx, tk.Tag, kms.IssueTokensRequest{Subject: "svc", Permissions: kms.AllPermissions()})
	must(err)
	must(e.RevokeToken(ctx, tk.Tag, bad.Access))
	fx.tok, fx.revoked = set.Access, bad.Access
	_, err = e.AddAllowedIPs(ctx, tk.Tag, []string{"10.0.0.0/8", "192.0.2.7"})
	must(err)
	fx.acl, err = e.SetKeyACLEnabled(ctx, tk.Tag, true)
	must(err)
	must(e.SetKeyRateLimit(ctx, tk.Tag, ratelimit.Limit{Rate: 7, Burst: 9}))
	fx.limit, err = e.GetKeyRateLimit(ctx, tk.Tag)
	must(err)
	off := createKey(t, e, "off", kms.AES256, false)
	ct, err := e.Encrypt(ctx, off.Tag, bkMsg, nil)
	must(err)
	fx.cts = append(fx.cts, bkCT{off.Tag, ct, nil})
	_, err = e.DisableKey(ctx, off.Tag)
	must(err)

	page, err := e.ListKeys(ctx, kms.ListKeysRequest{PageNo: 0, PageSize: 100})
	must(err)
	for _, k := range page.Keys {
		got, err := e.GetKey(ctx, k.Tag)
		must(err)
		fx.keys[k.Tag] = got
	}
	return fx
}

// bkCheck checks that e does everything the fixture's source did.
func bkCheck(t testing.TB, e *kms.Engine, fx *bkFixture) {
	t.Helper()
	ctx := context.Background()
	off := ""
	for tag, k := range fx.keys {
		got, err := e.GetKey(ctx, tag)
		if err != nil {
			t.Fatalf("key %s: %v", k.Name, err)
		}
		if !reflect.DeepEqual(got, k) {
			t.Fatalf("key %s restored as\n%+v\nwant\n%+v", k.Name, got, k)
		}
		if k.State == kms.StateDisabled {
			off = tag
		}
	}
	page, err := e.ListKeys(ctx, kms.ListKeysRequest{PageNo: 0, PageSize: 100})
	if err != nil || len(page.Keys) != len(fx.keys) {
		t.Fatalf("restored %d keys (%v), want %d", len(page.Keys), err, len(fx.keys))
	}
	if _, err := e.GetKey(ctx, fx.gone); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("the key destroyed before the backup came back: %v", err)
	}
	if off != "" {
		if _, err := e.EnableKey(ctx, off); err != nil {
			t.Fatal(err)
		}
	}
	// Version 2 of "aes" is disabled: enable it to decrypt its ciphertext.
	if _, err := e.EnableKeyVersion(ctx, fx.cts[0].tag, 2); err != nil {
		t.Fatal(err)
	}
	for _, c := range fx.cts {
		pt, err := e.Decrypt(ctx, c.tag, c.ct, c.ctx)
		if err != nil || !bytes.Equal(pt, bkMsg) {
			t.Fatalf("decrypt %s under %s: %v", c.ct[:16], c.tag[:8], err)
		}
	}
	for _, s := range fx.sigs {
		if ok, err := e.Verify(ctx, s.tag, bkMsg, s.sig); err != nil || !ok {
			t.Fatalf("verify a signature of %s: %v %v", s.tag[:8], ok, err)
		}
	}
	// The convergent key is the same key: the same ciphertext again.
	if ct, err := e.Encrypt(ctx, fx.conv.tag, bkMsg, fx.conv.ctx); err != nil || ct != fx.conv.ct {
		t.Fatalf("convergent encryption after restore: %v (same ciphertext: %v)", err, ct == fx.conv.ct)
	}
	// The signing keys sign still (the backend holds the private halves).
	for _, s := range fx.sigs[:1] {
		sig, err := e.Sign(ctx, s.tag, bkMsg)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := e.Verify(ctx, s.tag, bkMsg, sig); err != nil || !ok {
			t.Fatalf("verify a signature made after restore: %v %v", ok, err)
		}
	}
	in := e.WithToken(fx.tok, callerIP)
	ct, err := in.Encrypt(ctx, fx.tokTag, bkMsg, nil)
	if err != nil {
		t.Fatalf("a token issued before the backup: %v", err)
	}
	if pt, err := in.Decrypt(ctx, fx.tokTag, ct, nil); err != nil || !bytes.Equal(pt, bkMsg) {
		t.Fatalf("token-plane decrypt: %v", err)
	}
	if _, err := e.WithToken(fx.revoked, callerIP).Encrypt(ctx, fx.tokTag, bkMsg, nil); !errors.Is(err, kms.ErrTokenInvalid) {
		t.Fatalf("a token revoked before the backup: %v, want ErrTokenInvalid", err)
	}
	if _, err := e.WithToken(fx.tok, netipOutside).Encrypt(ctx, fx.tokTag, bkMsg, nil); !errors.Is(err, kms.ErrAccessDenied) {
		t.Fatalf("the allow-list after restore: %v, want ErrAccessDenied", err)
	}
	// The generator signs new tokens that verify.
	set, err := e.IssueTokens(ctx, fx.tokTag, kms.IssueTokensRequest{Subject: "new", Permissions: []token.Permission{token.PermEncrypt}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.WithToken(set.Access, callerIP).Encrypt(ctx, fx.tokTag, bkMsg, nil); err != nil {
		t.Fatalf("a token issued after restore: %v", err)
	}
	if acl, err := e.GetKeyACL(ctx, fx.tokTag); err != nil || !reflect.DeepEqual(acl, fx.acl) {
		t.Fatalf("allow-list restored as %+v (%v), want %+v", acl, err, fx.acl)
	}
	if l, err := e.GetKeyRateLimit(ctx, fx.tokTag); err != nil || !reflect.DeepEqual(l, fx.limit) {
		t.Fatalf("rate limit restored as %+v (%v), want %+v", l, err, fx.limit)
	}
}

// bkSource opens a directory Engine on rootKey with a fake clock and
// populates it.
func bkSource(t testing.TB, opts ...kms.Option) (*kms.Engine, *bkFixture, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	e, err := kms.New(context.Background(), newBackend(t, rootKey),
		append([]kms.Option{kms.WithClock(clk), kms.WithMaintenanceInterval(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, bkPopulate(t, e, clk), clk
}

func bkBackup(t testing.TB, e *kms.Engine) ([]byte, *kms.BackupInfo) {
	t.Helper()
	var buf bytes.Buffer
	info, err := e.Backup(context.Background(), &buf)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if info.Size != int64(buf.Len()) || len(info.SHA256) != 64 {
		t.Fatalf("BackupInfo %+v for %d bytes", info, buf.Len())
	}
	return buf.Bytes(), info
}

// bkOpen opens an Engine on a restored target.
func bkOpen(t testing.TB, root []byte, clk *fakeClock, opts ...kms.Option) *kms.Engine {
	t.Helper()
	e, err := kms.New(context.Background(), newBackend(t, root),
		append([]kms.Option{kms.WithClock(clk), kms.WithMaintenanceInterval(0)}, opts...)...)
	if err != nil {
		t.Fatalf("open the restored target: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// TestBackupRestoreDirectory: a directory Engine's backup, restored into a
// directory that does not exist and into an empty one, opens with the
// same root key and does everything the source did; the key destroyed
// before the backup is not in it. Restoring the same backup again into
// what it made is refused.
func TestBackupRestoreDirectory(t *testing.T) {
	ctx := context.Background()
	e, fx, clk := bkSource(t, kms.WithDirectory(t.TempDir()))
	data, info := bkBackup(t, e)
	if info.Keys != len(fx.keys) {
		t.Fatalf("backup of %d keys, want %d", info.Keys, len(fx.keys))
	}
	if bytes.Contains(data, []byte(fx.gone)) {
		t.Fatal("the backup names the key destroyed before it")
	}
	for name, dir := range map[string]string{
		"new":   filepath.Join(t.TempDir(), "a", "restored"),
		"empty": t.TempDir(),
	} {
		t.Run(name, func(t *testing.T) {
			ri, err := kms.Restore(ctx, bytes.NewReader(data), newBackend(t, rootKey), kms.WithDirectory(dir))
			if err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if ri.Keys != len(fx.keys) || ri.Records != info.Records || ri.Backup.SHA256 != info.SHA256 {
				t.Fatalf("RestoreInfo %+v, backup %+v", ri, info)
			}
			if ents, _ := os.ReadDir(filepath.Dir(dir)); name == "new" && len(ents) != 1 {
				t.Fatalf("Restore left %d entries beside the target", len(ents))
			}
			for _, ent := range mustReadDir(t, dir) {
				if strings.HasPrefix(ent, ".") {
					t.Fatalf("Restore left %s in the target", ent)
				}
			}
			if name == "empty" {
				// A crash just after the first entry moved up: the
				// integrity record alone. It must not open as a store.
				partial := t.TempDir()
				b, err := os.ReadFile(filepath.Join(dir, "pocketkms.integrity"))
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(partial, "pocketkms.integrity"), b, 0o600)
				e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(partial))
				if err == nil {
					e.Close()
					t.Fatal("a directory holding only the integrity record of a restore opened")
				}
				if !errors.Is(err, kms.ErrInternal) || !strings.Contains(err.Error(), "integrity record") {
					t.Fatalf("a partly moved restore: %v, want ErrInternal naming the integrity record", err)
				}
			}
			_, err = kms.Restore(ctx, bytes.NewReader(data), newBackend(t, rootKey), kms.WithDirectory(dir))
			wantErr(t, err, kms.ErrAlreadyExists)
			e2 := bkOpen(t, rootKey, clk, kms.WithDirectory(dir))
			bkCheck(t, e2, fx)
			// The restored directory is a store of its own, root key check
			// included: another root key is refused.
			e2.Close()
			wantRefusedUntouched(t, dir)
		})
	}
}

// TestBackupRestoreStore: restores into a store given with WithStore
// (storetest.Memory, as an empty etcd prefix would be), from a directory
// Engine and from a WithStore Engine, and back into a directory.
func TestBackupRestoreStore(t *testing.T) {
	ctx := context.Background()
	e, fx, clk := bkSource(t, kms.WithDirectory(t.TempDir()))
	data, _ := bkBackup(t, e)
	mem := storetest.NewMemory()
	if _, err := kms.Restore(ctx, bytes.NewReader(data), newBackend(t, rootKey), kms.WithStore(mem.Open())); err != nil {
		t.Fatalf("Restore into a store: %v", err)
	}
	e2 := bkOpen(t, rootKey, clk, kms.WithStore(mem.Open()))
	// From the store Engine (handles unsealed in the store) to a
	// directory; taken before bkCheck, which enables what was disabled.
	data2, _ := bkBackup(t, e2)
	bkCheck(t, e2, fx)
	dir := filepath.Join(t.TempDir(), "again")
	if _, err := kms.Restore(ctx, bytes.NewReader(data2), newBackend(t, rootKey), kms.WithDirectory(dir)); err != nil {
		t.Fatalf("Restore into a directory: %v", err)
	}
	bkCheck(t, bkOpen(t, rootKey, clk, kms.WithDirectory(dir)), fx)
	// A store that holds a key is refused, and not written to.
	rev := mem.Rev()
	_, err := kms.Restore(ctx, bytes.NewReader(data), newBackend(t, rootKey), kms.WithStore(mem.Open()))
	wantErr(t, err, kms.ErrAlreadyExists)
	if mem.Rev() != rev {
		t.Fatal("the refused restore wrote to the store")
	}
}

// TestRestoreRefusals: a wrong root key is ErrBackendMismatch and writes
// nothing (a directory that did not exist still does not; an empty one
// stays empty; a store stays empty); a non-empty directory is
// ErrAlreadyExists and unchanged; no target, nil arguments are
// ErrInvalidArgument.
func TestRestoreRefusals(t *testing.T) {
	ctx := context.Background()
	e, _, _ := bkSource(t)
	data, _ := bkBackup(t, e)
	restore := func(root []byte, opts ...kms.Option) error {
		_, err := kms.Restore(ctx, bytes.NewReader(data), newBackend(t, root), opts...)
		return err
	}
	missing := filepath.Join(t.TempDir(), "never")
	wantErr(t, restore(otherRootKey, kms.WithDirectory(missing)), kms.ErrBackendMismatch)
	if _, err := os.Lstat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused restore made the target: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(missing)); len(ents) != 0 {
		t.Fatalf("the refused restore left %d entries beside the target", len(ents))
	}
	empty := t.TempDir()
	wantErr(t, restore(otherRootKey, kms.WithDirectory(empty)), kms.ErrBackendMismatch)
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Fatal("the refused restore wrote into the empty target")
	}
	mem := storetest.NewMemory()
	rev := mem.Rev()
	wantErr(t, restore(otherRootKey, kms.WithStore(mem.Open())), kms.ErrBackendMismatch)
	if mem.Rev() != rev {
		t.Fatal("the refused restore wrote to the store")
	}

	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "keep"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := dirBytes(t, full)
	wantErr(t, restore(rootKey, kms.WithDirectory(full)), kms.ErrAlreadyExists)
	if !reflect.DeepEqual(before, dirBytes(t, full)) {
		t.Fatal("the refused restore changed the non-empty target")
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	wantErr(t, restore(rootKey, kms.WithDirectory(file)), kms.ErrAlreadyExists)

	wantErr(t, restore(rootKey), kms.ErrInvalidArgument)
	_, err := kms.Restore(ctx, nil, newBackend(t, rootKey), kms.WithDirectory(t.TempDir()))
	wantErr(t, err, kms.ErrInvalidArgument)
	_, err = kms.Restore(ctx, bytes.NewReader(data), nil, kms.WithDirectory(t.TempDir()))
	wantErr(t, err, kms.ErrInvalidArgument)
}

// TestBackupCorruptRefused: every truncation (every byte for the last
// 100 bytes and the first 100, every 7th in between), a bit flipped
// across the backup, appended bytes and foreign input are
// ErrBackupInvalid, from VerifyBackup and from Restore, which then writes
// nothing.
func TestBackupCorruptRefused(t *testing.T) {
	ctx := context.Background()
	e, _, _ := bkSource(t)
	data, info := bkBackup(t, e)
	if got, err := kms.VerifyBackup(ctx, bytes.NewReader(data)); err != nil || got.SHA256 != info.SHA256 || got.Keys != info.Keys {
		t.Fatalf("VerifyBackup of a good backup: %+v %v", got, err)
	}
	refused := func(what string, b []byte) {
		t.Helper()
		_, err := kms.VerifyBackup(ctx, bytes.NewReader(b))
		if !errors.Is(err, kms.ErrBackupInvalid) {
			t.Fatalf("%s: %v, want ErrBackupInvalid", what, err)
		}
		wantErr(t, err, kms.ErrBackupInvalid)
	}
	n := len(data)
	for cut := 0; cut < n; cut++ {
		if cut > 100 && cut < n-100 && cut%7 != 0 {
			continue
		}
		refused("truncated", data[:cut])
	}
	step := max(1, n/1500)
	for i := 0; i < n; i += step {
		b := bytes.Clone(data)
		b[i] ^= 1 << (i % 8)
		refused("bit flipped", b)
	}
	refused("trailing data", append(bytes.Clone(data), 0))
	refused("foreign", []byte("ncpkms:v1:not a backup at all"))
	refused("empty", nil)

	dir := filepath.Join(t.TempDir(), "target")
	b := bytes.Clone(data)
	b[n/2] ^= 0x80
	_, err := kms.Restore(ctx, bytes.NewReader(b), newBackend(t, rootKey), kms.WithDirectory(dir))
	wantErr(t, err, kms.ErrBackupInvalid)
	_, err = kms.Restore(ctx, bytes.NewReader(data[:n-1]), newBackend(t, rootKey), kms.WithDirectory(dir))
	wantErr(t, err, kms.ErrBackupInvalid)
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused restore made the target: %v", err)
	}
	if strings.Contains(err.Error(), "\x00") {
		t.Fatal("error carries raw bytes")
	}
}

// bkFailWriter fails every write after n bytes with err.
type bkFailWriter struct {
	n   int
	err error
}

func (w *bkFailWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, w.err
	}
	w.n -= len(p)
	return len(p), nil
}

// TestBackupWriteFailure: a writer that fails (a full disk) fails Backup
// with ErrInternal naming the cause; BackupFile into a directory that
// does not exist fails and leaves nothing; a cancelled context is
// ErrCanceled.
func TestBackupWriteFailure(t *testing.T) {
	ctx := context.Background()
	e, _, _ := bkSource(t)
	_, err := e.Backup(ctx, &bkFailWriter{n: 100, err: errors.New("no space left on device")})
	wantErr(t, err, kms.ErrInternal)
	if !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("the error does not name the cause: %v", err)
	}
	_, err = e.BackupFile(ctx, filepath.Join(t.TempDir(), "missing", "b.pkb"))
	wantErr(t, err, kms.ErrInternal)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = e.Backup(cctx, &bytes.Buffer{})
	wantErr(t, err, kms.ErrCanceled)
	_, err = e.Backup(ctx, nil)
	wantErr(t, err, kms.ErrInvalidArgument)

	dir := t.TempDir()
	path := filepath.Join(dir, "b.pkb")
	info, err := e.BackupFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := kms.VerifyBackup(ctx, f); err != nil || got.SHA256 != info.SHA256 {
		t.Fatalf("VerifyBackup of BackupFile's file: %v", err)
	}
	if fi, _ := f.Stat(); fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file mode %v, want 0600", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("BackupFile left %d files", len(ents))
	}
	e.Close()
	_, err = e.Backup(ctx, &bytes.Buffer{})
	wantErr(t, err, kms.ErrClosed)
}

// netipOutside is an address outside the fixture's allow-list.
var netipOutside = netip.MustParseAddr("203.0.113.9")

// TestBackupUnderLoad takes backups while goroutines encrypt, rotate,
// create keys and destroy others (a fake clock moved past the deletion
// delay, then Maintain): every backup restores, and every ciphertext
// made before a backup began decrypts in the Engine restored from it.
func TestBackupUnderLoad(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(t.TempDir()), kms.WithClock(clk), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var tags []string
	for i := range 4 {
		tags = append(tags, createKey(t, e, fmt.Sprintf("load-%d", i), kms.AES256, i == 3).Tag)
	}
	var mu sync.Mutex
	var cts []bkCT
	stop := make(chan struct{})
	errc := make(chan error, 8)
	var wg sync.WaitGroup
	loop := func(f func(i int) error) {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := f(i); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	for w := range 2 {
		loop(func(i int) error {
			tag := tags[(i+w)%len(tags)]
			c := []byte(fmt.Sprint(w, i))
			ct, err := e.Encrypt(ctx, tag, bkMsg, c)
			if err != nil {
				return err
			}
			mu.Lock()
			cts = append(cts, bkCT{tag, ct, c})
			mu.Unlock()
			return nil
		})
	}
	loop(func(i int) error {
		_, err := e.RotateKey(ctx, tags[i%len(tags)])
		if errors.Is(err, kms.ErrVersionLimit) {
			return nil
		}
		return err
	})
	loop(func(i int) error {
		k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: fmt.Sprintf("tmp-%d", i), Type: kms.ECDSA})
		if err != nil {
			return err
		}
		if i%2 == 0 {
			return nil // kept
		}
		if _, err := e.RequestKeyDeletion(ctx, k.Tag); err != nil {
			return err
		}
		clk.Advance(kms.DeletionDelay + time.Second)
		return e.Maintain(ctx)
	})
	type taken struct {
		data   []byte
		before int // ciphertexts made before the backup began
	}
	var backups []taken
	for len(backups) < 3 {
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		n := len(cts)
		mu.Unlock()
		var buf bytes.Buffer
		if _, err := e.Backup(ctx, &buf); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("Backup under load: %v", err)
		}
		backups = append(backups, taken{buf.Bytes(), n})
	}
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("load: %v", err)
	}
	for i, b := range backups {
		opt := kms.WithStore(storetest.NewMemory().Open())
		if i == len(backups)-1 {
			opt = kms.WithDirectory(filepath.Join(t.TempDir(), "r"))
		}
		if _, err := kms.Restore(ctx, bytes.NewReader(b.data), newBackend(t, rootKey), opt); err != nil {
			t.Fatalf("backup %d: Restore: %v", i, err)
		}
		e2, err := kms.New(ctx, newBackend(t, rootKey), opt, kms.WithClock(clk), kms.WithMaintenanceInterval(0))
		if err != nil {
			t.Fatalf("backup %d: open: %v", i, err)
		}
		// Every ciphertext of the first 200, then a sample: each check is
		// a decryption, and -race makes thousands slow.
		for j := 0; j < b.before; j += max(1, b.before/2000*min(1, j/200)) {
			c := cts[j]
			if pt, err := e2.Decrypt(ctx, c.tag, c.ct, c.ctx); err != nil || !bytes.Equal(pt, bkMsg) {
				t.Fatalf("backup %d: a ciphertext made before it: %v", i, err)
			}
		}
		t.Logf("backup %d: %d bytes, %d ciphertexts made before it decrypt", i, len(b.data), b.before)
		e2.Close()
	}
}

func mustReadDir(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
