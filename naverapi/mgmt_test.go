package naverapi

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testTokens(t *testing.T, c *ncpClient, f *fixture) {
	v2p, v3p := "/kms/v1/keys/"+f.aes, "/kms/v3/token/keys/"+f.aes
	enc := map[string]any{"plaintext": "SGVsbG8gS01T"}

	// v2 renewal: hours as an integer, a string of digits, or "UL".
	r := c.do(t, "PUT", v2p+"/token-set", map[string]any{"accessTokenHours": "UL", "refreshTokenHours": "72"}, f.refresh).ok(t, "renew")
	c.do(t, "POST", v2p+"/encrypt", enc, r.str("data", "accessToken")).ok(t, "encrypt with the renewed token")
	c.do(t, "POST", v2p+"/encrypt", enc, f.access).ok(t, "the earlier access token still works")
	for _, bad := range []any{0, 17521, 72.5, "ul", "+72", "", true, []int{1}} {
		r := c.do(t, "PUT", v2p+"/token-set", map[string]any{"accessTokenHours": bad}, f.refresh).fails(t, "accessTokenHours "+strconv.Quote(toJSON(bad)), 400, "InvalidParameter")
		if !slices.Equal(r.fieldErrors(), []string{"accessTokenHours"}) {
			t.Errorf("accessTokenHours %v: %s", bad, r.raw)
		}
	}

	// v3 renewal: minutes or unlimited.
	r = c.do(t, "POST", v3p+"/reissue-tokens", map[string]any{"accessTokenMinutes": 30, "refreshTokenUnlimited": true}, f.refresh).ok(t, "reissue-tokens")
	if r.str("accessToken") == "" || r.str("refreshToken") == "" {
		t.Fatalf("reissue-tokens: %s", r.raw)
	}
	r = c.do(t, "POST", v3p+"/issue-access-token", map[string]any{"accessTokenUnlimited": true}, f.refresh).ok(t, "issue-access-token")
	if r.str("accessToken") == "" || r.body["refreshToken"] != nil {
		t.Fatalf("issue-access-token: %s", r.raw)
	}
	c.do(t, "POST", v3p+"/encrypt", enc, r.str("accessToken")).ok(t, "encrypt with the new access token")
	c.do(t, "POST", v3p+"/issue-access-token", nil, f.refresh).ok(t, "issue-access-token, defaults")
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"accessTokenMinutes": "30"}, "accessTokenMinutes"},
		{map[string]any{"accessTokenMinutes": 30.0}, ""}, // encoding/json writes 30
		{map[string]any{"accessTokenMinutes": 30.5}, "accessTokenMinutes"},
		{map[string]any{"accessTokenMinutes": 0}, "accessTokenMinutes"},
		{map[string]any{"accessTokenMinutes": 1051201}, "accessTokenMinutes"},
		{map[string]any{"accessTokenUnlimited": true, "accessTokenMinutes": 5}, "accessTokenMinutes"},
		{map[string]any{"refreshTokenMinutes": -1}, "refreshTokenMinutes"},
		{map[string]any{"refreshTokenUnlimited": "yes"}, "refreshTokenUnlimited"},
	} {
		r := c.do(t, "POST", v3p+"/reissue-tokens", tc.body, f.refresh)
		if tc.field == "" {
			r.ok(t, toJSON(tc.body))
			continue
		}
		r.fails(t, toJSON(tc.body), 400, "InvalidParameter")
		if !slices.Equal(r.fieldErrors(), []string{tc.field}) {
			t.Errorf("%s: fieldErrors %v", toJSON(tc.body), r.fieldErrors())
		}
	}
	// "30.0" as sent on the wire is refused too.
	c.do(t, "POST", v3p+"/reissue-tokens", `{"accessTokenMinutes":30.0}`, f.refresh).fails(t, "30.0", 400, "InvalidParameter")

	// Wrong kind, wrong key, no token, another letter case: 401.
	for _, tc := range []struct {
		name, method, path, tok string
	}{
		{"refresh token on encrypt", "POST", v2p + "/encrypt", f.refresh},
		{"access token on renew", "PUT", v2p + "/token-set", f.access},
		{"access token on reissue", "POST", v3p + "/reissue-tokens", f.access},
		{"access token on issue-access-token", "POST", v3p + "/issue-access-token", f.access},
		{"token of another key", "POST", "/kms/v3/token/keys/" + f.ec + "/sign", f.access},
		{"garbage token", "POST", v3p + "/encrypt", "eyJhbGciOiJub25lIn0.e30."},
		{"upper-case key tag", "POST", "/kms/v3/token/keys/" + strings.ToUpper(f.aes) + "/encrypt", f.access},
		{"unknown key", "POST", "/kms/v3/token/keys/" + strings.Repeat("0", 64) + "/encrypt", f.access},
	} {
		c.do(t, tc.method, tc.path, map[string]any{"plaintext": "SGVsbG8gS01T", "data": "SGVsbG8gS01T"}, tc.tok).fails(t, tc.name, 401, "Unauthorized")
	}
	c.do(t, "POST", v3p+"/encrypt", enc, "", "x-ncp-apigw-signature-v2", "").fails(t, "no token on a token path", 401, "Unauthorized")

	// Account issuance in v3 minutes.
	r = c.do(t, "POST", "/kms/v3/keys/"+f.aes+"/issue-tokens", map[string]any{"accessTokenMinutes": 60, "refreshTokenMinutes": 120}, "").ok(t, "v3 issue-tokens")
	c.do(t, "POST", v3p+"/encrypt", enc, r.str("accessToken")).ok(t, "encrypt with the v3-issued token")
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func testACL(t *testing.T, c *ncpClient, f *fixture) {
	v2p, v3p := "/kms/v1/keys/"+f.aes, "/kms/v3/keys/"+f.aes
	enc := map[string]any{"plaintext": "SGVsbG8gS01T"}
	r := c.do(t, "POST", v2p+"/acl/enable", nil, "").ok(t, "acl/enable")
	if get(r.body, "data", "isAclEnabled") != true || r.str("data", "keyTag") != f.aes {
		t.Fatalf("acl/enable: %s", r.raw)
	}
	c.do(t, "POST", v2p+"/encrypt", enc, f.access).fails(t, "token call, empty allow-list", 403, "AccessDenied")
	c.do(t, "POST", v2p+"/encrypt", enc, "").ok(t, "account call: the allow-list does not apply")

	r = c.do(t, "POST", v2p+"/acl", map[string]any{"ipList": []string{"10.1.2.3"}}, "").ok(t, "acl add")
	if got := toStrings(get(r.body, "data", "allowedIpList")); !slices.Equal(got, []string{"10.1.2.3"}) {
		t.Fatalf("acl add: %s", r.raw)
	}
	// The server trusts 127.0.0.1 as a proxy: the caller is the right-most
	// X-Forwarded-For address that is not a trusted proxy.
	for _, tc := range []struct {
		xff    string
		status int
	}{
		{"10.1.2.3", 200},
		{"10.9.9.9, 10.1.2.3", 200},
		{"10.1.2.3, 127.0.0.1", 200},
		{"10.1.2.3, 10.9.9.9", 403},
		{"not-an-address", 403},
		{"", 403},
	} {
		r := c.do(t, "POST", v2p+"/encrypt", enc, f.access, "X-Forwarded-For", tc.xff)
		if r.status != tc.status {
			t.Errorf("X-Forwarded-For %q: status %d, want %d", tc.xff, r.status, tc.status)
		}
	}
	r = c.do(t, "GET", v2p+"/acl", nil, "").ok(t, "acl get")
	if get(r.body, "data", "isAclEnabled") != true || !slices.Equal(toStrings(get(r.body, "data", "allowedIpList")), []string{"10.1.2.3"}) {
		t.Fatalf("acl get: %s", r.raw)
	}
	r = c.do(t, "DELETE", v2p+"/acl", map[string]any{"ipList": []string{"10.1.2.3"}}, "").ok(t, "acl delete")
	if s := string(r.raw); !strings.Contains(s, `"allowedIpList":[]`) {
		t.Fatalf("acl delete: %s", r.raw)
	}
	c.do(t, "DELETE", v2p+"/acl", map[string]any{"ipList": []string{}}, "").fails(t, "acl delete nothing", 400, "InvalidParameter")

	r = c.do(t, "POST", v3p+"/acl/add-allowed-ips", map[string]any{"allowedIps": []string{"127.0.0.1", "10.0.0.0/8"}}, "").ok(t, "add-allowed-ips")
	if got := toStrings(r.body["allowedIps"]); !slices.Equal(got, []string{"10.0.0.0/8", "127.0.0.1"}) {
		t.Fatalf("add-allowed-ips: %s", r.raw)
	}
	c.do(t, "POST", v2p+"/encrypt", enc, f.access).ok(t, "token call from a listed address")
	for page, want := range []string{"10.0.0.0/8", "127.0.0.1"} {
		r = c.do(t, "GET", v3p+"/acl/allowed-ips?pageNo="+strconv.Itoa(page)+"&pageSize=1", nil, "").ok(t, "allowed-ips page")
		if got := toStrings(r.body["allowedIps"]); !slices.Equal(got, []string{want}) || r.num("totalCount") != 2 {
			t.Fatalf("allowed-ips page %d: %s", page, r.raw)
		}
	}
	r = c.do(t, "GET", v3p+"/history?pageSize=1", nil, "").ok(t, "history (pocketkms extension)")
	if r.str("history", 0, "operation") != "add allowed ips" || r.num("totalCount") < 2 {
		t.Fatalf("history: %s", r.raw)
	}
	c.do(t, "POST", v3p+"/acl/remove-allowed-ips", map[string]any{"allowedIps": []string{"10.0.0.1"}}, "").fails(t, "remove an absent entry", 400, "InvalidParameter")
	c.do(t, "POST", v3p+"/acl/add-allowed-ips", map[string]any{"allowedIps": []string{"300.1.1.1"}}, "").fails(t, "bad entry", 400, "InvalidParameter")
	r = c.do(t, "POST", v3p+"/acl/remove-allowed-ips", map[string]any{"allowedIps": []string{"10.0.0.0/8"}}, "").ok(t, "remove-allowed-ips")
	if got := toStrings(r.body["allowedIps"]); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Fatalf("remove-allowed-ips: %s", r.raw)
	}
	if r = c.do(t, "PATCH", v3p+"/acl", map[string]any{}, "", "Content-Type", "application/merge-patch+json").ok(t, "acl {}"); r.body["enabled"] != true {
		t.Fatalf("PATCH acl {}: %s", r.raw)
	}
	if r = c.do(t, "PATCH", v3p+"/acl", map[string]any{"enabled": false}, "").ok(t, "acl off"); r.body["enabled"] != false {
		t.Fatalf("PATCH acl off: %s", r.raw)
	}
	c.do(t, "PATCH", v3p+"/acl", map[string]any{"enabled": true}, "").ok(t, "acl on")
	if r = c.do(t, "POST", v2p+"/acl/disable", nil, "").ok(t, "acl/disable"); get(r.body, "data", "isAclEnabled") != false {
		t.Fatalf("acl/disable: %s", r.raw)
	}
	c.do(t, "POST", v2p+"/encrypt", enc, f.access, "X-Forwarded-For", "10.9.9.9").ok(t, "allow-list off")
}

func testManagementV2(t *testing.T, c *ncpClient, f *fixture) {
	p := "/kms/v1/keys/" + f.aes
	// Listing: the signature covers the query string.
	r := c.do(t, "GET", "/kms/v1/keys?pageNo=1&pageSize=3", nil, "").ok(t, "list")
	if n := len(get(r.body, "data", "keyList").([]any)); n != 3 || r.num("data", "totalCount") != 4 || r.num("data", "totalPageNo") != 2 || r.num("data", "currentPageNo") != 1 {
		t.Fatalf("list: %s", r.raw)
	}
	if r = c.do(t, "GET", "/kms/v1/keys?pageNo=2&pageSize=3", nil, "").ok(t, "list page 2"); len(get(r.body, "data", "keyList").([]any)) != 1 {
		t.Fatalf("list page 2: %s", r.raw)
	}
	c.do(t, "GET", "/kms/v1/keys?pageSize=201", nil, "").fails(t, "pageSize 201", 400, "InvalidParameter")
	c.do(t, "GET", "/kms/v1/keys?pageNo=0", nil, "").fails(t, "pageNo 0", 400, "InvalidParameter")

	r = c.do(t, "GET", p, nil, "").ok(t, "get key")
	for k, want := range map[string]string{"keyTag": f.aes, "keyName": "orders", "keyType": "AES256", "status": "ENABLE", "protectionType": "BASIC", "memo": "order records"} {
		if got := r.str("data", k); got != want {
			t.Errorf("get key %s = %q, want %q", k, got, want)
		}
	}
	if r.num("data", "registerDate") < 1_700_000_000_000 {
		t.Errorf("registerDate is not epoch ms: %s", r.raw)
	}
	c.do(t, "GET", "/kms/v1/keys/"+strings.Repeat("0", 64), nil, "").fails(t, "unknown key", 404, "ResourceNotFound")

	if r = c.do(t, "PUT", p+"/memo", map[string]any{"memo": "new memo"}, "").ok(t, "memo"); r.str("data", "memo") != "new memo" {
		t.Fatalf("memo: %s", r.raw)
	}
	c.do(t, "PUT", p+"/memo", map[string]any{}, "").fails(t, "memo missing", 400, "InvalidParameter")

	r = c.do(t, "POST", p+"/enable-auto-rotation", map[string]any{"rotationPeriod": 30}, "").ok(t, "enable-auto-rotation")
	if get(r.body, "data", "isAutoRotation") != true || r.num("data", "rotationPeriod") != 30 || r.num("data", "nextRotationDate") <= 0 {
		t.Fatalf("enable-auto-rotation: %s", r.raw)
	}
	if r = c.do(t, "PUT", p+"/rotation-period", map[string]any{"rotationPeriod": 60}, "").ok(t, "rotation-period"); r.num("data", "rotationPeriod") != 60 {
		t.Fatalf("rotation-period: %s", r.raw)
	}
	c.do(t, "PUT", p+"/rotation-period", map[string]any{}, "").fails(t, "rotation-period missing", 400, "InvalidParameter")
	c.do(t, "PUT", p+"/rotation-period", map[string]any{"rotationPeriod": 731}, "").fails(t, "rotation-period 731", 400, "InvalidParameter")
	if r = c.do(t, "POST", p+"/disable-auto-rotation", nil, "").ok(t, "disable-auto-rotation"); get(r.body, "data", "isAutoRotation") != false {
		t.Fatalf("disable-auto-rotation: %s", r.raw)
	}

	ct1 := c.do(t, "POST", p+"/encrypt", map[string]any{"plaintext": "dGVzdA=="}, "").ok(t, "encrypt v1").str("data", "ciphertext")
	r = c.do(t, "POST", p+"/rotate", nil, "").ok(t, "rotate")
	if r.num("data", "version") != 2 || r.num("data", "rotatedDate") <= 0 || r.str("data", "keyTag") != f.aes {
		t.Fatalf("rotate: %s", r.raw)
	}
	r = c.do(t, "GET", p+"/versions", nil, "").ok(t, "versions")
	if vl, _ := get(r.body, "data", "versionList").([]any); len(vl) != 2 || get(vl[1], "isCurrent") != true || get(vl[0], "status") != "ENABLE" {
		t.Fatalf("versions: %s", r.raw)
	}
	if r = c.do(t, "GET", p+"/versions/1", nil, "").ok(t, "version 1"); get(r.body, "data", "isCurrent") != false {
		t.Fatalf("version 1: %s", r.raw)
	}
	if r = c.do(t, "POST", p+"/versions/1/disable", nil, "").ok(t, "disable v1"); r.str("data", "status") != "DISABLE" || r.num("data", "statusDate") <= 0 {
		t.Fatalf("disable v1: %s", r.raw)
	}
	c.do(t, "POST", p+"/decrypt", map[string]any{"ciphertext": ct1}, "").fails(t, "decrypt with a disabled version", 409, "InvalidState")
	c.do(t, "POST", p+"/versions/2/disable", nil, "").fails(t, "disable the current version", 409, "InvalidState")
	if r = c.do(t, "POST", p+"/versions/1/enable", nil, "").ok(t, "enable v1"); r.str("data", "status") != "ENABLE" {
		t.Fatalf("enable v1: %s", r.raw)
	}
	c.do(t, "POST", p+"/decrypt", map[string]any{"ciphertext": ct1}, "").ok(t, "decrypt v1 again")
	c.do(t, "GET", p+"/versions/101", nil, "").fails(t, "version 101", 400, "InvalidParameter")
	c.do(t, "GET", p+"/versions/abc", nil, "").fails(t, "version abc", 400, "InvalidParameter")
	c.do(t, "GET", p+"/versions/50", nil, "").fails(t, "version 50", 404, "ResourceNotFound")

	if r = c.do(t, "POST", p+"/disable", nil, "").ok(t, "disable key"); r.str("data", "status") != "DISABLE" || r.num("data", "statusDate") <= 0 {
		t.Fatalf("disable: %s", r.raw)
	}
	// A good token on a disabled key: 409 as on the account API (issue 15),
	// not 401, which tells NAVER clients to renew a token that is fine.
	c.do(t, "POST", p+"/encrypt", map[string]any{"plaintext": "dGVzdA=="}, f.access).fails(t, "token call on a disabled key", 409, "InvalidState")
	c.do(t, "POST", p+"/encrypt", map[string]any{"plaintext": "dGVzdA=="}, "").fails(t, "account call on a disabled key", 409, "InvalidState")
	if r = c.do(t, "POST", p+"/enable", nil, "").ok(t, "enable key"); r.str("data", "status") != "ENABLE" {
		t.Fatalf("enable: %s", r.raw)
	}

	// Token generator: get, replace (old tokens die), disable, enable.
	r = c.do(t, "GET", p+"/token-generator", nil, "").ok(t, "get generator")
	id := r.str("data", "tokenGeneratorId")
	if r.str("data", "status") != "ACTIVE" || len(id) != 64 || r.num("data", "issuedTokenCount") < 2 || r.num("data", "enabledDate") <= 0 {
		t.Fatalf("get generator: %s", r.raw)
	}
	c.do(t, "PUT", p+"/token-generator", nil, "").ok(t, "replace generator")
	c.do(t, "POST", p+"/encrypt", map[string]any{"plaintext": "dGVzdA=="}, f.access).fails(t, "token of a replaced generator", 401, "Unauthorized")
	if r = c.do(t, "GET", p+"/token-generator", nil, ""); r.str("data", "tokenGeneratorId") == id {
		t.Fatal("replace kept the generator id")
	}
	c.do(t, "DELETE", p+"/token-generator", nil, "").ok(t, "disable generator")
	if r = c.do(t, "GET", p+"/token-generator", nil, ""); r.str("data", "status") != "INACTIVE" || r.num("data", "disabledDate") <= 0 || get(r.body, "data", "tokenGeneratorId") != nil {
		t.Fatalf("disabled generator: %s", r.raw)
	}
	c.do(t, "POST", p+"/token-set", nil, "").fails(t, "token-set without a generator", 409, "InvalidState")
	c.do(t, "POST", p+"/token-generator", nil, "").ok(t, "enable generator")
	f.access, f.refresh = v2TokenSet(t, c, f.aes)
	c.do(t, "POST", p+"/encrypt", map[string]any{"plaintext": "dGVzdA=="}, f.access).ok(t, "new token")

	// Deletion: request, refused use, cancel (→ DISABLE), enable.
	rp := "/kms/v1/keys/" + f.rsa
	r = c.do(t, "POST", rp+"/request-deletion", nil, "").ok(t, "request-deletion")
	if r.str("data", "status") != "REVOKE" || r.num("data", "destroyDate")-r.num("data", "statusDate") != 72*3600*1000 {
		t.Fatalf("request-deletion: %s", r.raw)
	}
	c.do(t, "POST", rp+"/encrypt", map[string]any{"plaintext": "dGVzdA=="}, "").fails(t, "encrypt on a REVOKE key", 409, "InvalidState")
	c.do(t, "POST", rp+"/enable", nil, "").fails(t, "enable a REVOKE key", 409, "InvalidState")
	if r = c.do(t, "POST", rp+"/cancel-deletion", nil, "").ok(t, "cancel-deletion"); r.str("data", "status") != "DISABLE" {
		t.Fatalf("cancel-deletion: %s", r.raw)
	}
	c.do(t, "POST", rp+"/enable", nil, "").ok(t, "enable after cancel")

	// Creation errors.
	base := map[string]any{"keyName": "fresh", "keyType": "AES256", "isAutoRotation": false, "protectionType": "BASIC"}
	for _, tc := range []struct {
		name   string
		change map[string]any
		status int
		code   string
		field  string
	}{
		{"duplicate name", map[string]any{"keyName": "ORDERS"}, 409, "AlreadyExists", ""},
		{"no isAutoRotation", map[string]any{"isAutoRotation": nil}, 400, "InvalidParameter", "isAutoRotation"},
		{"COMMON_HSM", map[string]any{"protectionType": "COMMON_HSM"}, 400, "InvalidParameter", "protectionType"},
		{"bad type", map[string]any{"keyType": "HMAC"}, 400, "InvalidParameter", ""},
		{"convergent RSA", map[string]any{"keyType": "RSA2048", "isConvergent": true}, 400, "InvalidParameter", ""},
		{"bad name", map[string]any{"keyName": "1abc"}, 400, "InvalidParameter", ""},
		{"period 0", map[string]any{"rotationPeriod": 0}, 400, "InvalidParameter", "rotationPeriod"},
	} {
		body := map[string]any{}
		for k, v := range base {
			body[k] = v
		}
		for k, v := range tc.change {
			body[k] = v
		}
		r := c.do(t, "POST", "/kms/v1/keys", body, "").fails(t, tc.name, tc.status, tc.code)
		if tc.field != "" && !slices.Contains(r.fieldErrors(), tc.field) {
			t.Errorf("%s: fieldErrors %v", tc.name, r.fieldErrors())
		}
	}
}

func testManagementV3(t *testing.T, c *ncpClient, f *fixture) {
	p := "/kms/v3/keys/" + f.ec
	r := c.do(t, "GET", "/kms/v3/keys?pageSize=3", nil, "").ok(t, "list")
	if keys, _ := r.body["keys"].([]any); len(keys) != 3 || r.num("totalCount") != 4 || get(keys[0], "keyName") != "dedup" {
		t.Fatalf("list (newest first): %s", r.raw)
	}
	if r = c.do(t, "GET", "/kms/v3/keys?pageNo=1&pageSize=3", nil, "").ok(t, "list page 1"); len(r.body["keys"].([]any)) != 1 {
		t.Fatalf("list page 1: %s", r.raw)
	}
	for _, q := range []string{"pageNo=-1", "pageSize=0", "pageSize=201", "pageSize=0x10", "pageSize=1e1", "pageNo=2147483646&pageSize=2"} {
		c.do(t, "GET", "/kms/v3/keys?"+q, nil, "").fails(t, q, 400, "InvalidParameter")
	}

	r = c.do(t, "GET", p, nil, "").ok(t, "get key")
	if !strings.HasPrefix(r.str("nrn"), "nrn:PUB:KMS::") || r.str("keyType") != "ECDSA" || r.num("currentVersion") != 1 || r.str("status") != "ENABLED" {
		t.Fatalf("get key: %s", r.raw)
	}
	if _, err := time.Parse(time.RFC3339, r.str("createdDateTime")); err != nil {
		t.Fatalf("createdDateTime: %v", err)
	}

	// updateKey merge patch.
	if r = c.do(t, "PATCH", p, map[string]any{"keyName": "signer2", "memo": "for releases"}, "").ok(t, "rename"); r.str("keyName") != "signer2" || r.str("memo") != "for releases" {
		t.Fatalf("rename: %s", r.raw)
	}
	if r = c.do(t, "PATCH", p, map[string]any{"memo": nil}, "").ok(t, "clear memo"); r.body["memo"] != nil || r.str("keyName") != "signer2" {
		t.Fatalf("clear memo: %s", r.raw)
	}
	if r = c.do(t, "PATCH", p, map[string]any{}, "").ok(t, "empty patch"); r.str("keyName") != "signer2" {
		t.Fatalf("empty patch: %s", r.raw)
	}
	c.do(t, "PATCH", p, map[string]any{"keyName": "SIGNER2"}, "").fails(t, "rename to a case variant", 409, "AlreadyExists")
	for _, bad := range []map[string]any{{"keyName": nil}, {"status": nil}, {"status": "REVOKED"}, {"memo": ""}, {"keyName": 5}} {
		c.do(t, "PATCH", p, bad, "").fails(t, "patch "+toJSON(bad), 400, "InvalidParameter")
	}
	if r = c.do(t, "PATCH", p, map[string]any{"status": "DISABLED"}, "").ok(t, "disable"); r.str("status") != "DISABLED" {
		t.Fatalf("disable: %s", r.raw)
	}
	c.do(t, "PATCH", p, map[string]any{"status": "ENABLED"}, "").ok(t, "enable")

	// Rotation settings.
	r = c.do(t, "PATCH", p+"/rotation", map[string]any{"enabled": true, "periodDays": 10}, "").ok(t, "rotation on")
	if r.body["enabled"] != true || r.num("periodDays") != 10 || r.str("nextRotationDateTime") == "" {
		t.Fatalf("rotation on: %s", r.raw)
	}
	if r = c.do(t, "PATCH", p+"/rotation", map[string]any{}, "").ok(t, "rotation {}"); r.num("periodDays") != 10 {
		t.Fatalf("rotation {}: %s", r.raw)
	}
	c.do(t, "PATCH", p+"/rotation", map[string]any{"enabled": false, "periodDays": 5}, "").fails(t, "period with rotation off", 400, "InvalidParameter")
	c.do(t, "PATCH", p+"/rotation", map[string]any{"periodDays": "5"}, "").fails(t, "period as a string", 400, "InvalidParameter")
	if r = c.do(t, "PATCH", p+"/rotation", map[string]any{"enabled": false}, "").ok(t, "rotation off"); r.body["enabled"] != false {
		t.Fatalf("rotation off: %s", r.raw)
	}

	// Versions.
	r = c.do(t, "POST", p+"/versions", nil, "").ok(t, "create version")
	if r.status != 201 || r.num("version") != 2 || r.body["current"] != true {
		t.Fatalf("create version: %d %s", r.status, r.raw)
	}
	r = c.do(t, "GET", p+"/versions", nil, "").ok(t, "list versions")
	if vs, _ := r.body["versions"].([]any); len(vs) != 2 || get(vs[0], "version") != 1.0 || get(vs[1], "current") != true {
		t.Fatalf("list versions: %s", r.raw)
	}
	if r = c.do(t, "GET", p+"/versions?pageNo=1&pageSize=1", nil, "").ok(t, "versions page 1"); get(r.body, "versions", 0, "version") != 2.0 || r.num("totalCount") != 2 {
		t.Fatalf("versions page 1: %s", r.raw)
	}
	if r = c.do(t, "GET", p+"/versions/1", nil, "").ok(t, "get version"); r.body["current"] != false || r.str("status") != "ENABLED" {
		t.Fatalf("get version: %s", r.raw)
	}
	c.do(t, "GET", p+"/versions/7", nil, "").fails(t, "version 7", 404, "ResourceNotFound")
	if r = c.do(t, "PATCH", p+"/versions/1", map[string]any{"status": "DISABLED"}, "").ok(t, "disable v1"); r.str("status") != "DISABLED" {
		t.Fatalf("disable v1: %s", r.raw)
	}
	c.do(t, "GET", p+"/versions/1/public-key", nil, "").fails(t, "public key of a disabled version", 409, "InvalidState")
	c.do(t, "GET", "/kms/v3/token/keys/"+f.ec+"/versions/1/public-key", nil, f.ecAccess).fails(t, "token: disabled version", 409, "InvalidState")
	c.do(t, "PATCH", p+"/versions/1", map[string]any{"status": "ENABLED"}, "").ok(t, "enable v1")
	c.do(t, "PATCH", p+"/versions/2", map[string]any{"status": "DISABLED"}, "").fails(t, "disable the current version", 409, "InvalidState")
	c.do(t, "PATCH", p+"/versions/1", map[string]any{}, "").fails(t, "status missing", 400, "InvalidParameter")
	if r = c.do(t, "GET", p+"/versions/2/public-key", nil, "").ok(t, "public key v2"); r.num("version") != 2 {
		t.Fatalf("public key v2: %s", r.raw)
	}

	// Deletion.
	r = c.do(t, "POST", p+"/request-deletion", nil, "").ok(t, "request-deletion")
	if r.str("status") != "REVOKED" || r.str("scheduledDestroyDateTime") == "" {
		t.Fatalf("request-deletion: %s", r.raw)
	}
	if r = c.do(t, "POST", p+"/cancel-deletion", nil, "").ok(t, "cancel-deletion"); r.str("status") != "DISABLED" || r.body["scheduledDestroyDateTime"] != nil {
		t.Fatalf("cancel-deletion: %s", r.raw)
	}
	c.do(t, "PATCH", p, map[string]any{"status": "ENABLED"}, "").ok(t, "enable after cancel")

	// Token generator.
	r = c.do(t, "GET", p+"/token-generator", nil, "").ok(t, "get generator")
	id := r.str("tokenGeneratorId")
	if r.str("status") != "ENABLED" || len(id) != 64 || r.num("issuedTokenCount") != 2 {
		t.Fatalf("get generator: %s", r.raw)
	}
	if r = c.do(t, "POST", p+"/rotate-token-generator", nil, "").ok(t, "rotate generator"); r.str("tokenGeneratorId") == id || r.str("status") != "ENABLED" {
		t.Fatalf("rotate generator: %s", r.raw)
	}
	c.do(t, "POST", "/kms/v3/token/keys/"+f.ec+"/sign", map[string]any{"data": "dGVzdA=="}, f.ecAccess).fails(t, "token of a rotated generator", 401, "Unauthorized")
	for range 2 { // deactivating twice is a no-op
		if r = c.do(t, "POST", p+"/deactivate-token-generator", nil, "").ok(t, "deactivate"); r.str("status") != "DISABLED" || r.body["tokenGeneratorId"] != nil {
			t.Fatalf("deactivate: %s", r.raw)
		}
	}
	c.do(t, "POST", p+"/issue-tokens", nil, "").fails(t, "issue-tokens without a generator", 409, "InvalidState")
	c.do(t, "POST", p+"/activate-token-generator", nil, "").ok(t, "activate")
	r = c.do(t, "POST", p+"/issue-tokens", map[string]any{"accessTokenMinutes": 60, "refreshTokenMinutes": 120}, "").ok(t, "issue-tokens")
	f.ecAccess, f.ecRefresh = r.str("accessToken"), r.str("refreshToken")
	c.do(t, "POST", "/kms/v3/token/keys/"+f.ec+"/sign", map[string]any{"data": "dGVzdA=="}, f.ecAccess).ok(t, "sign with the new token")

	// Creation errors.
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"keyName": "x1x", "keyType": "AES256", "rotation": map[string]any{"enabled": false}, "protectionType": "COMMON_HSM"}, "protectionType"},
		{map[string]any{"keyName": "x1x", "keyType": "AES256"}, "rotation"},
		{map[string]any{"keyName": "x1x", "keyType": "AES256", "rotation": map[string]any{}}, "rotation.enabled"},
		{map[string]any{"keyName": "x1x", "keyType": "AES256", "rotation": map[string]any{"enabled": false, "periodDays": 0}}, "rotation.periodDays"},
		{map[string]any{"keyName": "x1x", "keyType": "AES256", "rotation": map[string]any{"enabled": false}, "memo": ""}, "memo"},
		{map[string]any{"keyName": "x1x", "rotation": map[string]any{"enabled": false}}, "keyType"},
	} {
		r := c.do(t, "POST", "/kms/v3/keys", tc.body, "").fails(t, "create "+tc.field, 400, "InvalidParameter")
		if !slices.Equal(r.fieldErrors(), []string{tc.field}) {
			t.Errorf("create %s: fieldErrors %v", tc.field, r.fieldErrors())
		}
	}
}

func testEnvelopes(t *testing.T, c *ncpClient, f *fixture) {
	r := c.do(t, "GET", "/nope", nil, "").fails(t, "unknown path", 404, "NotFound")
	if r.str("code") != "NotFound" {
		t.Fatalf("v2 404 envelope: %s", r.raw)
	}
	if r = c.do(t, "GET", "/kms/v3/nope", nil, "").fails(t, "unknown v3 path", 404, "NotFound"); r.body["code"] != nil {
		t.Fatalf("v3 404 envelope: %s", r.raw)
	}
	if r = c.do(t, "PATCH", "/kms/v1/keys", nil, "").fails(t, "PATCH keys", 405, "MethodNotAllowed"); r.header.Get("Allow") != "GET, POST" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
	if r = c.do(t, "DELETE", "/kms/v3/keys/"+f.aes, nil, "").fails(t, "DELETE key", 405, "MethodNotAllowed"); r.header.Get("Allow") != "GET, PATCH" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
	c.do(t, "POST", "/kms/v3/keys/"+f.aes+"/encrypt", `{"plaintext":"dGVzdA=="}`, "", "Content-Type", "text/plain").fails(t, "text/plain", 415, "UnsupportedMediaType")
	for _, body := range []string{`{"plaintext":`, `[]`, `"x"`, `{"plaintext":"dGVzdA=="} x`} {
		c.do(t, "POST", "/kms/v3/keys/"+f.aes+"/encrypt", body, "").fails(t, "body "+body, 400, "InvalidParameter")
	}
	// Every response carried its own request id.
	seen := map[string]bool{}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sent {
		if len(s.requestID) != 36 || seen[s.requestID] {
			t.Fatalf("%s %s: request id %q missing or repeated", s.method, s.target, s.requestID)
		}
		seen[s.requestID] = true
	}
}

// testBodyLimit sends the largest legitimate body, a 100-item batch of
// 43,746-character ciphertexts with 68-character contexts, and one over
// the limit.
func testBodyLimit(t *testing.T, c *ncpClient, f *fixture) {
	ct := "ncpkms:v123456789:" + b64(make([]byte, 32796))
	if len(ct) != 43746 {
		t.Fatalf("test ciphertext has %d characters", len(ct))
	}
	items := make([]map[string]any, 100)
	for i := range items {
		items[i] = map[string]any{"ciphertext": ct, "context": b64(make([]byte, 50))}
	}
	r := c.do(t, "POST", "/kms/v3/keys/"+f.aes+"/batch-decrypt", map[string]any{"requests": items}, "")
	if fl := r.failures(t, "largest batch", 404); len(fl) != 100 || fl["99"] != "ResourceNotFound" {
		t.Fatalf("largest batch: %.300s", r.raw)
	}
	big := `{"plaintext":"` + strings.Repeat("A", 7<<20) + `"}`
	c.do(t, "POST", "/kms/v3/keys/"+f.aes+"/encrypt", big, "").fails(t, "7 MiB body", 413, "PayloadTooLarge")
}

// testRateLimit spends the key's 300/s budget with 100-item batches until
// the token plane answers 429 with Retry-After.
func testRateLimit(t *testing.T, c *ncpClient, f *fixture) {
	items := slices.Repeat([]any{map[string]any{"plaintext": "dGVzdA=="}}, 100)
	for range 8 {
		r := c.do(t, "POST", "/kms/v3/token/keys/"+f.aes+"/batch-encrypt", map[string]any{"requests": items}, f.access)
		if r.status == 429 {
			r.fails(t, "rate limited", 429, "TooManyRequests")
			if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
				t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
			}
			return
		}
		r.ok(t, "batch-encrypt")
	}
	t.Fatal("800 operations within a moment were never refused")
}
