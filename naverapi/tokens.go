package naverapi

import (
	"strconv"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/token"
)

// maxTTLHours is NAVER's longest v2 lifetime: 17,520 hours (730 days).
const maxTTLHours = token.MaxTTLMinutes / 60

// hoursTTL reads a v2 lifetime: an integer or a string of digits, 1..17,520
// hours, or the string "UL" (exactly) for unlimited. Absent means the
// default (72 h access, 2,160 h refresh).
func hoursTTL(o object, field string) token.TTL {
	raw, ok := o.raw(field)
	if !ok {
		return token.TTL{}
	}
	var h int
	switch kind(raw) {
	case '0':
		h, ok = parseDecimal(string(raw), 1, maxTTLHours)
	case '"':
		var s string
		if s, ok = o.decodeString(o.name(field), raw); !ok {
			return token.TTL{}
		}
		if s == "UL" {
			return token.TTL{Unlimited: true}
		}
		ok = s != "" && s[0] != '-'
		if ok {
			h, ok = parseDecimal(s, 1, maxTTLHours)
		}
	default:
		ok = false
	}
	if !ok {
		o.fail(field, `must be 1..`+strconv.Itoa(maxTTLHours)+` hours, as an integer or a string of digits, or "UL" for unlimited`)
		return token.TTL{}
	}
	return token.TTL{Minutes: h * 60}
}

// minutesTTL reads a v3 lifetime: <prefix>Minutes (an integer, 1..1,051,200)
// or <prefix>Unlimited true, never both. Absent means the default.
func minutesTTL(o object, prefix string) token.TTL {
	minutes, unlimited := prefix+"Minutes", prefix+"Unlimited"
	if u, _ := o.boolean(unlimited); u {
		if _, given := o.raw(minutes); given {
			o.fail(minutes, "must not be given when "+unlimited+" is true")
		}
		return token.TTL{Unlimited: true}
	}
	if m, ok := o.integer(minutes, token.MinTTLMinutes, token.MaxTTLMinutes); ok {
		return token.TTL{Minutes: m}
	}
	return token.TTL{}
}

// readTTLs reads the lifetimes of a token issuance in the route's notation:
// hours on v2, minutes on v3.
func readTTLs(c *call, withRefresh bool) (access, refresh token.TTL, err error) {
	o, err := c.body()
	if err != nil {
		return access, refresh, err
	}
	if c.api == v2 {
		access, refresh = hoursTTL(o, "accessTokenHours"), hoursTTL(o, "refreshTokenHours")
	} else {
		access = minutesTTL(o, "accessToken")
		if withRefresh {
			refresh = minutesTTL(o, "refreshToken")
		}
	}
	return access, refresh, o.err()
}

// issueTokens serves v2 POST token-set and v3 issue-tokens (account
// authentication): a token set which carries every permission, whose
// subject ("sub") is the Principal's TokenSubject or, when it names none, a
// fresh random UUID (version 4), as in NAVER's example tokens. The caller's
// credentials never go into a token: a token handed to an application
// must not carry half of the account's credential.
func issueTokens(c *call) (any, error) {
	access, refresh, err := readTTLs(c, true)
	if err != nil {
		return nil, err
	}
	sub := c.principal.TokenSubject
	if sub == "" {
		sub = newUUID()
	}
	set, err := c.h.eng.IssueTokens(c.ctx, c.tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: sub, AccessTTL: access, RefreshTTL: refresh})
	if err != nil {
		return nil, err
	}
	return &TokenSetResponse{RefreshToken: set.Refresh, AccessToken: set.Access}, nil
}

// reissueTokens serves v2 PUT token-set and v3 reissue-tokens: a new set
// from a refresh token, which stays valid, for the refresh token's subject.
func reissueTokens(c *call) (any, error) {
	access, refresh, err := readTTLs(c, true)
	if err != nil {
		return nil, err
	}
	set, err := c.h.eng.WithToken(c.token, c.client).ReissueTokens(c.ctx, c.tag, access, refresh)
	if err != nil {
		return nil, err
	}
	return &TokenSetResponse{RefreshToken: set.Refresh, AccessToken: set.Access}, nil
}

// issueAccessToken serves v3 issue-access-token: an access token alone from
// a refresh token.
func issueAccessToken(c *call) (any, error) {
	access, _, err := readTTLs(c, false)
	if err != nil {
		return nil, err
	}
	set, err := c.h.eng.WithToken(c.token, c.client).IssueAccessToken(c.ctx, c.tag, access)
	if err != nil {
		return nil, err
	}
	return &TokenSetResponse{AccessToken: set.Access}, nil
}
