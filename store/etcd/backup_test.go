package etcdstore_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/etcdtest"
	etcdstore "github.com/pocketkms/kms/store/etcd"
)

// TestRestoreIntoEmptyPrefix: a backup of an etcd-backed Engine, holding a
// key of MaxVersions versions (its restore is one transaction of 104
// operations, under etcd's default limit of 128), restores into an empty
// prefix of the same cluster, where an Engine decrypts the first and last
// versions' ciphertexts; the source's own prefix, not empty, is refused.
func TestRestoreIntoEmptyPrefix(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := newEngine(t, c, "/bk-src/")
	k, err := src.CreateKey(ctx, kms.CreateKeyRequest{Name: "many", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	if _, err := src.AddAllowedIPs(ctx, k.Tag, []string{"10.0.0.0/8"}); err != nil {
		t.Fatal(err)
	}
	first, err := src.Encrypt(ctx, k.Tag, []byte("v1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for range kms.MaxVersions - 1 {
		if _, err := src.RotateKey(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
	}
	last, err := src.Encrypt(ctx, k.Tag, []byte("v100"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := src.Backup(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	restore := func(prefix string) error {
		st, err := etcdstore.New(ctx, c.Client(t), prefix)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		be, err := memory.New(rootKey)
		if err != nil {
			t.Fatal(err)
		}
		defer be.Close()
		_, err = kms.Restore(ctx, bytes.NewReader(buf.Bytes()), be, kms.WithStore(st))
		return err
	}
	if err := restore("/bk-src/"); !errors.Is(err, kms.ErrAlreadyExists) {
		t.Fatalf("restore into the source's prefix: %v, want ErrAlreadyExists", err)
	}
	if err := restore("/bk-dst/"); err != nil {
		t.Fatalf("restore into an empty prefix: %v", err)
	}
	dst := newEngine(t, c, "/bk-dst/")
	for ct, want := range map[string]string{first: "v1", last: "v100"} {
		if pt, err := dst.Decrypt(ctx, k.Tag, ct, nil); err != nil || string(pt) != want {
			t.Fatalf("decrypt on the restored prefix: %q %v", pt, err)
		}
	}
	if _, err := dst.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Subject: "s", Permissions: kms.AllPermissions()}); err != nil {
		t.Fatalf("the restored token generator: %v", err)
	}
}
