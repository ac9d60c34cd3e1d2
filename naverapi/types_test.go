package naverapi

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// decode decodes a reply's body (the v2 data when wrapped) into out.
func decode(t *testing.T, r reply, v2 bool, out any) {
	t.Helper()
	raw := r.raw
	if v2 {
		var env struct {
			Code string          `json:"code"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(r.raw, &env); err != nil || env.Code != "SUCCESS" {
			t.Fatalf("v2 envelope: %v %s", err, r.raw)
		}
		raw = env.Data
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields() // every member the handler writes has a field
	if err := dec.Decode(out); err != nil {
		t.Fatalf("decode %T: %v\n%s", out, err, raw)
	}
}

// TestRequestResponseTypes drives the API with the exported request types
// and decodes every answer into the exported response types, refusing
// members the types do not have: the types are the wire format.
func TestRequestResponseTypes(t *testing.T) {
	ts := newTestServer(t)
	c := ts.client

	var k2 V2Key
	decode(t, c.do(t, "POST", "/kms/v1/keys", V2CreateKeyRequest{KeyName: "typed", KeyType: "AES256", ProtectionType: "BASIC", Memo: "m"}, "").ok(t, "v2 create"), true, &k2)
	var k3 V3Key
	decode(t, c.do(t, "POST", "/kms/v3/keys", V3CreateKeyRequest{KeyName: "signer", KeyType: "ECDSA", Rotation: V3RotationRequest{Enabled: true, PeriodDays: 30}}, "").ok(t, "v3 create"), false, &k3)
	if k2.KeyTag == "" || k2.Memo != "m" || k3.KeyType != "ECDSA" || !k3.Rotation.Enabled || k3.Rotation.PeriodDays != 30 {
		t.Fatalf("keys: %+v %+v", k2, k3)
	}
	aes, ec := "/kms/v1/keys/"+k2.KeyTag, "/kms/v3/keys/"+k3.KeyTag

	var list2 V2KeyList
	decode(t, c.do(t, "GET", "/kms/v1/keys", nil, "").ok(t, "v2 list"), true, &list2)
	var list3 V3KeyList
	decode(t, c.do(t, "GET", "/kms/v3/keys", nil, "").ok(t, "v3 list"), false, &list3)
	if list2.TotalCount != 2 || len(list3.Keys) != 2 {
		t.Fatalf("lists: %+v %+v", list2, list3)
	}

	c.do(t, "POST", aes+"/token-generator", nil, "").ok(t, "generator")
	var set TokenSetResponse
	decode(t, c.do(t, "POST", aes+"/token-set", V2TokenSetRequest{AccessTokenHours: 1, RefreshTokenHours: "UL"}, "").ok(t, "token-set"), true, &set)
	var gen2 V2TokenGenerator
	decode(t, c.do(t, "GET", aes+"/token-generator", nil, "").ok(t, "get generator"), true, &gen2)
	var gen3 V3TokenGeneratorStatus
	decode(t, c.do(t, "POST", ec+"/activate-token-generator", nil, "").ok(t, "activate"), false, &gen3)
	var gen3full V3TokenGenerator
	decode(t, c.do(t, "GET", ec+"/token-generator", nil, "").ok(t, "v3 get generator"), false, &gen3full)
	var ecSet TokenSetResponse
	decode(t, c.do(t, "POST", ec+"/issue-tokens", V3TokenRequest{AccessTokenMinutes: 60, RefreshTokenUnlimited: true}, "").ok(t, "issue-tokens"), false, &ecSet)
	if set.AccessToken == "" || set.RefreshToken == "" || gen2.Status != "ACTIVE" || gen3.Status != "ENABLED" || gen3full.IssuedTokenCount != 0 || gen3full.EnabledDateTime == "" || ecSet.RefreshToken == "" {
		t.Fatalf("tokens: %v %+v %+v %+v", set, gen2, gen3, gen3full)
	}
	if s := fmt.Sprintf("%v %+v %s", set, set, set); strings.Contains(s, set.AccessToken) {
		t.Fatal("TokenSetResponse prints its token")
	}

	var ct CiphertextResponse
	decode(t, c.do(t, "POST", aes+"/encrypt", EncryptRequest{Plaintext: "SGVsbG8gS01T", Context: "dXNlci0xMjM="}, set.AccessToken).ok(t, "encrypt"), true, &ct)
	var pt PlaintextResponse
	decode(t, c.do(t, "POST", aes+"/decrypt", DecryptRequest{Ciphertext: ct.Ciphertext, Context: "dXNlci0xMjM="}, set.AccessToken).ok(t, "decrypt"), true, &pt)
	if pt.Plaintext != "SGVsbG8gS01T" || strings.Contains(fmt.Sprint(pt), "SGVsbG8") || strings.Contains(slog.AnyValue(pt).String(), "SGVsbG8") {
		t.Fatalf("decrypt: %q, or it prints its plaintext", pt.Plaintext)
	}
	var cts CiphertextListResponse
	decode(t, c.do(t, "POST", aes+"/encrypt", map[string]any{"plaintext": []string{"YQ==", "Yg=="}}, set.AccessToken).ok(t, "encrypt array"), true, &cts)
	var pts PlaintextListResponse
	decode(t, c.do(t, "POST", aes+"/decrypt", map[string]any{"ciphertext": cts.Ciphertext}, set.AccessToken).ok(t, "decrypt array"), true, &pts)
	if len(pts.Plaintext) != 2 || pts.Plaintext[1] != "Yg==" {
		t.Fatalf("arrays: %v", pts.Plaintext)
	}
	t3 := "/kms/v3/token/keys/" + k2.KeyTag
	var bres BatchResponse[CiphertextResponse]
	decode(t, c.do(t, "POST", t3+"/batch-encrypt", BatchEncryptRequest{Requests: []EncryptRequest{{Plaintext: "YQ=="}, {Plaintext: "Yg==", Context: "Yw=="}}}, set.AccessToken).ok(t, "batch-encrypt"), false, &bres)
	var bdec BatchResponse[PlaintextResponse]
	decode(t, c.do(t, "POST", t3+"/batch-decrypt", BatchDecryptRequest{Requests: []DecryptRequest{{Ciphertext: bres.Results["0"].Ciphertext}, {Ciphertext: bres.Results["1"].Ciphertext, Context: "Yw=="}}}, set.AccessToken).ok(t, "batch-decrypt"), false, &bdec)
	if bdec.Results["1"].Plaintext != "Yg==" {
		t.Fatalf("batch: %+v", bdec)
	}
	var ck2 V2CustomKeyResponse
	decode(t, c.do(t, "POST", aes+"/create-custom-key", CustomKeyRequest{Bits: 128, RequestPlainKey: true}, set.AccessToken).ok(t, "custom key"), true, &ck2)
	var ck3 CustomKeyResponse
	decode(t, c.do(t, "POST", t3+"/issue-custom-key", CustomKeyRequest{}, set.AccessToken).ok(t, "issue-custom-key"), false, &ck3)
	if ck2.KeyVersion != 1 || len(ck2.Plaintext) != 24 || ck3.Plaintext != "" || strings.Contains(fmt.Sprintf("%+v", ck2), ck2.Plaintext) {
		t.Fatalf("custom keys: %v %v", ck2, ck3)
	}

	var sig SignResponse
	decode(t, c.do(t, "POST", ec+"/sign", SignRequest{Data: "ZGF0YQ=="}, "").ok(t, "sign"), false, &sig)
	var ver VerifyResponse
	decode(t, c.do(t, "POST", ec+"/verify", VerifyRequest{Data: "ZGF0YQ==", Signature: sig.Signature}, "").ok(t, "verify"), false, &ver)
	var pub2 V2PublicKeyResponse
	decode(t, c.do(t, "POST", "/kms/v1/keys/"+k3.KeyTag+"/get-pub-key", V2PublicKeyRequest{KeyVersion: 1}, "").ok(t, "get-pub-key"), true, &pub2)
	var pub3 PublicKeyResponse
	decode(t, c.do(t, "GET", ec+"/versions/1/public-key", nil, "").ok(t, "public-key"), false, &pub3)
	if !ver.Valid || pub2.PublicKey != pub3.PublicKey || pub3.Version != 1 {
		t.Fatalf("sign/verify/public key: %v %+v", ver, pub3)
	}

	var memo V2MemoResponse
	decode(t, c.do(t, "PUT", aes+"/memo", V2MemoRequest{Memo: "new"}, "").ok(t, "memo"), true, &memo)
	var rot V2RotationResponse
	decode(t, c.do(t, "POST", aes+"/enable-auto-rotation", V2RotationRequest{RotationPeriod: 10}, "").ok(t, "rotation"), true, &rot)
	var rotated V2RotateResponse
	decode(t, c.do(t, "POST", aes+"/rotate", nil, "").ok(t, "rotate"), true, &rotated)
	var vlist V2VersionList
	decode(t, c.do(t, "GET", aes+"/versions", nil, "").ok(t, "versions"), true, &vlist)
	var v1 V2Version
	decode(t, c.do(t, "GET", aes+"/versions/1", nil, "").ok(t, "version"), true, &v1)
	var vstat V2VersionStatus
	decode(t, c.do(t, "POST", aes+"/versions/1/disable", nil, "").ok(t, "disable version"), true, &vstat)
	var kstat V2KeyStatus
	decode(t, c.do(t, "POST", aes+"/request-deletion", nil, "").ok(t, "request-deletion"), true, &kstat)
	if memo.Memo != "new" || rot.RotationPeriod != 10 || rotated.Version != 2 || len(vlist.VersionList) != 2 || vstat.Status != "DISABLE" || kstat.DestroyDate == nil {
		t.Fatalf("v2 management: %+v %+v %+v %+v %+v %+v", memo, rot, rotated, vlist, vstat, kstat)
	}
	var v3list V3VersionList
	decode(t, c.do(t, "GET", ec+"/versions", nil, "").ok(t, "v3 versions"), false, &v3list)
	var v3v V3Version
	decode(t, c.do(t, "POST", ec+"/versions", nil, "").ok(t, "v3 rotate"), false, &v3v)
	var v3rot V3Rotation
	decode(t, c.do(t, "PATCH", ec+"/rotation", map[string]any{"enabled": false}, "").ok(t, "v3 rotation"), false, &v3rot)
	if v3v.Version != 2 || v3rot.Enabled {
		t.Fatalf("v3 management: %+v %+v", v3v, v3rot)
	}

	var acl2 V2ACLList
	decode(t, c.do(t, "POST", "/kms/v1/keys/"+k3.KeyTag+"/acl", V2ACLRequest{IPList: []string{"10.0.0.1"}}, "").ok(t, "v2 acl add"), true, &acl2)
	var acl2s V2ACLStatus
	decode(t, c.do(t, "POST", "/kms/v1/keys/"+k3.KeyTag+"/acl/enable", nil, "").ok(t, "acl enable"), true, &acl2s)
	var acl2get V2ACL
	decode(t, c.do(t, "GET", "/kms/v1/keys/"+k3.KeyTag+"/acl", nil, "").ok(t, "acl get"), true, &acl2get)
	var acl3 V3AllowedIPs
	decode(t, c.do(t, "POST", ec+"/acl/add-allowed-ips", V3AllowedIPs{AllowedIPs: []string{"10.0.0.2"}}, "").ok(t, "v3 acl add"), false, &acl3)
	var acl3s V3ACLStatus
	decode(t, c.do(t, "PATCH", ec+"/acl", V3ACLStatus{Enabled: false}, "").ok(t, "v3 acl"), false, &acl3s)
	var acl3list V3AllowedIPList
	decode(t, c.do(t, "GET", ec+"/acl/allowed-ips", nil, "").ok(t, "v3 acl list"), false, &acl3list)
	if !acl2s.IsACLEnabled || len(acl2get.AllowedIPList) != 1 || len(acl3.AllowedIPs) != 2 || acl3s.Enabled || acl3list.TotalCount != 2 {
		t.Fatalf("acl: %+v %+v %+v %+v %+v", acl2get, acl2s, acl3, acl3s, acl3list)
	}

	// Errors decode into the error envelopes.
	var e3 V3ErrorResponse
	r := c.do(t, "POST", ec+"/encrypt", EncryptRequest{Plaintext: "!"}, "")
	if err := json.Unmarshal(r.raw, &e3); err != nil || e3.Error == nil || e3.Error.FieldErrors[0].Field != "plaintext" {
		t.Fatalf("v3 error: %v %s", err, r.raw)
	}
	var e2 V2ErrorResponse
	r = c.do(t, "GET", "/kms/v1/keys/"+strings.Repeat("0", 64), nil, "")
	if err := json.Unmarshal(r.raw, &e2); err != nil || e2.Code != "ResourceNotFound" || e2.Error.ErrorCode != "ResourceNotFound" {
		t.Fatalf("v2 error: %v %s", err, r.raw)
	}
}
