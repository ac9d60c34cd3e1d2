package naverapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// Length limits of spec §4.2, as string lengths and decoded sizes.
const (
	maxPlaintextChars  = 43692 // base64 of 32,768 bytes
	maxContextChars    = 68    // base64 of 50 bytes
	maxSignDataChars   = 10924 // base64 of 8,192 bytes
	maxCiphertextChars = 43746 // kms.MaxCiphertextLength
	maxArrayItems      = 100   // v2 arrays and v3 batches (kms.MaxBatchItems)
)

// object reads the members of a JSON request object one by one, so that each
// wrong type or bad value is reported against its field name (with a prefix
// such as "requests[3]." inside a batch). Problems accumulate in errs.
type object struct {
	m      map[string]json.RawMessage
	prefix string
	errs   *[]FieldError
}

// readObject reads the request body as a JSON object, at most
// MaxBodyBytes: a body that says it is larger is refused unread, and the
// limit applies while reading one of unknown length. An empty body is an
// empty object. Unknown members are ignored. w is net/http's own
// ResponseWriter, so that a body over the limit also closes the connection.
func readObject(w http.ResponseWriter, r *http.Request, v3 bool) (object, error) {
	o := object{errs: new([]FieldError)}
	if v3 {
		if err := checkContentType(r); err != nil {
			return o, err
		}
	}
	tooLarge := &apiError{status: http.StatusRequestEntityTooLarge, code: codePayloadTooLarge,
		detail: "the request body exceeds " + strconv.Itoa(MaxBodyBytes) + " bytes"}
	if r.ContentLength > MaxBodyBytes {
		refuseBody(w, r)
		return o, tooLarge
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead) // one allocation, not ReadAll's doublings
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return o, tooLarge
		}
		return o, &apiError{status: http.StatusBadRequest, code: codeInvalidParameter, detail: "the request body could not be read"}
	}
	data := buf.Bytes()
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return o, nil
	}
	if data[0] != '{' || json.Unmarshal(data, &o.m) != nil {
		return o, &apiError{status: http.StatusBadRequest, code: codeInvalidParameter, detail: "the request body is not a JSON object"}
	}
	return o, nil
}

// checkContentType refuses a v3 body sent with a media type other than JSON
// (415, as the v3 overview lists). A missing Content-Type is accepted.
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return &apiError{status: http.StatusUnsupportedMediaType, code: codeUnsupportedMediaType,
		detail: "send the body as application/json"}
}

// sub returns the object held in raw, for items of a list: prefix names it.
func (o object) sub(raw json.RawMessage, prefix string) (object, bool) {
	s := object{prefix: prefix + ".", errs: o.errs}
	if kind(raw) != '{' || json.Unmarshal(raw, &s.m) != nil {
		o.failAt(prefix, "must be a JSON object")
		return s, false
	}
	return s, true
}

// kind classifies a JSON value by its first byte: '"', '{', '[', 't' (a
// boolean), 'n' (null), '0' (a number), or 0 for nothing.
func kind(raw json.RawMessage) byte {
	if len(raw) == 0 {
		return 0
	}
	switch c := raw[0]; c {
	case '"', '{', '[', 'n':
		return c
	case 't', 'f':
		return 't'
	default:
		return '0'
	}
}

func (o object) name(field string) string { return o.prefix + field }

func (o object) fail(field, msg string) { o.failAt(o.name(field), msg) }

func (o object) failAt(name, msg string) {
	*o.errs = append(*o.errs, FieldError{Field: name, Message: msg})
}

// err returns the accumulated field errors as one 400 InvalidParameter.
func (o object) err() error {
	if len(*o.errs) == 0 {
		return nil
	}
	return &apiError{status: http.StatusBadRequest, code: codeInvalidParameter, fields: *o.errs}
}

// raw returns a member that is present and not null.
func (o object) raw(field string) (json.RawMessage, bool) {
	v, ok := o.m[field]
	if !ok || kind(v) == 'n' {
		return nil, false
	}
	return v, true
}

// isNull reports whether a member is present and null.
func (o object) isNull(field string) bool { v, ok := o.m[field]; return ok && kind(v) == 'n' }

// require records a missing (or null) member.
func (o object) require(field string) {
	if _, ok := o.raw(field); !ok {
		o.fail(field, "is required")
	}
}

// str returns a string member; a member of another type is an error.
func (o object) str(field string) (string, bool) {
	v, ok := o.raw(field)
	if !ok {
		return "", false
	}
	return o.decodeString(o.name(field), v)
}

func (o object) decodeString(name string, v json.RawMessage) (string, bool) {
	var s string
	if kind(v) != '"' || json.Unmarshal(v, &s) != nil {
		o.failAt(name, "must be a string")
		return "", false
	}
	return s, true
}

// strOrList returns a member that is a string or an array of strings, and
// whether it was an array. Array items are named "field[i]".
func (o object) strOrList(field string) (vals []string, isList, ok bool) {
	v, present := o.raw(field)
	if !present {
		return nil, false, false
	}
	if kind(v) == '"' {
		s, ok := o.decodeString(o.name(field), v)
		return []string{s}, false, ok
	}
	var items []json.RawMessage
	if kind(v) != '[' || json.Unmarshal(v, &items) != nil {
		o.fail(field, "must be a string or an array of strings")
		return nil, false, false
	}
	if len(items) == 0 || len(items) > maxArrayItems {
		o.fail(field, "must hold 1.."+strconv.Itoa(maxArrayItems)+" items")
		return nil, true, false
	}
	vals = make([]string, len(items))
	ok = true
	for i, it := range items {
		s, good := o.decodeString(o.name(field)+"["+strconv.Itoa(i)+"]", it)
		vals[i], ok = s, ok && good
	}
	return vals, true, ok
}

// strList returns a member that is an array of strings.
func (o object) strList(field string) ([]string, bool) {
	v, present := o.raw(field)
	if !present {
		return nil, false
	}
	var items []json.RawMessage
	if kind(v) != '[' || json.Unmarshal(v, &items) != nil {
		o.fail(field, "must be an array of strings")
		return nil, false
	}
	out := make([]string, len(items))
	ok := true
	for i, it := range items {
		s, good := o.decodeString(o.name(field)+"["+strconv.Itoa(i)+"]", it)
		out[i], ok = s, ok && good
	}
	return out, ok
}

// list returns a member that is an array, undecoded.
func (o object) list(field string) ([]json.RawMessage, bool) {
	v, present := o.raw(field)
	if !present {
		return nil, false
	}
	var items []json.RawMessage
	if kind(v) != '[' || json.Unmarshal(v, &items) != nil {
		o.fail(field, "must be an array")
		return nil, false
	}
	return items, true
}

// obj returns a member that is an object.
func (o object) obj(field string) (object, bool) {
	v, present := o.raw(field)
	if !present {
		return object{}, false
	}
	return o.sub(v, o.name(field))
}

// boolean returns a boolean member.
func (o object) boolean(field string) (v, ok bool) {
	raw, present := o.raw(field)
	if !present {
		return false, false
	}
	if kind(raw) != 't' {
		o.fail(field, "must be a boolean")
		return false, false
	}
	return raw[0] == 't', true
}

// integer returns an integer member in min..max, written in integer
// notation (30.0, 3e1 and "30" are refused, as NAVER's v3 does).
func (o object) integer(field string, min, max int) (int, bool) {
	raw, present := o.raw(field)
	if !present {
		return 0, false
	}
	n, ok := parseDecimal(string(raw), min, max)
	if !ok {
		o.fail(field, "must be an integer from "+strconv.Itoa(min)+" to "+strconv.Itoa(max))
	}
	return n, ok
}

// parseDecimal parses an optionally negative decimal integer without sign
// '+', exponent or fraction, within min..max.
func parseDecimal(s string, min, max int) (int, bool) {
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || len(digits) > 10 || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min || n > max {
		return 0, false
	}
	return n, true
}

// isStdBase64 reports whether s matches NAVER's pattern for standard,
// padded base64: ([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{4}|…{3}=|…{2}==),
// so the empty string, the URL alphabet, whitespace and missing padding
// are all refused. (Non-zero trailing bits are accepted, as by the pattern.)
func isStdBase64(s string) bool {
	n := len(s)
	if n == 0 || n%4 != 0 {
		return false
	}
	pad := 0
	if s[n-1] == '=' {
		pad++
		if s[n-2] == '=' {
			pad++
		}
	}
	for i := 0; i < n-pad; i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

// decodeLimited checks s against a string-length limit, the base64 pattern
// and a decoded-size limit, and decodes it. It returns a problem description
// ("" when s is good); the description never quotes the value.
func decodeLimited(s string, maxChars, maxBytes int) ([]byte, string) {
	if len(s) > maxChars {
		return nil, "must be at most " + strconv.Itoa(maxChars) + " characters"
	}
	if !isStdBase64(s) {
		return nil, "must be standard base64 with padding"
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, "must be standard base64 with padding"
	}
	if len(b) > maxBytes {
		clear(b)
		return nil, "must decode to at most " + strconv.Itoa(maxBytes) + " bytes"
	}
	return b, ""
}

// checkEnvelope checks a ciphertext or signature against NAVER's pattern
// ^ncpkms:v[1-9][0-9]{0,8}:<standard padded base64>$ and the 43,746
// character limit, returning a problem description or "".
func checkEnvelope(s string) string {
	if len(s) > maxCiphertextChars {
		return "must be at most " + strconv.Itoa(maxCiphertextChars) + " characters"
	}
	rest, ok := strings.CutPrefix(s, "ncpkms:v")
	if !ok {
		return "must have the form ncpkms:v{N}:<base64>"
	}
	ver, body, ok := strings.Cut(rest, ":")
	if !ok || len(ver) == 0 || len(ver) > 9 || ver[0] == '0' || strings.Trim(ver, "0123456789") != "" || !isStdBase64(body) {
		return "must have the form ncpkms:v{N}:<base64>"
	}
	return ""
}

// badContext stands in for a context string that is not valid base64 of at
// most 50 bytes. NAVER checks the context only on convergent keys and ignores
// it on the others, but only the Engine knows which keys are convergent: it
// ignores any context on a non-convergent key and refuses one over 50 bytes
// on a convergent key (400 InvalidParameter), so passing this oversized
// value gives NAVER's behaviour on both, after authentication.
var badContext = make([]byte, 51)

// context reads the optional context member: nil when absent, the decoded
// bytes when valid, badContext when a string that is not valid.
func (o object) context(field string) []byte {
	s, ok := o.str(field)
	if !ok {
		return nil
	}
	b, problem := decodeLimited(s, maxContextChars, 50)
	if problem != "" {
		return badContext
	}
	return b
}
