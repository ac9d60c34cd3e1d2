// Package tink is a Tink KMS client for pocketkms: a
// registry.KMSClient of github.com/tink-crypto/tink-go/v2 whose key
// encryption keys are pocketkms AES256 keys, so that Tink's envelope
// encryption (aead.NewKMSEnvelopeAEAD2, aead.NewKMSEnvelopeAEADWithContext)
// and keyset encryption (keyset.Handle.Write, keyset.Read) keep their
// key encryption key in pocketkms.
//
// Start with [NewClient] and [Client.GetAEAD]:
//
//	client, err := tink.NewClient(ctx, e, tink.URIPrefix) // e: *kms.Engine, or a kms.TokenClient
//	kek, err := client.GetAEAD(tink.KeyURI(keyTag))
//	a := aead.NewKMSEnvelopeAEAD2(aead.AES256GCMKeyTemplate(), kek)
//	ct, err := a.Encrypt(plaintext, associatedData)
//
// Registering the client (registry.RegisterKMSClient) is only needed for
// keysets whose keys name a KEK by URI (aead.CreateKMSEnvelopeAEADKeyTemplate).
// The package is named tink like Tink's own tink package; import one of
// them under another name.
//
// # Key URIs
//
// A key URI is exactly
//
//	pocketkms://<keyTag>
//
// where keyTag is the key's 64 lowercase hexadecimal characters: the
// scheme in lower case, "://", the tag, and nothing else — no upper-case
// hex, no user, port, path, query or fragment, no surrounding space. The
// grammar is strict so that one key has one URI: [ParseKeyURI] refuses
// anything else, and [KeyURI] gives back the string ParseKeyURI accepted.
// A URI names a key, never a version: the key encrypts with its current
// version, and its ciphertexts name the version that made them.
//
// # Security
//
// The AEAD is kmscrypto's: every operation is an Engine call, checked like
// any other (token, permission, allow-list and rate limit on the token
// plane), and the associated data is bound in AES-GCM's own associated
// data (kms.Engine.AppendSeal; kmscrypto.AEAD still reads the older
// format, which sealed its SHA-256 digest with the plaintext). Use a
// non-convergent AES256 key; on the trusted plane GetAEAD refuses other
// keys, on the token plane the first call does (see kmscrypto.NewAEAD).
// URIs carry no secret. Engine.ReEncrypt cannot move what the AEAD
// encrypted to a newer key version (it does not have the associated
// data): decrypt and encrypt again (read a keyset and write it again),
// or use kmscrypto.AEAD.ReEncrypt on a ciphertext the AEAD itself made.
//
// # Limitations
//
// Tink's KMSClient interface takes no context, so the client keeps the
// one given to NewClient for GetAEAD and the AEADs it returns; use
// [Client.GetAEADWithContext] and Tink's ...WithContext functions to pass
// a context per call. The client does not own the Engine: closing the
// Engine is the embedder's job, after which the AEADs fail with
// kms.ErrClosed.
package tink

import (
	"context"
	"net/http"
	"strings"

	tinkapi "github.com/tink-crypto/tink-go/v2/tink"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/kmscrypto"
)

// URIPrefix starts every pocketkms key URI.
const URIPrefix = "pocketkms://"

const tagLen = 64

// KeyURI returns the key URI of a key tag: URIPrefix + keyTag. It does not
// check the tag; ParseKeyURI does.
func KeyURI(keyTag string) string { return URIPrefix + keyTag }

// ParseKeyURI returns the key tag a key URI names, or a *kms.Error
// matching kms.ErrInvalidArgument when uri is not exactly
// "pocketkms://" followed by 64 lowercase hexadecimal characters.
func ParseKeyURI(uri string) (string, error) {
	tag, ok := strings.CutPrefix(uri, URIPrefix)
	if !ok || len(tag) != tagLen || !isLowerHex(tag) {
		return "", invalid("parse key uri", "a key URI is \"pocketkms://\" followed by a 64-character lowercase hex key tag")
	}
	return tag, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func invalid(op, detail string) *kms.Error {
	return &kms.Error{Op: op, Code: "InvalidParameter", Status: http.StatusBadRequest, Kind: kms.ErrInvalidArgument, Detail: detail}
}

// Client is a Tink KMS client (registry.KMSClient) for the pocketkms keys
// of one plane. Make it with NewClient; it is safe for concurrent use.
type Client struct {
	ctx    context.Context
	c      kmscrypto.Client
	prefix string
}

// NewClient returns a KMS client for the keys of c (a *kms.Engine, or a
// kms.TokenClient for one key) whose URIs start with uriPrefix: URIPrefix
// for every key, or a longer prefix of key URIs — usually one whole key
// URI — to confine the client, as Tink's own clients do. A prefix that
// no key URI can start with fails with kms.ErrInvalidArgument.
//
// ctx is used by GetAEAD and by the Encrypt and Decrypt of the AEADs it
// returns, since Tink's interfaces take no context; once it is done they
// fail with its error.
func NewClient(ctx context.Context, c kmscrypto.Client, uriPrefix string) (*Client, error) {
	rest, ok := strings.CutPrefix(uriPrefix, URIPrefix)
	if !ok || len(rest) > tagLen || !isLowerHex(rest) {
		return nil, invalid("new tink client", "the URI prefix must be \"pocketkms://\" followed by at most 64 lowercase hex characters")
	}
	return &Client{ctx: ctx, c: c, prefix: uriPrefix}, nil
}

// Supported reports whether keyURI is a valid pocketkms key URI that
// starts with the client's prefix.
func (c *Client) Supported(keyURI string) bool {
	_, err := ParseKeyURI(keyURI)
	return err == nil && strings.HasPrefix(keyURI, c.prefix)
}

// GetAEAD returns the AEAD of the key keyURI names: a *kmscrypto.AEAD,
// which also implements tink.AEADWithContext. A URI that is not
// Supported fails with kms.ErrInvalidArgument; on the trusted plane a key
// that does not exist, or is not a non-convergent AES256 key, fails here
// too (kms.ErrKeyNotFound, kms.ErrWrongKeyType).
func (c *Client) GetAEAD(keyURI string) (tinkapi.AEAD, error) {
	return c.aead(keyURI)
}

// GetAEADWithContext is GetAEAD for Tink's context-taking functions
// (aead.NewKMSEnvelopeAEADWithContext, keyset.WriteWithContext).
func (c *Client) GetAEADWithContext(keyURI string) (tinkapi.AEADWithContext, error) {
	return c.aead(keyURI)
}

func (c *Client) aead(keyURI string) (*kmscrypto.AEAD, error) {
	tag, err := ParseKeyURI(keyURI)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(keyURI, c.prefix) {
		return nil, invalid("get aead", "the key URI does not start with the client's prefix "+c.prefix)
	}
	return kmscrypto.NewAEAD(c.ctx, c.c, tag)
}

// String describes the client by its prefix; it never shows the
// kmscrypto.Client (a TokenClient holds a token).
func (c *Client) String() string { return "tink.Client{prefix:" + c.prefix + "}" }
