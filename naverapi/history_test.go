package naverapi

import (
	"context"
	"strings"
	"testing"

	"github.com/pocketkms/kms"
)

// TestKeyHistoryEndpoint: GET /kms/v3/keys/{keyTag}/history lists the
// key's management changes newest first, paged, for account callers only.
func TestKeyHistoryEndpoint(t *testing.T) {
	ts := newTestServer(t)
	ctx := kms.WithCaller(context.Background(), "svc-hist")
	k, err := ts.eng.CreateKey(ctx, kms.CreateKeyRequest{Name: "histkey", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.eng.RotateKey(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	p := "/kms/v3/keys/" + k.Tag + "/history"
	r := ts.client.do(t, "GET", p, nil, "").ok(t, "history")
	if r.num("totalCount") != 2 || r.num("pageSize") != 20 {
		t.Fatalf("history: %s", r.raw)
	}
	if r.str("history", 0, "operation") != "rotate key" || r.num("history", 0, "version") != 2 || r.num("history", 0, "seq") != 2 ||
		r.str("history", 0, "caller") != "svc-hist" || r.str("history", 0, "status") != "ENABLED" || r.str("history", 0, "plane") != "trusted" ||
		r.str("history", 0, "dateTime") == "" || r.str("history", 1, "operation") != "create key" {
		t.Fatalf("history: %s", r.raw)
	}
	r = ts.client.do(t, "GET", p+"?pageNo=1&pageSize=1", nil, "").ok(t, "history page 1")
	if r.str("history", 0, "operation") != "create key" || r.num("pageNo") != 1 {
		t.Fatalf("page 1: %s", r.raw)
	}
	ts.client.do(t, "GET", p+"?pageSize=101", nil, "").fails(t, "pageSize 101", 400, "InvalidParameter")
	ts.client.do(t, "GET", "/kms/v3/keys/"+strings.Repeat("0", 64)+"/history", nil, "").fails(t, "unknown key", 404, "ResourceNotFound")
	// No token route: a token never reads the history.
	if _, err := ts.eng.ActivateTokenGenerator(context.Background(), k.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := ts.eng.IssueTokens(context.Background(), k.Tag, kms.IssueTokensRequest{Subject: "x", Permissions: kms.AllPermissions()})
	if err != nil {
		t.Fatal(err)
	}
	if got := ts.client.do(t, "GET", "/kms/v3/token/keys/"+k.Tag+"/history", nil, set.Access); got.status != 404 && got.status != 405 {
		t.Fatalf("token history route answered %d", got.status)
	}
}
