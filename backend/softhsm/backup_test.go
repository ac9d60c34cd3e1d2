package softhsm_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/softhsm/softhsmtest"
)

// TestBackupRestoreOnSoftHSM: an Engine on a SoftHSM token backs up (its
// handles are references to the token's objects), and the backup
// restores into a new directory on the same token: every ciphertext
// decrypts, every signature verifies, tokens work. Restoring it on
// another token fails with ErrBackendMismatch and makes nothing.
func TestBackupRestoreOnSoftHSM(t *testing.T) {
	ctx := context.Background()
	cfg := softhsmtest.NewToken(t)
	e, err := kms.New(ctx, softhsmtest.Open(t, cfg), kms.WithDirectory(t.TempDir()), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("a reference, not a key")
	type ct struct {
		tag, ct string
		ctx     []byte
	}
	var cts []ct
	var sigs [][2]string
	for _, c := range []struct {
		name       string
		typ        kms.KeyType
		convergent bool
	}{{"aes", kms.AES256, false}, {"conv", kms.AES256, true}, {"rsa", kms.RSA2048, false}, {"ecdsa", kms.ECDSA, false}} {
		k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: c.name, Type: c.typ, Convergent: c.convergent})
		if err != nil {
			t.Fatal(err)
		}
		var encCtx []byte // RSA-OAEP takes none
		if c.typ == kms.AES256 {
			encCtx = []byte(c.name)
		}
		for i := range 2 {
			if c.typ != kms.ECDSA {
				s, err := e.Encrypt(ctx, k.Tag, msg, encCtx)
				if err != nil {
					t.Fatal(err)
				}
				cts = append(cts, ct{k.Tag, s, encCtx})
			}
			if c.typ != kms.AES256 {
				sig, err := e.Sign(ctx, k.Tag, msg)
				if err != nil {
					t.Fatal(err)
				}
				sigs = append(sigs, [2]string{k.Tag, sig})
			}
			if i == 1 {
				break // two versions
			}
			if _, err := e.RotateKey(ctx, k.Tag); err != nil {
				t.Fatal(err)
			}
		}
	}
	tokTag := cts[0].tag
	if _, err := e.ActivateTokenGenerator(ctx, tokTag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, tokTag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "hsm"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := e.Backup(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// Another token: refused, nothing made.
	other := softhsmtest.Open(t, softhsmtest.NewToken(t))
	defer other.Close()
	missing := filepath.Join(t.TempDir(), "restored")
	_, err = kms.Restore(ctx, bytes.NewReader(buf.Bytes()), other, kms.WithDirectory(missing))
	if !errors.Is(err, kms.ErrBackendMismatch) {
		t.Fatalf("restore on another token: %v, want ErrBackendMismatch", err)
	}
	if _, err := os.Lstat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused restore made the target: %v", err)
	}

	// The same token.
	be := softhsmtest.Open(t, cfg)
	if _, err := kms.Restore(ctx, bytes.NewReader(buf.Bytes()), be, kms.WithDirectory(missing)); err != nil {
		t.Fatalf("restore on the same token: %v", err)
	}
	e2, err := kms.New(ctx, be, kms.WithDirectory(missing), kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatalf("open the restored directory: %v", err)
	}
	defer e2.Close()
	for _, c := range cts {
		if pt, err := e2.Decrypt(ctx, c.tag, c.ct, c.ctx); err != nil || !bytes.Equal(pt, msg) {
			t.Fatalf("decrypt after restore: %v", err)
		}
	}
	for _, s := range sigs {
		if ok, err := e2.Verify(ctx, s[0], msg, s[1]); err != nil || !ok {
			t.Fatalf("verify after restore: %v %v", ok, err)
		}
	}
	if _, err := e2.Sign(ctx, sigs[0][0], msg); err != nil {
		t.Fatalf("sign after restore: %v", err)
	}
	if _, err := e2.WithToken(set.Access, netip.MustParseAddr("127.0.0.1")).Encrypt(ctx, tokTag, msg, nil); err != nil {
		t.Fatalf("a token issued before the backup: %v", err)
	}
}
