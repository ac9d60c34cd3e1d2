package backendtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/internal/pubkey"
)

// opener opens a backend whose state lives in dir: the argument of Run.
type opener = func(t *testing.T, dir string) backend.Backend

// fixture is one subtest's backend.
type fixture struct {
	t   *testing.T
	b   backend.Backend
	ctx context.Context
}

// setup opens a fresh backend for t, on a state directory of its own, and
// closes it when t ends.
func setup(t *testing.T, open opener) *fixture {
	t.Helper()
	return setupIn(t, open, t.TempDir())
}

// setupIn opens a backend on the state directory dir and closes it when t
// ends.
func setupIn(t *testing.T, open opener, dir string) *fixture {
	t.Helper()
	b := open(t, dir)
	if b == nil {
		t.Fatal("backendtest: open returned a nil backend")
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &fixture{t: t, b: b, ctx: t.Context()}
}

// newTag returns a random key tag in the format the Engine uses.
func newTag(t *testing.T) string {
	t.Helper()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// spec describes material to generate.
type spec struct {
	name       string
	typ        backend.KeyType
	purpose    backend.Purpose
	convergent bool
}

var (
	specAES        = spec{"AES256", backend.AES256, backend.PurposeCipher, false}
	specConvergent = spec{"AES256Convergent", backend.AES256, backend.PurposeCipher, true}
	specRSA        = spec{"RSA2048", backend.RSA2048, backend.PurposeCipher, false}
	specECDSA      = spec{"ECDSA", backend.ECDSA, backend.PurposeCipher, false}
	specToken      = spec{"RSA2048TokenSigning", backend.RSA2048, backend.PurposeTokenSigning, false}
	allSpecs       = []spec{specAES, specConvergent, specRSA, specECDSA, specToken}
)

// generated is material created by a test, with what it takes to load it.
type generated struct {
	spec
	ref  backend.KeyRef
	resp *backend.GenerateResponse
}

func (g generated) loadRequest() *backend.LoadRequest {
	return &backend.LoadRequest{Ref: g.ref, Type: g.typ, Convergent: g.convergent, Handle: bytes.Clone(g.resp.Handle)}
}

// generate creates material for s under a new key tag, version 1.
func (f *fixture) generate(s spec) generated {
	f.t.Helper()
	return f.generateRef(s, backend.KeyRef{KeyTag: newTag(f.t), Version: 1, Purpose: s.purpose})
}

func (f *fixture) generateRef(s spec, ref backend.KeyRef) generated {
	f.t.Helper()
	resp, err := f.b.Generate(f.ctx, &backend.GenerateRequest{Ref: ref, Type: s.typ, Convergent: s.convergent})
	if err != nil {
		f.t.Fatalf("Generate %s: %v", s.name, err)
	}
	if resp == nil || len(resp.Handle) == 0 {
		f.t.Fatalf("Generate %s: empty response or handle", s.name)
	}
	return generated{spec: s, ref: ref, resp: resp}
}

// load loads g and checks the key's identity.
func (f *fixture) load(g generated) backend.Key {
	f.t.Helper()
	k, err := f.b.Load(f.ctx, g.loadRequest())
	if err != nil {
		f.t.Fatalf("Load %s: %v", g.name, err)
	}
	if k == nil {
		f.t.Fatalf("Load %s: nil key and nil error", g.name)
	}
	if k.Ref() != g.ref || k.Type() != g.typ {
		f.t.Fatalf("Load %s: key is %+v %v, want %+v %v", g.name, k.Ref(), k.Type(), g.ref, g.typ)
	}
	return k
}

// key generates and loads material for s.
func (f *fixture) key(s spec) (backend.Key, generated) {
	f.t.Helper()
	g := f.generate(s)
	return f.load(g), g
}

// as returns k as the capability T (backend.Encrypter, backend.Signer,
// ...), or fails the test if the key does not implement it.
func as[T any](t *testing.T, k backend.Key) T {
	t.Helper()
	c, ok := k.(T)
	if !ok {
		t.Fatalf("%v key does not implement %v", k.Type(), reflect.TypeFor[T]())
	}
	return c
}

// capability returns the fixture's backend as the optional capability T
// (backend.Importer), or skips the test.
func capability[T any](f *fixture) T {
	f.t.Helper()
	c, ok := f.b.(T)
	if !ok {
		f.t.Skipf("the backend does not implement %v", reflect.TypeFor[T]())
	}
	return c
}

// encrypt encrypts and fails the test on error.
func (f *fixture) encrypt(k backend.Key, pt, ad []byte) []byte {
	f.t.Helper()
	ct, err := as[backend.Encrypter](f.t, k).Encrypt(f.ctx, &backend.EncryptRequest{Plaintext: pt, AdditionalData: ad})
	if err != nil {
		f.t.Fatalf("Encrypt: %v", err)
	}
	return ct
}

// decrypt decrypts and fails the test on error.
func (f *fixture) decrypt(k backend.Key, ct, ad []byte) []byte {
	f.t.Helper()
	pt, err := as[backend.Decrypter](f.t, k).Decrypt(f.ctx, &backend.DecryptRequest{Ciphertext: ct, AdditionalData: ad})
	if err != nil {
		f.t.Fatalf("Decrypt: %v", err)
	}
	return pt
}

// sign signs and fails the test on error.
func (f *fixture) sign(k backend.Key, digest []byte) []byte {
	f.t.Helper()
	return f.signSalt(k, digest, 0)
}

// signSalt signs with the PSS salt length salt and fails the test on
// error.
func (f *fixture) signSalt(k backend.Key, digest []byte, salt int) []byte {
	f.t.Helper()
	sig, err := as[backend.Signer](f.t, k).Sign(f.ctx, &backend.SignRequest{Digest: digest, PSSSaltLength: salt})
	if err != nil {
		f.t.Fatalf("Sign %v %v (PSS salt length %d): %v", k.Type(), k.Ref().Purpose, salt, err)
	}
	if len(sig) == 0 {
		f.t.Fatalf("Sign %v %v: empty signature", k.Type(), k.Ref().Purpose)
	}
	return sig
}

// verifies reports whether sig is a signature of digest under pub with
// the algorithm of material s: for RSA2048 cipher and ECDSA keys what the
// Engine's Verify runs (internal/pubkey), for token-signing keys RS256 as
// the token package verifies it (crypto/rsa).
func verifies(t *testing.T, s spec, pub crypto.PublicKey, digest, sig []byte) bool {
	t.Helper()
	if s.purpose == backend.PurposeTokenSigning {
		rp, ok := pub.(*rsa.PublicKey)
		return ok && rsa.VerifyPKCS1v15(rp, crypto.SHA256, digest, sig) == nil
	}
	ok, err := pubkey.Verify(pub, digest, sig)
	if err != nil {
		t.Fatalf("verify under the %s public key: %v", s.name, err)
	}
	return ok
}

// encryptOAEP encrypts pt under the public key of g as the Engine does
// (internal/pubkey), failing the test on error.
func encryptOAEP(t *testing.T, g generated, pt []byte) []byte {
	t.Helper()
	ct, err := pubkey.EncryptOAEP(g.resp.Public, pt)
	if err != nil {
		t.Fatalf("encrypt under the %s public key: %v", g.name, err)
	}
	return ct
}

func digest(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

// flip returns a copy of b with one bit of byte i flipped.
func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// wantErr checks that err matches one of targets.
func wantErr(t *testing.T, what string, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %v", what, targets)
		return
	}
	for _, target := range targets {
		if errors.Is(err, target) {
			return
		}
	}
	t.Errorf("%s: error %q does not match %v", what, err, targets)
}

// noLeak checks that an error message does not carry any of secrets, raw,
// in hex or in base64.
func noLeak(t *testing.T, what string, err error, secrets ...[]byte) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	for _, s := range secrets {
		if len(s) < 4 {
			continue
		}
		for _, enc := range []string{string(s), hex.EncodeToString(s), strings.ToUpper(hex.EncodeToString(s)), base64.StdEncoding.EncodeToString(s), base64.RawURLEncoding.EncodeToString(s)} {
			if strings.Contains(msg, enc) {
				t.Errorf("%s: error message reveals secret input: %q", what, msg)
				return
			}
		}
	}
}

// noPanic runs fn and reports a panic as a test error, so that tables of
// malformed input keep going.
func noPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s: panic: %v", what, r)
		}
	}()
	fn()
}

// stdRSAKey is an RSA-2048 key made by crypto/rsa once per process, for
// known-answer tests.
var stdRSAKey = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, backend.RSAModulusBits)
})

func stdRSA(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := stdRSAKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
