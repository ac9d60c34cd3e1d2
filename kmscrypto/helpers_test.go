package kmscrypto_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/kmscrypto"
	"github.com/pocketkms/kms/token"
)

var callerIP = netip.MustParseAddr("10.0.0.7")

// newEngine opens an in-memory Engine over software keys.
func newEngine(t testing.TB) *kms.Engine {
	t.Helper()
	root, err := memory.GenerateRootKey()
	if err != nil {
		t.Fatal(err)
	}
	be, err := memory.New(root)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kms.New(context.Background(), be, kms.WithMaintenanceInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

var keySeq atomic.Int64

// newKey creates a key and returns its tag.
func newKey(t testing.TB, e *kms.Engine, typ kms.KeyType, convergent bool) string {
	t.Helper()
	name := fmt.Sprintf("key%d", keySeq.Add(1))
	k, err := e.CreateKey(context.Background(), kms.CreateKeyRequest{Name: name, Type: typ, Convergent: convergent})
	if err != nil {
		t.Fatal(err)
	}
	return k.Tag
}

// tokenClient activates the key's token generator (a no-op when active)
// and returns the token plane for an access token with perms.
func tokenClient(t testing.TB, e *kms.Engine, tag string, perms ...token.Permission) kms.TokenClient {
	t.Helper()
	ctx := context.Background()
	if _, err := e.ActivateTokenGenerator(ctx, tag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, tag, kms.IssueTokensRequest{Subject: "kmscrypto-test", Permissions: perms})
	if err != nil {
		t.Fatal(err)
	}
	return e.WithToken(set.Access, callerIP)
}

// planes returns the key's two planes: the Engine itself and a token
// client holding every permission.
func planes(t testing.TB, e *kms.Engine, tag string) map[string]kmscrypto.Client {
	t.Helper()
	return map[string]kmscrypto.Client{
		"trusted": e,
		"token":   tokenClient(t, e, tag, token.AllPermissions()...),
	}
}

// wantKind checks that err is a *kms.Error matching kind.
func wantKind(t testing.TB, err, kind error) {
	t.Helper()
	var ke *kms.Error
	if !errors.Is(err, kind) || !errors.As(err, &ke) || ke.Code == "" || ke.Status == 0 {
		t.Fatalf("err = %v, want a *kms.Error matching %v", err, kind)
	}
}

func sha256Of(b []byte) []byte {
	d := sha256.Sum256(b)
	return d[:]
}
