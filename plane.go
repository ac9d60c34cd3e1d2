package kms

import (
	"context"

	"github.com/pocketkms/kms/token"
)

// Cipher is the method set both planes offer: NAVER's cipher calls, single
// and batch, and public keys. *Engine implements it as the trusted plane
// (the embedding application, NAVER's account-authenticated API) and
// TokenClient as the token plane (a caller presenting a token from an IP
// address, NAVER's x-ncp-ocapi-token API), so a front end — an HTTP API
// such as package naverapi, an RPC service — is written once against
// Cipher and handed whichever plane authenticated the caller.
//
// Every method returns a *Error on failure, matching its class through
// errors.Is: ErrKeyNotFound, ErrKeyNotEnabled, ErrWrongKeyType,
// ErrInvalidArgument, ErrVersionNotFound, ErrVersionDisabled,
// ErrDecryptionFailed, ErrClosed and, on the token plane only, the
// authentication classes in TokenClient's order of checks
// (ErrAccessDenied, ErrTokenInvalid, ErrTokenExpired, ErrPermissionDenied,
// ErrRateLimited). Batch methods report item failures as a *BatchError.
// Verify answers (false, nil) for a well-formed signature that does not
// match.
type Cipher interface {
	// Encrypt is Engine.Encrypt.
	Encrypt(ctx context.Context, keyTag string, plaintext, encCtx []byte) (string, error)
	// Decrypt is Engine.Decrypt.
	Decrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) ([]byte, error)
	// ReEncrypt is Engine.ReEncrypt.
	ReEncrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) (string, error)
	// CreateCustomKey is Engine.CreateCustomKey.
	CreateCustomKey(ctx context.Context, keyTag string, req CustomKeyRequest) (*CustomKey, error)
	// Sign is Engine.Sign.
	Sign(ctx context.Context, keyTag string, data []byte) (string, error)
	// Verify is Engine.Verify.
	Verify(ctx context.Context, keyTag string, data []byte, signature string) (bool, error)
	// GetPublicKey is Engine.GetPublicKey.
	GetPublicKey(ctx context.Context, keyTag string, version uint32) (string, error)
	// BatchEncrypt is Engine.BatchEncrypt.
	BatchEncrypt(ctx context.Context, keyTag string, items []EncryptItem) ([]string, error)
	// BatchDecrypt is Engine.BatchDecrypt.
	BatchDecrypt(ctx context.Context, keyTag string, items []DecryptItem) ([][]byte, error)
	// BatchReEncrypt is Engine.BatchReEncrypt.
	BatchReEncrypt(ctx context.Context, keyTag string, items []DecryptItem) ([]string, error)
}

var (
	_ Cipher = (*Engine)(nil)
	_ Cipher = TokenClient{}
)

// Authorize runs the token plane's checks for a call on keyTag without
// making one: the Engine is open, the caller's address passes the key's
// IP allow-list, the token is valid for the key and of kind (token.Access
// for cipher calls, token.Refresh for renewal), an access token carries
// perm (ignored for a refresh token), and the key is ENABLED — checks 1–5
// and 7 of TokenClient, in that order, with the same errors. It spends
// nothing from the key's rate limit and runs no operation. A verified
// token is cached as by any call, so the call that follows pays only a
// cache hit.
//
// A front end calls it before it reads a request body, so that a caller
// who cannot authenticate costs no more than a refusal and learns nothing
// from the validation of its arguments (package naverapi does). The call
// itself checks everything again: Authorize decides nothing on its own.
// A context that has ended fails it with ErrCanceled, as every call.
func (c TokenClient) Authorize(ctx context.Context, keyTag string, kind token.Kind, perm token.Permission) error {
	const op = "authorize"
	if err := c.e.enter(ctx, op); err != nil {
		return err
	}
	defer c.e.leave()
	start := c.e.startTime()
	_, _, err := c.auth(op, keyTag, kind, perm, 0)
	if err != nil {
		// A refusal here is the only answer the caller gets (a front end
		// stops), so it is audited; a pass is not, as the call follows.
		_, err = endToken(c, ctx, op, keyTag, nil, nil, start, struct{}{}, err)
	}
	return err
}
