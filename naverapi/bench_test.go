package naverapi

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/ratelimit"
)

// BenchmarkTokenEncrypt measures token-plane Encrypt (32-byte plaintext,
// AES256) as requests per second: "http" through the handler over loopback
// HTTP/1.1 keep-alive from 16 client goroutines (v2 path, JSON bodies,
// request log lines formatted and discarded), "in-process" the same call
// on Engine.WithToken in the same run. The key's rate limit is switched
// off, as 300/s would cap both.
//
//	go test -run '^$' -bench BenchmarkTokenEncrypt -benchtime 5s ./naverapi/
func BenchmarkTokenEncrypt(b *testing.B) {
	ctx := context.Background()
	ts := newTestServer(b)
	eng := ts.eng
	k, err := eng.CreateKey(ctx, kms.CreateKeyRequest{Name: "bench", Type: kms.AES256})
	if err != nil {
		b.Fatal(err)
	}
	if err := eng.SetKeyRateLimit(ctx, k.Tag, ratelimit.Limit{Unlimited: true}); err != nil {
		b.Fatal(err)
	}
	if _, err := eng.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		b.Fatal(err)
	}
	set, err := eng.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	plaintext := []byte("0123456789abcdef0123456789abcdef")
	body := `{"plaintext":"` + b64(plaintext) + `"}`

	b.Run("http", func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024}}
		defer client.CloseIdleConnections()
		url := ts.url + "/kms/v1/keys/" + k.Tag + "/encrypt"
		b.SetParallelism(16)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, err := http.NewRequest("POST", url, strings.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				req.Header.Set("x-ncp-ocapi-token", set.Access)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	})

	b.Run("in-process", func(b *testing.B) {
		caller := netip.MustParseAddr("127.0.0.1")
		b.SetParallelism(16)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := eng.WithToken(set.Access, caller).Encrypt(ctx, k.Tag, plaintext, nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	})
}
