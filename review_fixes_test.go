package kms_test

// Regression tests for the bugs a review of session 2 found in the
// lifecycle, token plane and cipher code. Each test failed before its fix.

import (
	"context"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/token"
)

// destroyBackend records Destroy calls and fails the first failFirst of
// them.
type destroyBackend struct {
	*memory.Backend
	mu        sync.Mutex
	failFirst int
	calls     []backend.KeyRef
}

func (b *destroyBackend) Destroy(ctx context.Context, req *backend.DestroyRequest) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, req.Ref)
	if b.failFirst > 0 {
		b.failFirst--
		return errors.New("token removed (simulated)")
	}
	return b.Backend.Destroy(ctx, req)
}

func (b *destroyBackend) destroyed() []backend.KeyRef {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]backend.KeyRef(nil), b.calls...)
}

// TestDestroyMaterialBeforeRecords: material is destroyed before the
// records go, so a backend failure leaves the key pending deletion (and
// retried) instead of orphaning its material.
func TestDestroyMaterialBeforeRecords(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	be := &destroyBackend{Backend: newBackend(t, rootKey), failFirst: 1}
	e, err := kms.New(ctx, be, kms.WithDirectory(t.TempDir()), kms.WithClock(clk), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	k, _ := tokenKey(t, e, "doomed", kms.AES256, kms.IssueTokensRequest{})
	if _, err := e.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay)

	err = e.Maintain(ctx)
	if !errors.Is(err, kms.ErrInternal) {
		t.Fatalf("Maintain with a failing backend: %v, want ErrInternal", err)
	}
	if strings.Contains(err.Error(), string(rootKey)) {
		t.Fatal("error carries the root key")
	}
	got, err := e.GetKey(ctx, k.Tag)
	if err != nil || got.State != kms.StateRevoked {
		t.Fatalf("after a failed destruction: %+v, %v; want the key still REVOKED", got, err)
	}
	if _, err := e.CancelKeyDeletion(ctx, k.Tag); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("cancel past the destruction time: %v, want ErrInvalidState", err)
	}

	if err := e.Maintain(ctx); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if _, err := e.GetKey(ctx, k.Tag); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("after the retry: %v, want ErrKeyNotFound", err)
	}
	var cipher, signing int
	for _, ref := range be.destroyed() {
		switch ref.Purpose {
		case backend.PurposeCipher:
			cipher++
		case backend.PurposeTokenSigning:
			signing++
		}
	}
	// First pass: version 1 failed, version 2 and the signing key were
	// attempted; second pass: all three again.
	if cipher != 4 || signing != 2 {
		t.Fatalf("Destroy calls: %d cipher, %d signing; want 4 and 2", cipher, signing)
	}
	page, err := e.ListKeys(ctx, kms.ListKeysRequest{})
	if err != nil || page.TotalCount != 0 {
		t.Fatalf("ListKeys after destruction: %+v, %v", page, err)
	}
}

// TestCancelKeyDeletionAfterDestroyAt: the destruction time is the
// promise, even when maintenance has not run since.
func TestCancelKeyDeletionAfterDestroyAt(t *testing.T) {
	ctx := context.Background()
	e, clk := newClockEngine(t)
	k := createKey(t, e, "doomed", kms.AES256, false)
	if _, err := e.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay - time.Millisecond)
	if _, err := e.CancelKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatalf("cancel 1 ms before the destruction time: %v", err)
	}
	if _, err := e.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay + 30*24*time.Hour)
	if _, err := e.CancelKeyDeletion(ctx, k.Tag); !errors.Is(err, kms.ErrInvalidState) {
		t.Fatalf("cancel 30 days past the destruction time: %v, want ErrInvalidState", err)
	}
	if _, err := e.EnableKey(ctx, k.Tag); err == nil {
		t.Fatal("a key past its destruction time was enabled")
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

// TestMaintainCanceledIsKMSError: every error of the Engine is an *Error.
func TestMaintainCanceledIsKMSError(t *testing.T) {
	e, clk := newClockEngine(t)
	k := createKey(t, e, "doomed", kms.AES256, false)
	if _, err := e.RequestKeyDeletion(context.Background(), k.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := e.Maintain(ctx)
	var ke *kms.Error
	if !errors.As(err, &ke) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Maintain on a canceled context: %T %v; want a *kms.Error wrapping context.Canceled", err, err)
	}
}

// hookClock runs a one-shot hook inside its next Now call: a way to run a
// management call between the token checks and the signing of a renewal.
type hookClock struct {
	*fakeClock
	hook atomic.Pointer[func()]
}

func (c *hookClock) Now() time.Time {
	if h := c.hook.Swap(nil); h != nil {
		(*h)()
	}
	return c.fakeClock.Now()
}

func (c *hookClock) arm(f func()) { c.hook.Store(&f) }

// TestRenewalRacesGeneratorChange: a refresh token checked just before its
// generator is rotated, or deactivated and activated again, must not get
// tokens signed by the new generator.
func TestRenewalRacesGeneratorChange(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		change func(e *kms.Engine, tag string) error
		renew  func(c kms.TokenClient, tag string) (*token.Set, error)
	}{
		{"reissue during rotation",
			func(e *kms.Engine, tag string) error { _, err := e.RotateTokenGenerator(ctx, tag); return err },
			func(c kms.TokenClient, tag string) (*token.Set, error) {
				return c.ReissueTokens(ctx, tag, token.TTL{}, token.TTL{})
			}},
		{"access token during deactivate and activate",
			func(e *kms.Engine, tag string) error {
				if _, err := e.DeactivateTokenGenerator(ctx, tag); err != nil {
					return err
				}
				_, err := e.ActivateTokenGenerator(ctx, tag)
				return err
			},
			func(c kms.TokenClient, tag string) (*token.Set, error) {
				return c.IssueAccessToken(ctx, tag, token.TTL{Unlimited: true})
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &hookClock{fakeClock: newFakeClock()}
			e := newEngine(t, kms.WithClock(clk), kms.WithMaintenanceInterval(0))
			k, set := tokenKey(t, e, "race", kms.AES256, kms.IssueTokensRequest{})
			ran := false
			clk.arm(func() {
				ran = true
				if err := tc.change(e, k.Tag); err != nil {
					t.Error(err)
				}
			})
			got, err := tc.renew(e.WithToken(set.Refresh, callerIP), k.Tag)
			if !ran {
				t.Fatal("the hook did not run during the renewal")
			}
			if !errors.Is(err, kms.ErrTokenInvalid) {
				t.Fatalf("renewal across a generator change: %v, want ErrTokenInvalid", err)
			}
			if got != nil {
				t.Fatal("tokens returned with the error")
			}
		})
	}
}

// TestVerifySignatureForms: an RSA signature of any length but 256 bytes
// is a mismatch, however long; an ECDSA signature with anything beyond
// (r, s) in its SEQUENCE is not DER.
func TestVerifySignatureForms(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	rk := createKey(t, e, "rsa", kms.RSA2048, false)
	for _, n := range []int{1, 255, 257, 1025, 32 << 10} {
		sig := "ncpkms:v1:" + base64.StdEncoding.EncodeToString(make([]byte, n))
		if ok, err := e.Verify(ctx, rk.Tag, []byte("data"), sig); ok || err != nil {
			t.Errorf("RSA signature of %d bytes: %v, %v; want false, nil", n, ok, err)
		}
	}
	ek := createKey(t, e, "ecdsa", kms.ECDSA, false)
	data := []byte("data")
	sig, err := e.Sign(ctx, ek.Tag, data)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sig, "ncpkms:v1:"))
	if err != nil {
		t.Fatal(err)
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(raw, &rs); err != nil {
		t.Fatal(err)
	}
	r, _ := asn1.Marshal(rs.R)
	s, _ := asn1.Marshal(rs.S)
	extra, _ := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: append(append(r, s...), 0x05, 0x00)})
	if ok, err := e.Verify(ctx, ek.Tag, data, "ncpkms:v1:"+base64.StdEncoding.EncodeToString(extra)); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("SEQUENCE{r, s, NULL}: %v, %v; want ErrInvalidArgument", ok, err)
	}
	if ok, err := e.Verify(ctx, ek.Tag, data, sig); !ok || err != nil {
		t.Fatalf("the genuine signature: %v, %v", ok, err)
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
