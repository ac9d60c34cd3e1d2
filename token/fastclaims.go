package token

import (
	"bytes"
	"net/netip"
	"time"
)

// fastClaims reads a payload laid out exactly as appendPayload writes it,
// field by field in that order, without a JSON decoder, and accepts it
// only if the claims are valid and re-encode to exactly the payload — the
// same acceptance as quickClaims, so the positional reading needs no
// strictness of its own: whatever it misreads fails the comparison.
// Anything else, valid or not, is left to quickClaims and walk, which name
// the reason for a refusal. It is a tenth of the cost of json.Unmarshal
// for a typical access token (BenchmarkParseClaims), which matters on a
// token's first use: the RS256 check dominates, but not by as much as the
// claims parse suggested.
func fastClaims(p []byte) (*Claims, bool) {
	r := reader{p: p}
	c := new(Claims)
	if !r.lit(`{"sub":"`) {
		return nil, false
	}
	sub, ok := r.jsonString()
	if !ok || !r.lit(`,"iat":`) {
		return nil, false
	}
	iat, ok := r.uint()
	if !ok || iat > maxUnix {
		return nil, false
	}
	c.Subject = sub
	c.IssuedAt = time.Unix(iat, 0).UTC()
	if r.lit(`,"exp":`) {
		exp, ok := r.uint()
		if !ok || exp > maxUnix {
			return nil, false
		}
		c.ExpiresAt = time.Unix(exp, 0).UTC()
	}
	switch {
	case r.lit(`,"1":"ACCESS","2":"` + keyTagPrefix):
		c.Kind = Access
	case r.lit(`,"1":"REFRESH","2":"` + keyTagPrefix):
		c.Kind = Refresh
	default:
		return nil, false
	}
	if len(r.p) < keyTagLen {
		return nil, false
	}
	c.KeyTag = string(r.p[:keyTagLen])
	r.p = r.p[keyTagLen:]
	if !r.lit(`","3":"` + extValue + `","4":[`) {
		return nil, false
	}
	c.Permissions = make([]Permission, 0, 16)
	for !r.lit("]") {
		if len(c.Permissions) > 0 && !r.lit(",") {
			return nil, false
		}
		id, ok := r.uint()
		if !ok || id > maxPermissionID {
			return nil, false
		}
		c.Permissions = append(c.Permissions, Permission(id))
	}
	if r.lit(`,"cidr":[`) {
		for !r.lit("]") {
			if len(c.CIDRs) > 0 && !r.lit(",") {
				return nil, false
			}
			if len(c.CIDRs) >= MaxCIDRs || !r.lit(`"`) {
				return nil, false
			}
			i := bytes.IndexByte(r.p, '"')
			if i < 0 {
				return nil, false
			}
			pfx, err := netip.ParsePrefix(string(r.p[:i]))
			if err != nil {
				return nil, false
			}
			c.CIDRs = append(c.CIDRs, pfx)
			r.p = r.p[i+1:]
		}
		if len(c.CIDRs) == 0 {
			return nil, false
		}
	}
	if r.lit(`,"jti":"`) {
		i := bytes.IndexByte(r.p, '"')
		if i <= 0 {
			return nil, false
		}
		c.ID = string(r.p[:i])
		r.p = r.p[i+1:]
	}
	if !r.lit("}") || len(r.p) != 0 || c.validate(false) != nil {
		return nil, false
	}
	var buf [1024]byte
	if !bytes.Equal(c.appendPayload(buf[:0]), p) {
		return nil, false
	}
	return c, true
}

// reader consumes a payload from the front.
type reader struct{ p []byte }

// lit consumes s if the payload starts with it.
func (r *reader) lit(s string) bool {
	if len(r.p) < len(s) || string(r.p[:len(s)]) != s {
		return false
	}
	r.p = r.p[len(s):]
	return true
}

// uint consumes 1..16 decimal digits.
func (r *reader) uint() (int64, bool) {
	var n int64
	i := 0
	for i < len(r.p) && i < 16 && r.p[i] >= '0' && r.p[i] <= '9' {
		n = n*10 + int64(r.p[i]-'0')
		i++
	}
	if i == 0 {
		return 0, false
	}
	r.p = r.p[i:]
	return n, true
}

// jsonString consumes the rest of a JSON string whose opening quote is
// already consumed, undoing the two escapes appendJSONString writes (\"
// and \\); any other escape is not canonical.
func (r *reader) jsonString() (string, bool) {
	var out []byte
	for i := 0; i < len(r.p); i++ {
		switch r.p[i] {
		case '"':
			if out == nil {
				s := string(r.p[:i])
				r.p = r.p[i+1:]
				return s, true
			}
			out = append(out, r.p[:i]...)
			r.p = r.p[i+1:]
			return string(out), true
		case '\\':
			if i+1 >= len(r.p) || (r.p[i+1] != '"' && r.p[i+1] != '\\') {
				return "", false
			}
			out = append(out, r.p[:i]...)
			out = append(out, r.p[i+1])
			r.p = r.p[i+2:]
			i = -1
		}
	}
	return "", false
}
