package naverapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
)

// ncpClient is a minimal NAVER Cloud KMS client, written the way a NAVER
// user writes one against https://ocapi.ncloud.com: account calls are signed
// with API Gateway signature v2 over the method, the path with its query, the
// timestamp and the access key; token calls send x-ncp-ocapi-token. Pointing
// it at the server changes only BaseURL.
type ncpClient struct {
	BaseURL   string // "https://ocapi.ncloud.com" for NAVER itself
	AccessKey string
	SecretKey string
	HTTP      *http.Client

	mu   sync.Mutex
	sent []sentRequest // every request, for the coverage and log checks
}

type sentRequest struct {
	method, target string
	secrets        []string // token or signature sent
	requestID      string
}

func newNCPClient(accessKey, secretKey string) *ncpClient {
	return &ncpClient{BaseURL: "https://ocapi.ncloud.com", AccessKey: accessKey, SecretKey: secretKey,
		HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// signature is NCP's makeSignature: base64(HmacSHA256(secretKey,
// method + " " + url + "\n" + timestamp + "\n" + accessKey)).
func (c *ncpClient) signature(method, url, timestamp string) string {
	mac := hmac.New(sha256.New, []byte(c.SecretKey))
	fmt.Fprintf(mac, "%s %s\n%s\n%s", method, url, timestamp, c.AccessKey)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// reply is a decoded response.
type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

// do sends one request. body is JSON-encoded unless it is a string or nil.
// With tok == "" the request is signed with the account keys.
func (c *ncpClient) do(t testing.TB, method, target string, body any, tok string, hdr ...string) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
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
	sent := sentRequest{method: method, target: target}
	if tok != "" {
		req.Header.Set("x-ncp-ocapi-token", tok)
		sent.secrets = append(sent.secrets, tok)
	} else {
		ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
		sig := c.signature(method, target, ts)
		req.Header.Set("x-ncp-apigw-timestamp", ts)
		req.Header.Set("x-ncp-iam-access-key", c.AccessKey)
		req.Header.Set("x-ncp-apigw-signature-v2", sig)
		sent.secrets = append(sent.secrets, sig)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	return c.send(t, req, sent)
}

func (c *ncpClient) send(t testing.TB, req *http.Request, sent sentRequest) reply {
	t.Helper()
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	sent.requestID = resp.Header.Get("x-ncp-request-id")
	c.mu.Lock()
	c.sent = append(c.sent, sent)
	c.mu.Unlock()
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: response is not a JSON object: %v\n%s", req.Method, req.URL.Path, err, raw)
		}
	}
	return r
}

// get walks a decoded JSON value by member names and array indexes.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

// str is get for a string (or "" when absent).
func (r reply) str(path ...any) string { s, _ := get(r.body, path...).(string); return s }

// num is get for a number (or -1 when absent).
func (r reply) num(path ...any) int {
	f, ok := get(r.body, path...).(float64)
	if !ok {
		return -1
	}
	return int(f)
}

// ok checks a 2xx status and, on v2, code SUCCESS.
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

// fails checks an error answer: status and error code, in either envelope.
func (r reply) fails(t testing.TB, what string, status int, code string) reply {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r.raw)
	}
	if got := r.str("error", "errorCode"); got != code {
		t.Fatalf("%s: errorCode %q, want %q: %s", what, got, code, r.raw)
	}
	if r.body["failures"] != nil {
		t.Fatalf("%s: both error and failures: %s", what, r.raw)
	}
	if r.str("code") != "" && r.str("code") != code {
		t.Fatalf("%s: v2 code %q, want %q", what, r.str("code"), code)
	}
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("%s: Content-Type %q", what, r.header.Get("Content-Type"))
	}
	return r
}

// failures checks a batch failure answer and returns index → errorCode.
func (r reply) failures(t testing.TB, what string, status int) map[string]string {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r.raw)
	}
	f, ok := r.body["failures"].(map[string]any)
	if !ok || len(f) == 0 {
		t.Fatalf("%s: no failures: %s", what, r.raw)
	}
	if _, both := r.body["error"]; both && r.body["code"] == nil {
		t.Fatalf("%s: v3 body has both error and failures: %s", what, r.raw)
	}
	out := map[string]string{}
	for k, v := range f {
		out[k], _ = get(v, "errorCode").(string)
	}
	return out
}

// fieldErrors lists error.fieldErrors[].field.
func (r reply) fieldErrors() []string {
	var out []string
	list, _ := get(r.body, "error", "fieldErrors").([]any)
	for _, fe := range list {
		if f, ok := get(fe, "field").(string); ok {
			out = append(out, f)
		}
	}
	return out
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

// testServer is a Handler on a fresh persisted Engine, served by
// httptest on 127.0.0.1, with an access key pair of its own.
type testServer struct {
	url     string
	eng     *kms.Engine
	handler *Handler
	out     *syncBuffer // the handler's log
	client  *ncpClient
}

// newTestServer serves NewHandler(engine, SignatureV2 with a new key pair,
// logging to out, opts...) and returns a client configured the way a NAVER
// user configures one, with only the base URL changed.
func newTestServer(t testing.TB, opts ...Option) *testServer {
	t.Helper()
	eng := newTestEngine(t)
	ak, sk := "AK"+rand.Text()[:18], rand.Text()+rand.Text()
	sig, err := NewSignatureV2(map[string]string{ak: sk})
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	h, err := NewHandler(eng, append([]Option{WithAuthenticator(sig), WithLogger(slog.New(slog.NewTextHandler(out, nil)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ts := &testServer{url: srv.URL, eng: eng, handler: h, out: out, client: newNCPClient(ak, sk)}
	ts.client.BaseURL = srv.URL // the only change from NAVER's configuration
	return ts
}

// newTestEngine opens an Engine on the memory backend and a temporary
// directory, closed when the test ends.
func newTestEngine(t testing.TB) *kms.Engine {
	t.Helper()
	root, err := memory.GenerateRootKey()
	if err != nil {
		t.Fatal(err)
	}
	be, err := memory.New(root)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := kms.New(context.Background(), be, kms.WithDirectory(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

// loopback trusts 127.0.0.1 as a proxy, as the server's -trusted-proxies.
var loopback = TrustedProxies(netip.MustParsePrefix("127.0.0.1/32"))
