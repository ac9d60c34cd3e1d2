package naverapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/token"
)

// MaxBodyBytes bounds request bodies. The largest legitimate body is a
// 100-item batch of 43,746-character ciphertexts with 68-character
// contexts: about 4.4 MB, or 4.5 MB with every '/' escaped as "\/". A
// larger body is answered 413 PayloadTooLarge.
const MaxBodyBytes = 6 << 20

// Handler serves NAVER Cloud KMS's HTTP APIs for one Engine; make it with
// NewHandler. It is safe for concurrent use.
type Handler struct {
	eng     *kms.Engine
	auth    Authenticator
	addr    ClientAddrFunc
	log     *slog.Logger
	ipv6ACL bool               // WithIPv6AllowLists
	limiter *ratelimit.Limiter // per Principal.ID; nil when unlimited
	now     func() time.Time   // the limiter's clock
	mux     *http.ServeMux
	routes  []string // the registered patterns, in order
}

// NewHandler returns the HTTP handler of NAVER's API 2.0 (and 1.0) and v3
// APIs for e: the token API (x-ncp-ocapi-token) and the account API,
// authenticated by the Authenticator of WithAuthenticator. The handler
// serves the paths as NAVER does (/kms/v1/…, /kms/v3/…, /keys/v2/…), so
// mount it at the root of a mux or strip a prefix first. Options are
// validated once, here; e must stay open while the handler serves.
func NewHandler(e *kms.Engine, opts ...Option) (*Handler, error) {
	if e == nil {
		return nil, errors.New("naverapi: NewHandler: nil Engine")
	}
	cfg := config{addr: PeerAddr, limit: DefaultAccountRateLimit}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if err := errors.Join(cfg.errs...); err != nil {
		return nil, err
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{eng: e, auth: cfg.auth, addr: cfg.addr, log: cfg.log, ipv6ACL: cfg.ipv6ACL, now: time.Now, mux: http.NewServeMux()}
	if !cfg.limit.Unlimited {
		// The bound on buckets is the package's default (65,536 callers
		// active within a second); only authenticated callers get one.
		lim, err := ratelimit.New(ratelimit.WithDefaultLimit(cfg.limit))
		if err != nil {
			return nil, fmt.Errorf("naverapi: %w", err)
		}
		h.limiter = lim
	}
	h.register()
	h.mux.HandleFunc("/", h.unrouted)
	return h, nil
}

// Routes lists the patterns the handler serves, in net/http.ServeMux
// syntax ("POST /kms/v1/keys/{keyTag}/encrypt"), in registration order.
func (h *Handler) Routes() []string { return append([]string(nil), h.routes...) }

// api is the API generation of a route: it picks the envelopes.
type api uint8

const (
	v2 api = iota // {"code":"SUCCESS","data":…}
	v3            // flat bodies, {"error":…} / {"failures":…}
)

// authMode is how a route authenticates its caller.
type authMode uint8

const (
	viaAccount authMode = iota // the Authenticator: the trusted plane
	viaToken                   // x-ncp-ocapi-token: the token plane
	viaEither                  // a token if one is sent, else the Authenticator
)

// auth is a route's authentication: the mode and, for a token, the kind
// and permission the call needs, which the handler checks
// (kms.TokenClient.Authorize) before it reads the body.
type auth struct {
	mode authMode
	kind token.Kind
	perm token.Permission // for token.Access
}

var (
	account      = auth{mode: viaAccount}
	refreshToken = auth{mode: viaToken, kind: token.Refresh}
)

func accessToken(p token.Permission) auth { return auth{mode: viaToken, kind: token.Access, perm: p} }
func either(p token.Permission) auth      { return auth{mode: viaEither, kind: token.Access, perm: p} }

// call is one request being served.
type call struct {
	h         *Handler
	r         *http.Request
	w         http.ResponseWriter // net/http's own, for http.MaxBytesReader
	ctx       context.Context
	api       api
	tag       string     // the {keyTag} path value
	token     string     // the presented token, on the token plane
	principal Principal  // the account caller, on the trusted plane
	client    netip.Addr // the caller's address
	status    int        // success status (default 200)
}

// plane returns the plane the caller authenticated for.
func (c *call) plane() kms.Cipher {
	if c.token != "" {
		return c.h.eng.WithToken(c.token, c.client)
	}
	return c.h.eng
}

// keyTag is the path's key tag as answered: key tags are lower case, and
// account calls also accept them in upper case.
func (c *call) keyTag() string { return strings.ToLower(c.tag) }

// body reads the JSON request body, which only an authenticated caller
// gets to send (see handle).
func (c *call) body() (object, error) { return readObject(c.w, c.r, c.api == v3) }

// handler serves a route: it returns the success payload (the v2 "data" or
// the whole v3 body) or an error.
type handler func(c *call) (any, error)

// handle registers a route. A request is authenticated before its body is
// read: the IP allow-list, the token (its signature, expiry, kind, key
// binding and permission) and the key's state on the token plane, the
// Authenticator on the account plane. A refused caller's body is never
// read by the handler; net/http may discard one of up to 4 KiB from its
// buffer to keep the connection, and a larger one closes the connection
// unread (refuseBody, hangUp).
func (h *Handler) handle(pattern string, a api, how auth, fn handler) {
	h.routes = append(h.routes, pattern)
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		ri := info(r)
		c := &call{h: h, r: r, w: ri.w, ctx: r.Context(), api: a, tag: r.PathValue("keyTag"), client: ri.client, status: http.StatusOK}
		if err := c.authenticate(how); err != nil {
			refuseBody(w, r)
			writeError(w, a == v2, err)
			hangUp(w, r)
			return
		}
		out, err := fn(c)
		if err != nil {
			if ae := toAPIError(err); ae.status >= 500 {
				// Engine errors never carry a secret; the cause helps operators.
				h.log.Error("request failed", "request_id", info(r).id, "error", err.Error())
			}
			writeError(w, a == v2, err)
			hangUp(w, r) // a body refused unread (413)
			return
		}
		if a == v2 {
			out = &V2Response{Code: "SUCCESS", Data: out}
		}
		writeJSON(w, c.status, out)
	})
}

// authenticate applies the route's authentication. A token goes through
// the token plane's checks (kms.TokenClient.Authorize), which the call
// itself runs again (a cache hit); account callers go to the
// Authenticator.
func (c *call) authenticate(how auth) error {
	tok := c.r.Header.Get(HeaderToken)
	if how.mode == viaToken || how.mode == viaEither && tok != "" {
		if tok == "" {
			return unauthorized("send the token in x-ncp-ocapi-token")
		}
		c.token = tok
		return c.h.eng.WithToken(tok, c.client).Authorize(c.ctx, c.tag, how.kind, how.perm)
	}
	p, err := c.h.authenticateAccount(c.r)
	c.principal = p
	if err == nil && p.TokenSubject != "" {
		// Audit events and key history name the caller by its token
		// subject (never by Principal.ID, an access key).
		c.ctx = kms.WithCaller(c.ctx, p.TokenSubject)
	}
	return err
}

// maxDiscardedBody is the largest refused HTTP/1 body that net/http may
// discard to keep the connection: the size of its read buffer, so such a
// body has usually arrived with the headers and already sits in it. A
// new connection costs the server more than that (BENCHMARKS.md).
const maxDiscardedBody = 4 << 10

// rstAvoidanceDelay is how long a refused request's connection stays
// half-closed before it is closed: net/http's own delay, long enough for
// the client to read the answer before the reset that closing a socket
// with unread data sends.
const rstAvoidanceDelay = 500 * time.Millisecond

// refuseBody is called before answering a request whose body will not be
// read, so that nothing more of it is read. A body of up to
// maxDiscardedBody bytes (Content-Length, no Expect) is left to net/http,
// which discards it and keeps the connection. Any other HTTP/1 body gets
// Connection: close, and hangUp then closes the connection itself, so
// net/http does not read up to 256 KiB of it either (it does so, looking
// for the end of the body, even on a connection it is about to close).
// HTTP/2 resets the stream by itself.
func refuseBody(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 || r.ContentLength == 0 {
		return
	}
	if r.ContentLength > 0 && r.ContentLength <= maxDiscardedBody && r.Header.Get("Expect") == "" {
		return
	}
	w.Header().Set("Connection", "close")
	info(r).hangUp = true
}

// hangUp ends the connection of a request that refuseBody marked, once
// its answer is written: it sends the answer, takes the connection from
// net/http (http.ResponseController.Hijack), closes its write side and
// closes it after rstAvoidanceDelay, without reading anything. Where the
// ResponseWriter cannot be hijacked (a wrapper without Unwrap, a
// recorder), the Connection: close header stays and net/http closes the
// connection as it does.
func hangUp(w http.ResponseWriter, r *http.Request) {
	if !info(r).hangUp {
		return
	}
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		return
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	time.AfterFunc(rstAvoidanceDelay, func() { _ = conn.Close() })
}

// authenticateAccount runs the Authenticator. Without one, every account
// call is refused.
func (h *Handler) authenticateAccount(r *http.Request) (Principal, error) {
	if h.auth == nil {
		return Principal{}, unauthorized("account authentication is not configured on this server")
	}
	p, err := h.auth.Authenticate(r)
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) {
			return Principal{}, ae.apiError()
		}
		return Principal{}, unauthorized("")
	}
	if p.ID == "" {
		return Principal{}, fmt.Errorf("naverapi: the Authenticator returned a Principal without an ID")
	}
	if h.limiter != nil {
		if err := h.limiter.AllowAt(p.ID, 1, h.now()); err != nil {
			if rl, ok := errors.AsType[*ratelimit.RateLimitedError](err); ok {
				return Principal{}, &apiError{status: http.StatusTooManyRequests, code: codeTooManyRequests,
					detail: "too many requests from this caller", retryAfter: rl.RetryAfter.Seconds()}
			}
			return Principal{}, err
		}
	}
	return p, nil
}

// requestInfo is what ServeHTTP learns about a request.
type requestInfo struct {
	id     string
	client netip.Addr
	w      http.ResponseWriter // as ServeHTTP got it
	hangUp bool                // refuseBody: hangUp closes the connection
}

type infoKey struct{}

// info returns ServeHTTP's requestInfo of r.
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

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP gives every request an id (answered in x-ncp-request-id) and a
// log line: method, path, status, duration, request id and client address
// — never a body, a header value, a token or a signature. Bodies are read
// by the routes, after authentication, within MaxBodyBytes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ri := &requestInfo{id: newUUID(), client: h.addr(r), w: w}
	w.Header().Set(HeaderRequestID, ri.id)
	sw := &statusWriter{ResponseWriter: w}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, ri))
	defer func() {
		p := recover()
		if p == http.ErrAbortHandler {
			// The client went away (writeError of kms.ErrCanceled) or
			// a route gave up: nothing is sent. Log it as nginx does,
			// 499, then let net/http close the connection.
			if sw.status == 0 {
				sw.status = kms.StatusClientClosedRequest
			}
			h.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", sw.status), slog.Duration("duration", time.Since(start)),
				slog.String("request_id", ri.id), slog.String("client", ri.client.String()))
			panic(p)
		}
		if p != nil {
			h.log.Error("handler panic", "request_id", ri.id, "panic_type", fmt.Sprintf("%T", p))
			if sw.status == 0 {
				writeError(sw, !strings.HasPrefix(r.URL.Path, "/kms/v3/"), &apiError{status: http.StatusInternalServerError, code: codeInternal})
			}
		}
		level := slog.LevelInfo
		if sw.status >= 500 {
			level = slog.LevelError
		}
		h.log.LogAttrs(r.Context(), level, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", sw.status), slog.Duration("duration", time.Since(start)),
			slog.String("request_id", ri.id), slog.String("client", ri.client.String()))
	}()
	h.mux.ServeHTTP(sw, r)
}

// unrouted answers requests no route matches: 405 with Allow when the path
// exists for other methods, else 404, in the envelope of the path's API.
func (h *Handler) unrouted(w http.ResponseWriter, r *http.Request) {
	isV2 := !strings.HasPrefix(r.URL.Path, "/kms/v3/")
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := h.mux.Handler(probe); pattern != "" && pattern != "/" {
			allowed = append(allowed, m)
		}
	}
	refuseBody(w, r)
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, isV2, &apiError{status: http.StatusMethodNotAllowed, code: codeMethodNotAllowed,
			detail: r.Method + " is not allowed here; use " + strings.Join(allowed, ", ")})
	} else {
		writeError(w, isV2, &apiError{status: http.StatusNotFound, code: codeNotFound, detail: "no API at this path"})
	}
	hangUp(w, r)
}
