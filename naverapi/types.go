package naverapi

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// The request and response bodies of the API, as the handler reads and
// writes them (see the package documentation for each call's path). API
// 2.0 (and 1.0) answers wrap a response in V2Response; v3 answers are the
// response itself. Members are listed in the order the handler writes
// them. Dates are epoch milliseconds on API 2.0 (null when unset) and
// RFC 3339 UTC with milliseconds on v3 (absent when unset).
//
// Response types that carry a plaintext, a data key or a token redact it
// from String, Format and LogValue; only JSON encoding writes it.

// V2Response is the API 2.0 success envelope: {"code":"SUCCESS","data":…}.
type V2Response struct {
	Code string `json:"code"`
	Data any    `json:"data"`
}

// V2ErrorResponse is the API 2.0 error envelope. NAVER does not show its
// API 2.0 error body; this one carries the error code where "SUCCESS"
// would be, so a client that tests code sees the failure, plus the v3
// error object and, for an array input, the failures by item index.
type V2ErrorResponse struct {
	Code     string                `json:"code"`
	Msg      string                `json:"msg"`
	Data     any                   `json:"data"` // always null
	Error    *ErrorBody            `json:"error"`
	Failures map[string]*ErrorBody `json:"failures,omitempty"`
}

// V3ErrorResponse is the Ncloud-standard error envelope: exactly one of
// Error and Failures (a batch's item failures by index, "0", "1", …).
type V3ErrorResponse struct {
	Error    *ErrorBody            `json:"error,omitempty"`
	Failures map[string]*ErrorBody `json:"failures,omitempty"`
}

// ErrorBody is NAVER's error object: a code, its fixed message, a detail
// that never holds a secret, and the fields that were refused.
type ErrorBody struct {
	ErrorCode   string       `json:"errorCode"`
	Message     string       `json:"message"`
	Detail      string       `json:"detail,omitempty"`
	FieldErrors []FieldError `json:"fieldErrors,omitempty"`
}

// FieldError names one refused request member ("requests[3].ciphertext")
// and why; it never quotes the value.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Cipher calls.

// EncryptRequest is the body of encrypt: base64 plaintext (at most 32,768
// bytes) and optional base64 context (at most 50 bytes; required on
// convergent keys). On API 2.0 plaintext may also be an array of 1..100
// strings sharing one context, answered as an array.
type EncryptRequest struct {
	Plaintext string `json:"plaintext"`
	Context   string `json:"context,omitempty"`
}

// DecryptRequest is the body of decrypt and re-encrypt: a ciphertext
// ("ncpkms:v{N}:<base64>") and the context it was encrypted with. On API
// 2.0 ciphertext may also be an array of 1..100 strings.
type DecryptRequest struct {
	Ciphertext string `json:"ciphertext"`
	Context    string `json:"context,omitempty"`
}

// BatchEncryptRequest is the body of v3 batch-encrypt: 1..100 items, each
// with its own context.
type BatchEncryptRequest struct {
	Requests []EncryptRequest `json:"requests"`
}

// BatchDecryptRequest is the body of v3 batch-decrypt and
// batch-re-encrypt.
type BatchDecryptRequest struct {
	Requests []DecryptRequest `json:"requests"`
}

// CiphertextResponse answers encrypt and re-encrypt.
type CiphertextResponse struct {
	Ciphertext string `json:"ciphertext"`
}

// CiphertextListResponse answers API 2.0 encrypt and re-encrypt of an
// array, in request order.
type CiphertextListResponse struct {
	Ciphertext []string `json:"ciphertext"`
}

// PlaintextResponse answers decrypt: the base64 plaintext.
type PlaintextResponse struct {
	Plaintext string `json:"plaintext"`
}

// PlaintextListResponse answers API 2.0 decrypt of an array.
type PlaintextListResponse struct {
	Plaintext []string `json:"plaintext"`
}

// BatchResponse answers the v3 batch calls: a result per item index ("0",
// "1", …), CiphertextResponse or PlaintextResponse.
type BatchResponse[T any] struct {
	Results map[string]T `json:"results"`
}

// CustomKeyRequest is the body of create-custom-key (API 2.0) and
// issue-custom-key (v3); an empty body asks for a 256-bit key without its
// plaintext.
type CustomKeyRequest struct {
	Bits            int    `json:"bits,omitempty"` // 128, 256 or 512
	RequestPlainKey bool   `json:"requestPlainKey,omitempty"`
	Context         string `json:"context,omitempty"`
}

// V2CustomKeyResponse answers API 2.0 create-custom-key: the wrapped data
// key, the version that wrapped it ("key_version", as NAVER writes it) and
// the base64 data key when requested.
type V2CustomKeyResponse struct {
	Ciphertext string `json:"ciphertext"`
	KeyVersion uint32 `json:"key_version"`
	Plaintext  string `json:"plaintext,omitempty"`
}

// CustomKeyResponse answers v3 issue-custom-key.
type CustomKeyResponse struct {
	Ciphertext string `json:"ciphertext"`
	KeyVersion uint32 `json:"keyVersion"`
	Plaintext  string `json:"plaintext,omitempty"`
}

// SignRequest is the body of sign: base64 data, at most 8,192 bytes.
type SignRequest struct {
	Data string `json:"data"`
}

// SignResponse answers sign: "ncpkms:v{N}:<base64>".
type SignResponse struct {
	Signature string `json:"signature"`
}

// VerifyRequest is the body of verify.
type VerifyRequest struct {
	Data      string `json:"data"`
	Signature string `json:"signature"`
}

// VerifyResponse answers verify; a signature that does not match is
// valid:false, not an error.
type VerifyResponse struct {
	Valid bool `json:"valid"`
}

// V2PublicKeyRequest is the body of API 2.0 get-pub-key: a version
// (1..100), or none for the current one.
type V2PublicKeyRequest struct {
	KeyVersion int `json:"keyVersion,omitempty"`
}

// V2PublicKeyResponse answers API 2.0 get-pub-key: PEM, SubjectPublicKeyInfo.
type V2PublicKeyResponse struct {
	PublicKey string `json:"publicKey"`
}

// PublicKeyResponse answers v3 GET …/versions/{version}/public-key.
type PublicKeyResponse struct {
	KeyTag    string `json:"keyTag"`
	PublicKey string `json:"publicKey"`
	Version   uint32 `json:"version"`
}

// Tokens.

// V2TokenSetRequest is the body of API 2.0 token-set (POST: issue with
// account authentication; PUT: renew with a refresh token). Each lifetime
// is an integer or a string of digits, 1..17,520 hours, or exactly "UL"
// for unlimited; absent means 72 hours (access) and 2,160 (refresh).
type V2TokenSetRequest struct {
	AccessTokenHours  any `json:"accessTokenHours,omitempty"`
	RefreshTokenHours any `json:"refreshTokenHours,omitempty"`
}

// V3TokenRequest is the body of v3 issue-tokens, reissue-tokens and
// issue-access-token (which reads the access members only): minutes,
// 1..1,051,200, or unlimited, never both; absent means 4,320 minutes
// (access) and 129,600 (refresh).
type V3TokenRequest struct {
	AccessTokenMinutes    int  `json:"accessTokenMinutes,omitempty"`
	AccessTokenUnlimited  bool `json:"accessTokenUnlimited,omitempty"`
	RefreshTokenMinutes   int  `json:"refreshTokenMinutes,omitempty"`
	RefreshTokenUnlimited bool `json:"refreshTokenUnlimited,omitempty"`
}

// TokenSetResponse answers every token issuance; RefreshToken is absent
// from issue-access-token.
type TokenSetResponse struct {
	RefreshToken string `json:"refreshToken,omitempty"`
	AccessToken  string `json:"accessToken"`
}

// API 2.0 management.

// V2CreateKeyRequest is the body of POST /kms/v1/keys. keyName, keyType
// (AES256, RSA2048, ECDSA), isAutoRotation and protectionType (BASIC) are
// required.
type V2CreateKeyRequest struct {
	KeyName        string `json:"keyName"`
	KeyType        string `json:"keyType"`
	Memo           string `json:"memo,omitempty"`
	IsConvergent   bool   `json:"isConvergent,omitempty"`
	IsAutoRotation bool   `json:"isAutoRotation"`
	RotationPeriod int    `json:"rotationPeriod,omitempty"` // days, 1..730
	ProtectionType string `json:"protectionType"`
}

// V2Key is a key in API 2.0 answers: the documented list fields (without
// the numeric keyId, which pocketkms does not have) plus the key's
// settings. Status is ENABLE, DISABLE or REVOKE.
type V2Key struct {
	KeyTag           string `json:"keyTag"`
	KeyName          string `json:"keyName"`
	KeyType          string `json:"keyType"`
	Status           string `json:"status"`
	ProtectionType   string `json:"protectionType"`
	IsConvergent     bool   `json:"isConvergent"`
	Memo             string `json:"memo"`
	IsAutoRotation   bool   `json:"isAutoRotation"`
	RotationPeriod   int    `json:"rotationPeriod"`
	NextRotationDate *int64 `json:"nextRotationDate"`
	CurrentVersion   uint32 `json:"currentVersion"`
	RegisterDate     *int64 `json:"registerDate"`
	StatusDate       *int64 `json:"statusDate"`
	DestroyDate      *int64 `json:"destroyDate"`
}

// V2KeyList answers GET /kms/v1/keys; page numbers count from 1.
type V2KeyList struct {
	CurrentPageNo int      `json:"currentPageNo"`
	KeyList       []*V2Key `json:"keyList"`
	TotalCount    int      `json:"totalCount"`
	TotalPageNo   int      `json:"totalPageNo"`
}

// V2KeyStatus answers enable, disable, request-deletion and
// cancel-deletion; DestroyDate is there while the key is REVOKE.
type V2KeyStatus struct {
	DestroyDate *int64 `json:"destroyDate,omitempty"`
	KeyTag      string `json:"keyTag"`
	Status      string `json:"status"`
	StatusDate  *int64 `json:"statusDate"`
}

// V2RotateResponse answers rotate: the new version.
type V2RotateResponse struct {
	KeyTag      string `json:"keyTag"`
	RotatedDate *int64 `json:"rotatedDate"`
	Version     uint32 `json:"version"`
}

// V2RotationRequest is the body of rotation-period (required) and
// enable-auto-rotation (optional): days, 1..730.
type V2RotationRequest struct {
	RotationPeriod int `json:"rotationPeriod,omitempty"`
}

// V2RotationResponse answers rotation-period, enable-auto-rotation and
// disable-auto-rotation.
type V2RotationResponse struct {
	IsAutoRotation   bool   `json:"isAutoRotation"`
	KeyTag           string `json:"keyTag"`
	NextRotationDate *int64 `json:"nextRotationDate"`
	RotationPeriod   int    `json:"rotationPeriod"`
}

// V2MemoRequest is the body of PUT memo (0..100 characters; required).
type V2MemoRequest struct {
	Memo string `json:"memo"`
}

// V2MemoResponse answers PUT memo.
type V2MemoResponse struct {
	KeyTag string `json:"keyTag"`
	Memo   string `json:"memo"`
}

// V2Version is a version in API 2.0 answers; Status is ENABLE or DISABLE.
type V2Version struct {
	IsCurrent    bool   `json:"isCurrent"`
	KeyTag       string `json:"keyTag"`
	RegisterDate *int64 `json:"registerDate"`
	Status       string `json:"status"`
	Version      uint32 `json:"version"`
}

// V2VersionList answers GET versions.
type V2VersionList struct {
	KeyTag      string      `json:"keyTag"`
	VersionList []V2Version `json:"versionList"`
}

// V2VersionStatus answers versions/{version}/enable and /disable.
type V2VersionStatus struct {
	KeyTag     string `json:"keyTag"`
	Status     string `json:"status"`
	StatusDate *int64 `json:"statusDate"`
	Version    uint32 `json:"version"`
}

// V2TokenGenerator answers GET token-generator: Status ACTIVE or
// INACTIVE, TokenGeneratorID null while inactive, IssuedTokenCount the
// tokens ever issued (a set counts 2).
type V2TokenGenerator struct {
	DisabledDate     *int64  `json:"disabledDate"`
	EnabledDate      *int64  `json:"enabledDate"`
	IssuedTokenCount uint64  `json:"issuedTokenCount"`
	Status           string  `json:"status"`
	TokenGeneratorID *string `json:"tokenGeneratorId"`
}

// V2ACLRequest is the body of POST acl (add) and DELETE acl (remove):
// 1..100 entries.
type V2ACLRequest struct {
	IPList []string `json:"ipList"`
}

// V2ACLStatus answers acl/enable and acl/disable.
type V2ACLStatus struct {
	IsACLEnabled bool   `json:"isAclEnabled"`
	KeyTag       string `json:"keyTag"`
}

// V2ACLList answers POST and DELETE acl: the whole list after the change.
type V2ACLList struct {
	AllowedIPList []string `json:"allowedIpList"`
	KeyTag        string   `json:"keyTag"`
}

// V2ACL answers GET acl.
type V2ACL struct {
	AllowedIPList []string `json:"allowedIpList"`
	IsACLEnabled  bool     `json:"isAclEnabled"`
	KeyTag        string   `json:"keyTag"`
}

// v3 management.

// V3CreateKeyRequest is the body of POST /kms/v3/keys; keyName, keyType
// and rotation (with enabled) are required, protectionType is BASIC when
// given.
type V3CreateKeyRequest struct {
	KeyName        string            `json:"keyName"`
	KeyType        string            `json:"keyType"`
	ProtectionType string            `json:"protectionType,omitempty"`
	Memo           string            `json:"memo,omitempty"`
	Convergent     bool              `json:"convergent,omitempty"`
	Rotation       V3RotationRequest `json:"rotation"`
}

// V3RotationRequest is the rotation member of V3CreateKeyRequest.
type V3RotationRequest struct {
	Enabled    bool `json:"enabled"`
	PeriodDays int  `json:"periodDays,omitempty"`
}

// V3Rotation is a key's auto-rotation setting in v3 answers, and the
// answer of PATCH rotation.
type V3Rotation struct {
	Enabled              bool   `json:"enabled"`
	PeriodDays           int    `json:"periodDays"`
	NextRotationDateTime string `json:"nextRotationDateTime,omitempty"`
}

// V3Key is a key in v3 answers. NAVER shows keyTag, keyName, nrn, keyType
// and currentVersion; the other names are pocketkms's. Status is ENABLED,
// DISABLED or REVOKED; Memo is null when empty.
type V3Key struct {
	KeyTag                   string     `json:"keyTag"`
	KeyName                  string     `json:"keyName"`
	NRN                      string     `json:"nrn"`
	KeyType                  string     `json:"keyType"`
	ProtectionType           string     `json:"protectionType"`
	Convergent               bool       `json:"convergent"`
	Status                   string     `json:"status"`
	Memo                     *string    `json:"memo"`
	CurrentVersion           uint32     `json:"currentVersion"`
	Rotation                 V3Rotation `json:"rotation"`
	CreatedDateTime          string     `json:"createdDateTime"`
	StatusUpdatedDateTime    string     `json:"statusUpdatedDateTime,omitempty"`
	ScheduledDestroyDateTime string     `json:"scheduledDestroyDateTime,omitempty"`
}

// V3KeyList answers GET /kms/v3/keys, newest first; pageNo counts from 0.
type V3KeyList struct {
	Keys       []*V3Key `json:"keys"`
	PageNo     int      `json:"pageNo"`
	PageSize   int      `json:"pageSize"`
	TotalCount int      `json:"totalCount"`
}

// V3Version is a version in v3 answers.
type V3Version struct {
	Version         uint32 `json:"version"`
	Status          string `json:"status"`
	Current         bool   `json:"current"`
	CreatedDateTime string `json:"createdDateTime"`
}

// V3VersionList answers GET versions, oldest first.
type V3VersionList struct {
	PageNo     int         `json:"pageNo"`
	PageSize   int         `json:"pageSize"`
	TotalCount int         `json:"totalCount"`
	Versions   []V3Version `json:"versions"`
}

// V3TokenGeneratorStatus answers activate-, rotate- and
// deactivate-token-generator: Status ENABLED (with the id) or DISABLED.
type V3TokenGeneratorStatus struct {
	Status           string `json:"status"`
	TokenGeneratorID string `json:"tokenGeneratorId,omitempty"`
}

// V3TokenGenerator answers GET token-generator (a pocketkms addition).
type V3TokenGenerator struct {
	DisabledDateTime string `json:"disabledDateTime,omitempty"`
	EnabledDateTime  string `json:"enabledDateTime,omitempty"`
	IssuedTokenCount uint64 `json:"issuedTokenCount"`
	Status           string `json:"status"`
	TokenGeneratorID string `json:"tokenGeneratorId,omitempty"`
}

// V3ACLStatus is the body and the answer of PATCH acl.
type V3ACLStatus struct {
	Enabled bool `json:"enabled"`
}

// V3AllowedIPs is the body of acl/add-allowed-ips and
// acl/remove-allowed-ips (1..100 entries) and their answer (the whole
// list after the change).
type V3AllowedIPs struct {
	AllowedIPs []string `json:"allowedIps"`
}

// V3AllowedIPList answers GET acl/allowed-ips, sorted by string.
type V3AllowedIPList struct {
	AllowedIPs []string `json:"allowedIps"`
	PageNo     int      `json:"pageNo"`
	PageSize   int      `json:"pageSize"`
	TotalCount int      `json:"totalCount"`
}

// Redaction of the response types that carry secrets.

func redacted(name string, fields ...string) string {
	s := "naverapi." + name + "{"
	for i := 0; i+1 < len(fields); i += 2 {
		if i > 0 {
			s += " "
		}
		s += fields[i] + ":" + fields[i+1]
	}
	return s + "}"
}

// String describes the response without the plaintext.
func (r PlaintextResponse) String() string {
	return redacted("PlaintextResponse", "Plaintext", "[REDACTED]")
}

// Format writes String for every verb.
func (r PlaintextResponse) Format(f fmt.State, _ rune) { io.WriteString(f, r.String()) }

// LogValue logs nothing of the plaintext.
func (r PlaintextResponse) LogValue() slog.Value { return slog.StringValue(r.String()) }

// String describes the response without the plaintexts.
func (r PlaintextListResponse) String() string {
	return redacted("PlaintextListResponse", "Plaintext", "[REDACTED "+strconv.Itoa(len(r.Plaintext))+" items]")
}

// Format writes String for every verb.
func (r PlaintextListResponse) Format(f fmt.State, _ rune) { io.WriteString(f, r.String()) }

// LogValue logs nothing of the plaintexts.
func (r PlaintextListResponse) LogValue() slog.Value { return slog.StringValue(r.String()) }

// String describes the response without the data key.
func (r V2CustomKeyResponse) String() string {
	return redacted("V2CustomKeyResponse", "Ciphertext", strconv.Quote(r.Ciphertext),
		"KeyVersion", strconv.FormatUint(uint64(r.KeyVersion), 10), "Plaintext", "[REDACTED]")
}

// Format writes String for every verb.
func (r V2CustomKeyResponse) Format(f fmt.State, _ rune) { io.WriteString(f, r.String()) }

// LogValue logs nothing of the data key.
func (r V2CustomKeyResponse) LogValue() slog.Value { return slog.StringValue(r.String()) }

// String describes the response without the data key.
func (r CustomKeyResponse) String() string {
	return redacted("CustomKeyResponse", "Ciphertext", strconv.Quote(r.Ciphertext),
		"KeyVersion", strconv.FormatUint(uint64(r.KeyVersion), 10), "Plaintext", "[REDACTED]")
}

// Format writes String for every verb.
func (r CustomKeyResponse) Format(f fmt.State, _ rune) { io.WriteString(f, r.String()) }

// LogValue logs nothing of the data key.
func (r CustomKeyResponse) LogValue() slog.Value { return slog.StringValue(r.String()) }

// String describes the response without the tokens.
func (r TokenSetResponse) String() string {
	return redacted("TokenSetResponse", "RefreshToken", "[REDACTED]", "AccessToken", "[REDACTED]")
}

// Format writes String for every verb.
func (r TokenSetResponse) Format(f fmt.State, _ rune) { io.WriteString(f, r.String()) }

// LogValue logs nothing of the tokens.
func (r TokenSetResponse) LogValue() slog.Value { return slog.StringValue(r.String()) }
