package kmscrypto

import (
	"context"
	"crypto"
	"crypto/rsa"
	"fmt"
	"io"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/internal/envelope"
)

// Decrypter is a crypto.Decrypter over a pocketkms RSA2048 key: RSA-OAEP
// with SHA-256, pinned to one key version. Make it with NewDecrypter; it
// is safe for concurrent use.
type Decrypter struct {
	ctx     context.Context
	c       Client
	keyTag  string
	version uint32
	pub     *rsa.PublicKey
}

var _ crypto.Decrypter = (*Decrypter)(nil)

// DecrypterOption configures NewDecrypter.
type DecrypterOption func(*decrypterConfig) error

type decrypterConfig struct{ version uint32 }

// WithVersion makes the Decrypter use a given key version (from 1)
// instead of the current one; the version must be enabled.
func WithVersion(version uint32) DecrypterOption {
	return func(c *decrypterConfig) error {
		if version == 0 || version > kms.MaxVersions {
			return fmt.Errorf("version must be 1..%d", kms.MaxVersions)
		}
		c.version = version
		return nil
	}
}

// NewDecrypter returns a crypto.Decrypter for an RSA2048 key, on either
// plane (c is a *kms.Engine or a kms.TokenClient).
//
// A raw OAEP ciphertext does not say which key version made it, so the
// Decrypter is pinned to one: the version current when NewDecrypter runs,
// or the one WithVersion names. Public returns that version's public key,
// and Decrypt decrypts with that version only, even after the key is
// rotated (as long as the version stays enabled). Encrypt to Public, and
// make a new Decrypter when you start encrypting to a new version.
//
// ctx is used by NewDecrypter and by every later Decrypt, since
// crypto.Decrypter's Decrypt takes no context: once ctx is done, Decrypt
// fails with its error.
//
// On the token plane the token needs the GetPublicKey permission for
// NewDecrypter (which makes up to nine calls without WithVersion, one
// with it) and the Decrypt permission for Decrypt. Any key type but
// RSA2048 fails with kms.ErrWrongKeyType.
func NewDecrypter(ctx context.Context, c Client, keyTag string, opts ...DecrypterOption) (*Decrypter, error) {
	const op = "new decrypter"
	var cfg decrypterConfig
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, newErr(op, keyTag, kms.ErrInvalidArgument, err.Error(), nil)
		}
	}
	v, pub, err := publicKey(ctx, op, c, keyTag, cfg.version)
	if err != nil {
		return nil, err
	}
	rpub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, newErr(op, keyTag, kms.ErrWrongKeyType, "only RSA2048 keys decrypt RSA-OAEP", nil)
	}
	return &Decrypter{ctx: ctx, c: c, keyTag: keyTag, version: v, pub: rpub}, nil
}

// Public returns the *rsa.PublicKey of the Decrypter's version.
func (d *Decrypter) Public() crypto.PublicKey { return d.pub }

// KeyTag returns the key's tag.
func (d *Decrypter) KeyTag() string { return d.keyTag }

// Version returns the key version the Decrypter decrypts with.
func (d *Decrypter) Version() uint32 { return d.version }

// Decrypt decrypts an RSA-OAEP ciphertext (256 bytes, else
// kms.ErrInvalidArgument) made with Public,
// through kms.Engine.Decrypt; rand is ignored. opts must be
// *rsa.OAEPOptions with Hash crypto.SHA256, MGFHash zero or
// crypto.SHA256, and no label: anything else (nil, which
// rsa.PrivateKey.Decrypt takes as PKCS #1 v1.5, included) is
// kms.ErrInvalidArgument matching errors.ErrUnsupported. A ciphertext that
// does not decrypt is kms.ErrDecryptionFailed, with no detail.
func (d *Decrypter) Decrypt(_ io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	const op = "decrypt"
	o, ok := opts.(*rsa.OAEPOptions)
	switch {
	case !ok || o == nil:
		return nil, newErr(op, d.keyTag, kms.ErrInvalidArgument, "RSA2048 keys decrypt RSA-OAEP only: opts must be *rsa.OAEPOptions", errUnsupported)
	case o.Hash != crypto.SHA256 || (o.MGFHash != 0 && o.MGFHash != crypto.SHA256):
		return nil, newErr(op, d.keyTag, kms.ErrInvalidArgument, "RSA2048 keys decrypt RSA-OAEP with SHA-256 and MGF1-SHA256 only", errUnsupported)
	case len(o.Label) != 0:
		return nil, newErr(op, d.keyTag, kms.ErrInvalidArgument, "RSA2048 keys decrypt RSA-OAEP with an empty label only", errUnsupported)
	}
	if len(ciphertext) != d.pub.Size() {
		return nil, newErr(op, d.keyTag, kms.ErrInvalidArgument, fmt.Sprintf("an RSA2048 ciphertext is %d bytes", d.pub.Size()), nil)
	}
	if err := d.ctx.Err(); err != nil {
		return nil, err
	}
	return d.c.Decrypt(d.ctx, d.keyTag, envelope.Format(d.version, ciphertext), nil)
}

// String describes the Decrypter by key tag and version; it never shows
// the Client (a TokenClient holds a token).
func (d *Decrypter) String() string { return describe("Decrypter", d.keyTag, d.version) }

// GoString is String.
func (d *Decrypter) GoString() string { return d.String() }

// Format writes String for every verb.
func (d *Decrypter) Format(f fmt.State, _ rune) { io.WriteString(f, d.String()) }
