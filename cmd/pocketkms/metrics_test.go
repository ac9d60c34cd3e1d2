package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServeMetrics: with -metrics-addr, serve exposes the Engine's
// OpenTelemetry instruments in Prometheus's text format on a listener of
// its own, and a management call shows up in them; the API's own address
// serves no /metrics.
func TestServeMetrics(t *testing.T) {
	ts := startServer(t, t.TempDir(), "-metrics-addr", "127.0.0.1:0")
	var murl string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, rest, ok := strings.Cut(ts.out.String(), "Prometheus metrics on "); ok {
			murl, _, _ = strings.Cut(rest, "\n")
			break
		}
	}
	if murl == "" {
		t.Fatalf("no metrics address in the banner:\n%s", ts.out.String())
	}
	ts.client.do(t, "POST", "/kms/v1/keys", map[string]any{"keyName": "metered", "keyType": "AES256", "isAutoRotation": false, "protectionType": "BASIC"}, "").ok(t, "create")
	resp, err := http.Get(murl)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", murl, resp.StatusCode)
	}
	for _, want := range []string{"pocketkms_operations", `op="create key"`, "pocketkms_store_commit_duration_seconds_bucket"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%.3000s", want, body)
		}
	}
	resp, err = http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Error("the API's address serves /metrics")
	}
}

func TestServeMetricsBadAddr(t *testing.T) {
	if _, err := parseServeFlags([]string{"-metrics-addr", "nonsense"}, io.Discard); err == nil {
		t.Fatal("a -metrics-addr without a port was accepted")
	}
}
