package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/pocketkms/kms"
)

// maxBodyBytes bounds request bodies. The largest legitimate body is a
// 100-item batch of 43,746-character ciphertexts with 68-character contexts:
// about 4.4 MB, or 4.5 MB with every '/' escaped as "\/".
const maxBodyBytes = 6 << 20

// cipherPlane is what both planes offer: *kms.Engine (account
// authentication, the trusted plane) and kms.TokenClient (token plane).
type cipherPlane interface {
	Encrypt(ctx context.Context, keyTag string, plaintext, encCtx []byte) (string, error)
	Decrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) ([]byte, error)
	ReEncrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) (string, error)
	CreateCustomKey(ctx context.Context, keyTag string, req kms.CustomKeyRequest) (*kms.CustomKey, error)
	Sign(ctx context.Context, keyTag string, data []byte) (string, error)
	Verify(ctx context.Context, keyTag string, data []byte, signature string) (bool, error)
	GetPublicKey(ctx context.Context, keyTag string, version uint32) (string, error)
	BatchEncrypt(ctx context.Context, keyTag string, items []kms.EncryptItem) ([]string, error)
	BatchDecrypt(ctx context.Context, keyTag string, items []kms.DecryptItem) ([][]byte, error)
	BatchReEncrypt(ctx context.Context, keyTag string, items []kms.DecryptItem) ([]string, error)
}

var (
	_ cipherPlane = (*kms.Engine)(nil)
	_ cipherPlane = kms.TokenClient{}
)

// server is the HTTP front of one Engine.
type server struct {
	eng     *kms.Engine
	creds   *credentials
	proxies []netip.Prefix
	log     *slog.Logger
	now     func() time.Time // the clock of signature timestamps
	mux     *http.ServeMux
	routes  []string // the registered patterns, in order
}

func newServer(eng *kms.Engine, creds *credentials, proxies []netip.Prefix, log *slog.Logger) *server {
	s := &server{eng: eng, creds: creds, proxies: proxies, log: log, now: time.Now, mux: http.NewServeMux()}
	s.register()
	s.mux.HandleFunc("/", s.unrouted)
	return s
}

// api is the API generation of a route: it picks the envelopes.
type api uint8

const (
	v2 api = iota // {"code":"SUCCESS","data":…}
	v3            // flat bodies, {"error":…} / {"failures":…}
)

// auth is how a route authenticates its caller.
type auth uint8

const (
	viaAccount auth = iota // API gateway signature v2: the trusted plane
	viaToken               // x-ncp-ocapi-token: the token plane
	viaEither              // a token if one is sent, else account authentication
)

// call is one request being served.
type call struct {
	s         *server
	r         *http.Request
	ctx       context.Context
	api       api
	tag       string     // the {keyTag} path value
	token     string     // the presented token, on the token plane
	principal string     // the access key, on the trusted plane
	client    netip.Addr // the caller's address
	status    int        // success status (default 200)
}

// plane returns the plane the caller authenticated for.
func (c *call) plane() cipherPlane {
	if c.token != "" {
		return c.s.eng.WithToken(c.token, c.client)
	}
	return c.s.eng
}

// keyTag is the path's key tag as answered: key tags are lower case, and
// account calls also accept them in upper case.
func (c *call) keyTag() string { return strings.ToLower(c.tag) }

// body reads the JSON request body.
func (c *call) body() (object, error) { return readObject(c.r, c.api == v3) }

// handler serves a route: it returns the success payload (the v2 "data" or
// the whole v3 body) or an error.
type handler func(c *call) (any, error)

// v2Success is the API 2.0 success envelope.
type v2Success struct {
	Code string `json:"code"`
	Data any    `json:"data"`
}

// handle registers a route.
func (s *server) handle(pattern string, a api, how auth, h handler) {
	s.routes = append(s.routes, pattern)
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c := &call{s: s, r: r, ctx: r.Context(), api: a, tag: r.PathValue("keyTag"), client: info(r).client, status: http.StatusOK}
		if err := c.authenticate(how); err != nil {
			writeError(w, a == v2, err)
			return
		}
		out, err := h(c)
		if err != nil {
			if ae := toAPIError(err); ae.status >= 500 {
				// Engine errors never carry a secret; the cause helps operators.
				s.log.Error("request failed", "request_id", info(r).id, "error", err.Error())
			}
			writeError(w, a == v2, err)
			return
		}
		if a == v2 {
			out = &v2Success{Code: "SUCCESS", Data: out}
		}
		writeJSON(w, c.status, out)
	})
}

// authenticate applies the route's authentication: a token is only taken
// (the Engine checks it), account headers are verified here.
func (c *call) authenticate(how auth) error {
	tok := c.r.Header.Get(hdrToken)
	if how == viaToken || how == viaEither && tok != "" {
		if tok == "" {
			return unauthorized("send the token in x-ncp-ocapi-token")
		}
		c.token = tok
		return nil
	}
	ak, err := c.s.creds.authenticate(c.r, c.s.now())
	c.principal = ak
	return err
}

// requestInfo is what the middleware learns about a request.
type requestInfo struct {
	id     string
	client netip.Addr
}

type infoKey struct{}

// info returns the middleware's requestInfo of r.
func info(r *http.Request) *requestInfo {
	ri, _ := r.Context().Value(infoKey{}).(*requestInfo)
	if ri == nil {
		return &requestInfo{}
	}
	return ri
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader records the first status.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// ServeHTTP gives every request an id (answered in x-ncp-request-id), a
// body limit and a log line: method, path, status, duration, request id and
// client address — never a body, a header value, a token or a signature.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ri := &requestInfo{id: newRequestID(), client: clientAddr(r, s.proxies)}
	w.Header().Set(hdrRequestID, ri.id)
	sw := &statusWriter{ResponseWriter: w}
	r.Body = http.MaxBytesReader(sw, r.Body, maxBodyBytes)
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, ri))
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("handler panic", "request_id", ri.id, "panic_type", fmt.Sprintf("%T", p))
			if sw.status == 0 {
				writeError(sw, !strings.HasPrefix(r.URL.Path, "/kms/v3/"), &apiError{status: http.StatusInternalServerError, code: codeInternal})
			}
		}
		level := slog.LevelInfo
		if sw.status >= 500 {
			level = slog.LevelError
		}
		s.log.LogAttrs(r.Context(), level, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", sw.status), slog.Duration("duration", time.Since(start)),
			slog.String("request_id", ri.id), slog.String("client", ri.client.String()))
	}()
	s.mux.ServeHTTP(sw, r)
}

// unrouted answers requests no route matches: 405 with Allow when the path
// exists for other methods, else 404, in the envelope of the path's API.
func (s *server) unrouted(w http.ResponseWriter, r *http.Request) {
	isV2 := !strings.HasPrefix(r.URL.Path, "/kms/v3/")
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != "/" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, isV2, &apiError{status: http.StatusMethodNotAllowed, code: codeMethodNotAllowed,
			detail: r.Method + " is not allowed here; use " + strings.Join(allowed, ", ")})
		return
	}
	writeError(w, isV2, &apiError{status: http.StatusNotFound, code: codeNotFound, detail: "no API at this path"})
}
