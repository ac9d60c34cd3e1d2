package kms_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/pocketkms/kms"
)

// TestMinDecryptionVersion: versions below a key's minimum decryption
// version refuse decrypt and re-encrypt with their own error, on both
// planes and in batches, without being disabled; the setting persists and
// can be lowered again.
func TestMinDecryptionVersion(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEngine(t, kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	k := createKey(t, e, "minver", kms.AES256, false)
	ct1, err := e.Encrypt(ctx, k.Tag, []byte("old"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	ct2, err := e.Encrypt(ctx, k.Tag, []byte("new"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetKeyMinDecryptionVersion(ctx, k.Tag, 3); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("a minimum above the current version: %v", err)
	}
	got, err := e.SetKeyMinDecryptionVersion(ctx, k.Tag, 2)
	if err != nil || got.MinDecryptionVersion != 2 {
		t.Fatalf("set minimum: %+v, %v", got, err)
	}
	if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	tc := e.WithToken(set.Access, netip.MustParseAddr("10.0.0.1"))
	check := func(when string) {
		t.Helper()
		if _, err := e.Decrypt(ctx, k.Tag, ct1, nil); !errors.Is(err, kms.ErrVersionBelowMinimum) {
			t.Errorf("%s: Decrypt of v1: %v, want ErrVersionBelowMinimum", when, err)
		}
		if _, err := e.ReEncrypt(ctx, k.Tag, ct1, nil); !errors.Is(err, kms.ErrVersionBelowMinimum) {
			t.Errorf("%s: ReEncrypt of v1: %v", when, err)
		}
		if _, err := tc.Decrypt(ctx, k.Tag, ct1, nil); !errors.Is(err, kms.ErrVersionBelowMinimum) {
			t.Errorf("%s: token-plane Decrypt of v1: %v", when, err)
		}
		_, err := e.BatchDecrypt(ctx, k.Tag, []kms.DecryptItem{{Ciphertext: ct2}, {Ciphertext: ct1}})
		var be *kms.BatchError
		if !errors.As(err, &be) || len(be.Failures) != 1 || !errors.Is(be.Failures[1], kms.ErrVersionBelowMinimum) {
			t.Errorf("%s: BatchDecrypt: %v", when, err)
		}
		if pt, err := e.Decrypt(ctx, k.Tag, ct2, nil); err != nil || string(pt) != "new" {
			t.Errorf("%s: Decrypt of v2: %q, %v", when, pt, err)
		}
		if v, err := e.GetKeyVersion(ctx, k.Tag, 1); err != nil || v.State != kms.VersionEnabled {
			t.Errorf("%s: version 1 was disabled: %+v, %v", when, v, err)
		}
	}
	check("set")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = newEngine(t, kms.WithDirectory(dir), kms.WithMaintenanceInterval(0))
	tc = e.WithToken(set.Access, netip.MustParseAddr("10.0.0.1"))
	check("after reopen")
	if _, err := e.SetKeyMinDecryptionVersion(ctx, k.Tag, 0); err != nil {
		t.Fatal(err)
	}
	if pt, err := e.Decrypt(ctx, k.Tag, ct1, nil); err != nil || string(pt) != "old" {
		t.Fatalf("v1 after the minimum was cleared: %q, %v", pt, err)
	}
}
