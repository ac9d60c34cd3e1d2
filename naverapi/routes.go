package naverapi

import (
	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/token"
)

var (
	on  = func() *bool { b := true; return &b }()
	off = func() *bool { b := false; return &b }()
)

// register registers every endpoint; this table is the API (see doc.go).
func (h *Handler) register() {
	// API 2.0 cipher calls: the same paths serve a token (token plane) or
	// account authentication (trusted plane), told apart by the headers.
	const k2 = "/kms/v1/keys/{keyTag}"
	for _, r := range []struct {
		path string
		perm token.Permission // what a token needs
		h    handler
	}{
		{"/encrypt", token.PermEncrypt, textHandler(opEncrypt)},
		{"/decrypt", token.PermDecrypt, textHandler(opDecrypt)},
		{"/re-encrypt", token.PermReEncrypt, textHandler(opReEncrypt)},
		{"/reencrypt", token.PermReEncrypt, textHandler(opReEncrypt)},
		{"/create-custom-key", token.PermCreateCustomKey, customKey},
		{"/sign", token.PermSign, sign},
		{"/verify", token.PermVerify, verify},
		{"/get-pub-key", token.PermGetPublicKey, v2PublicKey},
	} {
		h.handle("POST "+k2+r.path, v2, either(r.perm), r.h)
	}
	h.handle("PUT "+k2+"/token-set", v2, refreshToken, reissueTokens)

	// API 1.0 paths as NAVER's API 2.0 overview shows them on the same host
	// (account authentication, signature v2).
	const k1 = "/keys/v2/{keyTag}"
	for _, r := range []struct {
		path string
		h    handler
	}{
		{"/encrypt", textHandler(opEncrypt)},
		{"/decrypt", textHandler(opDecrypt)},
		{"/reencrypt", textHandler(opReEncrypt)},
		{"/createCustomKey", customKey},
		{"/sign", sign},
		{"/verify", verify},
	} {
		h.handle("POST "+k1+r.path, v2, account, r.h)
	}

	// API 2.0 management (account authentication).
	for _, r := range []struct {
		pattern string
		h       handler
	}{
		{"POST /kms/v1/keys", v2CreateKey},
		{"GET /kms/v1/keys", v2ListKeys},
		{"GET " + k2, v2GetKey},
		{"POST " + k2 + "/enable", v2KeyState((*kms.Engine).EnableKey)},
		{"POST " + k2 + "/disable", v2KeyState((*kms.Engine).DisableKey)},
		{"POST " + k2 + "/request-deletion", v2KeyState((*kms.Engine).RequestKeyDeletion)},
		{"POST " + k2 + "/cancel-deletion", v2KeyState((*kms.Engine).CancelKeyDeletion)},
		{"POST " + k2 + "/rotate", v2Rotate},
		{"PUT " + k2 + "/rotation-period", v2Rotation(nil, true)},
		{"POST " + k2 + "/enable-auto-rotation", v2Rotation(on, false)},
		{"POST " + k2 + "/disable-auto-rotation", v2Rotation(off, false)},
		{"PUT " + k2 + "/memo", v2Memo},
		{"GET " + k2 + "/versions", v2ListVersions},
		{"GET " + k2 + "/versions/{version}", v2GetVersion},
		{"POST " + k2 + "/versions/{version}/enable", v2VersionState((*kms.Engine).EnableKeyVersion)},
		{"POST " + k2 + "/versions/{version}/disable", v2VersionState((*kms.Engine).DisableKeyVersion)},
		{"POST " + k2 + "/token-generator", v2GeneratorChange((*kms.Engine).ActivateTokenGenerator)},
		{"PUT " + k2 + "/token-generator", v2GeneratorChange((*kms.Engine).RotateTokenGenerator)},
		{"DELETE " + k2 + "/token-generator", v2GeneratorChange((*kms.Engine).DeactivateTokenGenerator)},
		{"GET " + k2 + "/token-generator", v2GetGenerator},
		{"POST " + k2 + "/token-set", issueTokens},
		{"POST " + k2 + "/acl/enable", v2ACLEnabled(true)},
		{"POST " + k2 + "/acl/disable", v2ACLEnabled(false)},
		{"POST " + k2 + "/acl", v2ACLList((*kms.Engine).AddAllowedIPs, true)},
		{"DELETE " + k2 + "/acl", v2ACLList((*kms.Engine).RemoveAllowedIPs, false)},
		{"GET " + k2 + "/acl", v2GetACL},
	} {
		h.handle(r.pattern, v2, account, r.h)
	}

	// v3 cipher calls, the same on both planes.
	for _, plane := range []struct {
		prefix string
		how    func(token.Permission) auth
	}{
		{"/kms/v3/keys/{keyTag}", func(token.Permission) auth { return account }},
		{"/kms/v3/token/keys/{keyTag}", accessToken},
	} {
		for _, r := range []struct {
			path string
			perm token.Permission
			h    handler
		}{
			{"/encrypt", token.PermEncrypt, textHandler(opEncrypt)},
			{"/decrypt", token.PermDecrypt, textHandler(opDecrypt)},
			{"/re-encrypt", token.PermReEncrypt, textHandler(opReEncrypt)},
			{"/batch-encrypt", token.PermEncrypt, batchHandler(opEncrypt)},
			{"/batch-decrypt", token.PermDecrypt, batchHandler(opDecrypt)},
			{"/batch-re-encrypt", token.PermReEncrypt, batchHandler(opReEncrypt)},
			{"/issue-custom-key", token.PermCreateCustomKey, customKey},
			{"/sign", token.PermSign, sign},
			{"/verify", token.PermVerify, verify},
		} {
			h.handle("POST "+plane.prefix+r.path, v3, plane.how(r.perm), r.h)
		}
		h.handle("GET "+plane.prefix+"/versions/{version}/public-key", v3, plane.how(token.PermGetPublicKey), v3PublicKey)
	}
	const t3 = "/kms/v3/token/keys/{keyTag}"
	h.handle("POST "+t3+"/reissue-tokens", v3, refreshToken, reissueTokens)
	h.handle("POST "+t3+"/issue-access-token", v3, refreshToken, issueAccessToken)

	// v3 management (account authentication).
	const k3 = "/kms/v3/keys/{keyTag}"
	for _, r := range []struct {
		pattern string
		h       handler
	}{
		{"POST /kms/v3/keys", v3CreateKey},
		{"GET /kms/v3/keys", v3ListKeys},
		{"GET " + k3, v3GetKey},
		{"PATCH " + k3, v3UpdateKey},
		{"PATCH " + k3 + "/rotation", v3UpdateRotation},
		{"POST " + k3 + "/request-deletion", v3KeyChange((*kms.Engine).RequestKeyDeletion)},
		{"POST " + k3 + "/cancel-deletion", v3KeyChange((*kms.Engine).CancelKeyDeletion)},
		{"GET " + k3 + "/versions", v3ListVersions},
		{"POST " + k3 + "/versions", v3CreateVersion},
		{"GET " + k3 + "/versions/{version}", v3GetVersion},
		{"PATCH " + k3 + "/versions/{version}", v3UpdateVersion},
		{"POST " + k3 + "/issue-tokens", issueTokens},
		{"POST " + k3 + "/activate-token-generator", v3GeneratorChange((*kms.Engine).ActivateTokenGenerator)},
		{"POST " + k3 + "/rotate-token-generator", v3GeneratorChange((*kms.Engine).RotateTokenGenerator)},
		{"POST " + k3 + "/deactivate-token-generator", v3GeneratorChange((*kms.Engine).DeactivateTokenGenerator)},
		{"GET " + k3 + "/token-generator", v3GetGenerator},
		{"PATCH " + k3 + "/acl", v3UpdateACL},
		{"POST " + k3 + "/acl/add-allowed-ips", v3ACLList((*kms.Engine).AddAllowedIPs, true)},
		{"POST " + k3 + "/acl/remove-allowed-ips", v3ACLList((*kms.Engine).RemoveAllowedIPs, false)},
		{"GET " + k3 + "/acl/allowed-ips", v3ListACL},
		{"GET " + k3 + "/history", v3KeyHistory}, // pocketkms extension (history.go)
	} {
		h.handle(r.pattern, v3, account, r.h)
	}
}
