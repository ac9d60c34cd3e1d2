package naverapi

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// connListener counts the connections accepted and the bytes read from
// them; its connections keep CloseWrite, as *net.TCPConn has it.
type connListener struct {
	net.Listener
	accepted, read atomic.Int64
}

func (l *connListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	return &closeWriteConn{c.(*net.TCPConn), &l.read}, nil
}

type closeWriteConn struct {
	*net.TCPConn
	read *atomic.Int64
}

func (c *closeWriteConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// serveConns serves h on loopback through a connListener.
func serveConns(t *testing.T, h http.Handler) (string, *connListener) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	l := &connListener{Listener: srv.Listener}
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL, l
}

// TestRefusedBodyConnection: over loopback, what happens to the connection
// of a refused request by body size. A body of up to 4 KiB is discarded
// by net/http from its buffer and the connection serves the next request;
// a larger one is not read beyond the server's first buffer (net/http on
// its own would read up to 256 KiB of it), the answer closes the
// connection, and the next request works on a new one; valid requests
// keep their connection.
func TestRefusedBodyConnection(t *testing.T) {
	f := newJunkFixture(t)
	url, l := serveConns(t, f.ts.handler)
	client := &http.Client{Transport: &http.Transport{}, Timeout: time.Minute}
	t.Cleanup(client.CloseIdleConnections)
	enc := url + "/kms/v3/token/keys/" + f.aes + "/encrypt"
	do := func(tok string, body []byte, want int) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", enc, bytes.NewReader(body))
		req.Header.Set(HeaderToken, tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("status %d, want %d", resp.StatusCode, want)
		}
		return resp
	}
	valid := []byte(`{"plaintext":"SGVsbG8gS01T"}`)

	// Valid requests keep the connection.
	for range 3 {
		do(f.access, valid, 200)
	}
	if n := l.accepted.Load(); n != 1 {
		t.Fatalf("3 valid requests took %d connections", n)
	}
	// A refused 1 KiB body: discarded by net/http, the connection stays.
	for _, tok := range []string{"junk", f.forged} {
		if resp := do(tok, bytes.Repeat([]byte("A"), 1<<10), 401); resp.Close {
			t.Fatal("a refused 1 KiB body closed the connection")
		}
	}
	do(f.access, valid, 200)
	if n := l.accepted.Load(); n != 1 {
		t.Fatalf("refused 1 KiB bodies: %d connections, want 1", n)
	}
	// A refused 200 KiB body: not read, the connection closes.
	before := l.read.Load()
	for i, tok := range []string{"junk", f.forged} {
		if resp := do(tok, bytes.Repeat([]byte("A"), 200<<10), 401); !resp.Close {
			t.Fatal("a refused 200 KiB body kept the connection")
		}
		do(f.access, valid, 200)
		if n := l.accepted.Load(); n != int64(2+i) {
			t.Fatalf("after refused 200 KiB body %d: %d connections, want %d", i+1, n, 2+i)
		}
	}
	// Each round read one buffer (4 KiB) of the refused request and the
	// valid request on its new connection.
	if got := l.read.Load() - before; got > 2*(4<<10+1<<10) {
		t.Fatalf("the server read %d bytes for 2 refused 200 KiB bodies and 2 small requests", got)
	}
}

// rawExchange sends head (and body) on a new connection and returns the
// answer's status line, whether it says Connection: close, and whether the server then ended the
// connection (EOF or reset) within 3 s.
func rawExchange(t *testing.T, addr, head string, body []byte) (status string, closes, ended bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	if body != nil {
		go func() { _, _ = c.Write(body) }() // may block: the server reads none of it
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = br.ReadByte()
	return resp.Status, resp.Close, err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestRefusedBodyHangUp: the connection of a refused request whose body is
// not read is answered and then ended by the server, without waiting for
// the body: a body the client has not sent yet (Expect: 100-continue, even
// a small one), a declared 7 MiB body with a valid token (413), a chunked
// body; and a client still sending 4.4 MB gets its 401, not a reset.
func TestRefusedBodyHangUp(t *testing.T) {
	f := newJunkFixture(t)
	url, l := serveConns(t, f.ts.handler)
	addr := strings.TrimPrefix(url, "http://")
	path := "/kms/v3/token/keys/" + f.aes + "/encrypt"
	head := func(tok string, hdr ...string) string {
		return "POST " + path + " HTTP/1.1\r\nHost: kms\r\nContent-Type: application/json\r\n" + HeaderToken + ": " + tok + "\r\n" + strings.Join(hdr, "") + "\r\n"
	}
	for _, tc := range []struct {
		name   string
		head   string
		body   []byte
		status int
	}{
		{"Expect 100-continue, 10 bytes", head("junk", "Content-Length: 10\r\n", "Expect: 100-continue\r\n"), nil, 401},
		{"declared 7 MiB, valid token", head(f.access, "Content-Length: "+strconv.Itoa(7<<20)+"\r\n"), nil, 413},
		{"chunked", head("junk", "Transfer-Encoding: chunked\r\n"), []byte("400\r\n" + strings.Repeat("A", 1<<10) + "\r\n"), 401},
		{"4.4 MB being sent", head(f.forged, "Content-Length: 4400000\r\n"), bytes.Repeat([]byte("A"), 4_400_000), 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := l.read.Load()
			status, closes, ended := rawExchange(t, addr, tc.head, tc.body)
			if !strings.HasPrefix(status, strconv.Itoa(tc.status)) || !closes {
				t.Fatalf("%s, Connection: close %v; want %d, close", status, closes, tc.status)
			}
			if !ended {
				t.Fatal("the server kept the connection open")
			}
			if got := l.read.Load() - before; got > 4<<10 {
				t.Fatalf("the server read %d bytes", got)
			}
		})
	}
}

// TestRefusedBodyWrappedWriter: behind a middleware whose ResponseWriter
// cannot be hijacked (no Unwrap), a refused big body still gets its 401
// with Connection: close, and net/http closes the connection.
func TestRefusedBodyWrappedWriter(t *testing.T) {
	f := newJunkFixture(t)
	wrap := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.ts.handler.ServeHTTP(struct{ http.ResponseWriter }{w}, r)
	})
	url, l := serveConns(t, wrap)
	addr := strings.TrimPrefix(url, "http://")
	path := "/kms/v3/token/keys/" + f.aes + "/encrypt"
	status, closes, ended := rawExchange(t, addr, "POST "+path+" HTTP/1.1\r\nHost: kms\r\n"+HeaderToken+": junk\r\nContent-Length: 4400000\r\n\r\n", bytes.Repeat([]byte("A"), 4_400_000))
	if !strings.HasPrefix(status, "401") || !closes || !ended {
		t.Fatalf("%s, Connection: close %v, ended %v", status, closes, ended)
	}
	if got := l.read.Load(); got > 4<<10 {
		t.Fatalf("the server read %d bytes", got)
	}
}
