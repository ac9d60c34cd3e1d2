package naverapi

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var b64 = base64.StdEncoding.EncodeToString

func unb64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("not base64: %q", s)
	}
	return b
}

// fixture is the state TestAPI builds through the API itself.
type fixture struct {
	aes, rsa, ec, conv  string // key tags
	access, refresh     string // token set of aes
	ecAccess, ecRefresh string // token set of ec
}

// setup creates the keys and tokens every subtest uses, through both API
// generations.
func setup(t *testing.T, c *ncpClient) *fixture {
	f := &fixture{}
	f.aes = c.do(t, "POST", "/kms/v1/keys", map[string]any{"keyName": "orders", "keyType": "AES256",
		"memo": "order records", "isAutoRotation": false, "protectionType": "BASIC"}, "").ok(t, "v2 create AES256").str("data", "keyTag")
	f.rsa = c.do(t, "POST", "/kms/v1/keys", map[string]any{"keyName": "partners", "keyType": "RSA2048",
		"isAutoRotation": false, "protectionType": "BASIC"}, "").ok(t, "v2 create RSA2048").str("data", "keyTag")
	r := c.do(t, "POST", "/kms/v3/keys", map[string]any{"keyName": "signer", "keyType": "ECDSA",
		"rotation": map[string]any{"enabled": false}}, "").ok(t, "v3 create ECDSA")
	if r.status != http.StatusCreated || r.str("status") != "ENABLED" || r.num("currentVersion") != 1 {
		t.Fatalf("v3 create: %d %s", r.status, r.raw)
	}
	f.ec = r.str("keyTag")
	f.conv = c.do(t, "POST", "/kms/v3/keys", map[string]any{"keyName": "dedup", "keyType": "AES256", "convergent": true,
		"rotation": map[string]any{"enabled": true, "periodDays": 30}}, "").ok(t, "v3 create convergent").str("keyTag")
	for _, tag := range []string{f.aes, f.rsa, f.ec, f.conv} {
		if len(tag) != 64 {
			t.Fatalf("key tag %q", tag)
		}
	}

	r = c.do(t, "POST", "/kms/v1/keys/"+f.aes+"/token-generator", nil, "").ok(t, "v2 enable generator")
	if string(bytes.TrimSpace(r.raw)) != `{"code":"SUCCESS","data":null}` {
		t.Fatalf("v2 generator enable: %s", r.raw)
	}
	f.access, f.refresh = v2TokenSet(t, c, f.aes)
	r = c.do(t, "POST", "/kms/v3/keys/"+f.ec+"/activate-token-generator", nil, "").ok(t, "v3 activate")
	if r.str("status") != "ENABLED" || len(r.str("tokenGeneratorId")) != 64 {
		t.Fatalf("v3 activate: %s", r.raw)
	}
	r = c.do(t, "POST", "/kms/v3/keys/"+f.ec+"/issue-tokens", map[string]any{}, "").ok(t, "v3 issue-tokens")
	f.ecAccess, f.ecRefresh = r.str("accessToken"), r.str("refreshToken")
	if f.ecAccess == "" || f.ecRefresh == "" {
		t.Fatalf("v3 issue-tokens: %s", r.raw)
	}
	return f
}

func v2TokenSet(t *testing.T, c *ncpClient, tag string) (access, refresh string) {
	t.Helper()
	r := c.do(t, "POST", "/kms/v1/keys/"+tag+"/token-set", map[string]any{"accessTokenHours": 1, "refreshTokenHours": "24"}, "").ok(t, "v2 token-set")
	access, refresh = r.str("data", "accessToken"), r.str("data", "refreshToken")
	if strings.Count(access, ".") != 2 || strings.Count(refresh, ".") != 2 || access == refresh {
		t.Fatalf("token-set: %s", r.raw)
	}
	return access, refresh
}

// TestAPI drives every endpoint over HTTP with the NAVER-style client, on a
// server started by run. Subtests share the server and run in order.
func TestAPI(t *testing.T) {
	ts := newTestServer(t, WithClientAddr(loopback))
	c := ts.client
	f := setup(t, c)

	t.Run("NaverCurlExamples", func(t *testing.T) { testNaverExamples(t, ts, f) })
	t.Run("V2Cipher", func(t *testing.T) { testV2Cipher(t, c, f) })
	t.Run("V3Cipher", func(t *testing.T) { testV3Cipher(t, c, f) })
	t.Run("V3Batch", func(t *testing.T) { testV3Batch(t, c, f) })
	t.Run("Limits", func(t *testing.T) { testLimits(t, c, f) })
	t.Run("Convergent", func(t *testing.T) { testConvergent(t, c, f) })
	t.Run("Tokens", func(t *testing.T) { testTokens(t, c, f) })
	t.Run("ACL", func(t *testing.T) { testACL(t, c, f) })
	t.Run("ManagementV2", func(t *testing.T) { testManagementV2(t, c, f) })
	t.Run("ManagementV3", func(t *testing.T) { testManagementV3(t, c, f) })
	t.Run("Envelopes", func(t *testing.T) { testEnvelopes(t, c, f) })
	t.Run("BodyLimit", func(t *testing.T) { testBodyLimit(t, c, f) })
	t.Run("RateLimit", func(t *testing.T) { testRateLimit(t, c, f) })
	t.Run("EveryEndpoint", func(t *testing.T) { testCoverage(t, ts) })
	t.Run("NoSecretsInLogs", func(t *testing.T) { testNoSecrets(t, ts) })
}

// testNaverExamples sends NAVER's documented requests as they are written:
// the token examples use curl --data without a Content-Type, so curl sends
// application/x-www-form-urlencoded; the API 1.0 example signs the request.
func testNaverExamples(t *testing.T, ts *testServer, f *fixture) {
	c := ts.client
	form := []string{"Content-Type", "application/x-www-form-urlencoded"}
	// security-kms2-token-encrypt, "Request plaintext as String type".
	single := "{\n  \"plaintext\": \"SGVsbG8gS01T\",\n  \"context\": \"dXNlci0xMjM=\"\n}"
	ct := c.do(t, "POST", "/kms/v1/keys/"+f.aes+"/encrypt", single, f.access, form...).ok(t, "token encrypt example").str("data", "ciphertext")
	if !strings.HasPrefix(ct, "ncpkms:v1:") {
		t.Fatalf("ciphertext %q", ct)
	}
	// …"as Array<String> type".
	array := "{\n  \"plaintext\": [\"SGVsbG8gS01T\", \"dGVzdA==\", \"SGVsbG8gS01T\"],\n  \"context\": \"dXNlci0xMjM=\"\n}"
	r := c.do(t, "POST", "/kms/v1/keys/"+f.aes+"/encrypt", array, f.access, form...).ok(t, "token encrypt array example")
	cts, _ := get(r.body, "data", "ciphertext").([]any)
	if len(cts) != 3 {
		t.Fatalf("array answer: %s", r.raw)
	}
	pt := c.do(t, "POST", "/kms/v1/keys/"+f.aes+"/decrypt", map[string]any{"ciphertext": ct}, f.access).ok(t, "decrypt").str("data", "plaintext")
	if string(unb64(t, pt)) != "Hello KMS" {
		t.Fatalf("decrypted %q", pt)
	}
	// security-kms2-token-custom-key.
	r = c.do(t, "POST", "/kms/v1/keys/"+f.aes+"/create-custom-key", "{\n\"requestPlainKey\": true,\n\"bits\": 256,\n\"context\": \"dXNlci0xMjM=\"\n}", f.access, form...).ok(t, "custom key example")
	if len(unb64(t, r.str("data", "plaintext"))) != 32 || r.num("data", "key_version") != 1 || !strings.HasPrefix(r.str("data", "ciphertext"), "ncpkms:v1:") {
		t.Fatalf("custom key: %s", r.raw)
	}
	// security-kms2-token-renew.
	r = c.do(t, "PUT", "/kms/v1/keys/"+f.aes+"/token-set", "{\n  \"accessTokenHours\": 72,\n  \"refreshTokenHours\": 2160\n}", f.refresh, form...).ok(t, "renew example")
	if r.str("data", "accessToken") == "" || r.str("data", "refreshToken") == "" {
		t.Fatalf("renew: %s", r.raw)
	}
	// security-kms-overview, API Gateway signature v2 example (API 1.0 path
	// on the API 2.0 host, as the API 2.0 overview shows it).
	r = c.do(t, "POST", "/keys/v2/"+f.aes+"/encrypt", `{"plaintext":"dGVzdA=="}`, "").ok(t, "API 1.0 signature v2 example")
	if !strings.HasPrefix(r.str("data", "ciphertext"), "ncpkms:v1:") {
		t.Fatalf("API 1.0 encrypt: %s", r.raw)
	}

	// The same token examples through curl itself, as the docs write them.
	if _, err := exec.LookPath("curl"); err != nil {
		t.Log("curl not installed: skipping the curl runs")
		return
	}
	for _, body := range []string{single, array} {
		out, err := exec.Command("curl", "--silent", "--location", "--request", "POST", ts.url+"/kms/v1/keys/"+f.aes+"/encrypt",
			"--header", "x-ncp-ocapi-token: "+f.access, "--data", body).Output()
		if err != nil || !bytes.HasPrefix(out, []byte(`{"code":"SUCCESS","data":{"ciphertext":`)) {
			t.Fatalf("curl encrypt example: %v: %s", err, out)
		}
	}
}

func testV2Cipher(t *testing.T, c *ncpClient, f *fixture) {
	p := "/kms/v1/keys/" + f.aes
	msgs := []string{b64([]byte("first")), b64([]byte("second")), b64([]byte("third"))}

	// Token plane: string in, string out; array in, array out, in order.
	ct := c.do(t, "POST", p+"/encrypt", map[string]any{"plaintext": msgs[0]}, f.access).ok(t, "encrypt").str("data", "ciphertext")
	if got := c.do(t, "POST", p+"/decrypt", map[string]any{"ciphertext": ct}, f.access).ok(t, "decrypt").str("data", "plaintext"); got != msgs[0] {
		t.Fatalf("decrypt: %q", got)
	}
	r := c.do(t, "POST", p+"/encrypt", map[string]any{"plaintext": msgs}, f.access).ok(t, "encrypt array")
	cts := toStrings(get(r.body, "data", "ciphertext"))
	for i, ct := range cts { // answered in request order
		if got := c.do(t, "POST", p+"/decrypt", map[string]any{"ciphertext": ct}, f.access).ok(t, "decrypt item").str("data", "plaintext"); got != msgs[i] {
			t.Fatalf("array item %d decrypts to %q", i, got)
		}
	}
	r = c.do(t, "POST", p+"/decrypt", map[string]any{"ciphertext": cts}, f.access).ok(t, "decrypt array")
	if got := toStrings(get(r.body, "data", "plaintext")); !slices.Equal(got, msgs) {
		t.Fatalf("array round trip: %q", got)
	}
	for _, path := range []string{"/re-encrypt", "/reencrypt"} {
		re := c.do(t, "POST", p+path, map[string]any{"ciphertext": ct}, f.access).ok(t, path).str("data", "ciphertext")
		if re == ct || !strings.HasPrefix(re, "ncpkms:v1:") {
			t.Fatalf("%s: %q", path, re)
		}
		r = c.do(t, "POST", p+path, map[string]any{"ciphertext": cts}, f.access).ok(t, path+" array")
		if len(toStrings(get(r.body, "data", "ciphertext"))) != 3 {
			t.Fatalf("%s array: %s", path, r.raw)
		}
	}

	// An array is atomic: one bad item fails the call, no data comes back.
	bad := slices.Clone(cts)
	bad[1] = tamper(bad[1])
	r = c.do(t, "POST", p+"/decrypt", map[string]any{"ciphertext": bad}, f.access)
	if fl := r.failures(t, "decrypt array with a tampered item", 400); len(fl) != 1 || fl["1"] != "InvalidParameter" || r.body["data"] != nil || r.str("code") != "InvalidParameter" {
		t.Fatalf("atomic array: %s", r.raw)
	}
	many := make([]string, 101)
	for i := range many {
		many[i] = msgs[0]
	}
	for _, tc := range []struct {
		name  string
		body  any
		field string
	}{
		{"101 items", map[string]any{"plaintext": many}, "plaintext"},
		{"empty array", map[string]any{"plaintext": []string{}}, "plaintext"},
		{"number item", map[string]any{"plaintext": []any{msgs[0], 5}}, "plaintext[1]"},
		{"bad item", map[string]any{"plaintext": []any{msgs[0], "abc"}}, "plaintext[1]"},
		{"missing", map[string]any{}, "plaintext"},
		{"object", map[string]any{"plaintext": map[string]any{}}, "plaintext"},
	} {
		r := c.do(t, "POST", p+"/encrypt", tc.body, f.access).fails(t, tc.name, 400, "InvalidParameter")
		if fe := r.fieldErrors(); !slices.Contains(fe, tc.field) {
			t.Errorf("%s: fieldErrors %v, want %s", tc.name, fe, tc.field)
		}
	}

	// Create Custom Key: the data key unwraps to its plaintext.
	r = c.do(t, "POST", p+"/create-custom-key", map[string]any{"requestPlainKey": true, "bits": 512}, f.access).ok(t, "custom key 512")
	dk := r.str("data", "plaintext")
	if len(unb64(t, dk)) != 64 || r.num("data", "key_version") != 1 {
		t.Fatalf("custom key: %s", r.raw)
	}
	if got := c.do(t, "POST", p+"/decrypt", map[string]any{"ciphertext": r.str("data", "ciphertext")}, f.access).ok(t, "unwrap").str("data", "plaintext"); got != dk {
		t.Fatal("data key does not unwrap to its plaintext")
	}
	r = c.do(t, "POST", p+"/create-custom-key", nil, f.access).ok(t, "custom key, no body")
	if _, has := get(r.body, "data").(map[string]any)["plaintext"]; has {
		t.Fatalf("plaintext without requestPlainKey: %s", r.raw)
	}
	c.do(t, "POST", p+"/create-custom-key", map[string]any{"bits": 100}, f.access).fails(t, "bits 100", 400, "InvalidParameter")

	// Sign, Verify and Get Public Key with a token (ECDSA) …
	e := "/kms/v1/keys/" + f.ec
	data := b64([]byte("release 1.2.3"))
	sig := c.do(t, "POST", e+"/sign", map[string]any{"data": data}, f.ecAccess).ok(t, "sign").str("data", "signature")
	if r := c.do(t, "POST", e+"/verify", map[string]any{"data": data, "signature": sig}, f.ecAccess).ok(t, "verify"); get(r.body, "data", "valid") != true {
		t.Fatalf("verify: %s", r.raw)
	}
	if r := c.do(t, "POST", e+"/verify", map[string]any{"data": b64([]byte("other")), "signature": sig}, f.ecAccess).ok(t, "verify other"); get(r.body, "data", "valid") != false {
		t.Fatalf("verify other data: %s", r.raw)
	}
	pub := parsePEM(t, c.do(t, "POST", e+"/get-pub-key", map[string]any{}, f.ecAccess).ok(t, "get-pub-key").str("data", "publicKey"))
	verifyOffline(t, pub, []byte("release 1.2.3"), sig)
	c.do(t, "POST", p+"/sign", map[string]any{"data": data}, f.access).fails(t, "sign with AES", 400, "InvalidParameter")

	// … and with account authentication (RSA2048), on the same paths.
	rp := "/kms/v1/keys/" + f.rsa
	ct = c.do(t, "POST", rp+"/encrypt", map[string]any{"plaintext": msgs[1]}, "").ok(t, "account encrypt").str("data", "ciphertext")
	if got := c.do(t, "POST", rp+"/decrypt", map[string]any{"ciphertext": ct}, "").ok(t, "account decrypt").str("data", "plaintext"); got != msgs[1] {
		t.Fatalf("RSA round trip: %q", got)
	}
	sig = c.do(t, "POST", rp+"/sign", map[string]any{"data": data}, "").ok(t, "account sign").str("data", "signature")
	if r := c.do(t, "POST", rp+"/verify", map[string]any{"data": data, "signature": sig}, "").ok(t, "account verify"); get(r.body, "data", "valid") != true {
		t.Fatalf("account verify: %s", r.raw)
	}
	pub = parsePEM(t, c.do(t, "POST", rp+"/get-pub-key", map[string]any{"keyVersion": 1}, "").ok(t, "account get-pub-key").str("data", "publicKey"))
	verifyOffline(t, pub, []byte("release 1.2.3"), sig)
	c.do(t, "POST", rp+"/get-pub-key", map[string]any{"keyVersion": 101}, "").fails(t, "keyVersion 101", 400, "InvalidParameter")
	c.do(t, "POST", rp+"/encrypt", map[string]any{"plaintext": b64(make([]byte, 191))}, "").fails(t, "RSA 191 bytes", 400, "InvalidParameter")

	// API 1.0 paths (account authentication only).
	k1 := "/keys/v2/" + f.rsa
	ct = c.do(t, "POST", k1+"/encrypt", map[string]any{"plaintext": msgs[2]}, "").ok(t, "1.0 encrypt").str("data", "ciphertext")
	ct = c.do(t, "POST", k1+"/reencrypt", map[string]any{"ciphertext": ct}, "").ok(t, "1.0 reencrypt").str("data", "ciphertext")
	if got := c.do(t, "POST", k1+"/decrypt", map[string]any{"ciphertext": ct}, "").ok(t, "1.0 decrypt").str("data", "plaintext"); got != msgs[2] {
		t.Fatalf("1.0 round trip: %q", got)
	}
	c.do(t, "POST", k1+"/createCustomKey", map[string]any{"bits": 128}, "").ok(t, "1.0 createCustomKey")
	sig = c.do(t, "POST", k1+"/sign", map[string]any{"data": data}, "").ok(t, "1.0 sign").str("data", "signature")
	c.do(t, "POST", k1+"/verify", map[string]any{"data": data, "signature": sig}, "").ok(t, "1.0 verify")
	c.do(t, "POST", k1+"/encrypt", map[string]any{"plaintext": msgs[2]}, f.access).fails(t, "1.0 path with a token", 401, "Unauthorized")
}

func toStrings(v any) []string {
	a, _ := v.([]any)
	out := make([]string, len(a))
	for i, x := range a {
		out[i], _ = x.(string)
	}
	return out
}

// tamper flips a bit of a ciphertext's body, keeping its format.
func tamper(ct string) string {
	i := strings.LastIndexByte(ct, ':') + 1
	b, _ := base64.StdEncoding.DecodeString(ct[i:])
	b[len(b)/2] ^= 1
	return ct[:i] + b64(b)
}

func parsePEM(t *testing.T, s string) crypto.PublicKey {
	t.Helper()
	blk, _ := pem.Decode([]byte(s))
	if blk == nil || blk.Type != "PUBLIC KEY" {
		t.Fatalf("not a PEM public key: %q", s)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// verifyOffline checks a signature with the public key alone, as NAVER's
// docs suggest for verification outside KMS.
func verifyOffline(t *testing.T, pub crypto.PublicKey, msg []byte, sig string) {
	t.Helper()
	raw := unb64(t, sig[strings.LastIndexByte(sig, ':')+1:])
	h := sha256.Sum256(msg)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, h[:], raw) {
			t.Fatal("ECDSA signature does not verify offline")
		}
	case *rsa.PublicKey:
		if err := rsa.VerifyPSS(k, crypto.SHA256, h[:], raw, &rsa.PSSOptions{SaltLength: 222}); err != nil {
			t.Fatalf("RSA-PSS signature does not verify offline: %v", err)
		}
	default:
		t.Fatalf("public key %T", pub)
	}
}

func testV3Cipher(t *testing.T, c *ncpClient, f *fixture) {
	for _, plane := range []struct {
		name, prefix, tok, ecTok string
	}{
		{"token", "/kms/v3/token/keys/", f.access, f.ecAccess},
		{"account", "/kms/v3/keys/", "", ""},
	} {
		t.Run(plane.name, func(t *testing.T) {
			p, e := plane.prefix+f.aes, plane.prefix+f.ec
			msg := b64([]byte("v3 " + plane.name))
			ct := c.do(t, "POST", p+"/encrypt", map[string]any{"plaintext": msg}, plane.tok).ok(t, "encrypt").str("ciphertext")
			if got := c.do(t, "POST", p+"/decrypt", map[string]any{"ciphertext": ct}, plane.tok).ok(t, "decrypt").str("plaintext"); got != msg {
				t.Fatalf("decrypt: %q", got)
			}
			re := c.do(t, "POST", p+"/re-encrypt", map[string]any{"ciphertext": ct}, plane.tok).ok(t, "re-encrypt").str("ciphertext")
			if got := c.do(t, "POST", p+"/decrypt", map[string]any{"ciphertext": re}, plane.tok).ok(t, "decrypt re").str("plaintext"); got != msg {
				t.Fatalf("decrypt re-encrypted: %q", got)
			}
			c.do(t, "POST", p+"/encrypt", map[string]any{"plaintext": []string{msg}}, plane.tok).fails(t, "v3 array", 400, "InvalidParameter")

			r := c.do(t, "POST", p+"/issue-custom-key", nil, plane.tok).ok(t, "issue-custom-key")
			if r.str("ciphertext") == "" || r.num("keyVersion") < 1 || r.body["plaintext"] != nil {
				t.Fatalf("issue-custom-key: %s", r.raw)
			}
			r = c.do(t, "POST", p+"/issue-custom-key", map[string]any{"requestPlainKey": true, "bits": 128}, plane.tok).ok(t, "issue-custom-key 128")
			if len(unb64(t, r.str("plaintext"))) != 16 {
				t.Fatalf("issue-custom-key 128: %s", r.raw)
			}

			items := []map[string]any{{"plaintext": b64([]byte("a"))}, {"plaintext": b64([]byte("b"))}, {"plaintext": b64([]byte("c"))}}
			r = c.do(t, "POST", p+"/batch-encrypt", map[string]any{"requests": items}, plane.tok).ok(t, "batch-encrypt")
			dec := make([]map[string]any, 3)
			for i := range dec {
				ct := r.str("results", strconv.Itoa(i), "ciphertext")
				dec[i] = map[string]any{"ciphertext": ct}
				if got := c.do(t, "POST", p+"/decrypt", dec[i], plane.tok).ok(t, "decrypt result").str("plaintext"); got != items[i]["plaintext"] {
					t.Fatalf("batch-encrypt result %d decrypts to %q", i, got)
				}
			}
			r = c.do(t, "POST", p+"/batch-decrypt", map[string]any{"requests": dec}, plane.tok).ok(t, "batch-decrypt")
			for i, want := range []string{"a", "b", "c"} {
				if got := r.str("results", strconv.Itoa(i), "plaintext"); got != b64([]byte(want)) {
					t.Fatalf("batch-decrypt result %d: %q", i, got)
				}
			}
			r = c.do(t, "POST", p+"/batch-re-encrypt", map[string]any{"requests": dec}, plane.tok).ok(t, "batch-re-encrypt")
			if len(get(r.body, "results").(map[string]any)) != 3 {
				t.Fatalf("batch-re-encrypt: %s", r.raw)
			}

			data := b64([]byte("v3 sign " + plane.name))
			sig := c.do(t, "POST", e+"/sign", map[string]any{"data": data}, plane.ecTok).ok(t, "sign").str("signature")
			if r := c.do(t, "POST", e+"/verify", map[string]any{"data": data, "signature": sig}, plane.ecTok).ok(t, "verify"); r.body["valid"] != true {
				t.Fatalf("verify: %s", r.raw)
			}
			r = c.do(t, "GET", e+"/versions/1/public-key", nil, plane.ecTok).ok(t, "public key")
			if r.num("version") != 1 {
				t.Fatalf("public key: %s", r.raw)
			}
			verifyOffline(t, parsePEM(t, r.str("publicKey")), []byte("v3 sign "+plane.name), sig)
			c.do(t, "GET", e+"/versions/0x1/public-key", nil, plane.ecTok).fails(t, "version 0x1", 400, "InvalidParameter")
		})
	}
}

func testV3Batch(t *testing.T, c *ncpClient, f *fixture) {
	p := "/kms/v3/token/keys/" + f.aes
	good := c.do(t, "POST", p+"/encrypt", map[string]any{"plaintext": b64([]byte("x"))}, f.access).ok(t, "encrypt").str("ciphertext")

	// Phase 1: missing and malformed items fail by index; nothing runs.
	r := c.do(t, "POST", p+"/batch-decrypt", map[string]any{"requests": []any{
		map[string]any{"ciphertext": good}, map[string]any{}, map[string]any{"ciphertext": "not a ciphertext"},
	}}, f.access)
	if fl := r.failures(t, "phase 1", 400); len(fl) != 2 || fl["1"] != "InvalidParameter" || fl["2"] != "InvalidParameter" || r.body["error"] != nil {
		t.Fatalf("phase 1: %s", r.raw)
	}
	if get(r.body, "failures", "2", "fieldErrors", 0, "field") != "requests[2].ciphertext" {
		t.Fatalf("phase 1 field: %s", r.raw)
	}
	// Phase 2: the Engine's own failures, only the items that failed.
	r = c.do(t, "POST", p+"/batch-decrypt", map[string]any{"requests": []any{
		map[string]any{"ciphertext": good}, map[string]any{"ciphertext": tamper(good)},
	}}, f.access)
	if fl := r.failures(t, "phase 2", 400); len(fl) != 1 || fl["1"] != "InvalidParameter" {
		t.Fatalf("phase 2: %s", r.raw)
	}
	// A wrong JSON type fails the whole body: error with fieldErrors.
	for _, tc := range []struct {
		name  string
		body  any
		field string
	}{
		{"number ciphertext", map[string]any{"requests": []any{map[string]any{"ciphertext": 5}}}, "requests[0].ciphertext"},
		{"number context", map[string]any{"requests": []any{map[string]any{"ciphertext": good, "context": 1}}}, "requests[0].context"},
		{"item not an object", map[string]any{"requests": []any{"x"}}, "requests[0]"},
		{"requests not an array", map[string]any{"requests": "x"}, "requests"},
		{"no requests", map[string]any{}, "requests"},
		{"101 requests", map[string]any{"requests": slices.Repeat([]any{map[string]any{"ciphertext": good}}, 101)}, "requests"},
		{"0 requests", map[string]any{"requests": []any{}}, "requests"},
	} {
		r := c.do(t, "POST", p+"/batch-decrypt", tc.body, f.access).fails(t, tc.name, 400, "InvalidParameter")
		if fe := r.fieldErrors(); !slices.Contains(fe, tc.field) {
			t.Errorf("%s: fieldErrors %v, want %s", tc.name, fe, tc.field)
		}
	}
}

// testLimits checks the base64 and length rules of spec §4.2 exactly.
func testLimits(t *testing.T, c *ncpClient, f *fixture) {
	aes, conv, ec := "/kms/v3/keys/"+f.aes, "/kms/v3/keys/"+f.conv, "/kms/v3/keys/"+f.ec
	ctx50 := b64(make([]byte, 50))
	for _, tc := range []struct {
		name, path string
		body       map[string]any
		field      string // "" = success
	}{
		{"plaintext 32768 bytes", aes + "/encrypt", map[string]any{"plaintext": b64(make([]byte, 32768))}, ""},
		{"plaintext 32769 bytes (43692 chars)", aes + "/encrypt", map[string]any{"plaintext": b64(make([]byte, 32769))}, "plaintext"},
		{"plaintext 43696 chars", aes + "/encrypt", map[string]any{"plaintext": b64(make([]byte, 32772))}, "plaintext"},
		{"plaintext URL alphabet", aes + "/encrypt", map[string]any{"plaintext": "-_-_"}, "plaintext"},
		{"plaintext unpadded", aes + "/encrypt", map[string]any{"plaintext": "dGVzdA"}, "plaintext"},
		{"plaintext with newline", aes + "/encrypt", map[string]any{"plaintext": "dGVz\ndA=="}, "plaintext"},
		{"plaintext empty", aes + "/encrypt", map[string]any{"plaintext": ""}, "plaintext"},
		{"plaintext a number", aes + "/encrypt", map[string]any{"plaintext": 5}, "plaintext"},
		{"context a number, non-convergent", aes + "/encrypt", map[string]any{"plaintext": "dGVzdA==", "context": 5}, "context"},
		{"context 69 chars ignored, non-convergent", aes + "/encrypt", map[string]any{"plaintext": "dGVzdA==", "context": strings.Repeat("A", 69)}, ""},
		{"context not base64 ignored, non-convergent", aes + "/encrypt", map[string]any{"plaintext": "dGVzdA==", "context": "!!"}, ""},
		{"context 50 bytes, convergent", conv + "/encrypt", map[string]any{"plaintext": "dGVzdA==", "context": ctx50}, ""},
		{"context 51 bytes (68 chars), convergent", conv + "/encrypt", map[string]any{"plaintext": "dGVzdA==", "context": b64(make([]byte, 51))}, "-"},
		{"context not base64, convergent", conv + "/encrypt", map[string]any{"plaintext": "dGVzdA==", "context": "dXNlci0xMjM"}, "-"},
		{"sign data 8192 bytes", ec + "/sign", map[string]any{"data": b64(make([]byte, 8192))}, ""},
		{"sign data 8193 bytes (10924 chars)", ec + "/sign", map[string]any{"data": b64(make([]byte, 8193))}, "data"},
		{"sign data 10928 chars", ec + "/sign", map[string]any{"data": b64(make([]byte, 8196))}, "data"},
		{"ciphertext 43747 chars", aes + "/decrypt", map[string]any{"ciphertext": "ncpkms:v1:" + strings.Repeat("A", 43736) + "A"}, "ciphertext"},
		{"ciphertext v0", aes + "/decrypt", map[string]any{"ciphertext": "ncpkms:v0:AAAA"}, "ciphertext"},
		{"ciphertext v01", aes + "/decrypt", map[string]any{"ciphertext": "ncpkms:v01:AAAA"}, "ciphertext"},
		{"ciphertext 10-digit version", aes + "/decrypt", map[string]any{"ciphertext": "ncpkms:v1234567890:AAAA"}, "ciphertext"},
		{"ciphertext bad padding", aes + "/decrypt", map[string]any{"ciphertext": "ncpkms:v1:AAA"}, "ciphertext"},
		{"ciphertext a number", aes + "/re-encrypt", map[string]any{"ciphertext": 1}, "ciphertext"},
		{"signature malformed", ec + "/verify", map[string]any{"data": "dGVzdA==", "signature": "sig"}, "signature"},
		{"signature missing", ec + "/verify", map[string]any{"data": "dGVzdA=="}, "signature"},
	} {
		r := c.do(t, "POST", tc.path, tc.body, "")
		switch tc.field {
		case "":
			r.ok(t, tc.name)
		case "-": // refused by the Engine, which alone knows the key is convergent
			r.fails(t, tc.name, 400, "InvalidParameter")
		default:
			r.fails(t, tc.name, 400, "InvalidParameter")
			if fe := r.fieldErrors(); !slices.Equal(fe, []string{tc.field}) {
				t.Errorf("%s: fieldErrors %v, want [%s]", tc.name, fe, tc.field)
			}
		}
	}
}

func testConvergent(t *testing.T, c *ncpClient, f *fixture) {
	p := "/kms/v3/keys/" + f.conv
	body := map[string]any{"plaintext": "SGVsbG8gS01T", "context": "dXNlci0xMjM="}
	a := c.do(t, "POST", p+"/encrypt", body, "").ok(t, "encrypt").str("ciphertext")
	b := c.do(t, "POST", p+"/encrypt", body, "").ok(t, "encrypt again").str("ciphertext")
	if a != b {
		t.Fatal("convergent key gave two ciphertexts for one input")
	}
	c.do(t, "POST", p+"/encrypt", map[string]any{"plaintext": "SGVsbG8gS01T"}, "").fails(t, "no context", 400, "InvalidParameter")
	c.do(t, "POST", p+"/decrypt", map[string]any{"ciphertext": a, "context": "b3RoZXI="}, "").fails(t, "other context", 400, "InvalidParameter")
	if got := c.do(t, "POST", p+"/decrypt", map[string]any{"ciphertext": a, "context": "dXNlci0xMjM="}, "").ok(t, "decrypt").str("plaintext"); got != "SGVsbG8gS01T" {
		t.Fatalf("decrypt: %q", got)
	}
	r := c.do(t, "POST", p+"/batch-encrypt", map[string]any{"requests": []any{
		map[string]any{"plaintext": "SGVsbG8gS01T", "context": "dXNlci0xMjM="},
		map[string]any{"plaintext": "SGVsbG8gS01T", "context": "b3RoZXI="},
	}}, "").ok(t, "batch with per-item contexts")
	if r.str("results", "0", "ciphertext") != a || r.str("results", "1", "ciphertext") == a {
		t.Fatalf("per-item contexts: %s", r.raw)
	}
	c.do(t, "POST", p+"/issue-custom-key", nil, "").fails(t, "custom key without context", 400, "InvalidParameter")
	c.do(t, "POST", p+"/issue-custom-key", map[string]any{"context": "dXNlci0xMjM="}, "").ok(t, "custom key with context")
	// v2 arrays share one context.
	r = c.do(t, "POST", "/kms/v1/keys/"+f.conv+"/encrypt", map[string]any{"plaintext": []string{"SGVsbG8gS01T", "SGVsbG8gS01T"}, "context": "dXNlci0xMjM="}, "").ok(t, "v2 array")
	if got := toStrings(get(r.body, "data", "ciphertext")); got[0] != a || got[1] != a {
		t.Fatalf("v2 array with one context: %q", got)
	}
}

// testCoverage checks that the client drove every registered route.
func testCoverage(t *testing.T, ts *testServer) {
	if f := flag.Lookup("test.run"); f != nil && strings.Contains(f.Value.String(), "/") {
		t.Skip("counts the requests of every TestAPI subtest: run TestAPI whole")
	}
	c, s := ts.client, ts.handler
	hit := map[string]bool{}
	c.mu.Lock()
	for _, r := range c.sent {
		u, err := url.Parse(r.target)
		if err != nil {
			t.Fatal(err)
		}
		_, pattern := s.mux.Handler(&http.Request{Method: r.method, URL: u, Header: http.Header{}})
		hit[pattern] = true
	}
	c.mu.Unlock()
	for _, p := range s.routes {
		if !hit[p] {
			t.Errorf("no test request reached %s", p)
		}
	}
	if len(s.routes) != 84 {
		t.Errorf("%d routes registered, want 84 (update doc.go and this count)", len(s.routes))
	}
}

// testNoSecrets checks the server's whole output for every token and
// signature the client sent, the secret key and the plaintexts.
func testNoSecrets(t *testing.T, ts *testServer) {
	out := ts.out.String()
	if !strings.Contains(out, "msg=request method=POST path=/kms/v1/keys/") {
		t.Fatalf("no request log lines:\n%.2000s", out)
	}
	secrets := []string{ts.client.SecretKey, "Hello KMS", b64([]byte("release 1.2.3")), b64([]byte("first"))}
	ts.client.mu.Lock()
	for _, r := range ts.client.sent {
		secrets = append(secrets, r.secrets...)
	}
	ts.client.mu.Unlock()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Fatalf("the server's output contains a secret (%d characters)", len(s))
		}
	}
}
