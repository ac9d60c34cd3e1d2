package naverapi

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestSignature checks account authentication against an injected clock.
func TestSignature(t *testing.T) {
	creds, err := NewSignatureV2(map[string]string{"AKTEST": "secret-key"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_733_462_407_906)
	client := newNCPClient("AKTEST", "secret-key")
	ms := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).UnixMilli(), 10) }
	for _, tc := range []struct {
		name, method, target, signedTarget, ts, accessKey string
		secret                                            string
		ok                                                bool
	}{
		{name: "now", ok: true},
		{name: "with query", target: "/kms/v1/keys?pageNo=1&pageSize=20", ok: true},
		{name: "4m59.999s late", ts: ms(-5*time.Minute + time.Millisecond), ok: true},
		{name: "4m59.999s early", ts: ms(5*time.Minute - time.Millisecond), ok: true},
		{name: "5m late", ts: ms(-5 * time.Minute)},
		{name: "5m early", ts: ms(5 * time.Minute)},
		{name: "not a number", ts: "soon"},
		{name: "negative", ts: "-1"},
		{name: "unknown access key", accessKey: "AKOTHER"},
		{name: "wrong secret", secret: "other"},
		{name: "query not signed", target: "/kms/v1/keys?pageNo=2", signedTarget: "/kms/v1/keys"},
		{name: "other method signed", method: "POST", signedTarget: "/kms/v1/keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := cmp(tc.target, "/kms/v1/keys")
			ts := cmp(tc.ts, ms(0))
			c := newNCPClient(cmp(tc.accessKey, "AKTEST"), cmp(tc.secret, "secret-key"))
			r := httptest.NewRequest("GET", target, nil)
			r.Header.Set(HeaderTimestamp, ts)
			r.Header.Set(HeaderAccessKey, c.AccessKey)
			r.Header.Set(HeaderSignature, c.signature(cmp(tc.method, "GET"), cmp(tc.signedTarget, target), ts))
			ak, err := creds.authenticate(r, now)
			if tc.ok != (err == nil) || tc.ok && ak != "AKTEST" {
				t.Fatalf("authenticate: %q, %v", ak, err)
			}
			if err != nil && toAPIError(err).status != 401 {
				t.Fatalf("status %d", toAPIError(err).status)
			}
		})
	}
	for _, h := range []string{HeaderTimestamp, HeaderAccessKey, HeaderSignature} {
		r := httptest.NewRequest("GET", "/kms/v1/keys", nil)
		r.Header.Set(HeaderTimestamp, ms(0))
		r.Header.Set(HeaderAccessKey, "AKTEST")
		r.Header.Set(HeaderSignature, client.signature("GET", "/kms/v1/keys", ms(0)))
		r.Header.Del(h)
		if _, err := creds.authenticate(r, now); err == nil {
			t.Errorf("accepted without %s", h)
		}
	}
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestClientAddr(t *testing.T) {
	proxies, err := ParseTrustedProxies("10.0.0.0/8, 127.0.0.1, ::1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		want         string // "" = the zero address
	}{
		{"direct caller, header ignored", "192.0.2.1:1234", []string{"1.2.3.4"}, "192.0.2.1"},
		{"proxy without header", "10.0.0.5:1", nil, "10.0.0.5"},
		{"proxy", "10.0.0.5:1", []string{"1.2.3.4"}, "1.2.3.4"},
		{"chain of proxies", "10.0.0.5:1", []string{"1.2.3.4, 10.0.0.7"}, "1.2.3.4"},
		{"spoofed left part", "10.0.0.5:1", []string{"6.6.6.6, 1.2.3.4"}, "1.2.3.4"},
		{"two headers", "10.0.0.5:1", []string{"6.6.6.6", "1.2.3.4, 10.1.1.1"}, "1.2.3.4"},
		{"with port", "127.0.0.1:1", []string{"1.2.3.4:5555"}, "1.2.3.4"},
		{"IPv6 with port", "[::1]:1", []string{"[2001:db8::1]:80"}, "2001:db8::1"},
		{"mapped peer", "[::ffff:10.0.0.5]:1", []string{"1.2.3.4"}, "1.2.3.4"},
		{"garbage hop", "10.0.0.5:1", []string{"1.2.3.4, garbage"}, ""},
		{"all trusted", "10.0.0.5:1", []string{"10.0.0.9, 10.0.0.8"}, "10.0.0.9"},
		{"bad remote", "pipe", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			var want netip.Addr
			if tc.want != "" {
				want = netip.MustParseAddr(tc.want)
			}
			if got := TrustedProxies(proxies...)(r); got != want {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
	if got := clientAddr(&http.Request{RemoteAddr: "10.0.0.5:1", Header: http.Header{"X-Forwarded-For": {"1.2.3.4"}}}, nil); got != netip.MustParseAddr("10.0.0.5") {
		t.Fatalf("no trusted proxies: %v", got)
	}
	for _, bad := range []string{"proxy.example", "fe80::1%eth0", "10.0.0.0/33"} {
		if _, err := ParseTrustedProxies(bad); err == nil {
			t.Errorf("ParseTrustedProxies(%q) accepted", bad)
		}
	}
}

func TestRequestID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 10000 {
		id := newUUID()
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("request id %q malformed or repeated", id)
		}
		seen[id] = true
	}
}
