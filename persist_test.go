package kms_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
)

func TestPersistenceAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	aes := createKey(t, e, "aes", kms.AES256, false)
	conv := createKey(t, e, "conv", kms.AES256, true)
	rsaKey := createKey(t, e, "rsa", kms.RSA2048, false)
	ec := createKey(t, e, "ecdsa", kms.ECDSA, false)
	msg := []byte("persist me")
	aesCT, _ := e.Encrypt(ctx, aes.Tag, msg, nil)
	if _, err := e.RotateKey(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	aesCT2, _ := e.Encrypt(ctx, aes.Tag, msg, nil)
	convCT, _ := e.Encrypt(ctx, conv.Tag, msg, []byte("ctx"))
	rsaCT, _ := e.Encrypt(ctx, rsaKey.Tag, msg, nil)
	rsaSig, _ := e.Sign(ctx, rsaKey.Tag, msg)
	ecSig, _ := e.Sign(ctx, ec.Tag, msg)
	rsaPub, _ := e.GetPublicKey(ctx, rsaKey.Tag, 1)
	ecPub, _ := e.GetPublicKey(ctx, ec.Tag, 1)
	before, _ := e.ListKeys(ctx, kms.ListKeysRequest{})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e2, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer e2.Close()
	after, err := e2.ListKeys(ctx, kms.ListKeysRequest{})
	if err != nil || len(after.Keys) != len(before.Keys) {
		t.Fatalf("keys after reopen: %v %+v", err, after)
	}
	for i := range before.Keys {
		if before.Keys[i] != after.Keys[i] {
			t.Fatalf("key %d changed: %+v -> %+v", i, before.Keys[i], after.Keys[i])
		}
	}
	for _, c := range []struct {
		tag, ct string
		ctx     []byte
	}{{aes.Tag, aesCT, nil}, {aes.Tag, aesCT2, nil}, {conv.Tag, convCT, []byte("ctx")}, {rsaKey.Tag, rsaCT, nil}} {
		if pt, err := e2.Decrypt(ctx, c.tag, c.ct, c.ctx); err != nil || !bytes.Equal(pt, msg) {
			t.Fatalf("decrypt after reopen: %v", err)
		}
	}
	// Convergent encryption is still deterministic after the reopen.
	if again, _ := e2.Encrypt(ctx, conv.Tag, msg, []byte("ctx")); again != convCT {
		t.Fatal("convergent ciphertext changed across reopen")
	}
	for _, s := range []struct{ tag, sig string }{{rsaKey.Tag, rsaSig}, {ec.Tag, ecSig}} {
		if ok, err := e2.Verify(ctx, s.tag, msg, s.sig); err != nil || !ok {
			t.Fatalf("verify after reopen: %v %v", ok, err)
		}
	}
	if p, _ := e2.GetPublicKey(ctx, rsaKey.Tag, 1); p != rsaPub {
		t.Fatal("RSA public key changed")
	}
	if p, _ := e2.GetPublicKey(ctx, ec.Tag, 1); p != ecPub {
		t.Fatal("ECDSA public key changed")
	}
	// Names stay unique across the reopen.
	_, err = e2.CreateKey(ctx, kms.CreateKeyRequest{Name: "AES", Type: kms.AES256})
	wantErr(t, err, kms.ErrAlreadyExists)
	// New keys list before old ones.
	n := createKey(t, e2, "newer", kms.AES256, false)
	page, _ := e2.ListKeys(ctx, kms.ListKeysRequest{PageSize: 1})
	if page.Keys[0].Tag != n.Tag {
		t.Fatal("key created after reopen is not listed first")
	}
}

func TestWrongRootKey(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	k := createKey(t, e, "guarded", kms.AES256, false)
	ct, _ := e.Encrypt(ctx, k.Tag, []byte("x"), nil)
	e.Close()
	snapshot := readTree(t, dir)

	wrong := bytes.Repeat([]byte{0x17}, memory.RootKeySize)
	_, err = kms.New(ctx, newBackend(t, wrong), kms.WithDirectory(dir))
	wantErr(t, err, kms.ErrBackendMismatch)
	if !errors.Is(err, backend.ErrInvalidHandle) {
		t.Fatalf("cause is not ErrInvalidHandle: %v", err)
	}
	if !sameContent(snapshot, readTree(t, dir)) {
		t.Fatal("opening with a wrong root key changed stored records")
	}
	e2, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir))
	if err != nil {
		t.Fatalf("reopen with the right key: %v", err)
	}
	defer e2.Close()
	if pt, err := e2.Decrypt(ctx, k.Tag, ct, nil); err != nil || string(pt) != "x" {
		t.Fatalf("decrypt after failed open: %v", err)
	}
}

// readTree returns the content of every Badger table and value file in dir.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(p) {
		case ".sst", ".vlog", ".mem":
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out[p] = b
		}
		return nil
	})
	return out
}

// sameContent compares the data files; Badger may add an empty memtable
// file on open, which carries no records.
func sameContent(a, b map[string][]byte) bool {
	for p, x := range a {
		if filepath.Ext(p) == ".mem" {
			continue
		}
		if !bytes.Equal(x, b[p]) {
			return false
		}
	}
	return true
}

// importingBackend generates key material itself, remembers it, and hands
// it to the memory backend's importer, so a test knows every raw key byte
// the Engine might have stored.
type importingBackend struct {
	*memory.Backend
	mu     sync.Mutex
	secret [][]byte
	// public holds the PKIX DER of the public keys, which the store keeps
	// (in binary records, as raw bytes) and which the private DER in
	// secret contains too (RSA's modulus, the EC public point).
	public [][]byte
}

func (b *importingBackend) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	imp := &backend.ImportRequest{Ref: req.Ref, Type: req.Type}
	var secrets [][]byte
	switch req.Type {
	case backend.AES256:
		k := make([]byte, 32)
		rand.Read(k)
		imp.Material, secrets = k, append(secrets, k)
		if req.Convergent {
			c := make([]byte, backend.ConvergentKeySize)
			rand.Read(c)
			imp.ConvergentKey, secrets = c, append(secrets, c)
		}
	case backend.RSA2048:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		imp.Material = k
		secrets = append(secrets, k.D.Bytes(), k.Primes[0].Bytes(), k.Primes[1].Bytes(), der)
		b.notePublic(&k.PublicKey)
	case backend.ECDSA:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		ek, _ := k.ECDH()
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		imp.Material = k
		secrets = append(secrets, ek.Bytes(), der)
		b.notePublic(&k.PublicKey)
	}
	b.mu.Lock()
	b.secret = append(b.secret, secrets...)
	b.mu.Unlock()
	return b.ImportKey(ctx, imp)
}

func (b *importingBackend) notePublic(pub any) {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	b.mu.Lock()
	b.public = append(b.public, der)
	b.mu.Unlock()
}

// isPublic reports whether w occurs in a public key: a window of the
// private DER that the public key holds too is no secret.
func (b *importingBackend) isPublic(w []byte) bool {
	for _, p := range b.public {
		if bytes.Contains(p, w) {
			return true
		}
	}
	return false
}

func TestNoRawKeyMaterialInStore(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	be := &importingBackend{Backend: newBackend(t, rootKey)}
	e, err := kms.New(ctx, be, kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []kms.KeyType{kms.AES256, kms.RSA2048, kms.ECDSA} {
		k := createKey(t, e, "raw"+string(typ), typ, false)
		if _, err := e.RotateKey(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
	}
	createKey(t, e, "rawconv", kms.AES256, true)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if len(be.secret) < 10 {
		t.Fatalf("only %d secrets recorded", len(be.secret))
	}
	files := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files++
		for _, s := range be.secret {
			// Any 16-byte window of a secret would betray it.
			for off := 0; off+16 <= len(s); off += 8 {
				if bytes.Contains(data, s[off:off+16]) && !be.isPublic(s[off:off+16]) {
					t.Fatalf("%s contains raw key material", filepath.Base(p))
				}
			}
		}
		return nil
	})
	if files == 0 {
		t.Fatal("no store files scanned")
	}
	// The handles really are in the store: a reopen decrypts.
	e2, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	e2.Close()
}
