package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Request and response headers.
const (
	hdrToken     = "x-ncp-ocapi-token"
	hdrTimestamp = "x-ncp-apigw-timestamp"
	hdrAccessKey = "x-ncp-iam-access-key"
	hdrSignature = "x-ncp-apigw-signature-v2"
	hdrRequestID = "x-ncp-request-id"
)

// maxClockSkew: a timestamp this far or farther from the server's clock is
// refused, as NAVER's API gateway does.
const maxClockSkew = 5 * time.Minute

// maxAccessKeyLen bounds access keys: they become the "sub" claim of the
// tokens they issue (token.MaxSubjectLen is 256).
const maxAccessKeyLen = 128

// credentials maps access keys to secret keys. Secrets are never logged,
// printed or put in an error.
type credentials struct {
	keys    []string // access keys in file order
	secrets map[string][]byte
	dummy   []byte // HMAC key for unknown access keys, so they cost the same
}

// loadCredentials reads "accessKey:secretKey" lines ('#' comments and blank
// lines allowed) from a file that group and others cannot access.
func loadCredentials(path string) (*credentials, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("credentials file %s has mode %04o: it must not be accessible by group or others (chmod 600)", path, perm)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	defer clear(data)
	c := &credentials{secrets: map[string][]byte{}, dummy: make([]byte, 32)}
	if _, err := rand.Read(c.dummy); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		ak, sk, ok := strings.Cut(line, ":")
		if !ok || !validAccessKey(ak) || sk == "" || strings.ContainsAny(sk, " \t") {
			return nil, fmt.Errorf("credentials file %s line %d: want accessKey:secretKey (access key of 1..%d printable characters without ':' or spaces)", path, n, maxAccessKeyLen)
		}
		if _, dup := c.secrets[ak]; dup {
			return nil, fmt.Errorf("credentials file %s line %d: access key %s is listed twice", path, n, ak)
		}
		c.keys = append(c.keys, ak)
		c.secrets[ak] = []byte(sk)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	if len(c.keys) == 0 {
		return nil, fmt.Errorf("credentials file %s holds no access key", path)
	}
	return c, nil
}

func validAccessKey(ak string) bool {
	if ak == "" || len(ak) > maxAccessKeyLen {
		return false
	}
	for i := 0; i < len(ak); i++ {
		if c := ak[i]; c <= ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

// createCredentials writes a new file with one random pair, mode 0600, and
// returns the access key. It never overwrites a file.
func createCredentials(path string) (string, error) {
	ak := rand.Text()[:20]          // 100 bits, NAVER-like 20 characters
	sk := rand.Text() + rand.Text() // 256 bits
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create credentials file: %w", err)
	}
	_, werr := fmt.Fprintf(f, "# pocketkms server credentials: one accessKey:secretKey a line. Keep this file secret.\n%s:%s\n", ak, sk)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return "", fmt.Errorf("write credentials file: %w", werr)
	}
	return ak, nil
}

// signV2 is NCP's API Gateway signature v2: base64(HMAC-SHA256(secret,
// method + " " + pathWithQuery + "\n" + timestamp + "\n" + accessKey)).
func signV2(secret []byte, method, pathWithQuery, timestamp, accessKey string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(method + " " + pathWithQuery + "\n" + timestamp + "\n" + accessKey))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func unauthorized(detail string) error {
	return &apiError{status: http.StatusUnauthorized, code: codeUnauthorized, detail: detail}
}

// authenticate checks the account-authentication headers and returns the
// caller's access key. The signature covers the request target exactly as
// the client sent it (path and query).
func (c *credentials) authenticate(r *http.Request, now time.Time) (string, error) {
	ts, ak, sig := r.Header.Get(hdrTimestamp), r.Header.Get(hdrAccessKey), r.Header.Get(hdrSignature)
	if ts == "" || ak == "" || sig == "" {
		return "", unauthorized("send x-ncp-apigw-timestamp, x-ncp-iam-access-key and x-ncp-apigw-signature-v2, or x-ncp-ocapi-token where a token is accepted")
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || ms < 0 {
		return "", unauthorized("x-ncp-apigw-timestamp must be epoch milliseconds")
	}
	if skew := now.Sub(time.UnixMilli(ms)).Abs(); skew >= maxClockSkew {
		return "", unauthorized("x-ncp-apigw-timestamp is 5 minutes or more away from the server's clock")
	}
	secret, known := c.secrets[ak]
	if !known {
		secret = c.dummy
	}
	want := signV2(secret, r.Method, requestTarget(r), ts, ak)
	if !hmac.Equal([]byte(want), []byte(sig)) || !known {
		return "", unauthorized("the access key or the signature is not valid")
	}
	return ak, nil
}

// requestTarget is the path and query as the client sent them.
func requestTarget(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

// parseProxies parses a comma-separated list of trusted proxy addresses and
// CIDR prefixes.
func parseProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("trusted proxy %q is not an IP address or CIDR prefix", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func trustedProxy(proxies []netip.Prefix, a netip.Addr) bool {
	for _, p := range proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the caller's IP address: the connection's peer, or, when
// the peer is a trusted proxy, the right-most X-Forwarded-For address that
// is not itself a trusted proxy. An entry that does not parse ends the walk
// with the zero address, which an enabled IP allow-list refuses.
func clientAddr(r *http.Request, proxies []netip.Prefix) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	peer := ap.Addr().Unmap()
	if len(proxies) == 0 || !trustedProxy(proxies, peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	if len(hops) == 1 && strings.TrimSpace(hops[0]) == "" {
		return peer
	}
	var a netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		a, err = parseHop(strings.TrimSpace(hops[i]))
		if err != nil {
			return netip.Addr{}
		}
		if !trustedProxy(proxies, a) {
			return a
		}
	}
	return a // every hop is a trusted proxy: the left-most one
}

func parseHop(s string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), nil
	}
	return netip.Addr{}, errors.New("not an IP address")
}

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
