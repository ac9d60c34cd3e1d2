package kms_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/pocketkms/kms"
)

func TestBatchRoundTrip(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "batch", kms.AES256, true)
	items := make([]kms.EncryptItem, kms.MaxBatchItems)
	for i := range items {
		items[i] = kms.EncryptItem{Plaintext: []byte(fmt.Sprintf("item %d", i)), Context: []byte(fmt.Sprintf("ctx%d", i%3))}
	}
	cts, err := e.BatchEncrypt(ctx, k.Tag, items)
	if err != nil || len(cts) != len(items) {
		t.Fatalf("BatchEncrypt: %v", err)
	}
	dec := make([]kms.DecryptItem, len(cts))
	for i, ct := range cts {
		dec[i] = kms.DecryptItem{Ciphertext: ct, Context: items[i].Context}
	}
	pts, err := e.BatchDecrypt(ctx, k.Tag, dec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range pts {
		if !bytes.Equal(pts[i], items[i].Plaintext) {
			t.Fatalf("item %d: %q", i, pts[i])
		}
	}
	e.RotateKey(ctx, k.Tag)
	re, err := e.BatchReEncrypt(ctx, k.Tag, dec)
	if err != nil || len(re) != len(dec) || re[0][:10] != "ncpkms:v2:" {
		t.Fatalf("BatchReEncrypt: %v", err)
	}
}

func TestBatchSize(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "size", kms.AES256, false)
	for _, n := range []int{0, kms.MaxBatchItems + 1} {
		_, err := e.BatchEncrypt(ctx, k.Tag, make([]kms.EncryptItem, n))
		wantErr(t, err, kms.ErrInvalidArgument)
		var be *kms.BatchError
		if errors.As(err, &be) {
			t.Fatalf("size error of %d items reported per item", n)
		}
		_, err = e.BatchDecrypt(ctx, k.Tag, make([]kms.DecryptItem, n))
		wantErr(t, err, kms.ErrInvalidArgument)
		_, err = e.BatchReEncrypt(ctx, k.Tag, make([]kms.DecryptItem, n))
		wantErr(t, err, kms.ErrInvalidArgument)
	}
}

func batchFailures(t *testing.T, err error) map[int]*kms.Error {
	t.Helper()
	var be *kms.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("err = %v, want a *BatchError", err)
	}
	return be.Failures
}

func TestBatchAtomicFailures(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "atomic", kms.AES256, false)
	other := createKey(t, e, "other", kms.AES256, false)
	good, _ := e.Encrypt(ctx, k.Tag, []byte("good"), nil)
	foreign, _ := e.Encrypt(ctx, other.Tag, []byte("foreign"), nil)

	// Phase 1 (shape) failures are reported alone, by index.
	out, err := e.BatchDecrypt(ctx, k.Tag, []kms.DecryptItem{{Ciphertext: good}, {Ciphertext: "junk"}, {Ciphertext: foreign}, {Ciphertext: ""}})
	if out != nil {
		t.Fatal("results returned with failures")
	}
	f := batchFailures(t, err)
	if len(f) != 2 || f[1] == nil || f[3] == nil || !errors.Is(f[1], kms.ErrInvalidArgument) {
		t.Fatalf("phase-1 failures = %v", f)
	}
	wantErr(t, err, kms.ErrInvalidArgument)

	// With shapes fixed, phase 2 reveals the foreign ciphertext; the whole
	// batch fails with its class and status.
	out, err = e.BatchDecrypt(ctx, k.Tag, []kms.DecryptItem{{Ciphertext: good}, {Ciphertext: foreign}})
	if out != nil {
		t.Fatal("results returned with failures")
	}
	f = batchFailures(t, err)
	if len(f) != 1 || !errors.Is(f[1], kms.ErrDecryptionFailed) {
		t.Fatalf("phase-2 failures = %v", f)
	}
	wantErr(t, err, kms.ErrDecryptionFailed)

	// Mixed classes answer 400.
	big := make([]byte, kms.MaxAESPlaintext+1)
	_, err = e.BatchReEncrypt(ctx, k.Tag, []kms.DecryptItem{{Ciphertext: foreign}, {Ciphertext: "ncpkms:v9:AAAA"}})
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Status != http.StatusBadRequest || len(batchFailures(t, err)) != 2 {
		t.Fatalf("mixed failures: %v", err)
	}
	_, err = e.BatchEncrypt(ctx, k.Tag, []kms.EncryptItem{{Plaintext: []byte("ok")}, {Plaintext: big}})
	if f := batchFailures(t, err); len(f) != 1 || f[1] == nil {
		t.Fatalf("oversized item: %v", f)
	}
	// Key-level problems are not per-item failures.
	e.DisableKey(ctx, k.Tag)
	_, err = e.BatchEncrypt(ctx, k.Tag, []kms.EncryptItem{{Plaintext: []byte("x")}})
	wantErr(t, err, kms.ErrKeyNotEnabled)
	var be *kms.BatchError
	if errors.As(err, &be) {
		t.Fatal("a key-level error was reported per item")
	}
}

// TestBatchWrongKeyTypeIsOneError: a key that cannot do the operation
// fails the batch as one error, not as a failure of every item.
func TestBatchWrongKeyTypeIsOneError(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	k := createKey(t, e, "ecdsa", kms.ECDSA, false)
	items := []kms.EncryptItem{{Plaintext: []byte("a")}, {Plaintext: []byte("b")}}
	dItems := []kms.DecryptItem{{Ciphertext: "ncpkms:v1:YWJj"}}
	for name, call := range map[string]func() error{
		"encrypt":    func() error { _, err := e.BatchEncrypt(ctx, k.Tag, items); return err },
		"decrypt":    func() error { _, err := e.BatchDecrypt(ctx, k.Tag, dItems); return err },
		"re-encrypt": func() error { _, err := e.BatchReEncrypt(ctx, k.Tag, dItems); return err },
	} {
		err := call()
		var be *kms.BatchError
		if !errors.Is(err, kms.ErrWrongKeyType) || errors.As(err, &be) {
			t.Errorf("batch %s on an ECDSA key: %v; want ErrWrongKeyType without a BatchError", name, err)
		}
	}
}
