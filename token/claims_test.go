package token

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The two example tokens of NAVER's token guide
// (spec/000_f94593f6c256d439.txt), signed with NAVER's key.
const (
	naverRefresh = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiI1YjEyNjg5MC1jMDgxLTExZWMtYmE2ZS0yNDZlOTY1OTE1OTQiLCJpYXQiOjE3MjkwNTI4NzYsImV4cCI6MTcyOTA5NjA3NiwiMSI6IlJFRlJFU0giLCIyIjoia2V5dGFnX19hNjg3NmM0NzFhOGJlYmM1NmRjMGQ2NjRkM2M2NGQ0NTNlZTE3ODIwNWE0YWJhZDE4NDk2NTFkZTNmYTY0MDVkIiwiMyI6IkVYVCIsIjQiOlszMywzNCw0LDE0LDI1LDIwLDEwLDExLDEyLDEzLDYsNyw4LDksMjEsMjMsMjQsMjIsMjYsMTYsMTgsMTksMTUsMTcsMzEsMzAsMzIsMjgsMjksMjcsMSwyLDAsMzksMzUsMzYsMzcsMzhdfQ.CUJ6ht53Pmp_Zht6EygvLeUZn1Kb0uqEIK04V_nxHD2J9BYbUk0w2Y8DkU6me0p7tma7jNStrH-duHCFVRgvmao3Mw5Wk0ir8msQnNxB1l8HWOm6CqJPg4TOfSvjhDjEN4mtrONz1ggprJnLs_yFOe-3BF0dTEqkR8w1Ux2q1XevuJ7-LC9gngFcK-4WOzzWwqY7lm8CnZh09Y-aKI591Ry8yNkTlKa9JAneZaA_GI7szVlMs2bBwwUr6NyaJo818jY7o3NHH6l54S3-useml31vBKTQ2I-yMZUmNpTgkHZvc-c9LJfSeeJ16LHLpFrC9yczkoSAYHv-RfqUr45Srw"
	naverAccess  = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiI1YjEyNjg5MC1jMDgxLTExZWMtYmE2ZS0yNDZlOTY1OTE1OTQiLCJpYXQiOjE3MjkwNTI4NzYsImV4cCI6MTcyOTA2MzY3NiwiMSI6IkFDQ0VTUyIsIjIiOiJrZXl0YWdfX2E2ODc2YzQ3MWE4YmViYzU2ZGMwZDY2NGQzYzY0ZDQ1M2VlMTc4MjA1YTRhYmFkMTg0OTY1MWRlM2ZhNjQwNWQiLCIzIjoiRVhUIiwiNCI6WzMzLDM0LDQsMTQsMjUsMjAsMTAsMTEsMTIsMTMsNiw3LDgsOSwyMSwyMywyNCwyMiwyNiwxNiwxOCwxOSwxNSwxNywzMSwzMCwzMiwyOCwyOSwyNywxLDIsMCwzOSwzNSwzNiwzNywzOF19.HYxASPv_yzjRkxfG3VhDMElJowxC-sAccZWe4ecnIL6YC61uIYPerLIL9paWUqEcBEhTDWGHeJJKe2Qo7RBpwGfGgw7h5dE7JX0blJfSDEiFFr1w92EBN4rpnoQMjEVNwW6EpT3_s6GSgTB6XfeJFIK9rXAuzvy83fCrU3lBBo8Yf3Nfh-1c185AQ_xoSro3hcY_PCaanpUQzOMjqEvEl8L6nYgctBjmDXz3HnSkF3_3IUQOTYR67TRCNNgW1lS9N0oaS_gi6xrbTr7aRzMbexsWyxMipQ1cnY_h4E9iyAK8bkFHUeczEbwUC8W9RMxw3mO3HDqZrCID1wAUcZdj3A"
)

// naverPermissions is claim "4" of both example tokens, in their order.
var naverPermissions = []Permission{33, 34, 4, 14, 25, 20, 10, 11, 12, 13, 6, 7, 8, 9, 21, 23, 24, 22, 26, 16, 18, 19, 15, 17, 31, 30, 32, 28, 29, 27, 1, 2, 0, 39, 35, 36, 37, 38}

// TestNAVERExampleTokens decodes the guide's two tokens with our claim
// types (their signature is NAVER's, so it cannot be verified here) and
// checks every claim, then checks that our encoder writes their payload
// back byte for byte.
func TestNAVERExampleTokens(t *testing.T) {
	for _, tc := range []struct {
		name string
		tok  string
		kind Kind
		exp  int64
	}{
		{"refresh", naverRefresh, Refresh, 1729096076},
		{"access", naverAccess, Access, 1729063676},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, p, _ := segments(t, tc.tok)
			if h != headerB64 {
				t.Errorf("header segment differs from ours")
			}
			payload, err := b64.DecodeString(p)
			if err != nil {
				t.Fatal(err)
			}
			c, r := parseClaims(payload)
			if r != 0 {
				t.Fatalf("parseClaims: %v", r)
			}
			want := &Claims{
				Subject:     "5b126890-c081-11ec-ba6e-246e96591594",
				IssuedAt:    time.Unix(1729052876, 0).UTC(),
				ExpiresAt:   time.Unix(tc.exp, 0).UTC(),
				Kind:        tc.kind,
				KeyTag:      "a6876c471a8bebc56dc0d664d3c64d453ee178205a4abad1849651de3fa6405d",
				Permissions: naverPermissions,
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("claims\n got %+v\nwant %+v", c, want)
			}
			// Claim "3" has no field: parseClaims insists on "EXT", and
			// the raw JSON says so too.
			var raw map[string]any
			if err := json.Unmarshal(payload, &raw); err != nil {
				t.Fatal(err)
			}
			if raw["3"] != "EXT" || len(raw) != 7 {
				t.Errorf(`raw claims: "3" = %v, %d members`, raw["3"], len(raw))
			}
			if got := string(c.appendPayload(nil)); got != string(payload) {
				t.Errorf("re-encoded payload\n got %s\nwant %s", got, payload)
			}
			// NAVER ids beyond our table are kept but grant nothing.
			if !c.Has(PermEncrypt) || !c.Has(PermGetPublicKey) || c.Has(Permission(39)) {
				t.Errorf("Has: unexpected grants")
			}

			// An independent decoder (golang-jwt, unverified) agrees.
			var mc jwt.MapClaims
			tok, _, err := jwt.NewParser(jwt.WithJSONNumber()).ParseUnverified(tc.tok, &mc)
			if err != nil {
				t.Fatal(err)
			}
			if tok.Header["alg"] != "RS256" || tok.Header["typ"] != "JWT" {
				t.Errorf("header %v", tok.Header)
			}
			sub, _ := mc.GetSubject()
			iat, _ := mc.GetIssuedAt()
			exp, _ := mc.GetExpirationTime()
			if sub != c.Subject || !iat.Equal(c.IssuedAt) || !exp.Equal(c.ExpiresAt) ||
				mc["1"] != c.Kind.String() || mc["2"] != "keytag__"+c.KeyTag || mc["3"] != "EXT" ||
				len(mc["4"].([]any)) != len(c.Permissions) {
				t.Errorf("golang-jwt decodes differently: %v", mc)
			}

			// Not our key: the signature does not verify.
			_, err = Verify(tc.tok, &testKey(t).PublicKey, Expect{Kind: tc.kind, KeyTag: want.KeyTag, Now: want.IssuedAt})
			assertReason(t, err, ReasonSignature)
		})
	}
}

const goodPayload = `{"sub":"s","iat":100,"exp":200,"1":"ACCESS","2":"keytag__` + testTag + `","3":"EXT","4":[0,1]}`

func TestParseClaims(t *testing.T) {
	tag := `"2":"keytag__` + testTag + `"`
	for _, tc := range []struct {
		name    string
		payload string
		want    Reason // 0: accepted
	}{
		{"good", goodPayload, 0},
		{"no exp", `{"sub":"s","iat":100,"1":"REFRESH",` + tag + `,"3":"EXT","4":[]}`, 0},
		{"unknown permission ids kept", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[39,7,1000]}`, 0},
		{"escaped quote in sub", `{"sub":"a\"b\\c","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, 0},
		{"unicode sub", `{"sub":"사용자","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, 0},

		{"duplicate 1", `{"sub":"s","iat":100,"exp":200,"1":"REFRESH","1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonDuplicateClaim},
		{"duplicate exp", `{"sub":"s","iat":100,"exp":101,"exp":9999999999,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonDuplicateClaim},
		{"duplicate sub", `{"sub":"s","sub":"t","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonDuplicateClaim},
		{"duplicate 2", `{"sub":"s","iat":100,"1":"ACCESS","2":"keytag__` + otherTag + `",` + tag + `,"3":"EXT","4":[]}`, ReasonDuplicateClaim},
		{"duplicate 4", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[],"4":[0]}`, ReasonDuplicateClaim},

		{"unknown claim", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[],"5":1}`, ReasonClaims},
		{"registered claim nbf", `{"sub":"s","iat":100,"nbf":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"missing sub", `{"iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"missing iat", `{"sub":"s","1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"missing 1", `{"sub":"s","iat":100,` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"missing 2", `{"sub":"s","iat":100,"1":"ACCESS","3":"EXT","4":[]}`, ReasonClaims},
		{"missing 3", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"4":[]}`, ReasonClaims},
		{"missing 4", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT"}`, ReasonClaims},

		{"1 a number", `{"sub":"s","iat":100,"1":1,` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"1 null", `{"sub":"s","iat":100,"1":null,` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"1 lower case", `{"sub":"s","iat":100,"1":"access",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"1 escaped", `{"sub":"s","iat":100,"1":"\u0041CCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"1 an array", `{"sub":"s","iat":100,"1":["ACCESS"],` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"sub a number", `{"sub":1,"iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"sub empty", `{"sub":"","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"sub control character", `{"sub":"a\nb","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"sub invalid utf-8", "{\"sub\":\"a\xffb\",\"iat\":100,\"1\":\"ACCESS\"," + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"sub escaped slash", `{"sub":"a\/b","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"sub too long", `{"sub":"` + strings.Repeat("x", MaxSubjectLen+1) + `","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"iat a string", `{"sub":"s","iat":"100","1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"iat fractional", `{"sub":"s","iat":100.5,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"iat exponent", `{"sub":"s","iat":1e2,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"iat negative", `{"sub":"s","iat":-1,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"iat leading zero", `{"sub":"s","iat":0100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"iat beyond 9999", `{"sub":"s","iat":253402300800,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"iat overflows int64", `{"sub":"s","iat":99999999999999999999,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"exp equal to iat", `{"sub":"s","iat":100,"exp":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"exp before iat", `{"sub":"s","iat":100,"exp":99,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"exp null", `{"sub":"s","iat":100,"exp":null,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"2 without prefix", `{"sub":"s","iat":100,"1":"ACCESS","2":"` + testTag + `","3":"EXT","4":[]}`, ReasonClaims},
		{"2 upper case tag", `{"sub":"s","iat":100,"1":"ACCESS","2":"keytag__` + strings.ToUpper(testTag) + `","3":"EXT","4":[]}`, ReasonClaims},
		{"2 upper case prefix", `{"sub":"s","iat":100,"1":"ACCESS","2":"KEYTAG__` + testTag + `","3":"EXT","4":[]}`, ReasonClaims},
		{"2 short tag", `{"sub":"s","iat":100,"1":"ACCESS","2":"keytag__` + testTag[:63] + `","3":"EXT","4":[]}`, ReasonClaims},
		{"3 other", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"INT","4":[]}`, ReasonClaims},
		{"4 a string", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":"0,1"}`, ReasonClaims},
		{"4 a number", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":0}`, ReasonClaims},
		{"4 null", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":null}`, ReasonClaims},
		{"4 an object", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":{"0":1}}`, ReasonClaims},
		{"4 holds a string", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0,"1"]}`, ReasonClaims},
		{"4 holds a fraction", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[1.5]}`, ReasonClaims},
		{"4 holds 1.0", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[1.0]}`, ReasonClaims},
		{"4 holds a negative", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[-1]}`, ReasonClaims},
		{"4 holds minus zero", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[-0]}`, ReasonClaims},
		{"4 holds a huge id", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[2147483648]}`, ReasonClaims},
		{"4 holds an array", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[[0]]}`, ReasonClaims},
		{"4 holds null", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[null]}`, ReasonClaims},
		{"4 holds a duplicate", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[1,2,1]}`, ReasonClaims},

		{"jti", `{"sub":"s","iat":100,"exp":200,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"jti":"AbC-_09xyzAbC-_09xyzAb"}`, 0},
		{"jti without exp", `{"sub":"s","iat":100,"1":"REFRESH",` + tag + `,"3":"EXT","4":[],"jti":"a"}`, 0},
		{"jti longest", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[],"jti":"` + strings.Repeat("a", MaxIDLen) + `"}`, 0},
		{"jti too long", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[],"jti":"` + strings.Repeat("a", MaxIDLen+1) + `"}`, ReasonClaims},
		{"jti empty", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[],"jti":""}`, ReasonClaims},
		{"jti not base64url", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[],"jti":"a+b/"}`, ReasonClaims},
		{"jti escaped", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[],"jti":"\u0061"}`, ReasonClaims},
		{"jti a number", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[],"jti":1}`, ReasonClaims},
		{"jti null", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[],"jti":null}`, ReasonClaims},
		{"jti first", `{"jti":"a","sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"jti duplicate", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[],"jti":"a","jti":"b"}`, ReasonDuplicateClaim},

		{"cidr", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"cidr":["10.0.0.0/8","2001:db8::/32"]}`, 0},
		{"cidr and jti", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"cidr":["10.1.2.3/32"],"jti":"a"}`, 0},
		{"cidr empty", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"cidr":[]}`, ReasonClaims},
		{"cidr null", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"cidr":null}`, ReasonClaims},
		{"cidr not masked", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"cidr":["10.1.2.3/8"]}`, ReasonClaims},
		{"cidr bare address", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"cidr":["10.1.2.3"]}`, ReasonClaims},
		{"cidr duplicate", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"cidr":["10.0.0.0/8","10.0.0.0/8"]}`, ReasonClaims},
		{"cidr mapped", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"cidr":["::ffff:10.0.0.0/104"]}`, ReasonClaims},
		{"cidr uncanonical v6", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"cidr":["2001:DB8::/32"]}`, ReasonClaims},
		{"cidr a string", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"cidr":"10.0.0.0/8"}`, ReasonClaims},
		{"cidr after jti", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"jti":"a","cidr":["10.0.0.0/8"]}`, ReasonClaims},
		{"cidr twice", `{"sub":"s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[0],"cidr":["10.0.0.0/8"],"cidr":["10.0.0.0/8"]}`, ReasonDuplicateClaim},

		{"reordered members", `{"iat":100,"sub":"s","1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"whitespace", `{"sub": "s","iat":100,"1":"ACCESS",` + tag + `,"3":"EXT","4":[]}`, ReasonClaims},
		{"trailing newline", goodPayload + "\n", ReasonClaims},
		{"trailing garbage", goodPayload + "x", ReasonClaims},
		{"two objects", goodPayload + "{}", ReasonClaims},
		{"leading space", " " + goodPayload, ReasonClaims},
		{"array", `[` + goodPayload + `]`, ReasonClaims},
		{"string", `"x"`, ReasonClaims},
		{"number", `1`, ReasonClaims},
		{"null", `null`, ReasonClaims},
		{"empty", ``, ReasonClaims},
		{"truncated", goodPayload[:len(goodPayload)-1], ReasonClaims},
		{"not json", `{sub:1}`, ReasonClaims},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, r := parseClaims([]byte(tc.payload))
			if r != tc.want {
				t.Fatalf("reason = %v, want %v", r, tc.want)
			}
			if r == 0 {
				if got := string(c.appendPayload(nil)); got != tc.payload {
					t.Errorf("not canonical: %s", got)
				}
			} else if c != nil {
				t.Errorf("claims returned with an error")
			}
		})
	}
}

func TestClaimsRoundTrip(t *testing.T) {
	for _, c := range []Claims{
		{Subject: "x", IssuedAt: time.Unix(0, 0).UTC(), ExpiresAt: time.Unix(1, 0).UTC(), Kind: Access, KeyTag: testTag, Permissions: []Permission{}},
		{Subject: `quote " and \ backslash`, IssuedAt: testNow, Kind: Refresh, KeyTag: testTag, Permissions: AllPermissions()},
		{Subject: "ünïcödé ☃ \u2028", IssuedAt: time.Unix(maxUnix-1, 0).UTC(), ExpiresAt: time.Unix(maxUnix, 0).UTC(), Kind: Access, KeyTag: otherTag, Permissions: []Permission{6, 0, 3}},
	} {
		if err := c.validate(true); err != nil {
			t.Fatalf("validate %+v: %v", c, err)
		}
		payload := c.appendPayload(nil)
		if !json.Valid(payload) {
			t.Fatalf("invalid JSON %s", payload)
		}
		got, r := parseClaims(payload)
		if r != 0 {
			t.Fatalf("parseClaims(%s): %v", payload, r)
		}
		if !reflect.DeepEqual(*got, c) {
			t.Errorf("round trip\n got %+v\nwant %+v", *got, c)
		}
	}
}

// TestPermissionTable pins the permission ids: they are persisted in
// issued tokens and must never change.
func TestPermissionTable(t *testing.T) {
	want := []struct {
		p    Permission
		id   int
		name string
	}{
		{PermEncrypt, 0, "Encrypt"},
		{PermDecrypt, 1, "Decrypt"},
		{PermReEncrypt, 2, "ReEncrypt"},
		{PermCreateCustomKey, 3, "CreateCustomKey"},
		{PermSign, 4, "Sign"},
		{PermVerify, 5, "Verify"},
		{PermGetPublicKey, 6, "GetPublicKey"},
	}
	all := AllPermissions()
	if len(all) != len(want) {
		t.Fatalf("AllPermissions has %d entries, want %d", len(all), len(want))
	}
	for i, w := range want {
		if int(w.p) != w.id || all[i] != w.p || w.p.String() != w.name || !w.p.Known() {
			t.Errorf("permission %d: got %d %q known=%v", w.id, int(w.p), w.p.String(), w.p.Known())
		}
	}
	for _, p := range []Permission{-1, 7, 39} {
		if p.Known() {
			t.Errorf("%d is known", p)
		}
	}
	if s := Permission(39).String(); s != "Permission(39)" {
		t.Errorf("String = %q", s)
	}
	all[0] = 99
	if AllPermissions()[0] != PermEncrypt {
		t.Error("AllPermissions shares its slice")
	}
}

func TestKind(t *testing.T) {
	for _, tc := range []struct {
		k     Kind
		s     string
		valid bool
	}{{Access, "ACCESS", true}, {Refresh, "REFRESH", true}, {0, "INVALID", false}, {3, "INVALID", false}} {
		if tc.k.String() != tc.s || tc.k.Valid() != tc.valid {
			t.Errorf("Kind(%d): %q %v", tc.k, tc.k.String(), tc.k.Valid())
		}
	}
}

func TestClaimsExpired(t *testing.T) {
	c := Claims{ExpiresAt: time.Unix(100, 0)}
	for _, tc := range []struct {
		name string
		now  time.Time
		want bool
	}{
		{"before", time.Unix(99, 999_999_999), false},
		{"equal", time.Unix(100, 0), true},
		{"after", time.Unix(100, 1), true},
	} {
		if got := c.Expired(tc.now); got != tc.want {
			t.Errorf("%s: Expired = %v", tc.name, got)
		}
	}
	if (&Claims{}).Expired(time.Unix(1<<40, 0)) {
		t.Error("unlimited claims expired")
	}
}

func assertReason(tb testing.TB, err error, want Reason) {
	tb.Helper()
	var e *Error
	if !errors.As(err, &e) {
		tb.Fatalf("error %v (%T), want *Error with %v", err, err, want)
	}
	if e.Reason != want {
		tb.Fatalf("reason %v, want %v", e.Reason, want)
	}
	sentinel := ErrTokenInvalid
	if want == ReasonExpired {
		sentinel = ErrTokenExpired
	}
	if !errors.Is(err, sentinel) {
		tb.Fatalf("%v does not match %v", err, sentinel)
	}
	if want != ReasonExpired && errors.Is(err, ErrTokenExpired) || want == ReasonExpired && errors.Is(err, ErrTokenInvalid) {
		tb.Fatalf("%v matches both sentinels", err)
	}
}

// slowClaims is parseClaims without the quick path: the token walk, then
// validation and the canonical comparison.
func slowClaims(payload []byte) (*Claims, Reason) {
	c := new(Claims)
	if r := c.walk(payload); r != 0 {
		return nil, r
	}
	if c.validate(false) != nil {
		return nil, ReasonClaims
	}
	if !bytes.Equal(c.appendPayload(nil), payload) {
		return nil, ReasonClaims
	}
	return c, 0
}

// FuzzQuickClaims: the quick json.Unmarshal path never accepts what the
// strict token walk refuses, and agrees with it on what it accepts.
func FuzzQuickClaims(f *testing.F) {
	f.Add([]byte(goodPayload))
	f.Add([]byte(`{"sub":"s","iat":100,"exp":200,"1":"ACCESS","1":"ACCESS","2":"keytag__` + testTag + `","3":"EXT","4":[0,1]}`))
	f.Add([]byte(`{"SUB":"s","iat":100,"exp":200,"1":"ACCESS","2":"keytag__` + testTag + `","3":"EXT","4":[0,1]}`))
	f.Add([]byte(`{"sub":"s","iat":100,"exp":null,"1":"ACCESS","2":"keytag__` + testTag + `","3":"EXT","4":[0,1]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		q, ok := quickClaims(payload)
		if !ok {
			return
		}
		s, r := slowClaims(payload)
		if r != 0 || !reflect.DeepEqual(q, s) {
			t.Fatalf("quick path accepted %q; walk: %v %+v", payload, r, s)
		}
	})
}
