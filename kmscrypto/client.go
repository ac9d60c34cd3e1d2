package kmscrypto

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/pocketkms/kms"
)

// Client is the part of pocketkms the adapters use. Both planes implement
// it: *kms.Engine (the trusted plane) and kms.TokenClient (the token
// plane, from Engine.WithToken). Its methods keep the Engine's error
// contract: every error is a *kms.Error matching one kms sentinel.
//
// Both planes also have AppendSeal and AppendOpen, which AEAD needs for
// its current format; Client does not require them, so that other
// implementations keep working, but an AEAD over a Client without them
// writes and reads only the legacy format (see [AEAD]).
type Client interface {
	// Encrypt is kms.Engine.Encrypt.
	Encrypt(ctx context.Context, keyTag string, plaintext, encCtx []byte) (string, error)
	// Decrypt is kms.Engine.Decrypt.
	Decrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) ([]byte, error)
	// SignDigest is kms.Engine.SignDigest.
	SignDigest(ctx context.Context, keyTag string, digest []byte, opts crypto.SignerOpts) ([]byte, uint32, error)
	// GetPublicKey is kms.Engine.GetPublicKey.
	GetPublicKey(ctx context.Context, keyTag string, version uint32) (string, error)
}

var (
	_ Client = (*kms.Engine)(nil)
	_ Client = kms.TokenClient{}
)

// keyReader is the trusted plane's key description, which the token plane
// does not offer; the constructors use it when the Client has it.
type keyReader interface {
	GetKey(ctx context.Context, keyTag string) (*kms.Key, error)
}

// publicKey returns a version of an RSA2048 or ECDSA key and its public
// key: the version asked for, or (version 0) the current one. The trusted
// plane reads the current version from GetKey. The token plane cannot, so
// it finds the largest version that exists with GetPublicKey (versions
// are numbered from 1 without gaps, and a disabled one still exists):
// 8 calls at most, then one to read the key, each costing one unit of the
// key's rate limit.
func publicKey(ctx context.Context, op string, c Client, keyTag string, version uint32) (uint32, crypto.PublicKey, error) {
	if version == 0 {
		var err error
		if version, err = currentVersion(ctx, c, keyTag); err != nil {
			return 0, nil, err
		}
	}
	text, err := c.GetPublicKey(ctx, keyTag, version)
	if err != nil {
		return 0, nil, err
	}
	block, rest := pem.Decode([]byte(text))
	if block == nil || block.Type != "PUBLIC KEY" || len(rest) != 0 {
		return 0, nil, newErr(op, keyTag, kms.ErrInvalidArgument, "the client's public key is not one PEM PUBLIC KEY block", nil)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return 0, nil, newErr(op, keyTag, kms.ErrInvalidArgument, "the client's public key does not parse", err)
	}
	return version, pub, nil
}

func currentVersion(ctx context.Context, c Client, keyTag string) (uint32, error) {
	if kr, ok := c.(keyReader); ok {
		k, err := kr.GetKey(ctx, keyTag)
		if err != nil {
			return 0, err
		}
		return k.CurrentVersion, nil
	}
	exists := func(v uint32) (bool, error) {
		_, err := c.GetPublicKey(ctx, keyTag, v)
		switch {
		case err == nil, errors.Is(err, kms.ErrVersionDisabled):
			return true, nil
		case errors.Is(err, kms.ErrVersionNotFound):
			return false, nil
		}
		return false, err
	}
	// Invariant: version lo exists and no version above hi does. Version
	// 1 exists in every key; asking for it reports a missing key, a wrong
	// key type or a refused token.
	lo, hi := uint32(1), uint32(kms.MaxVersions)
	if _, err := exists(lo); err != nil {
		return 0, err
	}
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		ok, err := exists(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// describe is the String of the adapters: the key tag and version, never
// the Client (whose token is a secret).
func describe(kind, keyTag string, version uint32) string {
	if version == 0 {
		return fmt.Sprintf("kmscrypto.%s{key:%s}", kind, keyTag)
	}
	return fmt.Sprintf("kmscrypto.%s{key:%s version:%d}", kind, keyTag, version)
}
