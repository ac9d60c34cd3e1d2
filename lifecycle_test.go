package kms_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/testclock"
)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock {
	return testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

func newClockEngine(t *testing.T, opts ...kms.Option) (*kms.Engine, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	e := newEngine(t, append([]kms.Option{kms.WithClock(clk), kms.WithMaintenanceInterval(0)}, opts...)...)
	return e, clk
}

func TestDisableEnableKey(t *testing.T) {
	e, _ := newClockEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "toggle", kms.RSA2048, false)
	ct, _ := e.Encrypt(ctx, k.Tag, []byte("x"), nil)
	sig, _ := e.Sign(ctx, k.Tag, []byte("x"))
	if _, err := e.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DisableKeyVersion(ctx, k.Tag, 1); err != nil {
		t.Fatal(err)
	}
	got, err := e.DisableKey(ctx, k.Tag)
	if err != nil || got.State != kms.StateDisabled {
		t.Fatalf("DisableKey = %+v, %v", got, err)
	}
	for name, fn := range map[string]func() error{
		"encrypt":    func() error { _, err := e.Encrypt(ctx, k.Tag, []byte("x"), nil); return err },
		"decrypt":    func() error { _, err := e.Decrypt(ctx, k.Tag, ct, nil); return err },
		"re-encrypt": func() error { _, err := e.ReEncrypt(ctx, k.Tag, ct, nil); return err },
		"sign":       func() error { _, err := e.Sign(ctx, k.Tag, []byte("x")); return err },
		"verify":     func() error { _, err := e.Verify(ctx, k.Tag, []byte("x"), sig); return err },
		"custom key": func() error { _, err := e.CreateCustomKey(ctx, k.Tag, kms.CustomKeyRequest{}); return err },
		"public key": func() error { _, err := e.GetPublicKey(ctx, k.Tag, 0); return err },
		"rotate":     func() error { _, err := e.RotateKey(ctx, k.Tag); return err },
		"batch": func() error {
			_, err := e.BatchEncrypt(ctx, k.Tag, []kms.EncryptItem{{Plaintext: []byte("x")}})
			return err
		},
		"version": func() error { _, err := e.EnableKeyVersion(ctx, k.Tag, 1); return err },
	} {
		t.Run(name, func(t *testing.T) { wantErr(t, fn(), kms.ErrKeyNotEnabled) })
	}
	if _, err := e.EnableKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	// Each version is back in its own state: v1 stays disabled.
	_, err = e.Decrypt(ctx, k.Tag, ct, nil)
	wantErr(t, err, kms.ErrVersionDisabled)
	vs, _ := e.ListKeyVersions(ctx, k.Tag)
	if vs[0].State != kms.VersionDisabled || vs[1].State != kms.VersionEnabled {
		t.Fatalf("versions after re-enable: %+v", vs)
	}
	if _, err := e.EnableKey(ctx, k.Tag); err != nil {
		t.Fatalf("enabling an enabled key: %v", err)
	}
}

func TestVersionStates(t *testing.T) {
	e, clk := newClockEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "vers", kms.RSA2048, false)
	data := []byte("signed")
	ct, _ := e.Encrypt(ctx, k.Tag, data, nil)
	sig, _ := e.Sign(ctx, k.Tag, data)
	_, err := e.DisableKeyVersion(ctx, k.Tag, 1)
	wantErr(t, err, kms.ErrInvalidState) // v1 is current
	if _, err := e.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	_, err = e.DisableKeyVersion(ctx, k.Tag, 2)
	wantErr(t, err, kms.ErrInvalidState)
	_, err = e.DisableKeyVersion(ctx, k.Tag, 3)
	wantErr(t, err, kms.ErrVersionNotFound)
	v, err := e.DisableKeyVersion(ctx, k.Tag, 1)
	if err != nil || v.State != kms.VersionDisabled || v.Current {
		t.Fatalf("DisableKeyVersion = %+v, %v", v, err)
	}
	got, err := e.GetKeyVersion(ctx, k.Tag, 1)
	if err != nil || *got != *v || !got.StateChangedAt.Equal(clk.Now()) {
		t.Fatalf("GetKeyVersion = %+v, %v; want %+v", got, err, v)
	}
	_, err = e.GetKeyVersion(ctx, k.Tag, 9)
	wantErr(t, err, kms.ErrVersionNotFound)
	_, err = e.Decrypt(ctx, k.Tag, ct, nil)
	wantErr(t, err, kms.ErrVersionDisabled)
	_, err = e.ReEncrypt(ctx, k.Tag, ct, nil)
	wantErr(t, err, kms.ErrVersionDisabled)
	_, err = e.Verify(ctx, k.Tag, data, sig)
	wantErr(t, err, kms.ErrVersionDisabled)
	_, err = e.GetPublicKey(ctx, k.Tag, 1)
	wantErr(t, err, kms.ErrVersionDisabled)
	// The current version is unaffected.
	if _, err := e.Encrypt(ctx, k.Tag, data, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.EnableKeyVersion(ctx, k.Tag, 1); err != nil {
		t.Fatal(err)
	}
	if pt, err := e.Decrypt(ctx, k.Tag, ct, nil); err != nil || string(pt) != string(data) {
		t.Fatalf("decrypt after re-enable: %v", err)
	}
	if ok, err := e.Verify(ctx, k.Tag, data, sig); err != nil || !ok {
		t.Fatalf("verify after re-enable: %v %v", ok, err)
	}
}

func TestScheduledDeletion(t *testing.T) {
	e, clk := newClockEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "doomed", kms.AES256, false)
	keep := createKey(t, e, "kept", kms.AES256, false)
	ct, _ := e.Encrypt(ctx, k.Tag, []byte("x"), nil)
	got, err := e.RequestKeyDeletion(ctx, k.Tag)
	if err != nil || got.State != kms.StateRevoked || !got.DestroyAt.Equal(clk.Now().Add(72*time.Hour)) {
		t.Fatalf("RequestKeyDeletion = %+v, %v", got, err)
	}
	_, err = e.Decrypt(ctx, k.Tag, ct, nil)
	wantErr(t, err, kms.ErrKeyNotEnabled)
	_, err = e.EnableKey(ctx, k.Tag)
	wantErr(t, err, kms.ErrInvalidState)
	_, err = e.RequestKeyDeletion(ctx, k.Tag)
	wantErr(t, err, kms.ErrInvalidState)

	// Cancel → DISABLED, then request again.
	got, err = e.CancelKeyDeletion(ctx, k.Tag)
	if err != nil || got.State != kms.StateDisabled || !got.DestroyAt.IsZero() {
		t.Fatalf("CancelKeyDeletion = %+v, %v", got, err)
	}
	_, err = e.CancelKeyDeletion(ctx, k.Tag)
	wantErr(t, err, kms.ErrInvalidState)
	if _, err := e.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatalf("deletion from DISABLED: %v", err)
	}

	clk.Advance(72*time.Hour - time.Millisecond)
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := e.GetKey(ctx, k.Tag); err != nil || got.State != kms.StateRevoked {
		t.Fatalf("destroyed early: %+v %v", got, err)
	}
	clk.Advance(time.Millisecond)
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = e.GetKey(ctx, k.Tag)
	wantErr(t, err, kms.ErrKeyNotFound)
	page, _ := e.ListKeys(ctx, kms.ListKeysRequest{})
	if page.TotalCount != 1 || page.Keys[0].Tag != keep.Tag {
		t.Fatalf("list after destruction: %+v", page)
	}
	// The name is free again.
	createKey(t, e, "doomed", kms.AES256, false)
}

func TestDestroyedKeyGoneAfterReopen(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	ctx := context.Background()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithClock(clk), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	k := createKey(t, e, "gone", kms.ECDSA, false)
	if _, err := e.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay)
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e2, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	_, err = e2.GetKey(ctx, k.Tag)
	wantErr(t, err, kms.ErrKeyNotFound)
	createKey(t, e2, "gone", kms.AES256, false)
}

func TestRevokedStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	ctx := context.Background()
	e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithClock(clk), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	k := createKey(t, e, "revoked", kms.AES256, false)
	want, _ := e.RequestKeyDeletion(ctx, k.Tag)
	e.Close()
	e2, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithClock(clk), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	got, err := e2.GetKey(ctx, k.Tag)
	if err != nil || *got != *want {
		t.Fatalf("after reopen %+v, want %+v (%v)", got, want, err)
	}
}

func TestUpdateKey(t *testing.T) {
	e, _ := newClockEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "first", kms.AES256, false)
	createKey(t, e, "taken", kms.AES256, false)
	str := func(s string) *string { return &s }
	got, err := e.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{Name: str("second"), Memo: str("hello")})
	if err != nil || got.Name != "second" || got.Memo != "hello" {
		t.Fatalf("UpdateKey = %+v, %v", got, err)
	}
	createKey(t, e, "first", kms.AES256, false) // the old name is free
	_, err = e.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{Name: str("SECOND")})
	wantErr(t, err, kms.ErrAlreadyExists)
	_, err = e.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{Name: str("Taken")})
	wantErr(t, err, kms.ErrAlreadyExists)
	_, err = e.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{Name: str("1bad")})
	wantErr(t, err, kms.ErrInvalidArgument)
	_, err = e.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{Memo: str(strings.Repeat("m", 101))})
	wantErr(t, err, kms.ErrInvalidArgument)
	rev := kms.StateRevoked
	_, err = e.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{State: &rev})
	wantErr(t, err, kms.ErrInvalidArgument)
	same, err := e.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{})
	if err != nil || *same != *got {
		t.Fatalf("empty update changed the key: %+v %v", same, err)
	}
	cleared, err := e.UpdateKey(ctx, k.Tag, kms.UpdateKeyRequest{Memo: str("")})
	if err != nil || cleared.Memo != "" {
		t.Fatalf("clearing memo: %+v %v", cleared, err)
	}
}

func TestAutoRotation(t *testing.T) {
	e, clk := newClockEngine(t)
	ctx := context.Background()
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "auto", Type: kms.AES256, AutoRotation: true})
	if err != nil {
		t.Fatal(err)
	}
	if !k.AutoRotation.Enabled || k.AutoRotation.PeriodDays != 90 || !k.AutoRotation.NextRotationAt.Equal(clk.Now().Add(90*24*time.Hour)) {
		t.Fatalf("rotation = %+v", k.AutoRotation)
	}
	clk.Advance(90*24*time.Hour - time.Second)
	e.Maintain(ctx)
	if got, _ := e.GetKey(ctx, k.Tag); got.CurrentVersion != 1 {
		t.Fatal("rotated early")
	}
	clk.Advance(time.Second)
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := e.GetKey(ctx, k.Tag)
	if got.CurrentVersion != 2 || !got.AutoRotation.NextRotationAt.Equal(clk.Now().Add(90*24*time.Hour)) {
		t.Fatalf("after due time: %+v", got)
	}
	// Missed periods (e.g. the process was down) rotate once, not once each.
	clk.Advance(5 * 90 * 24 * time.Hour)
	e.Maintain(ctx)
	e.Maintain(ctx)
	if got, _ := e.GetKey(ctx, k.Tag); got.CurrentVersion != 3 {
		t.Fatalf("after missing 5 periods: version %d, want 3", got.CurrentVersion)
	}
	// A disabled key is not rotated; once enabled, the overdue rotation runs.
	clk.Advance(91 * 24 * time.Hour)
	e.DisableKey(ctx, k.Tag)
	e.Maintain(ctx)
	if got, _ := e.GetKey(ctx, k.Tag); got.CurrentVersion != 3 {
		t.Fatal("a disabled key was rotated")
	}
	e.EnableKey(ctx, k.Tag)
	e.Maintain(ctx)
	if got, _ := e.GetKey(ctx, k.Tag); got.CurrentVersion != 4 {
		t.Fatal("overdue rotation did not run after enable")
	}
}

func TestUpdateKeyRotationRules(t *testing.T) {
	e, clk := newClockEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "rules", kms.AES256, false)
	b := func(v bool) *bool { return &v }
	n := func(v int) *int { return &v }
	// {} changes nothing.
	got, err := e.UpdateKeyRotation(ctx, k.Tag, kms.RotationUpdate{})
	if err != nil || got.AutoRotation != (kms.Rotation{}) {
		t.Fatalf("empty update: %+v %v", got.AutoRotation, err)
	}
	// periodDays with rotation ending off is refused.
	_, err = e.UpdateKeyRotation(ctx, k.Tag, kms.RotationUpdate{PeriodDays: n(10)})
	wantErr(t, err, kms.ErrInvalidArgument)
	_, err = e.UpdateKeyRotation(ctx, k.Tag, kms.RotationUpdate{Enabled: b(false), PeriodDays: n(10)})
	wantErr(t, err, kms.ErrInvalidArgument)
	// Enabled without period: 90 (nothing stored).
	got, _ = e.UpdateKeyRotation(ctx, k.Tag, kms.RotationUpdate{Enabled: b(true)})
	if got.AutoRotation.PeriodDays != 90 {
		t.Fatalf("default period: %+v", got.AutoRotation)
	}
	got, _ = e.UpdateKeyRotation(ctx, k.Tag, kms.RotationUpdate{PeriodDays: n(7)})
	if got.AutoRotation.PeriodDays != 7 || !got.AutoRotation.NextRotationAt.Equal(clk.Now().Add(7*24*time.Hour)) {
		t.Fatalf("period 7: %+v", got.AutoRotation)
	}
	// Off keeps the stored period; on again reuses it.
	got, _ = e.UpdateKeyRotation(ctx, k.Tag, kms.RotationUpdate{Enabled: b(false)})
	if got.AutoRotation.Enabled || got.AutoRotation.PeriodDays != 7 || !got.AutoRotation.NextRotationAt.IsZero() {
		t.Fatalf("off: %+v", got.AutoRotation)
	}
	got, _ = e.UpdateKeyRotation(ctx, k.Tag, kms.RotationUpdate{Enabled: b(true)})
	if !got.AutoRotation.Enabled || got.AutoRotation.PeriodDays != 7 {
		t.Fatalf("on again: %+v", got.AutoRotation)
	}
	for _, bad := range []int{0, -1, 731} {
		_, err = e.UpdateKeyRotation(ctx, k.Tag, kms.RotationUpdate{Enabled: b(true), PeriodDays: n(bad)})
		wantErr(t, err, kms.ErrInvalidArgument)
	}
	// Create validates the range even with rotation off.
	_, err = e.CreateKey(ctx, kms.CreateKeyRequest{Name: "r2", Type: kms.AES256, RotationPeriodDays: 731})
	wantErr(t, err, kms.ErrInvalidArgument)
	// Changes need an ENABLED key.
	e.DisableKey(ctx, k.Tag)
	_, err = e.UpdateKeyRotation(ctx, k.Tag, kms.RotationUpdate{Enabled: b(false)})
	wantErr(t, err, kms.ErrKeyNotEnabled)
}

func TestAutoRotationAtVersionLimit(t *testing.T) {
	e, clk := newClockEngine(t)
	ctx := context.Background()
	k, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "full", Type: kms.AES256, AutoRotation: true, RotationPeriodDays: 1})
	for range kms.MaxVersions - 1 {
		if _, err := e.RotateKey(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(48 * time.Hour)
	if err := e.Maintain(ctx); err != nil {
		t.Fatalf("Maintain at the version limit: %v", err)
	}
	got, _ := e.GetKey(ctx, k.Tag)
	if got.CurrentVersion != kms.MaxVersions || !got.AutoRotation.NextRotationAt.After(clk.Now()) {
		t.Fatalf("at limit: %+v", got)
	}
}

func TestBackgroundMaintenance(t *testing.T) {
	clk := newFakeClock()
	e := newEngine(t, kms.WithClock(clk), kms.WithMaintenanceInterval(5*time.Millisecond))
	ctx := context.Background()
	k := createKey(t, e, "bgkey", kms.AES256, false)
	if _, err := e.RequestKeyDeletion(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := e.GetKey(ctx, k.Tag)
		if errors.Is(err, kms.ErrKeyNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the background worker did not destroy the key")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAutoRotationAfterRestart: a rotation that fell due while the process
// was down runs once when the Engine is back, however many periods passed.
func TestAutoRotationAfterRestart(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	ctx := context.Background()
	open := func() *kms.Engine {
		e, err := kms.New(ctx, newBackend(t, rootKey), kms.WithDirectory(dir), kms.WithClock(clk), kms.WithMaintenanceInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := open()
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "restart", Type: kms.AES256, AutoRotation: true, RotationPeriodDays: 1})
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	clk.Advance(10 * 24 * time.Hour) // ten periods while down
	e = open()
	defer e.Close()
	if err := e.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	e.Maintain(ctx)
	got, _ := e.GetKey(ctx, k.Tag)
	if got.CurrentVersion != 2 || !got.AutoRotation.NextRotationAt.Equal(clk.Now().Add(24*time.Hour)) {
		t.Fatalf("after restart: version %d, next %v", got.CurrentVersion, got.AutoRotation.NextRotationAt)
	}
}

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
	k, _ := tokenKey(t, e, "doomed", kms.AES256, kms.IssueTokensRequest{Permissions: kms.AllPermissions()})
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
