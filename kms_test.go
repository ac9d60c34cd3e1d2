package kms_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
)

// rootKey is shared by tests that reopen a directory.
var rootKey = bytes.Repeat([]byte{0x42}, memory.RootKeySize)

func newBackend(t testing.TB, root []byte) *memory.Backend {
	t.Helper()
	be, err := memory.New(root)
	if err != nil {
		t.Fatalf("memory.New: %v", err)
	}
	return be
}

func newEngine(t testing.TB, opts ...kms.Option) *kms.Engine {
	t.Helper()
	e, err := kms.New(context.Background(), newBackend(t, rootKey), opts...)
	if err != nil {
		t.Fatalf("kms.New: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func createKey(t testing.TB, e *kms.Engine, name string, typ kms.KeyType, convergent bool) *kms.Key {
	t.Helper()
	k, err := e.CreateKey(context.Background(), kms.CreateKeyRequest{Name: name, Type: typ, Convergent: convergent})
	if err != nil {
		t.Fatalf("CreateKey(%s, %s): %v", name, typ, err)
	}
	return k
}

// wantErr checks err matches kind and is an *kms.Error with the class's
// code and status.
func wantErr(t *testing.T, err error, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("err = %v, want %v", err, kind)
	}
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Code == "" || ke.Status == 0 {
		t.Fatalf("err %v is not a *kms.Error with code and status", err)
	}
}

func TestCreateKeyValidation(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  kms.CreateKeyRequest
	}{
		{"short name", kms.CreateKeyRequest{Name: "ab", Type: kms.AES256}},
		{"long name", kms.CreateKeyRequest{Name: "abcdefghijklmnop", Type: kms.AES256}},
		{"digit first", kms.CreateKeyRequest{Name: "1abc", Type: kms.AES256}},
		{"dash first", kms.CreateKeyRequest{Name: "-abc", Type: kms.AES256}},
		{"space", kms.CreateKeyRequest{Name: "ab c", Type: kms.AES256}},
		{"non-ascii", kms.CreateKeyRequest{Name: "abcé", Type: kms.AES256}},
		{"unknown type", kms.CreateKeyRequest{Name: "abc", Type: "AES128"}},
		{"empty type", kms.CreateKeyRequest{Name: "abc"}},
		{"convergent rsa", kms.CreateKeyRequest{Name: "abc", Type: kms.RSA2048, Convergent: true}},
		{"convergent ecdsa", kms.CreateKeyRequest{Name: "abc", Type: kms.ECDSA, Convergent: true}},
		{"memo 101", kms.CreateKeyRequest{Name: "abc", Type: kms.AES256, Memo: strings.Repeat("x", 101)}},
		{"memo invalid utf8", kms.CreateKeyRequest{Name: "abc", Type: kms.AES256, Memo: "\xff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.CreateKey(ctx, tc.req)
			wantErr(t, err, kms.ErrInvalidArgument)
		})
	}
	// Boundaries that are accepted.
	for _, req := range []kms.CreateKeyRequest{
		{Name: "abc", Type: kms.AES256},
		{Name: "a23456789012345", Type: kms.AES256, Memo: strings.Repeat("한", 100)},
		{Name: "A_b-c", Type: kms.AES256, Convergent: true},
	} {
		if _, err := e.CreateKey(ctx, req); err != nil {
			t.Errorf("CreateKey(%q): %v", req.Name, err)
		}
	}
	page, err := e.ListKeys(ctx, kms.ListKeysRequest{})
	if err != nil || page.TotalCount != 3 {
		t.Fatalf("after rejected creates: %v, %+v", err, page)
	}
}

func TestCreateKeyDuplicateName(t *testing.T) {
	e := newEngine(t)
	createKey(t, e, "orders", kms.AES256, false)
	_, err := e.CreateKey(context.Background(), kms.CreateKeyRequest{Name: "ORDERS", Type: kms.ECDSA})
	wantErr(t, err, kms.ErrAlreadyExists)
	var ke *kms.Error
	errors.As(err, &ke)
	if ke.Status != http.StatusConflict || ke.Code != "AlreadyExists" {
		t.Fatalf("code/status = %s/%d", ke.Code, ke.Status)
	}
}

func TestCreateKeyConcurrentSameName(t *testing.T) {
	e := newEngine(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 8 {
		wg.Go(func() {
			if _, err := e.CreateKey(context.Background(), kms.CreateKeyRequest{Name: "race", Type: kms.AES256}); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			} else if !errors.Is(err, kms.ErrAlreadyExists) {
				t.Errorf("unexpected error %v", err)
			}
		})
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d creates of one name succeeded", ok)
	}
}

func TestKeyInfo(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "info", Type: kms.AES256, Memo: "m", Convergent: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Tag) != 64 || strings.ToLower(k.Tag) != k.Tag || k.State != kms.StateEnabled || k.CurrentVersion != 1 || !k.Convergent || k.Memo != "m" || k.CreatedAt.IsZero() {
		t.Fatalf("key = %+v", k)
	}
	got, err := e.GetKey(ctx, strings.ToUpper(k.Tag))
	if err != nil || *got != *k {
		t.Fatalf("GetKey (upper case) = %+v, %v", got, err)
	}
	_, err = e.GetKey(ctx, strings.Repeat("0", 64))
	wantErr(t, err, kms.ErrKeyNotFound)
	_, err = e.GetKey(ctx, "nope")
	wantErr(t, err, kms.ErrInvalidArgument)
}

func TestListKeysPaging(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	for i := range 5 {
		createKey(t, e, fmt.Sprintf("key%d", i), kms.AES256, false)
	}
	var got []string
	for p := 0; p < 3; p++ {
		page, err := e.ListKeys(ctx, kms.ListKeysRequest{PageNo: p, PageSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		if page.TotalCount != 5 {
			t.Fatalf("TotalCount = %d", page.TotalCount)
		}
		for _, k := range page.Keys {
			got = append(got, k.Name)
		}
	}
	want := []string{"key4", "key3", "key2", "key1", "key0"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("order = %v, want %v (newest first)", got, want)
	}
	page, err := e.ListKeys(ctx, kms.ListKeysRequest{PageNo: 9, PageSize: 200})
	if err != nil || len(page.Keys) != 0 || page.Keys == nil {
		t.Fatalf("page past the end: %+v %v", page, err)
	}
	for _, bad := range []kms.ListKeysRequest{{PageNo: -1}, {PageSize: 201}, {PageSize: -1}} {
		_, err := e.ListKeys(ctx, bad)
		wantErr(t, err, kms.ErrInvalidArgument)
	}
}

func TestRotateKey(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "rot", kms.AES256, false)
	ct1, err := e.Encrypt(ctx, k.Tag, []byte("one"), nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := e.RotateKey(ctx, k.Tag)
	if err != nil || v.Version != 2 || !v.Current {
		t.Fatalf("RotateKey = %+v, %v", v, err)
	}
	ct2, err := e.Encrypt(ctx, k.Tag, []byte("two"), nil)
	if err != nil || !strings.HasPrefix(ct2, "ncpkms:v2:") {
		t.Fatalf("encrypt after rotate: %q %v", ct2, err)
	}
	if pt, err := e.Decrypt(ctx, k.Tag, ct1, nil); err != nil || string(pt) != "one" {
		t.Fatalf("old ciphertext: %q %v", pt, err)
	}
	re, err := e.ReEncrypt(ctx, k.Tag, ct1, nil)
	if err != nil || !strings.HasPrefix(re, "ncpkms:v2:") {
		t.Fatalf("ReEncrypt = %q, %v", re, err)
	}
	if pt, err := e.Decrypt(ctx, k.Tag, re, nil); err != nil || string(pt) != "one" {
		t.Fatalf("re-encrypted: %q %v", pt, err)
	}
	vs, err := e.ListKeyVersions(ctx, k.Tag)
	if err != nil || len(vs) != 2 || vs[0].Current || !vs[1].Current || vs[0].Version != 1 {
		t.Fatalf("versions = %+v %v", vs, err)
	}
	if got, _ := e.GetKey(ctx, k.Tag); got.CurrentVersion != 2 {
		t.Fatalf("CurrentVersion = %d", got.CurrentVersion)
	}
}

func TestRotateVersionLimit(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "limit", kms.AES256, false)
	for i := 2; i <= kms.MaxVersions; i++ {
		if _, err := e.RotateKey(ctx, k.Tag); err != nil {
			t.Fatalf("rotation to v%d: %v", i, err)
		}
	}
	_, err := e.RotateKey(ctx, k.Tag)
	wantErr(t, err, kms.ErrVersionLimit)
	if got, _ := e.GetKey(ctx, k.Tag); got.CurrentVersion != kms.MaxVersions {
		t.Fatalf("CurrentVersion = %d after refused rotation", got.CurrentVersion)
	}
}

func TestCloseIdempotent(t *testing.T) {
	e, err := kms.New(context.Background(), newBackend(t, rootKey))
	if err != nil {
		t.Fatal(err)
	}
	k := createKey(t, e, "closing", kms.AES256, false)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	_, err = e.Encrypt(ctx, k.Tag, []byte("x"), nil)
	wantErr(t, err, kms.ErrClosed)
	_, err = e.CreateKey(ctx, kms.CreateKeyRequest{Name: "late", Type: kms.AES256})
	wantErr(t, err, kms.ErrClosed)
	_, err = e.GetKey(ctx, k.Tag)
	wantErr(t, err, kms.ErrClosed)
}

func TestCloseWaitsForCallsInFlight(t *testing.T) {
	e, err := kms.New(context.Background(), newBackend(t, rootKey))
	if err != nil {
		t.Fatal(err)
	}
	k := createKey(t, e, "inflight", kms.AES256, false)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				ct, err := e.Encrypt(ctx, k.Tag, []byte("data"), nil)
				if errors.Is(err, kms.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("encrypt: %v", err)
					return
				}
				if _, err := e.Decrypt(ctx, k.Tag, ct, nil); err != nil && !errors.Is(err, kms.ErrClosed) {
					t.Errorf("decrypt: %v", err)
					return
				}
			}
		})
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func TestNewValidation(t *testing.T) {
	ctx := context.Background()
	if _, err := kms.New(ctx, nil); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("nil backend: %v", err)
	}
	for _, o := range []kms.Option{kms.WithDirectory(""), kms.WithLogger(nil), kms.WithClock(nil), kms.WithRandom(nil)} {
		if _, err := kms.New(ctx, newBackend(t, rootKey), o); !errors.Is(err, kms.ErrInvalidArgument) {
			t.Fatalf("bad option accepted: %v", err)
		}
	}
}

// repeatReader is a broken random source: the same bytes every time.
type repeatReader struct{}

func (repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 7
	}
	return len(p), nil
}

// TestCreateKeyTagCollision: a random source that repeats must not let a
// new key overwrite an existing one.
func TestCreateKeyTagCollision(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithRandom(repeatReader{}), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	a := createKey(t, e, "first", kms.AES256, false)
	ct, err := e.Encrypt(ctx, a.Tag, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "second", Type: kms.AES256}); !errors.Is(err, kms.ErrInternal) {
		t.Fatalf("second key from a repeating random source: %v, want ErrInternal", err)
	}
	if pt, err := e.Decrypt(ctx, a.Tag, ct, nil); err != nil || string(pt) != "secret" {
		t.Fatalf("first key after the refused create: %q, %v", pt, err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer e2.Close()
	if pt, err := e2.Decrypt(ctx, a.Tag, ct, nil); err != nil || string(pt) != "secret" {
		t.Fatalf("first key after reopen: %q, %v", pt, err)
	}
}
