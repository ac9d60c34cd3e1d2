package backendtest

import (
	"bytes"
	"testing"

	"github.com/pocketkms/kms/backend"
)

// RunReopen checks persistence. open must return a backend whose state
// lives in dir (a token directory, or a file holding a root key); it is
// called more than once with the same dir, always after the previous
// backend on that dir was closed, and with fresh directories from
// t.TempDir. Handles made by one backend must load in a later one on the
// same dir and keep working (same plaintexts, verifiable signatures,
// identical convergent ciphertexts); a backend on another dir must refuse
// them with backend.ErrInvalidHandle or backend.ErrKeyNotFound.
//
// The suite closes every backend it opens.
func RunReopen(t *testing.T, open func(t *testing.T, dir string) backend.Backend) {
	t.Run("KeysSurvive", func(t *testing.T) { testKeysSurvive(t, open) })
	t.Run("OtherStateDir", func(t *testing.T) { testOtherStateDir(t, open) })
}

// reopenFactory adapts open to the fixture setup with a fixed dir.
func reopenFactory(open func(t *testing.T, dir string) backend.Backend, dir string) func(t *testing.T) backend.Backend {
	return func(t *testing.T) backend.Backend { return open(t, dir) }
}

func testKeysSurvive(t *testing.T, open func(t *testing.T, dir string) backend.Backend) {
	dir := t.TempDir()
	f1 := setup(t, reopenFactory(open, dir))

	pt, ad := []byte("persistent plaintext"), []byte("context")
	d := digest("persistent message")
	type saved struct {
		generated
		key backend.Key
		ct  []byte // AES and RSA: a ciphertext of pt
		sig []byte // RSA and ECDSA: a signature of d
	}
	var keys []*saved
	for _, s := range allSpecs {
		k, g := f1.key(s)
		sv := &saved{generated: g, key: k}
		switch s.typ {
		case backend.AES256:
			sv.ct = f1.encrypt(k, pt, ad)
		case backend.RSA2048:
			if s.purpose == backend.PurposeCipher {
				sv.ct = f1.encrypt(k, pt, nil)
			}
			sv.sig = f1.sign(k, signAlg(s), d)
		case backend.ECDSA:
			sv.sig = f1.sign(k, signAlg(s), d)
		}
		keys = append(keys, sv)
	}
	var imported *saved
	if _, ok := f1.b.(backend.Importer); ok {
		key, conv := katKeys()
		k, g := f1.importKey(specConvergent, key, conv)
		imported = &saved{generated: g, key: k, ct: f1.encrypt(k, pt, ad)}
	}

	if err := f1.b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err := keys[0].key.(backend.Encrypter).Encrypt(f1.ctx, &backend.EncryptRequest{Plaintext: pt})
	wantErr(t, "Encrypt with a key of the closed backend", err, backend.ErrClosed)

	f2 := setup(t, reopenFactory(open, dir))
	if imported != nil {
		keys = append(keys, imported)
	}
	for _, sv := range keys {
		k := f2.load(sv.generated)
		switch {
		case sv.typ == backend.AES256:
			if got := f2.decrypt(k, sv.ct, ad); !bytes.Equal(got, pt) {
				t.Errorf("%s: old ciphertext decrypts to another plaintext", sv.name)
			}
			if sv.convergent && !bytes.Equal(f2.encrypt(k, pt, ad), sv.ct) {
				t.Errorf("%s: convergent ciphertext changed across reopen", sv.name)
			}
			continue
		case sv.ct != nil:
			if got := f2.decrypt(k, sv.ct, nil); !bytes.Equal(got, pt) {
				t.Errorf("%s: old ciphertext decrypts to another plaintext", sv.name)
			}
		}
		alg := signAlg(sv.spec)
		if !f2.verify(k, &backend.VerifyRequest{Algorithm: alg, Digest: d, Signature: sv.sig}) {
			t.Errorf("%s: old signature no longer verifies", sv.name)
		}
		newSig := f2.sign(k, alg, d)
		if ok, err := backend.VerifyWithPublicKey(sv.resp.Public, &backend.VerifyRequest{Algorithm: alg, Digest: d, Signature: newSig}); err != nil || !ok {
			t.Errorf("%s: new signature does not verify under the old public key: %v, %v", sv.name, ok, err)
		}
		checkPublic(t, k, sv.generated)
	}
	// The reopened backend still makes new keys.
	k, _ := f2.key(specAES)
	if got := f2.decrypt(k, f2.encrypt(k, pt, nil), nil); !bytes.Equal(got, pt) {
		t.Error("a key generated after reopening does not round-trip")
	}
}

func testOtherStateDir(t *testing.T, open func(t *testing.T, dir string) backend.Backend) {
	f1 := setup(t, reopenFactory(open, t.TempDir()))
	gens := []generated{f1.generate(specAES), f1.generate(specECDSA)}
	if err := f1.b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	f2 := setup(t, reopenFactory(open, t.TempDir()))
	for _, g := range gens {
		noPanic(t, g.name, func() {
			k, err := f2.b.Load(f2.ctx, g.loadRequest())
			wantErr(t, g.name+": Load in another state dir", err, backend.ErrInvalidHandle, backend.ErrKeyNotFound)
			if err == nil && k != nil {
				t.Errorf("%s: a backend on another state dir loaded the handle", g.name)
			}
		})
	}
}
