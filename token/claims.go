package token

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/pocketkms/kms/internal/keytag"
)

// Kind is the kind of a token, carried in claim "1".
type Kind uint8

// The two token kinds. The zero Kind is invalid.
const (
	// Access is a short-lived token that authorises cipher operations
	// ("1":"ACCESS").
	Access Kind = iota + 1
	// Refresh is a long-lived token that only obtains new tokens
	// ("1":"REFRESH").
	Refresh
)

// String returns the claim value: "ACCESS", "REFRESH", or "INVALID".
func (k Kind) String() string {
	switch k {
	case Access:
		return "ACCESS"
	case Refresh:
		return "REFRESH"
	}
	return "INVALID"
}

// Valid reports whether k is Access or Refresh.
func (k Kind) Valid() bool { return k == Access || k == Refresh }

// Permission is an operation a token may authorise, carried as an integer in
// claim "4". The values are a compatibility contract: they are persisted in
// issued tokens, are never renumbered and never reused. See the package
// documentation for the table.
type Permission int

// The permissions defined so far. Batch variants of an operation need the
// permission of the operation itself.
const (
	// PermEncrypt allows Encrypt and Batch Encrypt.
	PermEncrypt Permission = 0
	// PermDecrypt allows Decrypt and Batch Decrypt.
	PermDecrypt Permission = 1
	// PermReEncrypt allows Re-Encrypt and Batch Re-Encrypt.
	PermReEncrypt Permission = 2
	// PermCreateCustomKey allows Create Custom Key (a data key).
	PermCreateCustomKey Permission = 3
	// PermSign allows Sign.
	PermSign Permission = 4
	// PermVerify allows Verify.
	PermVerify Permission = 5
	// PermGetPublicKey allows Get Public Key.
	PermGetPublicKey Permission = 6
)

var permissionNames = [...]string{
	PermEncrypt:         "Encrypt",
	PermDecrypt:         "Decrypt",
	PermReEncrypt:       "ReEncrypt",
	PermCreateCustomKey: "CreateCustomKey",
	PermSign:            "Sign",
	PermVerify:          "Verify",
	PermGetPublicKey:    "GetPublicKey",
}

// Known reports whether p is defined by this version of the package. Ids
// that are not known are kept when a token is parsed but never authorise
// anything.
func (p Permission) Known() bool { return p >= 0 && int(p) < len(permissionNames) }

// String returns the permission's name, or "Permission(<n>)" for an id this
// version does not define.
func (p Permission) String() string {
	if p.Known() {
		return permissionNames[p]
	}
	return "Permission(" + strconv.Itoa(int(p)) + ")"
}

// AllPermissions returns every permission this version defines, in
// ascending order. The slice is new on every call.
func AllPermissions() []Permission {
	all := make([]Permission, len(permissionNames))
	for i := range all {
		all[i] = Permission(i)
	}
	return all
}

// Limits of the claim set.
const (
	// MaxSubjectLen is the longest subject, in bytes.
	MaxSubjectLen = 256
	// keyTagLen is the length of a key tag: 64 lowercase hex characters.
	keyTagLen = keytag.Len
	// keyTagPrefix precedes the key tag in claim "2".
	keyTagPrefix = "keytag__"
	// extValue is the constant value of claim "3".
	extValue = "EXT"
	// maxUnix is 9999-12-31T23:59:59Z, the latest time a claim may hold.
	maxUnix = 253402300799
	// maxPermissionID bounds a permission id in a parsed token.
	maxPermissionID = math.MaxInt32
	// MaxCIDRs is the most address prefixes a token may be bound to
	// (claim "cidr").
	MaxCIDRs = 16
	// MaxIDLen is the longest token id (claim "jti"), in bytes.
	MaxIDLen = 64
	// IDSize is the number of random bytes in a token id this package
	// makes; the id is their unpadded base64url encoding (22 characters).
	IDSize = 16
)

// Claims is the claim set of a token, in NAVER's layout:
//
//	{"sub":"<Subject>","iat":<IssuedAt>,"exp":<ExpiresAt>,"1":"ACCESS"|"REFRESH",
//	 "2":"keytag__<KeyTag>","3":"EXT","4":[<Permissions>...]}
//
// A token with an id (not NAVER's layout; see [Request].TokenIDs) carries
// one more member, last: ,"jti":"<ID>". Without an id the layout is
// NAVER's, byte for byte.
//
// Claims returned by this package (and held by the [Cache]) are shared and
// must be treated as read-only.
type Claims struct {
	// Subject is the principal that asked for the tokens (claim "sub"):
	// 1 .. MaxSubjectLen bytes of UTF-8 without control characters.
	Subject string
	// IssuedAt is the issue time (claim "iat"), in whole seconds.
	IssuedAt time.Time
	// ExpiresAt is the expiry time (claim "exp"), in whole seconds, after
	// IssuedAt; the zero Time means the token never expires and the claim
	// is absent.
	ExpiresAt time.Time
	// Kind is Access or Refresh (claim "1").
	Kind Kind
	// KeyTag is the tag of the key the token is bound to: 64 lowercase hex
	// characters (claim "2", after the "keytag__" prefix).
	KeyTag string
	// Permissions is the permission snapshot taken at issue time (claim
	// "4"), without duplicates. A parsed token keeps the ids in their
	// encoded order, including ids this version does not know.
	Permissions []Permission
	// CIDRs, when not empty, bind the token to callers whose address lies
	// in one of these prefixes (claim "cidr"; not NAVER's layout): at most
	// MaxCIDRs masked prefixes, IPv4 or IPv6 (not IPv4-mapped IPv6),
	// without duplicates. Empty: any address (the key's allow-list still
	// applies).
	CIDRs []netip.Prefix
	// ID is the token's unique id (claim "jti"), or empty when the token
	// has none (NAVER's layout). It is 1 .. MaxIDLen characters of the
	// base64url alphabet.
	ID string
}

// validID reports whether s is 1 .. MaxIDLen characters of the base64url
// alphabet (so it never needs escaping in JSON).
func validID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !b64url[s[i]] {
			return false
		}
	}
	return true
}

// Has reports whether the claims grant p. Unknown permissions are never
// granted.
func (c *Claims) Has(p Permission) bool {
	return p.Known() && slices.Contains(c.Permissions, p)
}

// AllowsAddr reports whether the token may be used from addr: it has no
// CIDRs, or one of them contains addr (an IPv4-mapped IPv6 address counts
// as IPv4).
func (c *Claims) AllowsAddr(addr netip.Addr) bool {
	if len(c.CIDRs) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, p := range c.CIDRs {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// validCIDRs reports whether ps is nil, or 1 .. MaxCIDRs masked prefixes,
// none IPv4-mapped IPv6, without duplicates.
func validCIDRs(ps []netip.Prefix) bool {
	if ps == nil {
		return true
	}
	if len(ps) == 0 || len(ps) > MaxCIDRs {
		return false
	}
	for i, p := range ps {
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" || slices.Contains(ps[:i], p) {
			return false
		}
	}
	return true
}

// Expired reports whether the claims have expired at now: exp is present and
// not after now. A token whose exp equals now is expired.
func (c *Claims) Expired(now time.Time) bool {
	return !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt)
}

// Check applies the checks that follow signature verification: kind, key
// binding, issue time and expiry, in that order. It returns an [*Error]
// matching [ErrTokenInvalid] or, once all else has passed,
// [ErrTokenExpired]; or an error matching [ErrInvalidArgument] when want is
// malformed. [Verify] calls it; call it again on claims kept from an
// earlier verification.
func (c *Claims) Check(want Expect) error {
	if err := want.validate(); err != nil {
		return err
	}
	return c.check("check", want)
}

func (c *Claims) check(op string, want Expect) error {
	switch {
	case c.Kind != want.Kind:
		return refuse(op, ReasonWrongKind)
	case c.KeyTag != want.KeyTag:
		return refuse(op, ReasonWrongKey)
	case c.IssuedAt.After(want.Now.Add(IssuedAtLeeway)):
		return refuse(op, ReasonIssuedInFuture)
	case c.Expired(want.Now):
		return refuse(op, ReasonExpired)
	}
	return nil
}

// validKeyTag reports whether s is 64 lowercase hex characters (the
// module's one validator, internal/keytag).
func validKeyTag(s string) bool { return keytag.Valid(s) }

// validSubject reports whether s is 1..MaxSubjectLen bytes of UTF-8 without
// control characters (C0, DEL, C1).
func validSubject(s string) bool {
	if len(s) == 0 || len(s) > MaxSubjectLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return false
		}
	}
	return true
}

// validTime reports whether t is a whole second within 1970 .. 9999.
func validTime(t time.Time) bool {
	u := t.Unix()
	return t.Nanosecond() == 0 && u >= 0 && u <= maxUnix
}

// validate checks a claim set. With knownOnly, every permission must be
// one this version defines (what we sign); without, any id in range is
// kept (what we parse).
func (c *Claims) validate(knownOnly bool) error {
	switch {
	case !validSubject(c.Subject):
		return errors.New("invalid subject")
	case !validTime(c.IssuedAt):
		return errors.New("invalid issue time")
	case !c.ExpiresAt.IsZero() && (!validTime(c.ExpiresAt) || !c.ExpiresAt.After(c.IssuedAt)):
		return errors.New("invalid expiry time")
	case !c.Kind.Valid():
		return errors.New("invalid kind")
	case !validKeyTag(c.KeyTag):
		return errors.New("invalid key tag")
	case !validCIDRs(c.CIDRs):
		return errors.New("invalid address prefixes")
	case c.ID != "" && !validID(c.ID):
		return errors.New("invalid token id")
	}
	for _, p := range c.Permissions {
		if p < 0 || p > maxPermissionID || (knownOnly && !p.Known()) {
			return errors.New("invalid permission")
		}
	}
	if hasDuplicates(c.Permissions) {
		return errors.New("duplicate permission")
	}
	return nil
}

func hasDuplicates(ps []Permission) bool {
	if len(ps) < 2 {
		return false
	}
	if len(ps) <= 64 {
		for i := 1; i < len(ps); i++ {
			if slices.Contains(ps[:i], ps[i]) {
				return true
			}
		}
		return false
	}
	s := slices.Clone(ps)
	slices.Sort(s)
	for i := 1; i < len(s); i++ {
		if s[i] == s[i-1] {
			return true
		}
	}
	return false
}

// appendPayload appends the canonical JSON encoding of c, the exact bytes
// NAVER's tokens carry: members in the order sub, iat, exp, 1, 2, 3, 4, no
// whitespace; then jti, only when c has an ID. c must be valid.
func (c *Claims) appendPayload(b []byte) []byte {
	b = append(b, `{"sub":`...)
	b = appendJSONString(b, c.Subject)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, c.IssuedAt.Unix(), 10)
	if !c.ExpiresAt.IsZero() {
		b = append(b, `,"exp":`...)
		b = strconv.AppendInt(b, c.ExpiresAt.Unix(), 10)
	}
	b = append(b, `,"1":"`...)
	b = append(b, c.Kind.String()...)
	b = append(b, `","2":"`+keyTagPrefix...)
	b = append(b, c.KeyTag...)
	b = append(b, `","3":"`+extValue+`","4":[`...)
	for i, p := range c.Permissions {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(p), 10)
	}
	b = append(b, ']')
	if len(c.CIDRs) > 0 {
		b = append(b, `,"cidr":[`...)
		for i, p := range c.CIDRs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = p.AppendTo(b)
			b = append(b, '"')
		}
		b = append(b, ']')
	}
	if c.ID != "" {
		b = append(b, `,"jti":"`...)
		b = append(b, c.ID...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendJSONString appends s as a JSON string. s holds no control
// characters and is valid UTF-8 (validSubject), so only the quote and the
// backslash need escaping.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// Bits recording which claims were seen while parsing.
const (
	seenSub = 1 << iota
	seenIat
	seenExp
	seenKind
	seenKey
	seenExt
	seenPerms
	seenID
	seenCIDR
	seenRequired = seenSub | seenIat | seenKind | seenKey | seenExt | seenPerms
)

// parseClaims parses a decoded payload. It walks the JSON tokens so that a
// duplicate member is seen (encoding/json would silently keep the last
// one), checks every claim's type, validates the claim set, and finally
// insists that the payload is byte for byte the canonical encoding of
// what was parsed: whitespace, reordered members, escapes and number
// spellings that this package never writes are refused.
//
// The walk allocates for every JSON token, so a payload is first decoded
// the quick way (json.Unmarshal into typed fields) and checked against its
// canonical encoding: encoding/json keeps the last of duplicate members,
// but the canonical encoding has each member once, so a payload with a
// duplicate can never equal it. Only a payload that fails this is walked,
// to name the reason (ReasonDuplicateClaim or ReasonClaims).
func parseClaims(payload []byte) (*Claims, Reason) {
	if c, ok := fastClaims(payload); ok {
		return c, 0
	}
	if c, ok := quickClaims(payload); ok {
		return c, 0
	}
	c := new(Claims)
	if r := c.walk(payload); r != 0 {
		return nil, r
	}
	if c.validate(false) != nil {
		return nil, ReasonClaims
	}
	var buf [1024]byte
	if !bytes.Equal(c.appendPayload(buf[:0]), payload) {
		return nil, ReasonClaims
	}
	return c, 0
}

// rawClaims is the typed shape json.Unmarshal fills for quickClaims.
type rawClaims struct {
	Sub   *string  `json:"sub"`
	Iat   *int64   `json:"iat"`
	Exp   *int64   `json:"exp"`
	Kind  *string  `json:"1"`
	Key   *string  `json:"2"`
	Ext   *string  `json:"3"`
	Perms *[]int64 `json:"4"`
	ID    *string  `json:"jti"`
	CIDR  []string `json:"cidr"`
}

// quickClaims parses payload with json.Unmarshal and accepts it only if it
// is byte for byte the canonical encoding of a valid claim set.
func quickClaims(payload []byte) (*Claims, bool) {
	var r rawClaims
	if json.Unmarshal(payload, &r) != nil ||
		r.Sub == nil || r.Iat == nil || r.Kind == nil || r.Key == nil || r.Ext == nil || r.Perms == nil ||
		*r.Ext != extValue || *r.Iat < 0 || *r.Iat > maxUnix {
		return nil, false
	}
	c := &Claims{Subject: *r.Sub, IssuedAt: time.Unix(*r.Iat, 0).UTC()}
	if r.Exp != nil {
		if *r.Exp < 0 || *r.Exp > maxUnix {
			return nil, false
		}
		c.ExpiresAt = time.Unix(*r.Exp, 0).UTC()
	}
	switch *r.Kind {
	case "ACCESS":
		c.Kind = Access
	case "REFRESH":
		c.Kind = Refresh
	default:
		return nil, false
	}
	key := *r.Key
	if len(key) != len(keyTagPrefix)+keyTagLen || key[:len(keyTagPrefix)] != keyTagPrefix {
		return nil, false
	}
	c.KeyTag = key[len(keyTagPrefix):]
	if r.ID != nil {
		if *r.ID == "" {
			return nil, false
		}
		c.ID = *r.ID
	}
	if r.CIDR != nil {
		if c.CIDRs = parseCIDRs(r.CIDR); c.CIDRs == nil {
			return nil, false
		}
	}
	c.Permissions = make([]Permission, 0, len(*r.Perms))
	for _, id := range *r.Perms {
		if id < 0 || id > maxPermissionID {
			return nil, false
		}
		c.Permissions = append(c.Permissions, Permission(id))
	}
	if c.validate(false) != nil {
		return nil, false
	}
	var buf [1024]byte
	if !bytes.Equal(c.appendPayload(buf[:0]), payload) {
		return nil, false
	}
	return c, true
}

func (c *Claims) walk(payload []byte) Reason {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ReasonClaims
	}
	var seen int
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return ReasonClaims
		}
		name, _ := t.(string)
		var bit int
		switch name {
		case "sub":
			bit = seenSub
		case "iat":
			bit = seenIat
		case "exp":
			bit = seenExp
		case "1":
			bit = seenKind
		case "2":
			bit = seenKey
		case "3":
			bit = seenExt
		case "4":
			bit = seenPerms
		case "jti":
			bit = seenID
		case "cidr":
			bit = seenCIDR
		default:
			return ReasonClaims
		}
		if seen&bit != 0 {
			return ReasonDuplicateClaim
		}
		seen |= bit
		if bit == seenPerms {
			if !c.walkPermissions(dec) {
				return ReasonClaims
			}
			continue
		}
		if bit == seenCIDR {
			var ss []string
			if dec.Decode(&ss) != nil || ss == nil {
				return ReasonClaims
			}
			if c.CIDRs = parseCIDRs(ss); c.CIDRs == nil {
				return ReasonClaims
			}
			continue
		}
		v, err := dec.Token()
		if err != nil {
			return ReasonClaims
		}
		switch bit {
		case seenIat, seenExp:
			n, ok := v.(json.Number)
			if !ok {
				return ReasonClaims
			}
			u, err := strconv.ParseInt(string(n), 10, 64)
			if err != nil || u < 0 || u > maxUnix {
				return ReasonClaims
			}
			if bit == seenIat {
				c.IssuedAt = time.Unix(u, 0).UTC()
			} else {
				c.ExpiresAt = time.Unix(u, 0).UTC()
			}
		default:
			s, ok := v.(string)
			if !ok {
				return ReasonClaims
			}
			switch bit {
			case seenSub:
				c.Subject = s
			case seenKind:
				switch s {
				case "ACCESS":
					c.Kind = Access
				case "REFRESH":
					c.Kind = Refresh
				default:
					return ReasonClaims
				}
			case seenKey:
				if len(s) != len(keyTagPrefix)+keyTagLen || s[:len(keyTagPrefix)] != keyTagPrefix {
					return ReasonClaims
				}
				c.KeyTag = s[len(keyTagPrefix):]
			case seenExt:
				if s != extValue {
					return ReasonClaims
				}
			case seenID:
				if s == "" {
					return ReasonClaims
				}
				c.ID = s
			}
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return ReasonClaims
	}
	if _, err := dec.Token(); err != io.EOF {
		return ReasonClaims // trailing data
	}
	if seen&seenRequired != seenRequired {
		return ReasonClaims
	}
	return 0
}

// walkPermissions reads the array of claim "4": integers only.
func (c *Claims) walkPermissions(dec *json.Decoder) bool {
	if t, err := dec.Token(); err != nil || t != json.Delim('[') {
		return false
	}
	c.Permissions = make([]Permission, 0, 16)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		n, ok := t.(json.Number)
		if !ok {
			return false
		}
		id, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || id < 0 || id > maxPermissionID {
			return false
		}
		c.Permissions = append(c.Permissions, Permission(id))
	}
	t, err := dec.Token()
	return err == nil && t == json.Delim(']')
}

// parseCIDRs parses claim "cidr"'s strings; nil when one does not parse or
// the list is empty (validate checks the rest).
func parseCIDRs(ss []string) []netip.Prefix {
	if len(ss) == 0 || len(ss) > MaxCIDRs {
		return nil
	}
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil
		}
		ps[i] = p
	}
	return ps
}
