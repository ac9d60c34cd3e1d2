package kms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Sentinel errors. Every error the Engine returns is an *Error that
// matches exactly one of these with errors.Is, and carries the NAVER error
// code and the HTTP status a server would answer (see [Error]).
var (
	// ErrInvalidArgument: malformed or out-of-range input (400 InvalidParameter).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrWrongKeyType: the key type does not support the operation (400 InvalidParameter).
	ErrWrongKeyType = errors.New("operation not supported by this key type")
	// ErrDecryptionFailed: the ciphertext does not authenticate under the key,
	// version and context: tampering, another key, a wrong context (400
	// InvalidParameter). Deliberately carries no detail.
	ErrDecryptionFailed = errors.New("decryption failed")
	// ErrKeyNotFound: no key has this tag (404 ResourceNotFound).
	ErrKeyNotFound = errors.New("key not found")
	// ErrVersionNotFound: the key has no such version (404 ResourceNotFound).
	ErrVersionNotFound = errors.New("key version not found")
	// ErrAlreadyExists: a key with this name exists (409 AlreadyExists).
	ErrAlreadyExists = errors.New("already exists")
	// ErrKeyNotEnabled: the key is not ENABLED (409 InvalidState).
	ErrKeyNotEnabled = errors.New("key is not enabled")
	// ErrInvalidState: the key's or version's state does not allow the
	// change: enabling a REVOKED key, disabling the current version,
	// cancelling a deletion that was not requested (409 InvalidState).
	ErrInvalidState = errors.New("state does not allow this change")
	// ErrVersionDisabled: the version is disabled (409 InvalidState).
	ErrVersionDisabled = errors.New("key version is disabled")
	// ErrVersionBelowMinimum: the ciphertext's version is below the key's
	// minimum decryption version (SetKeyMinDecryptionVersion), so it no
	// longer decrypts or re-encrypts; the version itself is not disabled
	// (409 InvalidState).
	ErrVersionBelowMinimum = errors.New("key version below the minimum decryption version")
	// ErrVersionLimit: the key already has the maximum number of versions (409 LimitExceeded).
	ErrVersionLimit = errors.New("key version limit reached")
	// ErrAccessDenied: the caller's IP address is not allowed (403 AccessDenied).
	ErrAccessDenied = errors.New("access denied")
	// ErrPermissionDenied: the token lacks the permission (403 Forbidden).
	ErrPermissionDenied = errors.New("permission denied")
	// ErrTokenInvalid: the token is malformed, forged, of the wrong kind, for
	// another key, or from a replaced or disabled generator (401 Unauthorized).
	ErrTokenInvalid = errors.New("invalid token")
	// ErrTokenExpired: the token has expired (401 Unauthorized).
	ErrTokenExpired = errors.New("token expired")
	// ErrRateLimited: the key's rate limit is exhausted (429 TooManyRequests);
	// errors.As to *RateLimitError for RetryAfter.
	ErrRateLimited = errors.New("rate limited")
	// ErrClosed: the Engine was closed (503 ServiceUnavailable).
	ErrClosed = errors.New("engine closed")
	// ErrUnavailable: the backend cannot be reached, or lost its session
	// (a token reset, an HSM restart) and could not get it back within the
	// call. It says nothing about the key material, and the call may be
	// retried (503 ServiceUnavailable).
	ErrUnavailable = errors.New("backend unavailable; retry")
	// ErrBackendMismatch: the backend cannot open the key material recorded
	// in the store — the wrong root key, the wrong token (500 InternalServerError).
	ErrBackendMismatch = errors.New("backend cannot open this store's key material")
	// ErrConflict: another process changed the key at the same moment (a
	// store shared by several Engines); nothing was written and the call
	// may be retried (409 Conflict). A store owned by one Engine, such as
	// the embedded Badger default, never causes it.
	ErrConflict = errors.New("conflicting change")
	// ErrCanceled: the caller's context ended (cancelled or past its
	// deadline) before the call finished; errors.Is also matches
	// context.Canceled or context.DeadlineExceeded. The caller went away,
	// so a server answers nothing (499 ClientClosedRequest in its log). A
	// change whose commit had begun may still have landed: see
	// store.ErrUncertain.
	ErrCanceled = errors.New("request canceled")
	// ErrInternal: a backend or storage failure (500 InternalServerError).
	ErrInternal = errors.New("internal error")
	// ErrBackupInvalid: a backup given to Restore or VerifyBackup is not
	// one Engine.Backup wrote, or not whole: truncated, altered (its
	// SHA-256 digest or a record's checksum fails), of an unknown format
	// version, or inconsistent. Nothing was written (400 InvalidParameter).
	ErrBackupInvalid = errors.New("invalid backup")
	// ErrStale: the Engine has lost its shared store's change feed (etcd
	// unreachable, or a reload failing) for longer than WithStaleLimit,
	// so it may be missing revocations, generator rotations and
	// allow-list edits made through other Engines. Token-plane calls are
	// refused with it until the feed is back; trusted calls keep serving
	// (503 ServiceUnavailable). See WithStaleLimit.
	ErrStale = errors.New("engine state may be stale: the shared store's change feed is lost")
	// ErrUnsupported: the backend or the store cannot do this at all
	// (RotateRootKey on a PKCS #11 backend, or without a directory) (501
	// NotImplemented).
	ErrUnsupported = errors.New("not supported by this backend or store")
	// ErrEncryptionBudget: the key version has made as many AES-GCM
	// encryptions as random 96-bit nonces safely allow (2^32, NIST SP
	// 800-38D); it still decrypts, but encrypts no more: rotate the key
	// (409 LimitExceeded). See Engine.KeyUsage.
	ErrEncryptionBudget = errors.New("key version's encryption budget is exhausted; rotate the key")
	// ErrAuditFailed: with fail-closed auditing (AuditOptions.FailClosed),
	// the audit sink did not accept the call's event, so the call's result
	// was withheld (503 ServiceUnavailable).
	ErrAuditFailed = errors.New("audit event could not be recorded")
)

// StatusClientClosedRequest is the status ErrCanceled carries: nginx's
// 499, which no standard status covers. A server logs it and sends
// nothing, since the client has gone.
const StatusClientClosedRequest = 499

// canceled is the one error of a call whose context ended: ErrCanceled,
// wrapping the context's error.
func canceled(op, tag string, ctxErr error) *Error {
	return wrapErr(op, tag, ErrCanceled, ctxErr)
}

// isContextErr reports whether err comes from a context that ended.
func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

type errClass struct {
	code   string
	status int
}

var classes = map[error]errClass{
	ErrInvalidArgument:     {"InvalidParameter", http.StatusBadRequest},
	ErrWrongKeyType:        {"InvalidParameter", http.StatusBadRequest},
	ErrDecryptionFailed:    {"InvalidParameter", http.StatusBadRequest},
	ErrKeyNotFound:         {"ResourceNotFound", http.StatusNotFound},
	ErrVersionNotFound:     {"ResourceNotFound", http.StatusNotFound},
	ErrAlreadyExists:       {"AlreadyExists", http.StatusConflict},
	ErrKeyNotEnabled:       {"InvalidState", http.StatusConflict},
	ErrInvalidState:        {"InvalidState", http.StatusConflict},
	ErrVersionDisabled:     {"InvalidState", http.StatusConflict},
	ErrVersionLimit:        {"LimitExceeded", http.StatusConflict},
	ErrVersionBelowMinimum: {"InvalidState", http.StatusConflict},
	ErrAccessDenied:        {"AccessDenied", http.StatusForbidden},
	ErrPermissionDenied:    {"Forbidden", http.StatusForbidden},
	ErrTokenInvalid:        {"Unauthorized", http.StatusUnauthorized},
	ErrTokenExpired:        {"Unauthorized", http.StatusUnauthorized},
	ErrRateLimited:         {"TooManyRequests", http.StatusTooManyRequests},
	ErrClosed:              {"ServiceUnavailable", http.StatusServiceUnavailable},
	ErrUnavailable:         {"ServiceUnavailable", http.StatusServiceUnavailable},
	ErrBackendMismatch:     {"InternalServerError", http.StatusInternalServerError},
	ErrConflict:            {"Conflict", http.StatusConflict},
	ErrCanceled:            {"ClientClosedRequest", StatusClientClosedRequest},
	ErrInternal:            {"InternalServerError", http.StatusInternalServerError},
	ErrBackupInvalid:       {"InvalidParameter", http.StatusBadRequest},
	ErrStale:               {"ServiceUnavailable", http.StatusServiceUnavailable},
	ErrUnsupported:         {"NotImplemented", http.StatusNotImplemented},
	ErrEncryptionBudget:    {"LimitExceeded", http.StatusConflict},
	ErrAuditFailed:         {"ServiceUnavailable", http.StatusServiceUnavailable},
}

// Error is the error type of every Engine method. Code and Status are what
// a NAVER-compatible server answers; Kind is the sentinel it matches.
// Messages name the operation and key tag, never a secret.
type Error struct {
	// Op is the operation, e.g. "encrypt".
	Op string
	// KeyTag is the key concerned, if any (not secret).
	KeyTag string
	// Code is the NAVER error code, e.g. "InvalidParameter".
	Code string
	// Status is the HTTP status a server answers.
	Status int
	// Kind is the sentinel this error matches.
	Kind error
	// Detail is a non-secret explanation, possibly empty.
	Detail string
	// Err is the underlying cause, if any (never carries a secret).
	Err error
}

// Error returns "kms: <op> key <tag>: <kind>: <detail>".
func (e *Error) Error() string {
	s := "kms: " + e.Op
	if e.KeyTag != "" {
		s += " key " + e.KeyTag
	}
	s += ": " + e.Kind.Error()
	switch {
	case e.Detail != "":
		s += ": " + e.Detail
	case e.Err != nil && e.Kind != ErrDecryptionFailed:
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the sentinel and the cause, for errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// RateLimitError is the cause inside an ErrRateLimited *Error; it tells
// when to retry.
type RateLimitError struct {
	// RetryAfter is how long until the call would be admitted.
	RetryAfter time.Duration
}

// Error describes the wait.
func (e *RateLimitError) Error() string {
	return fmt.Sprintf("retry after %v", e.RetryAfter)
}

func newErr(op, tag string, kind error, detail string) *Error {
	c := classes[kind]
	return &Error{Op: op, KeyTag: tag, Code: c.code, Status: c.status, Kind: kind, Detail: detail}
}

func wrapErr(op, tag string, kind error, cause error) *Error {
	e := newErr(op, tag, kind, "")
	e.Err = cause
	return e
}
