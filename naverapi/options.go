package naverapi

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/pocketkms/kms/ratelimit"
)

// Option configures a Handler. Options are validated once, by NewHandler.
type Option func(*config)

type config struct {
	auth    Authenticator
	addr    ClientAddrFunc
	log     *slog.Logger
	ipv6ACL bool
	limit   ratelimit.Limit // per Principal.ID on the account API
	errs    []error
}

// WithAuthenticator sets how callers of the account-authenticated API
// (every management call, and the cipher calls sent without a token) are
// authenticated: NewSignatureV2 for NAVER's own scheme, or any
// Authenticator of the embedder's (mTLS, OIDC, a static bearer token).
// Without it the account API answers every call 401; the token API works
// either way.
func WithAuthenticator(a Authenticator) Option {
	return func(c *config) {
		if a == nil {
			c.errs = append(c.errs, errors.New("naverapi: WithAuthenticator: nil Authenticator"))
			return
		}
		c.auth = a
	}
}

// WithClientAddr sets the function that gives a request's caller address,
// which the token API checks against the key's IP allow-list and the log
// shows. The default is PeerAddr, the connection's peer; behind a reverse
// proxy use TrustedProxies, or a function of the embedder's.
func WithClientAddr(f ClientAddrFunc) Option {
	return func(c *config) {
		if f == nil {
			c.errs = append(c.errs, errors.New("naverapi: WithClientAddr: nil function"))
			return
		}
		c.addr = f
	}
}

// WithLogger logs one line per request (method, path, status, duration,
// request id, client address) and server errors to l. The default logs
// nothing. No line holds a body, a header value, a token, a signature or
// key material.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l == nil {
			c.errs = append(c.errs, errors.New("naverapi: WithLogger: nil logger"))
			return
		}
		c.log = l
	}
}

// WithIPv6AllowLists lets the ACL calls add IPv6 entries ("2001:db8::/32")
// to a key's IP allow-list. By default the handler is NAVER-compatible and
// refuses them (400 InvalidParameter naming the entry), since NAVER
// documents IPv4 entries only; the Engine itself accepts both (package
// acl), and removing an entry works either way.
func WithIPv6AllowLists() Option {
	return func(c *config) { c.ipv6ACL = true }
}

// DefaultAccountRateLimit is the account API's default rate limit per
// caller (Principal.ID: the access key, for SignatureV2): 300 requests a
// second with a burst of 300, the figure NAVER states per key for the
// token API.
var DefaultAccountRateLimit = ratelimit.Limit{Rate: ratelimit.DefaultRate, Burst: ratelimit.DefaultBurst}

// WithAccountRateLimit sets the rate limit of the account-authenticated
// API per caller, that is per Principal.ID (default
// DefaultAccountRateLimit). Every authenticated request costs 1, whatever
// it does (a 100-item batch included); a caller over its limit is answered
// 429 TooManyRequests with Retry-After (whole seconds, rounded up) before
// its body is read. Refused authentication spends nothing, so junk cannot
// spend a caller's budget. Limit{Unlimited: true} switches it off. The
// token API keeps the Engine's per-key limits (kms.WithRateLimit).
func WithAccountRateLimit(l ratelimit.Limit) Option {
	return func(c *config) {
		n, err := l.Normalize()
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("naverapi: WithAccountRateLimit: %w", err))
			return
		}
		c.limit = n
	}
}
