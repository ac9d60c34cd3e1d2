package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestFirstRunAndRestart: the first run creates the data directory (0700),
// a root key and a credentials file (0600), prints where they are and a
// working curl line, never the secret; a restart reuses them and keeps the
// keys.
func TestFirstRunAndRestart(t *testing.T) {
	data := filepath.Join(t.TempDir(), "kms-data")
	ts := startServer(t, data)
	out := ts.out.String()
	creds := filepath.Join(data, "credentials")
	for _, want := range []string{"created access key " + ts.client.AccessKey, creds, "root key " + filepath.Join(data, "root.key"), "listening on http://127.0.0.1:", "curl -s "} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, ts.client.SecretKey) {
		t.Fatal("the banner shows the secret key")
	}
	if runtime.GOOS != "windows" {
		for path, want := range map[string]os.FileMode{data: 0o700, creds: 0o600, filepath.Join(data, "root.key"): 0o600} {
			if got := mode(t, path); got != want {
				t.Errorf("%s: mode %04o, want %04o", path, got, want)
			}
		}
	}
	tag := ts.client.do(t, "POST", "/kms/v1/keys", map[string]any{"keyName": "kept", "keyType": "AES256", "isAutoRotation": false, "protectionType": "BASIC"}, "").ok(t, "create").str("data", "keyTag")

	// The printed curl line works as printed.
	_, line, _ := strings.Cut(out, "signature v2):\n")
	line, _, _ = strings.Cut(line, "\n")
	if missing := missingTools("bash", "curl", "openssl"); missing != "" {
		t.Logf("%s not installed: not running the printed curl line", missing)
	} else {
		got, err := exec.Command("bash", "-c", line).Output()
		if err != nil || !bytes.Contains(got, []byte(`"code":"SUCCESS"`)) || !bytes.Contains(got, []byte(tag)) {
			t.Fatalf("printed curl line: %v: %s\nline: %s", err, got, line)
		}
	}
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}

	ts2 := startServer(t, data)
	if out := ts2.out.String(); strings.Contains(out, "created access key") || !strings.Contains(out, "credentials from "+creds) {
		t.Fatalf("restart made new credentials:\n%s", out)
	}
	ts2.client.do(t, "GET", "/kms/v1/keys/"+tag, nil, "").ok(t, "key after restart")
	if err := ts2.stop(); err != nil {
		t.Fatal(err)
	}

	// A store whose root key is gone is refused, not given a new key.
	if err := os.Remove(filepath.Join(data, "root.key")); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"serve", "-addr", "127.0.0.1:0", "-data", data}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("run without the root key: %v", err)
	}
}

func missingTools(names ...string) string {
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			return n
		}
	}
	return ""
}

func TestRunRefusesLooseFilesAndBadFlags(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte("AK:do-not-print-me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"credentials 0644", []string{"-credentials", loose}, "chmod 600"},
		{"root key 0644", []string{"-root-key-file", loose}, "root key"},
		{"argument", []string{"extra"}, "unexpected arguments"},
		{"tls cert alone", []string{"-tls-cert", loose}, "go together"},
		{"bad proxy", []string{"-trusted-proxies", "10.0.0.0/8,proxy.example"}, "proxy.example"},
		{"missing TLS files", []string{"-tls-cert", loose + ".crt", "-tls-key", loose + ".key"}, "TLS certificate"},
		{"unknown flag", []string{"-nosuchflag"}, "nosuchflag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "root key 0644" && runtime.GOOS == "windows" {
				t.Skip("no Unix modes")
			}
			args := append([]string{"serve", "-addr", "127.0.0.1:0", "-data", data}, tc.args...)
			err := run(context.Background(), args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run %v: %v, want an error about %q", tc.args, err, tc.want)
			}
			if strings.Contains(err.Error(), "do-not-print-me") {
				t.Fatal("the error shows the secret")
			}
		})
	}
}

// TestShutdown: cancelling run's context (as SIGINT/SIGTERM do) lets a
// request in flight finish, then run returns nil.
func TestShutdown(t *testing.T) {
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	data := filepath.Join(t.TempDir(), "d")
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "-addr", "127.0.0.1:0", "-data", data}, out) }()
	url := waitListening(t, out, done)
	ak, sk := readCredentialsFile(t, filepath.Join(data, "credentials"))
	c := newNCPClient(ak, sk)
	c.BaseURL = url

	// A request whose body is still arriving when shutdown begins.
	pr, pw := io.Pipe()
	body := `{"keyName":"inflight","keyType":"AES256","isAutoRotation":false,"protectionType":"BASIC"}`
	go func() { _, _ = pw.Write([]byte(body[:10])) }()
	req, _ := http.NewRequest("POST", url+"/kms/v1/keys", pr)
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	req.Header.Set("x-ncp-apigw-timestamp", ts)
	req.Header.Set("x-ncp-iam-access-key", ak)
	req.Header.Set("x-ncp-apigw-signature-v2", c.signature("POST", "/kms/v1/keys", ts))
	got := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("in-flight request: %v", err)
		}
		got <- resp
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		t.Fatalf("run returned with a request in flight: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	_, _ = pw.Write([]byte(body[10:]))
	pw.Close()
	if resp := <-got; resp == nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("in-flight request: %v", resp)
	} else {
		resp.Body.Close()
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}

}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	ts := startServer(t, filepath.Join(dir, "data"), "-tls-cert", certFile, "-tls-key", keyFile)
	if !strings.HasPrefix(ts.url, "https://127.0.0.1:") || !strings.Contains(ts.out.String(), "--cacert "+certFile) {
		t.Fatalf("TLS banner:\n%s", ts.out.String())
	}
	ts.client.HTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
	ts.client.do(t, "GET", "/kms/v3/keys", nil, "").ok(t, "list over TLS")
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pocketkms test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestLoadCredentials(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text string
		keys       []string
		err        string
	}{
		{"pairs and comments", "# comment\n\nAK1:s1\n  AK2:s:2  \n", []string{"AK1", "AK2"}, ""},
		{"duplicate", "AK1:s1\nAK1:s2\n", nil, "listed twice"},
		{"no colon", "AK1 s3cr3t\n", nil, "line 1"},
		{"empty secret", "AK1:\n", nil, "line 1"},
		{"empty", "# nothing\n", nil, "no access key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := loadCredentials(path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "s3cr3t") {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || strings.Join(c.keys, ",") != strings.Join(tc.keys, ",") || c.pairs["AK2"] != "s:2" {
				t.Fatalf("got %v %v", c, err)
			}
		})
	}
}

// TestServeIPv6Flag: IPv6 allow-list entries are refused unless
// -ipv6-acl is given.
func TestServeIPv6Flag(t *testing.T) {
	for _, flags := range [][]string{nil, {"-ipv6-acl"}} {
		ts := startServer(t, filepath.Join(t.TempDir(), "data"), flags...)
		c := ts.client
		tag := c.do(t, "POST", "/kms/v3/keys", map[string]any{"keyName": "six", "keyType": "AES256", "rotation": map[string]any{"enabled": false}}, "").ok(t, "create").str("keyTag")
		r := c.do(t, "POST", "/kms/v3/keys/"+tag+"/acl/add-allowed-ips", map[string]any{"allowedIps": []string{"2001:db8::/32"}}, "")
		if want := map[bool]int{false: 400, true: 200}[flags != nil]; r.status != want {
			t.Fatalf("flags %v: status %d, want %d: %s", flags, r.status, want, r.raw)
		}
	}
}

// TestServeAccountRateLimit: -account-rate-limit limits each access key of
// the account API, with 429 and Retry-After.
func TestServeAccountRateLimit(t *testing.T) {
	// 0.1/s: a burst of 1, then one request every 10 s.
	ts := startServer(t, filepath.Join(t.TempDir(), "data"), "-account-rate-limit", "0.1")
	ts.client.do(t, "GET", "/kms/v3/keys", nil, "").ok(t, "first request")
	r := ts.client.do(t, "GET", "/kms/v3/keys", nil, "")
	if ra, _ := strconv.Atoi(r.header.Get("Retry-After")); r.status != 429 || r.str("error", "errorCode") != "TooManyRequests" || ra < 5 || ra > 10 {
		t.Fatalf("second request: %d %s Retry-After %q", r.status, r.raw, r.header.Get("Retry-After"))
	}
}
