package kms_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
)

// newExampleEngine opens an in-memory Engine with software keys under a
// fresh root key: the embedded default.
func newExampleEngine() *kms.Engine {
	root, _ := memory.GenerateRootKey()
	be, _ := memory.New(root)
	e, _ := kms.New(context.Background(), be)
	return e
}

func ExampleEngine_Encrypt() {
	ctx := context.Background()
	e := newExampleEngine()
	defer e.Close()

	k, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "orders", Type: kms.AES256})
	ct, _ := e.Encrypt(ctx, k.Tag, []byte("card 4111"), nil)
	pt, _ := e.Decrypt(ctx, k.Tag, ct, nil)
	fmt.Println(strings.HasPrefix(ct, "ncpkms:v1:"), string(pt))
	// Output: true card 4111
}

func ExampleEngine_RotateKey() {
	ctx := context.Background()
	e := newExampleEngine()
	defer e.Close()

	k, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "orders", Type: kms.AES256})
	old, _ := e.Encrypt(ctx, k.Tag, []byte("v1 data"), nil)
	v, _ := e.RotateKey(ctx, k.Tag)
	fresh, _ := e.ReEncrypt(ctx, k.Tag, old, nil)
	pt, _ := e.Decrypt(ctx, k.Tag, old, nil) // old versions keep decrypting
	fmt.Println(v.Version, fresh[:10], string(pt))
	// Output: 2 ncpkms:v2: v1 data
}

func ExampleEngine_Sign() {
	ctx := context.Background()
	e := newExampleEngine()
	defer e.Close()

	k, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "releases", Type: kms.ECDSA})
	sig, _ := e.Sign(ctx, k.Tag, []byte("release 1.0"))
	ok, _ := e.Verify(ctx, k.Tag, []byte("release 1.0"), sig)
	tampered, _ := e.Verify(ctx, k.Tag, []byte("release 1.1"), sig)
	fmt.Println(ok, tampered)
	// Output: true false
}

func ExampleEngine_Encrypt_convergent() {
	ctx := context.Background()
	e := newExampleEngine()
	defer e.Close()

	k, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "emails", Type: kms.AES256, Convergent: true})
	a, _ := e.Encrypt(ctx, k.Tag, []byte("kim@example.com"), []byte("tenant-7"))
	b, _ := e.Encrypt(ctx, k.Tag, []byte("kim@example.com"), []byte("tenant-7"))
	_, err := e.Decrypt(ctx, k.Tag, a, []byte("tenant-8"))
	fmt.Println(a == b, errors.Is(err, kms.ErrDecryptionFailed))
	// Output: true true
}

func ExampleError() {
	ctx := context.Background()
	e := newExampleEngine()
	defer e.Close()

	_, err := e.Encrypt(ctx, strings.Repeat("0", 64), []byte("x"), nil)
	var ke *kms.Error
	if errors.As(err, &ke) {
		fmt.Println(ke.Code, ke.Status, errors.Is(err, kms.ErrKeyNotFound))
	}
	// Output: ResourceNotFound 404 true
}

// exampleClock is a clock an example can move forward.
type exampleClock struct{ now time.Time }

func (c *exampleClock) Now() time.Time { return c.now }

func ExampleEngine_DisableKeyVersion() {
	ctx := context.Background()
	e := newExampleEngine()
	defer e.Close()

	k, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "orders", Type: kms.AES256})
	old, _ := e.Encrypt(ctx, k.Tag, []byte("v1 data"), nil)
	e.RotateKey(ctx, k.Tag)

	_, err := e.DisableKeyVersion(ctx, k.Tag, 2)
	fmt.Println("disable current:", errors.Is(err, kms.ErrInvalidState))
	e.DisableKeyVersion(ctx, k.Tag, 1)
	_, err = e.Decrypt(ctx, k.Tag, old, nil)
	fmt.Println("decrypt v1 while disabled:", errors.Is(err, kms.ErrVersionDisabled))
	e.EnableKeyVersion(ctx, k.Tag, 1)
	pt, _ := e.Decrypt(ctx, k.Tag, old, nil)
	fmt.Println("after enable:", string(pt))
	// Output:
	// disable current: true
	// decrypt v1 while disabled: true
	// after enable: v1 data
}

func ExampleEngine_RequestKeyDeletion() {
	ctx := context.Background()
	clk := &exampleClock{now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	root, _ := memory.GenerateRootKey()
	be, _ := memory.New(root)
	e, _ := kms.New(ctx, be, kms.WithClock(clk), kms.WithMaintenanceInterval(0))
	defer e.Close()

	k, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "retired", Type: kms.AES256})
	k, _ = e.RequestKeyDeletion(ctx, k.Tag)
	fmt.Println(k.State, "until", k.DestroyAt.Format(time.RFC3339))

	k, _ = e.CancelKeyDeletion(ctx, k.Tag) // changed our mind: DISABLED, not ENABLED
	fmt.Println(k.State)

	e.RequestKeyDeletion(ctx, k.Tag)
	clk.now = clk.now.Add(kms.DeletionDelay)
	e.Maintain(ctx) // the background worker does this every minute
	_, err := e.GetKey(ctx, k.Tag)
	fmt.Println("after 72h:", errors.Is(err, kms.ErrKeyNotFound))
	// Output:
	// REVOKED until 2026-03-04T09:00:00Z
	// DISABLED
	// after 72h: true
}
