package naverapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/pocketkms/kms"
)

// claims decodes a token's payload without verifying it.
func claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

var reUUID4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestTokenSubject: tokens issued with account authentication carry a
// fresh random UUID as "sub", never the access key; renewal keeps the
// subject.
func TestTokenSubject(t *testing.T) {
	ts := newTestServer(t)
	c := ts.client
	tag := c.do(t, "POST", "/kms/v3/keys", map[string]any{"keyName": "subj", "keyType": "AES256", "rotation": map[string]any{"enabled": false}}, "").ok(t, "create").str("keyTag")
	c.do(t, "POST", "/kms/v3/keys/"+tag+"/activate-token-generator", nil, "").ok(t, "activate")
	seen := map[string]bool{}
	var refresh string
	for i := range 4 {
		var access string
		if i%2 == 0 {
			r := c.do(t, "POST", "/kms/v1/keys/"+tag+"/token-set", nil, "").ok(t, "v2 token-set")
			access, refresh = r.str("data", "accessToken"), r.str("data", "refreshToken")
		} else {
			r := c.do(t, "POST", "/kms/v3/keys/"+tag+"/issue-tokens", nil, "").ok(t, "v3 issue-tokens")
			access, refresh = r.str("accessToken"), r.str("refreshToken")
		}
		sub, _ := claims(t, access)["sub"].(string)
		if !reUUID4.MatchString(sub) || seen[sub] || claims(t, refresh)["sub"] != sub {
			t.Fatalf("set %d: sub %q (access) %q (refresh), want one fresh UUID", i, sub, claims(t, refresh)["sub"])
		}
		seen[sub] = true
		for _, tok := range []string{access, refresh} {
			payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
			if strings.Contains(string(payload), c.AccessKey) {
				t.Fatal("a token carries the access key")
			}
		}
	}
	sub := claims(t, refresh)["sub"]
	r := c.do(t, "POST", "/kms/v3/token/keys/"+tag+"/reissue-tokens", nil, refresh).ok(t, "reissue")
	if claims(t, r.str("accessToken"))["sub"] != sub {
		t.Fatal("renewal changed the subject")
	}
}

// TestCustomAuthAndAddress mounts the handler under a prefix of a custom
// mux, with a custom Authenticator (one that answers 403 to a known but
// unprivileged caller and names the token subject) and a custom address
// function (a header set by a trusted front end).
func TestCustomAuthAndAddress(t *testing.T) {
	ctx := context.Background()
	eng := newTestEngine(t)
	var seen []string
	auth := AuthenticatorFunc(func(r *http.Request) (Principal, error) {
		seen = append(seen, r.URL.Path)
		switch r.Header.Get("X-Team") {
		case "billing":
			return Principal{ID: "team-billing", TokenSubject: "billing-service"}, nil
		case "guest":
			return Principal{}, &Error{Status: http.StatusForbidden, Code: "Forbidden", Detail: "guests may not manage keys"}
		case "broken":
			return Principal{}, errors.New("directory unreachable: secret-ish detail")
		}
		return Principal{}, errors.New("no team")
	})
	addr := func(r *http.Request) netip.Addr {
		a, _ := netip.ParseAddr(r.Header.Get("X-Client-IP"))
		return a
	}
	h, err := NewHandler(eng, WithAuthenticator(auth), WithClientAddr(addr), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/naver/", http.StripPrefix("/naver", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	do := func(method, path, body string, hdr ...string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+"/naver"+path, strings.NewReader(body))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	billing := []string{"X-Team", "billing"}
	status, key := do("POST", "/kms/v3/keys", `{"keyName":"custom","keyType":"AES256","rotation":{"enabled":false}}`, billing...)
	tag, _ := key["keyTag"].(string)
	if status != 201 || tag == "" {
		t.Fatalf("create: %d %v", status, key)
	}
	for _, tc := range []struct {
		team, code string
		status     int
	}{{"guest", "Forbidden", 403}, {"broken", "Unauthorized", 401}, {"", "Unauthorized", 401}} {
		status, body := do("GET", "/kms/v1/keys", "", "X-Team", tc.team)
		e, _ := body["error"].(map[string]any)
		if status != tc.status || e["errorCode"] != tc.code || body["code"] != tc.code || strings.Contains(toJSON(body), "secret-ish") {
			t.Fatalf("team %q: %d %v", tc.team, status, body)
		}
	}
	if _, err := eng.ActivateTokenGenerator(ctx, tag); err != nil {
		t.Fatal(err)
	}
	status, set := do("POST", "/kms/v3/keys/"+tag+"/issue-tokens", "", billing...)
	access, _ := set["accessToken"].(string)
	if status != 200 || claims(t, access)["sub"] != "billing-service" {
		t.Fatalf("issue-tokens: %d, sub %v", status, claims(t, access)["sub"])
	}
	// The allow-list sees the custom address.
	if _, err := eng.AddAllowedIPs(ctx, tag, []string{"10.7.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.SetKeyACLEnabled(ctx, tag, true); err != nil {
		t.Fatal(err)
	}
	enc := `{"plaintext":"SGVsbG8gS01T"}`
	for ip, want := range map[string]int{"10.7.3.4": 200, "10.8.3.4": 403, "": 403} {
		if status, body := do("POST", "/kms/v3/token/keys/"+tag+"/encrypt", enc, HeaderToken, access, "X-Client-IP", ip); status != want {
			t.Errorf("client %q: %d %v", ip, status, body)
		}
	}
	// The token API never asks the Authenticator.
	n := len(seen)
	do("POST", "/kms/v1/keys/"+tag+"/encrypt", enc, HeaderToken, access, "X-Client-IP", "10.7.3.4")
	if len(seen) != n {
		t.Fatal("a token call went to the Authenticator")
	}
}

// TestNewHandlerOptions: options are validated once; a handler without an
// Authenticator refuses the account API and serves the token API.
func TestNewHandlerOptions(t *testing.T) {
	eng := newTestEngine(t)
	for name, opts := range map[string][]Option{
		"nil Authenticator": {WithAuthenticator(nil)},
		"nil address func":  {WithClientAddr(nil)},
		"nil logger":        {WithLogger(nil)},
	} {
		if _, err := NewHandler(eng, opts...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewHandler(nil); err == nil {
		t.Error("nil Engine accepted")
	}
	h, err := NewHandler(eng)
	if err != nil {
		t.Fatal(err)
	}
	k, err := eng.CreateKey(context.Background(), kms.CreateKeyRequest{Name: "noauth", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/kms/v3/keys/"+k.Tag, nil))
	if w.Code != 401 {
		t.Fatalf("account call without an Authenticator: %d %s", w.Code, w.Body)
	}
	if len(h.Routes()) != 84 {
		t.Fatalf("%d routes", len(h.Routes()))
	}
}
