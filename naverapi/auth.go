package naverapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Request and response headers of NAVER's APIs.
const (
	// HeaderToken carries an access or refresh token (the token API).
	HeaderToken = "x-ncp-ocapi-token"
	// HeaderTimestamp, HeaderAccessKey and HeaderSignature carry NCP API
	// Gateway signature v2 (the account API).
	HeaderTimestamp = "x-ncp-apigw-timestamp"
	HeaderAccessKey = "x-ncp-iam-access-key"
	HeaderSignature = "x-ncp-apigw-signature-v2"
	// HeaderRequestID is the id answered with every response.
	HeaderRequestID = "x-ncp-request-id"
)

// Authenticator authenticates callers of the account-authenticated API:
// every management call, token issuance, and the cipher calls sent
// without a token. The handler calls it before it reads anything of the
// request but its headers; Authenticate must not read r.Body.
type Authenticator interface {
	// Authenticate returns the caller's Principal, with a non-empty ID, or
	// an error. An *Error is answered with its Status, Code and Detail
	// (Detail is shown to the caller, so it must hold no secret); any
	// other error is answered 401 Unauthorized, and its text is not shown.
	Authenticate(r *http.Request) (Principal, error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(r *http.Request) (Principal, error)

// Authenticate calls f(r).
func (f AuthenticatorFunc) Authenticate(r *http.Request) (Principal, error) { return f(r) }

// Principal is an authenticated account caller.
type Principal struct {
	// ID names the caller, for the per-caller rate limit of the account
	// API: SignatureV2's is the access key. It must not be empty. The
	// handler never logs it nor puts it in a token.
	ID string
	// TokenSubject, when not empty, is the "sub" claim of the tokens this
	// caller issues; when empty every token set gets a fresh random UUID.
	// At most 256 bytes (token.MaxSubjectLen).
	TokenSubject string
}

// MaxAccessKeyLen bounds the access keys of NewSignatureV2.
const MaxAccessKeyLen = 128

// maxClockSkew: a timestamp this far or farther from the server's clock is
// refused, as NAVER's API gateway does.
const maxClockSkew = 5 * time.Minute

// secretKey is a secret key. Every way of printing or encoding it redacts.
type secretKey []byte

func (secretKey) String() string               { return "[REDACTED]" }
func (secretKey) GoString() string             { return "[REDACTED]" }
func (secretKey) Format(f fmt.State, _ rune)   { io.WriteString(f, "[REDACTED]") }
func (secretKey) MarshalJSON() ([]byte, error) { return []byte(`"[REDACTED]"`), nil }
func (secretKey) LogValue() slog.Value         { return slog.StringValue("[REDACTED]") }

// mac is HMAC-SHA256 of msg under the key.
func (k secretKey) mac(msg string) []byte {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// SignatureV2 is the Authenticator of NAVER Cloud's own scheme, NCP API
// Gateway signature v2: x-ncp-apigw-signature-v2 =
// base64(HMAC-SHA256(secretKey, method + " " + pathWithQuery + "\n" +
// timestamp + "\n" + accessKey)), with x-ncp-apigw-timestamp (epoch
// milliseconds, refused 5 minutes or more from the server's clock) and
// x-ncp-iam-access-key. The signed path is the request target exactly as
// sent, query included. The Principal's ID is the access key; every access
// key may do everything (there are no sub-accounts).
//
// Signatures are compared in constant time, and an unknown access key
// costs the same HMAC as a known one. A signed request can be replayed
// within the 5-minute window, as on NAVER.
type SignatureV2 struct {
	secrets map[string]secretKey
	dummy   secretKey // HMAC key for unknown access keys, so they cost the same
	now     func() time.Time
}

// NewSignatureV2 returns the signature v2 Authenticator for creds, access
// key → secret key. Access keys are 1..MaxAccessKeyLen printable ASCII
// characters without ':' or spaces; secret keys are not empty. The secrets
// are copied.
func NewSignatureV2(creds map[string]string) (*SignatureV2, error) {
	if len(creds) == 0 {
		return nil, errors.New("naverapi: NewSignatureV2: no access key")
	}
	s := &SignatureV2{secrets: make(map[string]secretKey, len(creds)), dummy: make(secretKey, 32), now: time.Now}
	_, _ = rand.Read(s.dummy) // crypto/rand.Read never fails (Go 1.24+)
	for ak, sk := range creds {
		if !ValidAccessKey(ak) {
			return nil, fmt.Errorf("naverapi: NewSignatureV2: access key %q: want 1..%d printable characters without ':' or spaces", ak, MaxAccessKeyLen)
		}
		if sk == "" {
			return nil, fmt.Errorf("naverapi: NewSignatureV2: access key %s has an empty secret key", ak)
		}
		s.secrets[ak] = secretKey(sk)
	}
	return s, nil
}

// ValidAccessKey reports whether ak can be an access key of SignatureV2:
// 1..MaxAccessKeyLen printable ASCII characters without ':' or spaces.
func ValidAccessKey(ak string) bool {
	if ak == "" || len(ak) > MaxAccessKeyLen {
		return false
	}
	for i := 0; i < len(ak); i++ {
		if c := ak[i]; c <= ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

// String describes the authenticator without its secrets.
func (s *SignatureV2) String() string {
	return "naverapi.SignatureV2{" + strconv.Itoa(len(s.secrets)) + " access keys}"
}

// SignV2 is NCP API Gateway signature v2 as a client computes it:
// base64(HMAC-SHA256(secretKey, method + " " + pathWithQuery + "\n" +
// timestamp + "\n" + accessKey)).
func SignV2(secretKey, method, pathWithQuery, timestamp, accessKey string) string {
	return signV2([]byte(secretKey), method, pathWithQuery, timestamp, accessKey)
}

func signV2(secret []byte, method, pathWithQuery, timestamp, accessKey string) string {
	return base64.StdEncoding.EncodeToString(secretKey(secret).mac(method + " " + pathWithQuery + "\n" + timestamp + "\n" + accessKey))
}

func unauthorized(detail string) error {
	return &apiError{status: http.StatusUnauthorized, code: codeUnauthorized, detail: detail}
}

// Authenticate checks the signature v2 headers of r and returns the
// caller's access key as the Principal's ID. Failures are *Error values
// with status 401 and code Unauthorized.
func (s *SignatureV2) Authenticate(r *http.Request) (Principal, error) {
	ak, err := s.authenticate(r, s.now())
	if err != nil {
		return Principal{}, err
	}
	return Principal{ID: ak}, nil
}

func (s *SignatureV2) authenticate(r *http.Request, now time.Time) (string, error) {
	ts, ak, sig := r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderAccessKey), r.Header.Get(HeaderSignature)
	if ts == "" || ak == "" || sig == "" {
		return "", unauthorizedError("send x-ncp-apigw-timestamp, x-ncp-iam-access-key and x-ncp-apigw-signature-v2, or x-ncp-ocapi-token where a token is accepted")
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || ms < 0 {
		return "", unauthorizedError("x-ncp-apigw-timestamp must be epoch milliseconds")
	}
	if skew := now.Sub(time.UnixMilli(ms)).Abs(); skew >= maxClockSkew {
		return "", unauthorizedError("x-ncp-apigw-timestamp is 5 minutes or more away from the server's clock")
	}
	secret, known := s.secrets[ak]
	if !known {
		secret = s.dummy
	}
	want := signV2(secret, r.Method, RequestTarget(r), ts, ak)
	if !hmac.Equal([]byte(want), []byte(sig)) || !known {
		return "", unauthorizedError("the access key or the signature is not valid")
	}
	return ak, nil
}

func unauthorizedError(detail string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: codeUnauthorized, Detail: detail}
}

// RequestTarget is the path and query of r as the client sent them: what
// signature v2 signs.
func RequestTarget(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

// ClientAddrFunc returns the address of a request's caller, which the
// token API checks against the key's IP allow-list. The zero Addr means
// unknown: an enabled allow-list refuses it.
type ClientAddrFunc func(r *http.Request) netip.Addr

// PeerAddr is the default ClientAddrFunc: the connection's peer
// (r.RemoteAddr), IPv4-mapped IPv6 addresses unmapped. It ignores
// X-Forwarded-For.
func PeerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// TrustedProxies returns a ClientAddrFunc for a server behind reverse
// proxies: the caller is the connection's peer, unless the peer is in
// proxies; then it is the right-most X-Forwarded-For address that is not
// itself in proxies (the left-most one if all are). An entry that does not
// parse ends the walk with the zero address, which an enabled allow-list
// refuses. With no proxies it is PeerAddr.
func TrustedProxies(proxies ...netip.Prefix) ClientAddrFunc {
	proxies = append([]netip.Prefix(nil), proxies...)
	return func(r *http.Request) netip.Addr { return clientAddr(r, proxies) }
}

// ParseTrustedProxies parses a comma-separated list of proxy addresses and
// CIDR prefixes ("10.0.0.0/8, 127.0.0.1"), for TrustedProxies.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
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

// clientAddr is TrustedProxies(proxies...)(r).
func clientAddr(r *http.Request, proxies []netip.Prefix) netip.Addr {
	peer := PeerAddr(r)
	if !peer.IsValid() || len(proxies) == 0 || !trustedProxy(proxies, peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	if len(hops) == 1 && strings.TrimSpace(hops[0]) == "" {
		return peer
	}
	var a netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		var err error
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

// newUUID returns a random (version 4) UUID from crypto/rand: request ids
// and token subjects. (Formatting 16 bytes needs no dependency.)
func newUUID() string {
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
