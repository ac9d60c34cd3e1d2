package token

import "errors"

// Sentinel errors of the package. Errors returned by this package match
// them through [errors.Is]. No error ever contains a token or any part of
// one.
var (
	// ErrTokenInvalid reports a token that must not be honoured: too large,
	// malformed, with a header or algorithm other than RS256 JWT, a
	// signature that does not verify under the given key, duplicate or
	// malformed claims, the wrong kind, bound to another key, issued in the
	// future, or issued by a generator that has since been replaced. The
	// [*Error] carrying it says which, in its Reason.
	ErrTokenInvalid = errors.New("token: invalid token")

	// ErrTokenExpired reports a token that is valid in every respect but
	// whose exp claim is not after the verification time. It is only
	// returned once every other check has passed, so a caller may safely
	// answer it with "renew your token".
	ErrTokenExpired = errors.New("token: token expired")

	// ErrInvalidTTL reports a token lifetime outside 1 .. 1,051,200 whole
	// minutes, or a lifetime that is both unlimited and given in minutes.
	ErrInvalidTTL = errors.New("token: invalid ttl")

	// ErrInvalidArgument reports a malformed request to this package: a
	// claim set that cannot be signed, a verification expectation without a
	// time or with a malformed key tag, an unusable key, a cache size below
	// one.
	ErrInvalidArgument = errors.New("token: invalid argument")
)

// Reason says why a token was refused. The values are stable and carry no
// part of the token, so they may be logged and counted.
type Reason uint8

// The reasons for refusing a token. All but ReasonExpired match
// [ErrTokenInvalid]; ReasonExpired matches [ErrTokenExpired].
const (
	// ReasonTooLarge means the token is longer than MaxTokenSize bytes.
	ReasonTooLarge Reason = iota + 1
	// ReasonMalformed means the token is not three non-empty segments of
	// unpadded base64url, or a segment does not decode strictly.
	ReasonMalformed
	// ReasonHeader means the header is not a compact JSON object holding
	// exactly "typ":"JWT" and "alg":"RS256".
	ReasonHeader
	// ReasonAlgorithm means the header names an algorithm other than RS256,
	// or none.
	ReasonAlgorithm
	// ReasonSignature means the signature does not verify under the key (a
	// forged or altered token, or one from another generator or key pair).
	ReasonSignature
	// ReasonDuplicateClaim means a claim appears twice in the payload.
	ReasonDuplicateClaim
	// ReasonClaims means the payload is not the canonical encoding of a
	// valid claim set: a claim is missing, unknown, of the wrong type or out
	// of range, or encoded differently from how this package encodes it.
	ReasonClaims
	// ReasonWrongKind means a refresh token was presented where an access
	// token is expected, or the other way round.
	ReasonWrongKind
	// ReasonWrongKey means the token is bound to another key tag.
	ReasonWrongKey
	// ReasonIssuedInFuture means iat is more than IssuedAtLeeway after the
	// verification time.
	ReasonIssuedInFuture
	// ReasonStaleGenerator means a cached token was verified under a
	// generator that has since been rotated, deactivated or replaced.
	ReasonStaleGenerator
	// ReasonExpired means exp is not after the verification time.
	ReasonExpired
)

var reasonText = [...]string{
	ReasonTooLarge:       "token too large",
	ReasonMalformed:      "malformed token",
	ReasonHeader:         "unsupported header",
	ReasonAlgorithm:      "algorithm not allowed",
	ReasonSignature:      "signature mismatch",
	ReasonDuplicateClaim: "duplicate claim",
	ReasonClaims:         "malformed claims",
	ReasonWrongKind:      "wrong token kind",
	ReasonWrongKey:       "token bound to another key",
	ReasonIssuedInFuture: "token issued in the future",
	ReasonStaleGenerator: "token generator replaced",
	ReasonExpired:        "token expired",
}

// String returns a short lower-case description of r.
func (r Reason) String() string {
	if int(r) < len(reasonText) && reasonText[r] != "" {
		return reasonText[r]
	}
	return "unknown reason"
}

// Error is the error returned for a refused token. It never holds the
// token or any part of it. It matches [ErrTokenExpired] when Reason is
// ReasonExpired and [ErrTokenInvalid] otherwise.
type Error struct {
	// Op is the operation that refused the token ("verify", "recheck",
	// "parse").
	Op string
	// Reason says why.
	Reason Reason
}

// Error returns "token: <op>: <reason>".
func (e *Error) Error() string {
	return "token: " + e.Op + ": " + e.Reason.String()
}

// Unwrap returns the sentinel the error belongs to.
func (e *Error) Unwrap() error {
	if e.Reason == ReasonExpired {
		return ErrTokenExpired
	}
	return ErrTokenInvalid
}

func refuse(op string, r Reason) error { return &Error{Op: op, Reason: r} }

// argError is a malformed request; it matches ErrInvalidArgument.
type argError struct{ op, msg string }

func (e *argError) Error() string { return "token: " + e.op + ": " + e.msg }
func (e *argError) Unwrap() error { return ErrInvalidArgument }

func invalidArg(op, msg string) error { return &argError{op: op, msg: msg} }
