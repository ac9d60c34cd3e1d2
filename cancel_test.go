package kms_test

// Cancellation is cancellation: a context that has ended makes every
// method fail with one error that matches both kms.ErrCanceled and the
// context's own error, never ErrInternal and never a failure per batch
// item.

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/token"
)

func wantCanceled(t *testing.T, what string, err, ctxErr error) {
	t.Helper()
	var ke *kms.Error
	switch {
	case !errors.Is(err, kms.ErrCanceled):
		t.Errorf("%s: %v, want ErrCanceled", what, err)
	case !errors.Is(err, ctxErr):
		t.Errorf("%s: %v does not match %v", what, err, ctxErr)
	case errors.Is(err, kms.ErrInternal):
		t.Errorf("%s: %v also matches ErrInternal", what, err)
	case !errors.As(err, &ke) || ke.Status != kms.StatusClientClosedRequest:
		t.Errorf("%s: %v is not a *kms.Error with status 499", what, err)
	}
}

func TestCanceledContextEveryMethod(t *testing.T) {
	bg := context.Background()
	e := newEngine(t, kms.WithMaintenanceInterval(0))
	aes := createKey(t, e, "aes", kms.AES256, false)
	rsaKey := createKey(t, e, "rsa", kms.RSA2048, false)
	ct, err := e.Encrypt(bg, aes.Tag, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := e.Sign(bg, rsaKey.Tag, []byte("msg"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ActivateTokenGenerator(bg, aes.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(bg, aes.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("10.0.0.1")
	acc, ref := e.WithToken(set.Access, addr), e.WithToken(set.Refresh, addr)

	cancelled, cancel := context.WithCancel(bg)
	cancel()
	expired, cancel2 := context.WithTimeout(bg, 0)
	defer cancel2()
	<-expired.Done()

	for _, c := range []struct {
		ctx context.Context
		err error
	}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
		ctx := c.ctx
		calls := map[string]func() error{
			"CreateKey": func() error {
				_, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "late", Type: kms.AES256})
				return err
			},
			"GetKey":          func() error { _, err := e.GetKey(ctx, aes.Tag); return err },
			"ListKeys":        func() error { _, err := e.ListKeys(ctx, kms.ListKeysRequest{}); return err },
			"ListKeyVersions": func() error { _, err := e.ListKeyVersions(ctx, aes.Tag); return err },
			"RotateKey":       func() error { _, err := e.RotateKey(ctx, aes.Tag); return err },
			"DisableKey":      func() error { _, err := e.DisableKey(ctx, aes.Tag); return err },
			"RequestKeyDeletion": func() error {
				_, err := e.RequestKeyDeletion(ctx, aes.Tag)
				return err
			},
			"Encrypt":   func() error { _, err := e.Encrypt(ctx, aes.Tag, []byte("x"), nil); return err },
			"Decrypt":   func() error { _, err := e.Decrypt(ctx, aes.Tag, ct, nil); return err },
			"ReEncrypt": func() error { _, err := e.ReEncrypt(ctx, aes.Tag, ct, nil); return err },
			"CreateCustomKey": func() error {
				_, err := e.CreateCustomKey(ctx, aes.Tag, kms.CustomKeyRequest{})
				return err
			},
			"Sign":         func() error { _, err := e.Sign(ctx, rsaKey.Tag, []byte("msg")); return err },
			"Verify":       func() error { _, err := e.Verify(ctx, rsaKey.Tag, []byte("msg"), sig); return err },
			"GetPublicKey": func() error { _, err := e.GetPublicKey(ctx, rsaKey.Tag, 0); return err },
			"BatchDecrypt": func() error {
				_, err := e.BatchDecrypt(ctx, aes.Tag, []kms.DecryptItem{{Ciphertext: ct}, {Ciphertext: ct}})
				return err
			},
			"IssueTokens": func() error {
				_, err := e.IssueTokens(ctx, aes.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
				return err
			},
			"RotateTokenGenerator": func() error { _, err := e.RotateTokenGenerator(ctx, aes.Tag); return err },
			"AddAllowedIPs": func() error {
				_, err := e.AddAllowedIPs(ctx, aes.Tag, []string{"10.0.0.0/8"})
				return err
			},
			"SetKeyRateLimit": func() error {
				return e.SetKeyRateLimit(ctx, aes.Tag, ratelimit.Limit{Rate: 5})
			},
			"Maintain":      func() error { return e.Maintain(ctx) },
			"token Encrypt": func() error { _, err := acc.Encrypt(ctx, aes.Tag, []byte("x"), nil); return err },
			"token Decrypt": func() error { _, err := acc.Decrypt(ctx, aes.Tag, ct, nil); return err },
			"token BatchEncrypt": func() error {
				_, err := acc.BatchEncrypt(ctx, aes.Tag, []kms.EncryptItem{{Plaintext: []byte("x")}})
				return err
			},
			"token ReissueTokens":    func() error { _, err := ref.ReissueTokens(ctx, aes.Tag, token.TTL{}, token.TTL{}); return err },
			"token IssueAccessToken": func() error { _, err := ref.IssueAccessToken(ctx, aes.Tag, token.TTL{}); return err },
		}
		for name, call := range calls {
			wantCanceled(t, c.err.Error()+"/"+name, call(), c.err)
		}
	}
	// Nothing changed: every refused change left the key as it was.
	k, err := e.GetKey(bg, aes.Tag)
	if err != nil || k.State != kms.StateEnabled || k.CurrentVersion != 1 {
		t.Fatalf("after refused calls: %+v, %v", k, err)
	}
}

// cancelOnDecrypt is a memory backend whose keys cancel a context on
// their nth decryption, as a client that goes away mid-batch would.
type cancelOnDecrypt struct {
	backend.Backend
	n      int32
	calls  atomic.Int32
	cancel context.CancelFunc
}

func (b *cancelOnDecrypt) Load(ctx context.Context, req *backend.LoadRequest) (backend.Key, error) {
	k, err := b.Backend.Load(ctx, req)
	if err != nil {
		return nil, err
	}
	return cancelKey{Key: k, b: b}, nil
}

type cancelKey struct {
	backend.Key
	b *cancelOnDecrypt
}

func (k cancelKey) Decrypt(ctx context.Context, req *backend.DecryptRequest) ([]byte, error) {
	if k.b.calls.Add(1) == k.b.n {
		k.b.cancel()
	}
	return k.Key.(backend.Decrypter).Decrypt(ctx, req)
}

func (k cancelKey) Encrypt(ctx context.Context, req *backend.EncryptRequest) ([]byte, error) {
	return k.Key.(backend.Encrypter).Encrypt(ctx, req)
}

// TestBatchCanceledMidwayIsOneError: a context that ends in the middle of
// a batch fails it with one ErrCanceled, not a BatchError listing every
// item left as failed.
func TestBatchCanceledMidwayIsOneError(t *testing.T) {
	bg := context.Background()
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	be := &cancelOnDecrypt{Backend: newBackend(t, rootKey), n: 3, cancel: cancel}
	e, err := kms.New(bg, be, kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	k := createKey(t, e, "batch", kms.AES256, false)
	items := make([]kms.DecryptItem, 10)
	for i := range items {
		ct, err := e.Encrypt(bg, k.Tag, []byte("item"), nil)
		if err != nil {
			t.Fatal(err)
		}
		items[i] = kms.DecryptItem{Ciphertext: ct}
	}
	out, err := e.BatchDecrypt(ctx, k.Tag, items)
	wantCanceled(t, "BatchDecrypt", err, context.Canceled)
	var be2 *kms.BatchError
	if errors.As(err, &be2) || out != nil {
		t.Fatalf("a cancelled batch returned %d results and a BatchError %v", len(out), be2)
	}
	if n := be.calls.Load(); n != 3 {
		t.Errorf("the batch decrypted %d items after its context ended at the 3rd", n)
	}
}
