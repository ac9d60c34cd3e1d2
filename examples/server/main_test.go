package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms/naverapi"
)

const adminToken = "test-admin-token-0123456789"

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// call sends a JSON request with the given headers and decodes the answer.
func call(t *testing.T, method, url string, body any, hdr ...string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, raw)
		}
	}
	return resp.StatusCode, out
}

// TestRun runs the custom server: the admin token manages keys and issues
// tokens, NAVER's token API works unchanged under the server's own mux,
// NCP signatures are not accepted, every request is logged by the server's
// middleware, and cancelling run shuts it down.
func TestRun(t *testing.T) {
	t.Setenv("KMS_ADMIN_TOKEN", adminToken)
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-addr", "127.0.0.1:0"}, out) }()
	var base string
	for deadline := time.Now().Add(30 * time.Second); base == "" && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, rest, ok := strings.Cut(out.String(), "listening on "); ok {
			base, _, _ = strings.Cut(rest, "\n")
		}
	}
	if base == "" {
		t.Fatalf("no address printed:\n%s", out.String())
	}
	admin := []string{"Authorization", "Bearer " + adminToken}

	status, key := call(t, "POST", base+"/kms/v3/keys", map[string]any{"keyName": "orders", "keyType": "AES256", "rotation": map[string]any{"enabled": false}}, admin...)
	tag, _ := key["keyTag"].(string)
	if status != http.StatusCreated || len(tag) != 64 {
		t.Fatalf("create key: %d %v", status, key)
	}
	if status, _ := call(t, "POST", base+"/kms/v3/keys/"+tag+"/activate-token-generator", nil, admin...); status != http.StatusOK {
		t.Fatalf("activate: %d", status)
	}
	_, set := call(t, "POST", base+"/kms/v1/keys/"+tag+"/token-set", map[string]any{"accessTokenHours": 1}, admin...)
	access, _ := set["data"].(map[string]any)["accessToken"].(string)
	status, enc := call(t, "POST", base+"/kms/v1/keys/"+tag+"/encrypt", map[string]any{"plaintext": "SGVsbG8gS01T"}, naverapi.HeaderToken, access)
	ct, _ := enc["data"].(map[string]any)["ciphertext"].(string)
	if status != http.StatusOK || !strings.HasPrefix(ct, "ncpkms:v1:") {
		t.Fatalf("token encrypt: %d %v", status, enc)
	}
	if status, dec := call(t, "POST", base+"/kms/v3/keys/"+tag+"/decrypt", map[string]any{"ciphertext": ct}, admin...); status != http.StatusOK || dec["plaintext"] != "SGVsbG8gS01T" {
		t.Fatalf("admin decrypt: %d %v", status, dec)
	}
	if status, _ := call(t, "GET", base+"/healthz", nil); status != http.StatusOK {
		t.Fatalf("healthz: %d", status)
	}

	// Refusals: a wrong admin token, and NAVER's signature, which this
	// server does not accept; both in NAVER's error envelope.
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	for name, hdr := range map[string][]string{
		"wrong token":  {"Authorization", "Bearer " + strings.Repeat("x", len(adminToken))},
		"signature v2": {naverapi.HeaderTimestamp, ts, naverapi.HeaderAccessKey, "AK", naverapi.HeaderSignature, naverapi.SignV2("sk", "GET", "/kms/v3/keys", ts, "AK")},
	} {
		status, body := call(t, "GET", base+"/kms/v3/keys", nil, hdr...)
		if e, _ := body["error"].(map[string]any); status != http.StatusUnauthorized || e["errorCode"] != "Unauthorized" {
			t.Errorf("%s: %d %v", name, status, body)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	log := out.String()
	if n := strings.Count(log, "msg=request "); n != 8 || !strings.Contains(log, "path=/kms/v1/keys/"+tag+"/encrypt") || !strings.Contains(log, "request_id=") {
		t.Fatalf("%d request lines:\n%s", n, log)
	}
	for _, secret := range []string{adminToken, access, "SGVsbG8gS01T"} {
		if strings.Contains(log, secret) {
			t.Fatal("the log holds a secret")
		}
	}
}

func TestRunNeedsAdminToken(t *testing.T) {
	t.Setenv("KMS_ADMIN_TOKEN", "short")
	if err := run(context.Background(), []string{"-addr", "127.0.0.1:0"}, io.Discard); err == nil || !strings.Contains(err.Error(), "KMS_ADMIN_TOKEN") {
		t.Fatalf("run with a short admin token: %v", err)
	}
}
