package token

import (
	"bytes"
	"crypto/rsa"
	"encoding/json"
	"io"
	"time"
)

// Verification limits.
const (
	// MaxTokenSize is the longest token Verify looks at, in bytes. Longer
	// input is refused before it is split or decoded, so the memory a
	// hostile token can cost stays bounded. Tokens this package issues are
	// under 2 KiB.
	MaxTokenSize = 8 << 10
	// IssuedAtLeeway is how far in the future of the verification time a
	// token's iat may lie: clock steps of up to a minute between issuing
	// and verifying (a restart, an NTP correction) do not break tokens.
	IssuedAtLeeway = time.Minute
)

// altHeader is Header with its members in the other order, as some JWT
// libraries (golang-jwt among them) write it. Verify accepts both.
const altHeader = `{"alg":"RS256","typ":"JWT"}`

// maxHeaderSegment bounds the encoded header that Verify decodes when it is
// not the canonical one; anything longer cannot be an accepted header.
const maxHeaderSegment = 64

// Expect is what a token must be to pass [Verify].
type Expect struct {
	// Kind is the kind the endpoint needs: Access for cipher operations,
	// Refresh for renewal.
	Kind Kind
	// KeyTag is the key named by the request. The token's bound key tag
	// must equal it byte for byte (so another letter case does not match).
	KeyTag string
	// Now is the verification time; it is required. A token whose exp is
	// not after Now is expired.
	Now time.Time
}

func (e Expect) validate() error {
	switch {
	case !e.Kind.Valid():
		return invalidArg("verify", "invalid expected kind")
	case !validKeyTag(e.KeyTag):
		return invalidArg("verify", "invalid expected key tag")
	case e.Now.IsZero():
		return invalidArg("verify", "zero Now")
	}
	return nil
}

// b64url[c] reports whether c belongs to the base64url alphabet.
var b64url = func() (t [256]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[c] = true
	}
	return t
}()

// Verify checks tok against the generator public key pub and against want,
// and returns its claims. The checks run in this order, and the first that
// fails decides the error:
//
//  1. size: at most MaxTokenSize bytes, before anything else;
//  2. structure: exactly three segments of unpadded base64url (no padding,
//     no standard alphabet, no whitespace), each decoded strictly
//     (canonical trailing bits) when its turn comes: the payload only
//     after the signature has verified;
//  3. header: exactly {"typ":"JWT","alg":"RS256"}, members in either
//     order, nothing else; any other alg (none, HS256, PS256, RS384, …)
//     is refused before the signature is looked at;
//  4. signature: RSASSA-PKCS1-v1_5 with SHA-256 under pub;
//  5. claims: no duplicate members, every claim present with its type,
//     no unknown claim (jti, the optional token id, is known), and the
//     payload is the canonical encoding this package writes;
//  6. [Claims.Check]: kind, key binding, iat not beyond IssuedAtLeeway in
//     the future, and finally exp strictly after want.Now.
//
// A refused token yields an [*Error] matching [ErrTokenExpired] (step 6,
// expiry only) or [ErrTokenInvalid] (everything else). A nil or unusable
// pub, or a malformed want, yields an error matching [ErrInvalidArgument].
// The returned Claims are new and owned by the caller.
func Verify(tok string, pub *rsa.PublicKey, want Expect) (*Claims, error) {
	const op = "verify"
	if err := want.validate(); err != nil {
		return nil, err
	}
	if _, err := checkPublic(op, pub); err != nil {
		return nil, err
	}
	if len(tok) > MaxTokenSize {
		return nil, refuse(op, ReasonTooLarge)
	}
	dot1, dot2 := -1, -1
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if b64url[c] {
			continue
		}
		if c != '.' || dot2 >= 0 {
			return nil, refuse(op, ReasonMalformed)
		}
		if dot1 < 0 {
			dot1 = i
		} else {
			dot2 = i
		}
	}
	if dot2 < 0 || dot1 == 0 || dot2 == dot1+1 {
		return nil, refuse(op, ReasonMalformed) // not three segments, or an empty header or payload
	}
	if r := checkHeader(tok[:dot1]); r != 0 {
		return nil, refuse(op, r)
	}
	sigSeg := tok[dot2+1:]
	if len(sigSeg) != b64.EncodedLen(pub.Size()) {
		return nil, refuse(op, ReasonSignature)
	}
	var sbuf [maxKeyBits / 8]byte
	n, err := b64.Decode(sbuf[:], []byte(sigSeg))
	if err != nil || n != pub.Size() {
		return nil, refuse(op, ReasonMalformed)
	}
	if (rs256{}).Verify(tok[:dot2], sbuf[:n], pub) != nil {
		return nil, refuse(op, ReasonSignature)
	}
	payload, err := b64.DecodeString(tok[dot1+1 : dot2])
	if err != nil {
		return nil, refuse(op, ReasonMalformed)
	}
	c, r := parseClaims(payload)
	if r != 0 {
		return nil, refuse(op, r)
	}
	if err := c.check(op, want); err != nil {
		return nil, err
	}
	return c, nil
}

// checkHeader checks the encoded header segment.
func checkHeader(seg string) Reason {
	if seg == headerB64 {
		return 0
	}
	if len(seg) > maxHeaderSegment {
		return ReasonHeader
	}
	h, err := b64.DecodeString(seg)
	if err != nil {
		return ReasonMalformed
	}
	dec := json.NewDecoder(bytes.NewReader(h))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ReasonHeader
	}
	var alg, typ *string
	odd := false
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return ReasonHeader
		}
		v, err := dec.Token()
		if err != nil {
			return ReasonHeader
		}
		if _, ok := v.(json.Delim); ok {
			return ReasonHeader // no member of an acceptable header is an object or array
		}
		s, isString := v.(string)
		switch k {
		case "alg":
			odd = odd || alg != nil || !isString
			alg = &s
		case "typ":
			odd = odd || typ != nil || !isString
			typ = &s
		default:
			odd = true
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return ReasonHeader
	}
	if _, err := dec.Token(); err != io.EOF {
		return ReasonHeader
	}
	switch {
	case alg == nil || *alg != "RS256":
		return ReasonAlgorithm
	case odd || typ == nil || *typ != "JWT":
		return ReasonHeader
	case string(h) != Header && string(h) != altHeader:
		return ReasonHeader
	}
	return 0
}

// Verified is what a [Cache] keeps for a verified token: the generator that
// verified it and its claims. It holds no part of the token. A Verified in
// a Cache is shared and must not be modified.
type Verified struct {
	// GeneratorID is the id of the token generator whose public key
	// verified the token.
	GeneratorID string
	// Claims are the verified claims.
	Claims Claims
}

// Recheck repeats, for a cached verification, every check that depends on
// time or state: the generator that verified the token must still be the
// current one (generatorID; a rotated, deactivated or re-activated
// generator has a new id, so its old tokens fail with
// ReasonStaleGenerator), then [Claims.Check] against want. Errors are as
// for [Verify]. The caller still checks the key's own state.
func (v *Verified) Recheck(generatorID string, want Expect) error {
	// The claims' key tag was validated when the token was verified, so an
	// expected tag equal to it needs no second scan of its 64 characters.
	if want.KeyTag != v.Claims.KeyTag || !want.Kind.Valid() || want.Now.IsZero() {
		if err := want.validate(); err != nil {
			return err
		}
	}
	if generatorID == "" || v.GeneratorID != generatorID {
		return refuse("recheck", ReasonStaleGenerator)
	}
	return v.Claims.check("recheck", want)
}
