package backendtest

import (
	"bytes"
	"testing"

	"github.com/pocketkms/kms/backend"
)

// testReopen checks persistence: handles made by one backend load in a
// later one on the same state directory and keep working (same
// plaintexts, signatures that verify under the old public keys, identical
// convergent ciphertexts); a backend on another directory refuses them
// with backend.ErrInvalidHandle or backend.ErrKeyNotFound.
func testReopen(t *testing.T, open opener) {
	t.Run("KeysSurvive", func(t *testing.T) { testKeysSurvive(t, open) })
	t.Run("OtherStateDir", func(t *testing.T) { testOtherStateDir(t, open) })
}

func testKeysSurvive(t *testing.T, open opener) {
	dir := t.TempDir()
	f1 := setupIn(t, open, dir)

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
				sv.ct = encryptOAEP(t, g, pt)
			}
			sv.sig = f1.sign(k, d)
		case backend.ECDSA:
			sv.sig = f1.sign(k, d)
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

	f2 := setupIn(t, open, dir)
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
		if !verifies(t, sv.spec, sv.resp.Public, d, sv.sig) {
			t.Errorf("%s: old signature no longer verifies", sv.name)
		}
		if !verifies(t, sv.spec, sv.resp.Public, d, f2.sign(k, d)) {
			t.Errorf("%s: new signature does not verify under the old public key", sv.name)
		}
	}
	// The reopened backend still makes new keys.
	k, _ := f2.key(specAES)
	if got := f2.decrypt(k, f2.encrypt(k, pt, nil), nil); !bytes.Equal(got, pt) {
		t.Error("a key generated after reopening does not round-trip")
	}
}

func testOtherStateDir(t *testing.T, open opener) {
	f1 := setupIn(t, open, t.TempDir())
	gens := []generated{f1.generate(specAES), f1.generate(specECDSA)}
	if err := f1.b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	f2 := setupIn(t, open, t.TempDir())
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
