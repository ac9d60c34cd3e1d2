package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms/naverapi"
)

// ncpClient is a minimal NAVER Cloud KMS client: account calls are signed
// with API Gateway signature v2, token calls send x-ncp-ocapi-token. (The
// full client and the API's tests are in package naverapi.)
type ncpClient struct {
	BaseURL   string
	AccessKey string
	SecretKey string
	HTTP      *http.Client
}

func newNCPClient(accessKey, secretKey string) *ncpClient {
	return &ncpClient{BaseURL: "https://ocapi.ncloud.com", AccessKey: accessKey, SecretKey: secretKey,
		HTTP: &http.Client{Timeout: 60 * time.Second}}
}

func (c *ncpClient) signature(method, url, timestamp string) string {
	return naverapi.SignV2(c.SecretKey, method, url, timestamp, c.AccessKey)
}

// reply is a decoded response.
type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

// do sends one request, body JSON-encoded unless a string or nil; with
// tok == "" it is signed with the account keys.
func (c *ncpClient) do(t testing.TB, method, target string, body any, tok string) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, c.BaseURL+target, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set(naverapi.HeaderToken, tok)
	} else {
		ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
		req.Header.Set(naverapi.HeaderTimestamp, ts)
		req.Header.Set(naverapi.HeaderAccessKey, c.AccessKey)
		req.Header.Set(naverapi.HeaderSignature, c.signature(method, target, ts))
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: response is not a JSON object: %v\n%s", method, target, err, raw)
		}
	}
	return r
}

// str walks the body by member names to a string ("" when absent).
func (r reply) str(path ...string) string {
	var v any = r.body
	for _, p := range path {
		m, _ := v.(map[string]any)
		v = m[p]
	}
	s, _ := v.(string)
	return s
}

// ok checks a 2xx status and, on API 2.0, code SUCCESS.
func (r reply) ok(t testing.TB, what string) reply {
	t.Helper()
	if r.status/100 != 2 {
		t.Fatalf("%s: status %d: %s", what, r.status, r.raw)
	}
	if c, ok := r.body["code"]; ok && c != "SUCCESS" {
		t.Fatalf("%s: code %v: %s", what, c, r.raw)
	}
	return r
}

// syncBuffer collects the server's output.
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

// testServer is one run of `pocketkms serve` on 127.0.0.1:0.
type testServer struct {
	url    string
	data   string
	out    *syncBuffer
	client *ncpClient
	stop   func() error
}

// startServer runs `serve -addr 127.0.0.1:0 -data data extra...`, waits for
// "listening on <url>", and reads the credentials the way a user does:
// from the file whose path the banner printed.
func startServer(t *testing.T, data string, extra ...string) *testServer {
	t.Helper()
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	args := append([]string{"serve", "-addr", "127.0.0.1:0", "-data", data}, extra...)
	go func() { done <- run(ctx, args, out) }()
	url := waitListening(t, out, done)
	ts := &testServer{url: url, data: data, out: out}
	var once sync.Once
	var stopErr error
	ts.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(30 * time.Second):
				stopErr = fmt.Errorf("run did not return after cancel")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := ts.stop(); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	ak, sk := readCredentialsFile(t, filepath.Join(data, "credentials"))
	ts.client = newNCPClient(ak, sk)
	ts.client.BaseURL = url
	return ts
}

func waitListening(t testing.TB, out *syncBuffer, done <-chan error) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, rest, ok := strings.Cut(out.String(), "listening on "); ok {
			line, _, _ := strings.Cut(rest, "\n")
			return strings.TrimSpace(line)
		}
		select {
		case err := <-done:
			t.Fatalf("run returned before listening: %v\n%s", err, out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatalf("server did not print its address:\n%s", out.String())
	return ""
}

func readCredentialsFile(t testing.TB, path string) (string, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		ak, sk, _ := strings.Cut(line, ":")
		return ak, sk
	}
	t.Fatalf("no credentials in %s", path)
	return "", ""
}
