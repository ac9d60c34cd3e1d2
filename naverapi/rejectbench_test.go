//go:build unix

package naverapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pocketkms/kms/ratelimit"
)

// rejectSizes are the body sizes of the rejection benchmarks: none, a
// small request, one above maxDiscardedBody but within net/http's 256 KiB
// post-handler read, and the largest legitimate batch. The last is sent
// twice in BenchmarkRejection: by a client with the OS's default send
// buffer, and by one whose send buffer is fixed at 64 KiB (sndbuf), which
// leaves out of the server's account the freeing of the client's unsent
// data that, over loopback only, the server's reset pays for (see
// BENCHMARKS.md).
var rejectSizes = []struct {
	name   string
	n      int
	sndbuf int // the client's SO_SNDBUF; 0: the OS's default
}{{"0B", 0, 0}, {"1KiB", 1 << 10, 0}, {"200KiB", 200 << 10, 0}, {"4.4MB", 4_400_000, 0}, {"4.4MB-sndbuf64KiB", 4_400_000, 64 << 10}}

// rejection is one kind of refused (or, for reference, accepted) request.
type rejection struct {
	name   string
	status int
	req    func(base string, body io.Reader) *http.Request
}

func rejections(f *benchFixture) []rejection {
	tok := func(path, t string, hdr ...string) func(string, io.Reader) *http.Request {
		return func(base string, body io.Reader) *http.Request {
			r, _ := http.NewRequest("POST", base+path, body)
			r.Header.Set(HeaderToken, t)
			for i := 0; i+1 < len(hdr); i += 2 {
				r.Header.Set(hdr[i], hdr[i+1])
			}
			return r
		}
	}
	enc := "/kms/v3/token/keys/" + f.AES + "/encrypt"
	return []rejection{
		{"WrongIP", 403, tok("/kms/v3/token/keys/"+f.ACL+"/encrypt", f.ACLAccess, "X-Forwarded-For", "10.9.9.9")},
		{"JunkToken", 401, tok(enc, "junk.token.here")},
		{"BadSignature", 401, tok(enc, f.Forged)},
		{"BadAccountSignature", 401, func(base string, body io.Reader) *http.Request {
			path := "/kms/v3/keys/" + f.AES + "/encrypt"
			r, _ := http.NewRequest("POST", base+path, body)
			ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
			r.Header.Set(HeaderTimestamp, ts)
			r.Header.Set(HeaderAccessKey, f.AccessKey)
			r.Header.Set(HeaderSignature, SignV2("wrong", "POST", path, ts, f.AccessKey))
			return r
		}},
	}
}

// benchFixture is what the server process tells the benchmark.
type benchFixture struct {
	URL, RawURL, AES, ACL, Access, ACLAccess, Forged, AccessKey string
}

// raw401 is the reference: net/http alone refusing a request the way the
// handler does (401 with a small JSON body, without reading anything): a
// body of up to 4 KiB is left for net/http to discard, a larger one gets
// Connection: close and its connection is hijacked, half-closed and
// closed 500 ms later (refuseBody, hangUp).
func raw401(w http.ResponseWriter, r *http.Request) {
	const msg = `{"error":{"errorCode":"Unauthorized","message":"Authentication failed."}}` + "\n"
	hang := r.ContentLength < 0 || r.ContentLength > 4<<10
	if hang {
		w.Header().Set("Connection", "close")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
	w.WriteHeader(http.StatusUnauthorized)
	io.WriteString(w, msg)
	if !hang {
		return
	}
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	if conn, _, err := rc.Hijack(); err == nil {
		conn.(*net.TCPConn).CloseWrite()
		time.AfterFunc(500*time.Millisecond, func() { conn.Close() })
	}
}

// TestRejectionServerProcess is the server of BenchmarkRejection, run in a
// process of its own so that its CPU time is the server's alone. It prints
// the fixture as JSON, then answers each "cpu" line on its standard input
// with its CPU time (user + system, ns) and ends at EOF.
func TestRejectionServerProcess(t *testing.T) {
	if os.Getenv("NAVERAPI_REJECTION_SERVER") != "1" {
		t.Skip("the server process of BenchmarkRejection")
	}
	f := newJunkFixture(t, WithAccountRateLimit(ratelimit.Limit{Unlimited: true}))
	if err := f.ts.eng.SetKeyRateLimit(context.Background(), f.aes, ratelimit.Limit{Unlimited: true}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f.ts.handler)
	defer srv.Close()
	raw := httptest.NewServer(http.HandlerFunc(raw401))
	defer raw.Close()
	out, _ := json.Marshal(benchFixture{URL: srv.URL, RawURL: raw.URL, AES: f.aes, ACL: f.acl, Access: f.access, ACLAccess: f.aclAccess,
		Forged: f.forged, AccessKey: f.ts.client.AccessKey})
	fmt.Println(string(out))
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		fmt.Println(ru.Utime.Nano() + ru.Stime.Nano())
	}
}

// BenchmarkRejection measures what refused requests cost the server over
// loopback HTTP/1.1, by kind of refusal and body size: the server runs in
// a child process and "server-µs/op" is its CPU time (user + system) per
// request, which is what a flood of junk costs; ns/op is the client's wall
// time, for reference. A refused request with a body of more than 4 KiB
// is answered with Connection: close, so those rows include accepting a
// new connection and closing it (500 ms later: each row waits for its
// own closes, and takes off the server's idle CPU time over that wait).
// RawNetHTTP401 is net/http alone answering 401 the same way, in the same
// process: the floor.
// Valid/0B (a token encrypt of an empty body: 400, after authentication)
// and Valid/1KiB (a 1 KiB token encrypt) are the cost of work done.
//
//	go test -run '^$' -bench BenchmarkRejection -benchtime 2000x ./naverapi/
func BenchmarkRejection(b *testing.B) { benchRejection(b, 0) }

// BenchmarkRejectionFlood is BenchmarkRejection with 8 clients sending at
// once, as in a flood: the server is seldom idle, so the rows are less
// the cost of waking it for each request and more that of the work.
func BenchmarkRejectionFlood(b *testing.B) { benchRejection(b, 8) }

// settle is how long benchRejection waits after a row for the server to
// close that row's connections (rstAvoidanceDelay, 500 ms, as net/http's
// own delay), so that their cost is counted in that row and not in the
// next.
const settle = 700 * time.Millisecond

// benchRejection is BenchmarkRejection with parallel clients at once (0:
// one, b.Loop).
func benchRejection(b *testing.B, parallel int) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestRejectionServerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NAVERAPI_REJECTION_SERVER=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	var f benchFixture
	if !lines.Scan() || json.Unmarshal(lines.Bytes(), &f) != nil {
		b.Fatalf("server process: %q", lines.Text())
	}
	cpu := func() time.Duration {
		fmt.Fprintln(stdin, "cpu")
		if !lines.Scan() {
			b.Fatal("server process ended")
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(lines.Text()), 10, 64)
		if err != nil {
			b.Fatalf("server process: %q", lines.Text())
		}
		return time.Duration(ns)
	}
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	small := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 64<<10) })
		return errors.Join(err, serr)
	}}
	smallClient := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: small.DialContext, MaxIdleConnsPerHost: 64}}
	valid := rejection{"Valid", 200, func(base string, body io.Reader) *http.Request {
		r, _ := http.NewRequest("POST", base+"/kms/v3/token/keys/"+f.AES+"/encrypt", body)
		r.Header.Set(HeaderToken, f.Access)
		return r
	}}
	rawRef := rejection{"RawNetHTTP401", 401, func(_ string, body io.Reader) *http.Request {
		r, _ := http.NewRequest("POST", f.RawURL+"/kms/v3/token/keys/"+f.AES+"/encrypt", body)
		r.Header.Set(HeaderToken, "junk.token.here")
		return r
	}}
	for _, rj := range append([]rejection{rawRef}, append(rejections(&f), valid)...) {
		for _, size := range rejectSizes {
			if rj.name == "Valid" && size.n > 1<<10 {
				continue
			}
			client := client
			if size.sndbuf != 0 {
				client = smallClient
			}
			body := bytes.Repeat([]byte("A"), size.n)
			want := rj.status
			if rj.name == "Valid" {
				body = []byte(`{"plaintext":"` + b64(bytes.Repeat([]byte("p"), size.n*3/4)) + `"}`)
				if size.n == 0 {
					body, want = nil, 400
				}
			}
			one := func() error {
				var rd io.Reader
				if body != nil {
					rd = bytes.NewReader(body)
				}
				resp, err := client.Do(rj.req(f.URL, rd))
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					return fmt.Errorf("status %d, want %d", resp.StatusCode, want)
				}
				return nil
			}
			b.Run(rj.name+"/"+size.name, func(b *testing.B) {
				// A closed connection is closed 500 ms after its
				// answer: wait for the row's own before reading the
				// CPU time, and take off what the server spends idle
				// over as long, measured before the row.
				idle0 := cpu()
				time.Sleep(settle)
				start := cpu()
				idle := start - idle0
				if parallel == 0 {
					for b.Loop() {
						if err := one(); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.SetParallelism(parallel)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := one(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				time.Sleep(settle)
				b.ReportMetric(float64(cpu()-start-idle)/float64(b.N)/1e3, "server-µs/op")
			})
		}
	}
}

// BenchmarkRejectionHandler is the handler's own cost per refused request,
// in process (ServeHTTP on a recorder, no network), by kind and body size.
func BenchmarkRejectionHandler(b *testing.B) {
	jf := newJunkFixture(b, WithAccountRateLimit(ratelimit.Limit{Unlimited: true}))
	f := benchFixture{URL: "", AES: jf.aes, ACL: jf.acl, Access: jf.access, ACLAccess: jf.aclAccess, Forged: jf.forged, AccessKey: jf.ts.client.AccessKey}
	for _, rj := range rejections(&f) {
		for _, size := range rejectSizes {
			if size.sndbuf != 0 {
				continue // the same as without for the handler alone
			}
			body := bytes.Repeat([]byte("A"), size.n)
			b.Run(rj.name+"/"+size.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					r := rj.req("http://pocketkms.test", bytes.NewReader(body))
					r.RemoteAddr = "127.0.0.1:4242"
					w := httptest.NewRecorder()
					jf.ts.handler.ServeHTTP(w, r)
					if w.Code != rj.status {
						b.Fatalf("status %d, want %d", w.Code, rj.status)
					}
				}
			})
		}
	}
}
