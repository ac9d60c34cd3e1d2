// Package gocloud is a gocloud.dev/secrets driver for pocketkms: a
// *secrets.Keeper that encrypts and decrypts with a pocketkms key.
//
// Start with [OpenKeeper] for a key of an Engine or a token client, or
// register a [URLOpener] holding your Engine to open "pocketkms://<keyTag>"
// URLs with secrets.OpenKeeper:
//
//	secrets.DefaultURLMux().RegisterKeeper(gocloud.Scheme, &gocloud.URLOpener{Engine: e})
//	keeper, err := secrets.OpenKeeper(ctx, "pocketkms://"+keyTag)
//	defer keeper.Close()
//	ct, err := keeper.Encrypt(ctx, []byte("database password"))
//
// The package registers no opener itself: an opener needs the Engine,
// which only the embedding program has.
//
// # URLs
//
// A URL is exactly "<scheme>://<keyTag>": the key tag is the 64 lowercase
// hexadecimal characters of a key, and there is no user, port, path,
// query parameter or fragment. The scheme is the one the opener is
// registered under, usually [Scheme]; register several URLOpeners under
// different schemes to serve several Engines.
//
// # Ciphertexts
//
// A ciphertext is the Engine's own, as bytes: "ncpkms:v{N}:<base64>".
// Engine.Decrypt reads what the Keeper wrote and the Keeper reads what
// Engine.Encrypt wrote, and Engine.ReEncrypt moves a secret to the key's
// current version. Decrypt uses the version the ciphertext names.
//
// # Errors
//
// Errors carry gcerrors codes mapped from the kms sentinels (see
// [ErrorCode]): kms.ErrKeyNotFound is NotFound, a refused token or
// permission PermissionDenied, kms.ErrRateLimited ResourceExhausted, a
// malformed or undecryptable ciphertext InvalidArgument, and so on.
// keeper.ErrorAs (and errors.As) reach the *kms.Error underneath.
//
// # Security
//
// The Keeper holds no key material and no secret beyond what its Client
// holds (a TokenClient's token, which it never prints); every operation
// is an Engine call, checked like any other. Use a non-convergent AES256
// key: AES-256-GCM with the key tag and version authenticated.
//
// # Limitations
//
// gocloud's Keeper has no associated data and no encryption context, so
// convergent keys, which need a context, cannot be used (Encrypt fails
// with InvalidArgument; the URL opener refuses them). Plaintexts are the
// Engine's: 1..32,768 bytes for AES256 (an empty secret is refused), and
// 1..190 bytes for an RSA2048 key, which also works (RSA-OAEP) but
// authenticates nothing and should only be used to receive secrets
// encrypted with its public key. The Keeper does not own the Engine:
// closing the Keeper leaves it open.
package gocloud

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"reflect"

	"gocloud.dev/gcerrors"
	"gocloud.dev/secrets"

	"github.com/pocketkms/kms"
)

// Scheme is the URL scheme to register a URLOpener under.
const Scheme = "pocketkms"

// Client is the part of pocketkms the Keeper uses: *kms.Engine (the
// trusted plane) and kms.TokenClient (the token plane) implement it.
type Client interface {
	// Encrypt is kms.Engine.Encrypt.
	Encrypt(ctx context.Context, keyTag string, plaintext, encCtx []byte) (string, error)
	// Decrypt is kms.Engine.Decrypt.
	Decrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) ([]byte, error)
}

var (
	_ Client = (*kms.Engine)(nil)
	_ Client = kms.TokenClient{}
)

// OpenKeeper returns a *secrets.Keeper for the key keyTag of c: a
// *kms.Engine, or a kms.TokenClient whose token has the Encrypt and
// Decrypt permissions. As with gocloud's other drivers nothing is checked
// until the first call. Close the Keeper when done; that does not close
// the Engine.
func OpenKeeper(c Client, keyTag string) *secrets.Keeper {
	return secrets.NewKeeper(&keeper{c: c, keyTag: keyTag})
}

// URLOpener opens "pocketkms://<keyTag>" URLs (see the package
// documentation for the grammar) on an Engine. Register it with
// secrets.URLMux.RegisterKeeper.
type URLOpener struct {
	// Engine is the pocketkms Engine whose keys the URLs name. Required.
	Engine *kms.Engine
}

// OpenKeeperURL opens the Keeper a URL names. It fails with
// kms.ErrInvalidArgument for a URL that is not exactly
// "<scheme>://<keyTag>" or an opener without an Engine, with the Engine's
// error for a key it cannot read (kms.ErrKeyNotFound), and with
// kms.ErrWrongKeyType for a key that cannot encrypt without a context:
// only non-convergent AES256 keys and RSA2048 keys can.
func (o *URLOpener) OpenKeeperURL(ctx context.Context, u *url.URL) (*secrets.Keeper, error) {
	const op = "open keeper url"
	if o.Engine == nil {
		return nil, newErr(op, "", kms.ErrInvalidArgument, "the URLOpener has no Engine")
	}
	tag := u.Host
	if !validTag(tag) || u.String() != u.Scheme+"://"+tag {
		return nil, newErr(op, "", kms.ErrInvalidArgument, "a URL is \"<scheme>://<keyTag>\" with a 64-character lowercase hex key tag and nothing else")
	}
	k, err := o.Engine.GetKey(ctx, tag)
	if err != nil {
		return nil, err
	}
	if k.Convergent || (k.Type != kms.AES256 && k.Type != kms.RSA2048) {
		return nil, newErr(op, tag, kms.ErrWrongKeyType, "a Keeper needs a non-convergent AES256 key (or an RSA2048 key)")
	}
	return OpenKeeper(o.Engine, tag), nil
}

func validTag(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// newErr returns a *kms.Error of kind kms.ErrInvalidArgument or
// kms.ErrWrongKeyType, whose NAVER code and status are the same.
func newErr(op, tag string, kind error, detail string) *kms.Error {
	return &kms.Error{Op: op, KeyTag: tag, Code: "InvalidParameter", Status: http.StatusBadRequest, Kind: kind, Detail: detail}
}

// keeper implements driver.Keeper.
type keeper struct {
	c      Client
	keyTag string
}

// Encrypt encrypts with the key's current version.
func (k *keeper) Encrypt(ctx context.Context, plaintext []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ct, err := k.c.Encrypt(ctx, k.keyTag, plaintext, nil)
	if err != nil {
		return nil, err
	}
	return []byte(ct), nil
}

// Decrypt decrypts with the version the ciphertext names.
func (k *keeper) Decrypt(ctx context.Context, ciphertext []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return k.c.Decrypt(ctx, k.keyTag, string(ciphertext), nil)
}

// Close does nothing: the Keeper does not own the Engine.
func (k *keeper) Close() error { return nil }

// ErrorAs reaches the errors under the Keeper's, *kms.Error and
// *kms.RateLimitError among them. A target that can hold no error (a
// *string, say) answers false, as gocloud's drivers do, where errors.As
// would panic.
func (k *keeper) ErrorAs(err error, i any) bool {
	t := reflect.TypeOf(i)
	if t == nil || t.Kind() != reflect.Pointer {
		return false
	}
	if e := t.Elem(); e.Kind() != reflect.Interface && !e.Implements(errorType) {
		return false
	}
	return errors.As(err, i)
}

var errorType = reflect.TypeFor[error]()

// ErrorCode is the package's ErrorCode.
func (k *keeper) ErrorCode(err error) gcerrors.ErrorCode { return ErrorCode(err) }

// codes maps each kms sentinel to a gcerrors code.
var codes = []struct {
	kind error
	code gcerrors.ErrorCode
}{
	{kms.ErrInvalidArgument, gcerrors.InvalidArgument},
	{kms.ErrWrongKeyType, gcerrors.InvalidArgument},
	{kms.ErrDecryptionFailed, gcerrors.InvalidArgument},
	{kms.ErrKeyNotFound, gcerrors.NotFound},
	{kms.ErrVersionNotFound, gcerrors.NotFound},
	{kms.ErrAlreadyExists, gcerrors.AlreadyExists},
	{kms.ErrKeyNotEnabled, gcerrors.FailedPrecondition},
	{kms.ErrInvalidState, gcerrors.FailedPrecondition},
	{kms.ErrVersionDisabled, gcerrors.FailedPrecondition},
	{kms.ErrVersionBelowMinimum, gcerrors.FailedPrecondition},
	{kms.ErrConflict, gcerrors.FailedPrecondition},
	{kms.ErrClosed, gcerrors.FailedPrecondition},
	{kms.ErrVersionLimit, gcerrors.ResourceExhausted},
	{kms.ErrRateLimited, gcerrors.ResourceExhausted},
	{kms.ErrAccessDenied, gcerrors.PermissionDenied},
	{kms.ErrPermissionDenied, gcerrors.PermissionDenied},
	{kms.ErrTokenInvalid, gcerrors.PermissionDenied},
	{kms.ErrTokenExpired, gcerrors.PermissionDenied},
	{kms.ErrBackendMismatch, gcerrors.Internal},
	{kms.ErrUnavailable, gcerrors.Internal},
	{kms.ErrInternal, gcerrors.Internal},
	{kms.ErrCanceled, gcerrors.Canceled},
	{kms.ErrUnsupported, gcerrors.Unimplemented},
	{kms.ErrBackupInvalid, gcerrors.InvalidArgument},
	{kms.ErrEncryptionBudget, gcerrors.FailedPrecondition},
	{kms.ErrStale, gcerrors.Internal},
	{kms.ErrAuditFailed, gcerrors.Internal},
	{context.Canceled, gcerrors.Canceled},
	{context.DeadlineExceeded, gcerrors.DeadlineExceeded},
	{errors.ErrUnsupported, gcerrors.Unimplemented},
}

// ErrorCode returns the gcerrors code of an error from pocketkms:
// InvalidArgument for malformed input, a wrong key type and ciphertexts
// that do not decrypt; NotFound for a missing key or version;
// FailedPrecondition for a key or version not enabled, a conflicting
// change and a closed Engine; ResourceExhausted for the rate limit;
// PermissionDenied for a refused address, token or permission (gcerrors
// has no Unauthenticated); Internal for backend and storage failures;
// Canceled and DeadlineExceeded for a done context; Unknown otherwise.
func ErrorCode(err error) gcerrors.ErrorCode {
	for _, c := range codes {
		if errors.Is(err, c.kind) {
			return c.code
		}
	}
	return gcerrors.Unknown
}
