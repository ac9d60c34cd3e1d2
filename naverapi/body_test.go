package naverapi

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/token"
)

// countingBody is a request body of n bytes (endless when n < 0) of JSON
// that would fail validation if it were read; it counts what is read.
type countingBody struct {
	n    int64 // bytes left; < 0: endless
	read atomic.Int64
}

var junkJSON = []byte(`{"plaintext":5,"ciphertext":[],"requests":"x","data":"!!!!"`)

func (b *countingBody) Read(p []byte) (int, error) {
	if b.n == 0 {
		return 0, io.EOF
	}
	if b.n > 0 && int64(len(p)) > b.n {
		p = p[:b.n]
	}
	for i := range p {
		p[i] = junkJSON[(int(b.read.Load())+i)%len(junkJSON)]
	}
	b.read.Add(int64(len(p)))
	if b.n > 0 {
		b.n -= int64(len(p))
	}
	return len(p), nil
}

// junkFixture is a server with keys in the states the refusals need.
type junkFixture struct {
	ts                    *testServer
	aes, acl, off, noperm string // key tags: plain, allow-list, disabled, token without Encrypt
	access, refresh       string // tokens of aes
	aclAccess, offAccess  string
	nopermAccess          string
	forged, otherKey      string
}

func newJunkFixture(t testing.TB, opts ...Option) *junkFixture {
	t.Helper()
	ctx := context.Background()
	ts := newTestServer(t, append([]Option{WithClientAddr(loopback)}, opts...)...)
	e := ts.eng
	key := func(name string, perms []token.Permission) (string, *token.Set) {
		k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: name, Type: kms.AES256})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
		set, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Subject: "junk-test", Permissions: perms})
		if err != nil {
			t.Fatal(err)
		}
		return k.Tag, set
	}
	f := &junkFixture{ts: ts}
	var set *token.Set
	f.aes, set = key("plain", kms.AllPermissions())
	f.access, f.refresh = set.Access, set.Refresh
	f.acl, set = key("listed", kms.AllPermissions())
	f.aclAccess = set.Access
	if _, err := e.AddAllowedIPs(ctx, f.acl, []string{"10.1.2.3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetKeyACLEnabled(ctx, f.acl, true); err != nil {
		t.Fatal(err)
	}
	f.off, set = key("disabled", kms.AllPermissions())
	f.offAccess = set.Access
	if _, err := e.DisableKey(ctx, f.off); err != nil {
		t.Fatal(err)
	}
	f.noperm, set = key("noperm", []token.Permission{token.PermDecrypt})
	f.nopermAccess = set.Access
	sig := []byte(f.access)
	i := strings.LastIndexByte(f.access, '.') + 5
	if sig[i] == 'A' {
		sig[i] = 'B'
	} else {
		sig[i] = 'A'
	}
	f.forged = string(sig)
	_, set = key("other", kms.AllPermissions())
	f.otherKey = set.Access
	return f
}

// junkCase is one refused request.
type junkCase struct {
	name, method, path string
	hdr                []string
	status             int
	code               string
}

func (f *junkFixture) cases() []junkCase {
	v2 := func(tag string) string { return "/kms/v1/keys/" + tag + "/encrypt" }
	t3 := func(tag, op string) string { return "/kms/v3/token/keys/" + tag + "/" + op }
	tok := func(s string) []string { return []string{HeaderToken, s} }
	return []junkCase{
		{"garbage token", "POST", v2(f.aes), tok("junk.junk.junk"), 401, "Unauthorized"},
		{"garbage token, v3 batch", "POST", t3(f.aes, "batch-decrypt"), tok("junk"), 401, "Unauthorized"},
		{"bad signature", "POST", v2(f.aes), tok(f.forged), 401, "Unauthorized"},
		{"bad signature, renewal", "POST", t3(f.aes, "reissue-tokens"), tok(f.forged), 401, "Unauthorized"},
		{"token of another key", "POST", t3(f.aes, "encrypt"), tok(f.otherKey), 401, "Unauthorized"},
		{"refresh token on a cipher call", "POST", t3(f.aes, "batch-encrypt"), tok(f.refresh), 401, "Unauthorized"},
		{"access token on renewal", "PUT", "/kms/v1/keys/" + f.aes + "/token-set", tok(f.access), 401, "Unauthorized"},
		{"unknown key", "POST", v2(strings.Repeat("0", 64)), tok(f.access), 401, "Unauthorized"},
		{"no token", "POST", t3(f.aes, "sign"), nil, 401, "Unauthorized"},
		{"wrong IP", "POST", v2(f.acl), append(tok(f.aclAccess), "X-Forwarded-For", "10.9.9.9"), 403, "AccessDenied"},
		{"wrong IP, junk token", "POST", t3(f.acl, "encrypt"), append(tok("junk"), "X-Forwarded-For", "10.9.9.9"), 403, "AccessDenied"},
		{"permission missing", "POST", v2(f.noperm), tok(f.nopermAccess), 403, "Forbidden"},
		{"disabled key", "POST", t3(f.off, "encrypt"), tok(f.offAccess), 409, "InvalidState"},
		{"bad account signature", "POST", "/kms/v3/keys", []string{HeaderTimestamp, "1", HeaderAccessKey, "AK", HeaderSignature, "c2ln"}, 401, "Unauthorized"},
		{"no account headers", "POST", "/kms/v3/keys/" + f.aes + "/batch-decrypt", nil, 401, "Unauthorized"},
		{"unknown path", "POST", "/kms/v3/nope", nil, 404, "NotFound"},
		{"wrong method", "PATCH", "/kms/v1/keys", nil, 405, "MethodNotAllowed"},
	}
}

// TestRefusedBodyIsNotRead: a caller who fails authentication (IP
// allow-list, token, account signature) is refused with 401/403 whatever
// its body, and not one byte of the body is read by the handler. On a real
// connection a body of more than 4 KiB is not read by net/http either (the
// connection is closed, TestRefusedBodyConnection); one of up to 4 KiB is
// discarded by net/http from its read buffer and the connection kept.
func TestRefusedBodyIsNotRead(t *testing.T) {
	f := newJunkFixture(t)
	for _, tc := range f.cases() {
		for form, size := range map[string]int64{"64 MiB": 64 << 20, "chunked": -1, "1 KiB": 1 << 10} {
			t.Run(tc.name+"/"+form, func(t *testing.T) {
				body := &countingBody{n: size}
				r := httptest.NewRequest(tc.method, tc.path, body)
				r.RemoteAddr = "127.0.0.1:4242"
				r.ContentLength = size
				r.Header.Set("Content-Type", "application/json")
				for i := 0; i+1 < len(tc.hdr); i += 2 {
					r.Header.Set(tc.hdr[i], tc.hdr[i+1])
				}
				w := httptest.NewRecorder()
				f.ts.handler.ServeHTTP(w, r)
				if w.Code != tc.status || !strings.Contains(w.Body.String(), `"errorCode":"`+tc.code+`"`) {
					t.Fatalf("%d %s, want %d %s", w.Code, w.Body, tc.status, tc.code)
				}
				if n := body.read.Load(); n != 0 {
					t.Fatalf("read %d bytes of a refused caller's body", n)
				}
				// A body of up to maxDiscardedBody is left to net/http to
				// discard from its buffer; a larger one closes the connection.
				if closes := w.Header().Get("Connection") == "close"; closes != (size < 0 || size > maxDiscardedBody) {
					t.Fatalf("Connection: close %v for a %s body", closes, form)
				}
			})
		}
	}

}

// TestBodyLimitWhileReading: an authenticated caller's body is read within
// MaxBodyBytes: one that declares more is refused unread, one of unknown
// length is cut at the limit; both are 413.
func TestBodyLimitWhileReading(t *testing.T) {
	f := newJunkFixture(t)
	for _, tc := range []struct {
		name    string
		size    int64 // -1: chunked, endless
		maxRead int64
	}{
		{"declared 7 MiB", 7 << 20, 0},
		{"chunked, endless", -1, MaxBodyBytes + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := &countingBody{n: tc.size}
			r := httptest.NewRequest("POST", "/kms/v3/token/keys/"+f.aes+"/batch-encrypt", body)
			r.ContentLength = tc.size
			r.Header.Set(HeaderToken, f.access)
			w := httptest.NewRecorder()
			f.ts.handler.ServeHTTP(w, r)
			if w.Code != 413 || !strings.Contains(w.Body.String(), "PayloadTooLarge") {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			if n := body.read.Load(); n > tc.maxRead {
				t.Fatalf("read %d bytes, want at most %d", n, tc.maxRead)
			}
		})
	}
	// A good request reads its body, once.
	payload := `{"plaintext":"SGVsbG8gS01T"}`
	r := httptest.NewRequest("POST", "/kms/v1/keys/"+f.aes+"/encrypt", strings.NewReader(payload))
	r.Header.Set(HeaderToken, f.access)
	w := httptest.NewRecorder()
	f.ts.handler.ServeHTTP(w, r)
	if w.Code != 200 || w.Header().Get("Connection") != "" {
		t.Fatalf("good request: %d %s %v", w.Code, w.Body, w.Header())
	}
}

// countingListener counts the bytes the server reads from its connections.
type countingListener struct {
	net.Listener
	read *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.read}, nil
}

type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// serveCounting serves h on loopback and counts what the server reads.
func serveCounting(t testing.TB, h http.Handler) (url string, read *atomic.Int64) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	read = new(atomic.Int64)
	srv.Listener = countingListener{srv.Listener, read}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL, read
}

// TestJunkTokenBigBodiesOverLoopback: over a real connection, 4.4 MB
// bodies with junk tokens are answered 401 and the server reads no more
// than their headers and a buffer's worth (net/http reads 4 KiB at a time).
func TestJunkTokenBigBodiesOverLoopback(t *testing.T) {
	f := newJunkFixture(t)
	url, read := serveCounting(t, f.ts.handler)
	big := bytes.Repeat([]byte("A"), 4_400_000)
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tok := "junk"
			if i%2 == 1 {
				tok = f.forged
			}
			req, _ := http.NewRequest("POST", url+"/kms/v3/token/keys/"+f.aes+"/encrypt", bytes.NewReader(big))
			req.Header.Set(HeaderToken, tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("request %d: status %d", i, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if got, bound := read.Load(), int64(n*64<<10); got > bound {
		t.Fatalf("the server read %d bytes for %d refused requests of %d bytes (bound %d)", got, n, len(big), bound)
	} else {
		t.Logf("the server read %d bytes for %d refused requests of %d bytes", got, n, len(big))
	}
}
