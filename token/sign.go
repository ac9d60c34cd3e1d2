package token

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Header is the JOSE header of every token this package issues, byte for
// byte the header of NAVER's tokens.
const Header = `{"typ":"JWT","alg":"RS256"}`

// headerB64 is Header in unpadded base64url.
const headerB64 = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9"

// Accepted RSA modulus sizes of a generator key, in bits.
const (
	minKeyBits = 2048
	maxKeyBits = 4096
)

var b64 = base64.RawURLEncoding.Strict()

// rs256 is RS256 (RSASSA-PKCS1-v1_5 with SHA-256) as a golang-jwt
// SigningMethod that signs through a crypto.Signer, so the private key may
// live in a hardware module. It is deliberately not registered with
// jwt.RegisterSigningMethod: that would replace golang-jwt's own RS256 for
// the whole program.
type rs256 struct{}

var _ jwt.SigningMethod = rs256{}

// Alg returns "RS256".
func (rs256) Alg() string { return "RS256" }

// Sign signs SHA-256(signingString) with key, which must be a crypto.Signer
// holding an RSA key, passing crypto.SHA256 as the signer options
// (PKCS #1 v1.5).
func (rs256) Sign(signingString string, key any) ([]byte, error) {
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, jwt.ErrInvalidKeyType
	}
	digest := sha256.Sum256([]byte(signingString))
	return signer.Sign(rand.Reader, digest[:], crypto.SHA256)
}

// Verify checks sig over signingString under key, an *rsa.PublicKey.
func (rs256) Verify(signingString string, sig []byte, key any) error {
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return jwt.ErrInvalidKeyType
	}
	digest := sha256.Sum256([]byte(signingString))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
}

// checkPublic validates a generator public key.
func checkPublic(op string, pub crypto.PublicKey) (*rsa.PublicKey, error) {
	k, ok := pub.(*rsa.PublicKey)
	if !ok || k == nil || k.N == nil {
		return nil, invalidArg(op, "not an RSA public key")
	}
	if bits := k.N.BitLen(); bits < minKeyBits || bits > maxKeyBits {
		return nil, invalidArg(op, "RSA key size outside 2048..4096 bits")
	}
	return k, nil
}

// Sign returns c as a signed token: the NAVER [Header], c in NAVER's claim
// layout, and an RS256 signature made by signer, which must hold an RSA key
// of 2048 to 4096 bits. It never touches private key material itself, so
// signer may be a hardware key. The signature is checked against signer's
// public key before the token is returned.
//
// c must be valid: a subject of 1 .. MaxSubjectLen bytes of UTF-8 without
// control characters, whole-second times within 1970 .. 9999, an expiry
// (if any) after the issue time, a valid Kind, a 64-character lowercase
// hex key tag, and known permissions without duplicates. Otherwise Sign
// fails with an error matching [ErrInvalidArgument]. Errors from signer are
// wrapped.
func Sign(signer crypto.Signer, c *Claims) (string, error) {
	const op = "sign"
	if signer == nil {
		return "", invalidArg(op, "nil signer")
	}
	if c == nil {
		return "", invalidArg(op, "nil claims")
	}
	if err := c.validate(true); err != nil {
		return "", invalidArg(op, err.Error())
	}
	pub, err := checkPublic(op, signer.Public())
	if err != nil {
		return "", err
	}
	var pbuf [1024]byte
	payload := c.appendPayload(pbuf[:0])
	buf := make([]byte, 0, len(headerB64)+1+b64.EncodedLen(len(payload))+1+b64.EncodedLen(pub.Size()))
	buf = append(buf, headerB64+"."...)
	buf = b64.AppendEncode(buf, payload)
	input := string(buf)
	sig, err := rs256{}.Sign(input, signer)
	if err != nil {
		return "", fmt.Errorf("token: sign: %w", err)
	}
	if len(sig) != pub.Size() || (rs256{}).Verify(input, sig, pub) != nil {
		return "", errors.New("token: sign: signer produced an invalid signature")
	}
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, sig)
	return string(buf), nil
}

// Request asks [IssueSet] for a token set.
type Request struct {
	// KeyTag is the key the tokens are bound to (64 lowercase hex).
	KeyTag string
	// Subject is the principal asking for the tokens.
	Subject string
	// Permissions is the snapshot the tokens carry. Every id must be known
	// (Permission.Known); duplicates are dropped and the ids are written in
	// ascending order. It may be empty.
	Permissions []Permission
	// AccessTTL and RefreshTTL are the lifetimes; the zero TTL means the
	// default of the token's kind (see TTL).
	AccessTTL, RefreshTTL TTL
	// AccessOnly issues the access token alone (NAVER v3
	// issueKeyAccessToken): the Set has no refresh token and RefreshTTL
	// is ignored.
	AccessOnly bool
	// Now is the issue time, truncated to the second. It is required.
	Now time.Time
	// CIDRs, when not empty, bind the tokens to callers in these address
	// prefixes (claim "cidr", see Claims.CIDRs; not NAVER's layout).
	// Duplicates are dropped and the prefixes written in ascending order;
	// each must be masked.
	CIDRs []netip.Prefix
	// TokenIDs, when not nil, gives every token a unique id (claim "jti"):
	// IDSize bytes read from it, unpadded base64url. This leaves NAVER's
	// layout (which has no jti), so it is off unless asked for; with it, no
	// two tokens are identical, and one token can be named (revoked)
	// without naming the others. Use crypto/rand.Reader.
	TokenIDs io.Reader
}

// Set is an issued access and refresh token pair.
//
// The two token strings are bearer secrets. Hand them to the caller by
// reading the fields; Set's String, GoString, Format, LogValue and
// MarshalJSON all redact them, so printing, logging or marshalling a Set
// never shows a token. (fmt cannot call these methods on a Set held in an
// unexported field of another struct; do not print such a struct.)
type Set struct {
	// Access is the access token.
	Access string
	// Refresh is the refresh token.
	Refresh string
	// IssuedAt is the iat of both tokens.
	IssuedAt time.Time
	// AccessExpires is the access token's exp, or the zero Time when it
	// never expires.
	AccessExpires time.Time
	// RefreshExpires is the refresh token's exp, or the zero Time when it
	// never expires.
	RefreshExpires time.Time
	// AccessID and RefreshID are the tokens' ids (claim "jti"), empty
	// unless the Request asked for TokenIDs. An id is not a secret: it
	// names a token but cannot be used as one.
	AccessID, RefreshID string
}

const redacted = "[redacted]"

func expiryString(t time.Time) string {
	if t.IsZero() {
		return "unlimited"
	}
	return t.UTC().Format(time.RFC3339)
}

// String returns a description of s with both tokens redacted.
func (s Set) String() string {
	return "token.Set{Access:" + redacted + " Refresh:" + redacted +
		" IssuedAt:" + s.IssuedAt.UTC().Format(time.RFC3339) +
		" AccessExpires:" + expiryString(s.AccessExpires) +
		" RefreshExpires:" + expiryString(s.RefreshExpires) + "}"
}

// GoString returns the same redacted description as String.
func (s Set) GoString() string { return s.String() }

// Format implements fmt.Formatter: every verb prints the redacted String.
func (s Set) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// LogValue implements slog.LogValuer with both tokens redacted.
func (s Set) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("access", redacted),
		slog.String("refresh", redacted),
		slog.Time("issuedAt", s.IssuedAt),
		slog.String("accessExpires", expiryString(s.AccessExpires)),
		slog.String("refreshExpires", expiryString(s.RefreshExpires)),
	)
}

// MarshalJSON encodes s with both tokens redacted, so a Set that ends up in
// a log line or a debug dump leaks nothing. Build response bodies from the
// fields instead.
func (s Set) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Access         string `json:"accessToken"`
		Refresh        string `json:"refreshToken"`
		IssuedAt       string `json:"issuedAt"`
		AccessExpires  string `json:"accessExpires"`
		RefreshExpires string `json:"refreshExpires"`
	}{redacted, redacted, s.IssuedAt.UTC().Format(time.RFC3339), expiryString(s.AccessExpires), expiryString(s.RefreshExpires)})
}

// IssueSet issues an access token and a refresh token (or, with
// r.AccessOnly, the access token alone) for r.Subject, bound to r.KeyTag
// and carrying r.Permissions, with iat = r.Now truncated to the second,
// signed by signer (see [Sign]). This is the one place tokens are made:
// claims, lifetimes and signing. A TTL outside the limits fails with an
// error matching [ErrInvalidTTL]; any other malformed field with one
// matching [ErrInvalidArgument]. It makes one signature per token.
func IssueSet(signer crypto.Signer, r Request) (Set, error) {
	const op = "issue"
	if err := r.AccessTTL.Validate(); err != nil {
		return Set{}, fmt.Errorf("%w (access token)", err)
	}
	if !r.AccessOnly {
		if err := r.RefreshTTL.Validate(); err != nil {
			return Set{}, fmt.Errorf("%w (refresh token)", err)
		}
	}
	if r.Now.IsZero() {
		return Set{}, invalidArg(op, "zero Now")
	}
	perms := slices.Clone(r.Permissions)
	slices.Sort(perms)
	perms = slices.Compact(perms)
	for _, p := range perms {
		if !p.Known() {
			return Set{}, invalidArg(op, "unknown permission "+p.String())
		}
	}
	var cidrs []netip.Prefix
	if len(r.CIDRs) > 0 {
		cidrs = slices.Clone(r.CIDRs)
		slices.SortFunc(cidrs, func(a, b netip.Prefix) int { return a.Compare(b) })
		cidrs = slices.Compact(cidrs)
	}
	iat := r.Now.Truncate(time.Second).UTC()
	c := Claims{
		CIDRs:       cidrs,
		Subject:     r.Subject,
		IssuedAt:    iat,
		KeyTag:      r.KeyTag,
		Permissions: perms,
	}
	set := Set{IssuedAt: iat}
	kinds := [...]struct {
		kind Kind
		ttl  TTL
		tok  *string
		exp  *time.Time
		id   *string
	}{
		{Access, r.AccessTTL, &set.Access, &set.AccessExpires, &set.AccessID},
		{Refresh, r.RefreshTTL, &set.Refresh, &set.RefreshExpires, &set.RefreshID},
	}
	n := len(kinds)
	if r.AccessOnly {
		n = 1
	}
	for _, k := range kinds[:n] {
		c.Kind = k.kind
		c.ExpiresAt = time.Time{}
		if ttl := k.ttl.For(k.kind); !ttl.Unlimited {
			c.ExpiresAt = iat.Add(ttl.Duration())
		}
		if r.TokenIDs != nil {
			id, err := newID(r.TokenIDs)
			if err != nil {
				return Set{}, err
			}
			c.ID = id
		}
		tok, err := Sign(signer, &c)
		if err != nil {
			var ae *argError
			if errors.As(err, &ae) {
				return Set{}, invalidArg(op, ae.msg)
			}
			return Set{}, err
		}
		*k.tok, *k.exp, *k.id = tok, c.ExpiresAt, c.ID
	}
	return set, nil
}

// newID reads a token id: IDSize bytes from r, unpadded base64url.
func newID(r io.Reader) (string, error) {
	var b [IDSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("token: issue: token id: %w", err)
	}
	return b64.EncodeToString(b[:]), nil
}
