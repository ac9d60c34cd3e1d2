package naverapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pocketkms/kms/ratelimit"
)

// loadKind is one kind of request of the load test.
type loadKind struct {
	name   string
	weight int // out of the sum of weights
	status int
	body   []byte
	req    func(url string, body io.Reader) *http.Request
}

// TestLoadMixedTraffic sends mixed junk (junk and forged tokens, a wrong
// IP, 4.4 MB bodies with junk tokens, bad account signatures) and valid
// traffic (token encrypt, account list) to the handler over loopback, from
// 8 clients, and checks every answer, that the server read at most the
// valid bodies plus a small bound per request, and that the heap stays
// bounded. It is bounded in count and time: 3,000 requests (600 with
// -short) or 20 s, whichever comes first.
func TestLoadMixedTraffic(t *testing.T) {
	total, limit := 3000, 20*time.Second
	if testing.Short() {
		total = 600
	}
	f := newJunkFixture(t, WithAccountRateLimit(ratelimit.Limit{Unlimited: true}))
	if err := f.ts.eng.SetKeyRateLimit(context.Background(), f.aes, ratelimit.Limit{Unlimited: true}); err != nil {
		t.Fatal(err)
	}
	url, read := serveCounting(t, f.ts.handler)
	small := []byte(`{"plaintext":"` + b64(bytes.Repeat([]byte("p"), 1024)) + `"}`)
	big := bytes.Repeat([]byte("A"), 4_400_000)
	withToken := func(path, tok string, hdr ...string) func(string, io.Reader) *http.Request {
		return func(url string, body io.Reader) *http.Request {
			r, _ := http.NewRequest("POST", url+path, body)
			r.Header.Set(HeaderToken, tok)
			for i := 0; i+1 < len(hdr); i += 2 {
				r.Header.Set(hdr[i], hdr[i+1])
			}
			return r
		}
	}
	signed := func(method, path, ak, sk string) func(string, io.Reader) *http.Request {
		return func(url string, body io.Reader) *http.Request {
			r, _ := http.NewRequest(method, url+path, body)
			ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
			r.Header.Set(HeaderTimestamp, ts)
			r.Header.Set(HeaderAccessKey, ak)
			r.Header.Set(HeaderSignature, SignV2(sk, method, path, ts, ak))
			return r
		}
	}
	enc := "/kms/v1/keys/" + f.aes + "/encrypt"
	kinds := []loadKind{
		{"valid token encrypt", 30, 200, small, withToken(enc, f.access)},
		{"valid account list", 5, 200, nil, signed("GET", "/kms/v3/keys?pageSize=1", f.ts.client.AccessKey, f.ts.client.SecretKey)},
		{"junk token", 20, 401, small, withToken(enc, "junk.token.here")},
		{"forged token", 15, 401, small, withToken(enc, f.forged)},
		{"wrong IP", 15, 403, small, withToken("/kms/v1/keys/"+f.acl+"/encrypt", f.aclAccess, "X-Forwarded-For", "10.9.9.9")},
		{"bad account signature", 10, 401, small, signed("POST", "/kms/v3/keys/"+f.aes+"/encrypt", f.ts.client.AccessKey, "wrong")},
		{"4.4 MB body, junk token", 5, 401, big, withToken("/kms/v3/token/keys/"+f.aes+"/batch-decrypt", "junk")},
	}
	var schedule []int
	for i, k := range kinds {
		for range k.weight {
			schedule = append(schedule, i)
		}
	}

	var before, after, peak runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.HeapInuse {
					peak = m
				}
			}
		}
	})

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	counts := make([]atomic.Int64, len(kinds))
	var validBytes atomic.Int64
	var mu sync.Mutex
	var failures []string
	deadline := time.Now().Add(limit)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= total || time.Now().After(deadline) {
					return
				}
				k := kinds[schedule[(i*7919)%len(schedule)]]
				var body io.Reader
				if k.body != nil {
					body = bytes.NewReader(k.body)
				}
				resp, err := client.Do(k.req(url, body))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != k.status {
					mu.Lock()
					if len(failures) < 10 {
						failures = append(failures, fmt.Sprintf("%s: %v %v", k.name, resp, err))
					}
					mu.Unlock()
					continue
				}
				counts[schedule[(i*7919)%len(schedule)]].Add(1)
				if k.status == 200 {
					validBytes.Add(int64(len(k.body)))
				}
			}
		})
	}
	wg.Wait()
	close(stopSampling)
	sampler.Wait()
	runtime.GC()
	runtime.ReadMemStats(&after)

	if len(failures) > 0 {
		t.Fatalf("unexpected answers:\n%v", failures)
	}
	sent := int64(0)
	for i, k := range kinds {
		n := counts[i].Load()
		sent += n
		t.Logf("%-26s %5d", k.name, n)
		if n == 0 {
			t.Errorf("no %s request was sent", k.name)
		}
	}
	bigs := counts[len(kinds)-1].Load()
	// Every request may cost its headers and a read buffer (net/http reads
	// 4 KiB at a time); a valid one its body too. The junk bodies alone
	// were bigs × 4.4 MB.
	bound := validBytes.Load() + sent*8<<10
	t.Logf("%d requests in all; the server read %d bytes (bound %d; the junk bodies were %d bytes)", sent, read.Load(), bound, bigs*int64(len(big)))
	if read.Load() > bound {
		t.Errorf("the server read %d bytes, more than %d", read.Load(), bound)
	}
	// The heap: the test's own 4.4 MB buffer and connections' buffers
	// aside, nothing may grow with the junk (it grew by about 1 GB when
	// 192 junk bodies were read).
	const slack = 64 << 20
	t.Logf("HeapInuse before %d MiB, peak %d MiB, after %d MiB", before.HeapInuse>>20, peak.HeapInuse>>20, after.HeapInuse>>20)
	if after.HeapInuse > before.HeapInuse+slack {
		t.Errorf("HeapInuse grew from %d to %d bytes", before.HeapInuse, after.HeapInuse)
	}
	if peak.HeapInuse > before.HeapInuse+2*slack {
		t.Errorf("HeapInuse peaked at %d bytes (from %d)", peak.HeapInuse, before.HeapInuse)
	}
}
