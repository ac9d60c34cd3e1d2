package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/ratelimit"
)

// startServe starts the server for BenchmarkServeTokenEncrypt. (The
// benchmark's body is also run, unchanged but for this function, against
// examples/server of the commit before naverapi existed: BENCHMARKS.md.)
func startServe(ctx context.Context, args []string, started func(*kms.Engine, string)) error {
	return serveWith(ctx, args, io.Discard, started)
}

// BenchmarkServeTokenEncrypt is the server's throughput on NAVER's token
// API: POST /kms/v1/keys/{keyTag}/encrypt of 1 KiB with an access token,
// over loopback HTTP/1.1 keep-alive, from 1 and from 16 client goroutines,
// with the key's rate limit switched off (300/s would cap it). The server
// is the whole program (serve: flags, log lines formatted and discarded,
// http.Server timeouts).
//
//	go test -run '^$' -bench BenchmarkServeTokenEncrypt -benchtime 3s ./cmd/pocketkms/
func BenchmarkServeTokenEncrypt(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	type started struct {
		eng  *kms.Engine
		addr string
	}
	ready := make(chan started, 1)
	done := make(chan error, 1)
	go func() {
		done <- startServe(ctx, []string{"-addr", "127.0.0.1:0", "-data", filepath.Join(b.TempDir(), "d")},
			func(e *kms.Engine, addr string) { ready <- started{e, addr} })
	}()
	var s started
	select {
	case s = <-ready:
	case err := <-done:
		b.Fatalf("serve: %v", err)
	}
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("serve: %v", err)
		}
	})
	k, err := s.eng.CreateKey(ctx, kms.CreateKeyRequest{Name: "bench", Type: kms.AES256})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.eng.SetKeyRateLimit(ctx, k.Tag, ratelimit.Limit{Unlimited: true}); err != nil {
		b.Fatal(err)
	}
	if _, err := s.eng.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		b.Fatal(err)
	}
	set, err := s.eng.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"plaintext":"` + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("p"), 1024)) + `"}`)
	url := "http://" + s.addr + "/kms/v1/keys/" + k.Tag + "/encrypt"
	for _, clients := range []int{1, 16} {
		b.Run("clients="+strconv.Itoa(clients), func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			one := func() bool {
				req, err := http.NewRequest("POST", url, bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return false
				}
				req.Header.Set("x-ncp-ocapi-token", set.Access)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return false
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return false
				}
				return true
			}
			one() // connect outside the timing
			b.ResetTimer()
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			for range clients {
				wg.Go(func() {
					for left.Add(-1) >= 0 && one() {
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
