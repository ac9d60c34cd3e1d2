package naverapi

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/pocketkms/kms"
)

// Error codes this server answers besides the ones *kms.Error carries.
const (
	codeInvalidParameter     = "InvalidParameter"
	codeResourceNotFound     = "ResourceNotFound"
	codeInvalidState         = "InvalidState"
	codeUnauthorized         = "Unauthorized"
	codeNotFound             = "NotFound"
	codeMethodNotAllowed     = "MethodNotAllowed"
	codeUnsupportedMediaType = "UnsupportedMediaType"
	codePayloadTooLarge      = "PayloadTooLarge"
	codeTooManyRequests      = "TooManyRequests"
	codeInternal             = "InternalServerError"
)

// messages are the fixed, human-readable messages per error code; the
// variable part goes in detail.
var messages = map[string]string{
	codeInvalidParameter:     "The specified parameter is invalid.",
	codeResourceNotFound:     "One or more of the resources in the request do not exist in the system.",
	codeNotFound:             "The requested path does not exist.",
	"AlreadyExists":          "The resource already exists.",
	codeInvalidState:         "The resource is not in a state that allows this operation.",
	"LimitExceeded":          "A limit of the resource has been reached.",
	"AccessDenied":           "Access from the caller's IP address is denied.",
	"Forbidden":              "The credentials do not allow this operation.",
	codeUnauthorized:         "Authentication failed.",
	codeTooManyRequests:      "Too many requests for this key; retry later.",
	"ServiceUnavailable":     "The service is unavailable.",
	codeInternal:             "An internal error occurred.",
	codeMethodNotAllowed:     "The method is not allowed on this path.",
	codeUnsupportedMediaType: "The media type of the request body is not supported.",
	codePayloadTooLarge:      "The request body is too large.",
}

// apiError is an error answered to the caller: an HTTP status, a NAVER error
// code, a non-secret detail, and field errors or per-item batch failures.
type apiError struct {
	status     int
	code       string
	detail     string
	fields     []FieldError
	failures   map[int]*apiError
	retryAfter float64 // seconds, for 429
}

// Error describes the error for logs; it holds no secret.
func (e *apiError) Error() string { return e.code + ": " + e.detail }

func (e *apiError) body() *ErrorBody {
	msg, ok := messages[e.code]
	if !ok {
		msg = http.StatusText(e.status)
	}
	return &ErrorBody{ErrorCode: e.code, Message: msg, Detail: e.detail, FieldErrors: e.fields}
}

// failureBodies renders failures keyed by the item index as a string.
func (e *apiError) failureBodies() map[string]*ErrorBody {
	out := make(map[string]*ErrorBody, len(e.failures))
	for i, f := range e.failures {
		out[strconv.Itoa(i)] = f.body()
	}
	return out
}

// Error is an answer in NAVER's error envelope, for the code around the
// handler: an Authenticator returns one to answer a status other than 401
// (403 Forbidden, say), and WriteError answers one from a middleware.
type Error struct {
	// Status is the HTTP status.
	Status int
	// Code is NAVER's errorCode, such as "Unauthorized", "Forbidden" or
	// "TooManyRequests".
	Code string
	// Detail is shown to the caller (error.detail): it must hold no secret.
	Detail string
}

// Error returns the code and the detail.
func (e *Error) Error() string { return "naverapi: " + e.Code + ": " + e.Detail }

func (e *Error) apiError() *apiError {
	out := &apiError{status: e.Status, code: e.Code, detail: e.Detail}
	if out.status < 400 || out.status > 599 || out.code == "" {
		out.status, out.code, out.detail = http.StatusInternalServerError, codeInternal, ""
	}
	return out
}

// WriteError answers err in the error envelope of the API r was sent to:
// v3 ({"error":…}) under /kms/v3/, API 2.0 ({"code":…,"msg":…,"error":…})
// elsewhere. An *Error is answered as it says, a *kms.Error with its code
// and status, anything else 500 InternalServerError without its text. A
// kms.ErrCanceled (the request's context ended: the client went away) is
// answered with nothing: WriteError panics with http.ErrAbortHandler, which
// net/http turns into a closed connection, and the Handler logs 499.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, !strings.HasPrefix(r.URL.Path, "/kms/v3/"), err)
}

// toAPIError turns any error into what is answered. *kms.Error gives its
// Code and Status; its detail is passed on except for token and decryption
// failures, which are answered alike whatever the cause (no oracle).
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.apiError()
	}
	var ke *kms.Error
	if !errors.As(err, &ke) {
		return &apiError{status: http.StatusInternalServerError, code: codeInternal}
	}
	out := fromKMS(ke)
	var be *kms.BatchError
	if errors.As(err, &be) {
		out.detail = ""
		out.failures = make(map[int]*apiError, len(be.Failures))
		for i, f := range be.Failures {
			out.failures[i] = fromKMS(f)
		}
	}
	var rl *kms.RateLimitError
	if errors.As(err, &rl) {
		out.retryAfter = rl.RetryAfter.Seconds()
	}
	return out
}

func fromKMS(ke *kms.Error) *apiError {
	out := &apiError{status: ke.Status, code: ke.Code, detail: ke.Detail}
	switch {
	case errors.Is(ke, kms.ErrTokenExpired):
		out.detail = "the token has expired"
	case errors.Is(ke, kms.ErrTokenInvalid):
		out.detail = "the token is not valid for this key"
	case errors.Is(ke, kms.ErrDecryptionFailed):
		out.detail = "decryption failed"
	case out.detail == "" && ke.Kind != nil:
		out.detail = ke.Kind.Error()
	}
	if out.status == 0 {
		out.status, out.code = http.StatusInternalServerError, codeInternal
	}
	return out
}

// writeError answers err in the envelope of the API generation.
func writeError(w http.ResponseWriter, v2 bool, err error) {
	if errors.Is(err, kms.ErrCanceled) {
		// The request's context ended: the client went away. Answer
		// nothing (not a 500); the handler logs 499.
		panic(http.ErrAbortHandler)
	}
	ae := toAPIError(err)
	if ae.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ae.retryAfter))))
	}
	var body any
	switch {
	case v2:
		b := ae.body()
		body = &V2ErrorResponse{Code: ae.code, Msg: b.Message, Error: b}
		if len(ae.failures) > 0 {
			body.(*V2ErrorResponse).Failures = ae.failureBodies()
		}
	case len(ae.failures) > 0:
		body = &V3ErrorResponse{Failures: ae.failureBodies()}
	default:
		body = &V3ErrorResponse{Error: ae.body()}
	}
	writeJSON(w, ae.status, body)
}

// writeJSON writes v as the JSON response body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data = []byte(`{"error":{"errorCode":"InternalServerError","message":"An internal error occurred."}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(data)+1))
	h.Set("Cache-Control", "no-store") // bodies may hold tokens, plaintext or data keys
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// batchFailures builds the answer to a batch whose items failed the format
// checks (phase 1): 400 InvalidParameter with the failures by index.
func batchFailures(problems map[int][]FieldError) *apiError {
	out := &apiError{status: http.StatusBadRequest, code: codeInvalidParameter, failures: map[int]*apiError{}}
	for i, fe := range problems {
		out.failures[i] = &apiError{status: http.StatusBadRequest, code: codeInvalidParameter, fields: fe}
	}
	return out
}
