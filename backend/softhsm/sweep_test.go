//go:build cgo

package softhsm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/softhsm/softhsmtest"
)

// TestSweep: Sweep destroys exactly the material of this package that
// no kept handle names, created before the cutoff and not loaded here;
// it never touches foreign objects, material of unknown age, or material
// a kept handle names even when part of it is gone.
func TestSweep(t *testing.T) {
	cfg := softhsmtest.NewToken(t)
	b1 := softhsmtest.Open(t, cfg)
	kept := generate(t, b1, backend.AES256, true)
	halfKept := generate(t, b1, backend.RSA2048, false) // loses its public key below
	loaded := generate(t, b1, backend.ECDSA, false)
	load(t, b1, loaded)
	orphans := []material{
		generate(t, b1, backend.AES256, true),
		generate(t, b1, backend.RSA2048, false),
		generate(t, b1, backend.ECDSA, false),
	}
	halfOrphan := generate(t, b1, backend.ECDSA, false) // loses its public key below
	// Foreign objects: another application's key, and one under this
	// package's label but with a random CKA_ID (made before CKA_IDs
	// recorded the time): neither may go.
	ref := newRef(t, backend.PurposeCipher)
	withRawSession(t, cfg, func(p *pkcs11.Ctx, s pkcs11.SessionHandle) {
		for _, label := range []string{"other-app-key", fmt.Sprintf("pocketkms:cipher:%s:1", ref.KeyTag)} {
			id := make([]byte, 16)
			rand.Read(id)
			_, err := p.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
				pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
				pkcs11.NewAttribute(pkcs11.CKA_ID, id),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
				pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		// Destroy the public keys of halfKept and halfOrphan.
		for _, m := range []material{halfKept, halfOrphan} {
			h := m.handle
			if err := p.FindObjectsInit(s, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_ID, h[8:24]),
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
			}); err != nil {
				t.Fatal(err)
			}
			objs, _, err := p.FindObjects(s, 2)
			p.FindObjectsFinal(s)
			if err != nil || len(objs) != 1 {
				t.Fatalf("public key of %v: %v, %v", m.typ, objs, err)
			}
			if err := p.DestroyObject(s, objs[0]); err != nil {
				t.Fatal(err)
			}
		}
	})
	before := countObjects(t, cfg, nil)

	b2 := softhsmtest.Open(t, cfg) // another Backend: material b1 loaded is still loaded in this process
	req := &backend.SweepRequest{Keep: [][]byte{kept.handle, halfKept.handle, []byte("not a handle")}}
	if _, err := b2.Sweep(t.Context(), req); !errors.Is(err, backend.ErrInvalidArgument) {
		t.Fatalf("Sweep without CreatedBefore: %v, want ErrInvalidArgument", err)
	}
	// Everything here is younger than an hour ago: nothing goes.
	req.CreatedBefore = time.Now().Add(-time.Hour)
	if swept, err := b2.Sweep(t.Context(), req); err != nil || len(swept) != 0 {
		t.Fatalf("Sweep with an old cutoff = %v, %v; want nothing", swept, err)
	}
	time.Sleep(2 * time.Millisecond) // CKA_IDs record milliseconds
	req.CreatedBefore = time.Now()
	swept, err := b2.Sweep(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	want := map[backend.KeyRef]backend.KeyType{halfOrphan.ref: halfOrphan.typ}
	for _, m := range orphans {
		want[m.ref] = m.typ
	}
	if len(swept) != len(want) {
		t.Errorf("swept %d pieces of material, want %d: %v", len(swept), len(want), swept)
	}
	for _, s := range swept {
		if want[s.Ref] != s.Type || s.Created.IsZero() || time.Since(s.Created) > time.Minute {
			t.Errorf("swept %v %v created %v, not an orphan", s.Ref, s.Type, s.Created)
		}
	}
	// AES+HMAC, RSA pair, ECDSA pair, ECDSA private key.
	if n, w := countObjects(t, cfg, nil), before-7; n != w {
		t.Errorf("%d token objects left, want %d", n, w)
	}
	for _, m := range orphans {
		if _, err := b2.Load(t.Context(), m.load()); !errors.Is(err, backend.ErrKeyNotFound) {
			t.Errorf("Load of swept %v: %v, want ErrKeyNotFound", m.typ, err)
		}
	}
	if _, err := load(t, b2, kept).(backend.Encrypter).Encrypt(t.Context(), &backend.EncryptRequest{Plaintext: []byte("x")}); err != nil {
		t.Errorf("kept key after Sweep: %v", err)
	}
	if swept, err := b2.Sweep(t.Context(), req); err != nil || len(swept) != 0 {
		t.Errorf("second Sweep = %v, %v; want nothing", swept, err)
	}
	// Unloaded everywhere (the token is released once both Backends
	// close), the ECDSA key goes too when no handle keeps it.
	b1.Close()
	b2.Close()
	b3 := softhsmtest.Open(t, cfg)
	swept, err = b3.Sweep(t.Context(), req)
	if err != nil || len(swept) != 1 || swept[0].Ref != loaded.ref {
		t.Errorf("Sweep once nothing is loaded = %v, %v; want the ECDSA key", swept, err)
	}
}

// TestEngineSweepOrphansOnSoftHSM: material created in the token but
// never committed (the process died between Generate and the commit) is
// destroyed by SweepOrphans once older than the grace period; committed
// material stays and works, including versions not loaded in the process.
func TestEngineSweepOrphansOnSoftHSM(t *testing.T) {
	cfg := softhsmtest.NewToken(t)
	dir := t.TempDir()
	ctx := context.Background()
	be := softhsmtest.Open(t, cfg)
	e, err := kms.New(ctx, be, kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("kept")
	aes, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "aes", Type: kms.AES256, Convergent: true})
	if err != nil {
		t.Fatal(err)
	}
	ct, err := e.Encrypt(ctx, aes.Tag, msg, []byte("ctx"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.RotateKey(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	rsaKey, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "rsa", Type: kms.RSA2048})
	if err != nil {
		t.Fatal(err)
	}
	rsaCT, err := e.Encrypt(ctx, rsaKey.Tag, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ActivateTokenGenerator(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	committed := countObjects(t, cfg, nil)

	// What a process that dies after Generate leaves: a rotation, a
	// CreateKey and a generator rotation that never committed.
	orphans := []struct {
		ref        backend.KeyRef
		typ        backend.KeyType
		convergent bool
	}{
		{backend.KeyRef{KeyTag: aes.Tag, Version: 3, Purpose: backend.PurposeCipher}, backend.AES256, true},
		{newRef(t, backend.PurposeCipher), backend.RSA2048, false},
		{backend.KeyRef{KeyTag: aes.Tag, Version: 2, Purpose: backend.PurposeTokenSigning}, backend.RSA2048, false},
	}
	for _, o := range orphans {
		if _, err := be.Generate(ctx, &backend.GenerateRequest{Ref: o.ref, Type: o.typ, Convergent: o.convergent}); err != nil {
			t.Fatal(err)
		}
	}
	// Just made: the grace period keeps them, as it keeps a create in
	// flight whose commit has not landed yet.
	rep, err := e.SweepOrphans(ctx, time.Hour)
	if err != nil || len(rep.Removed) != 0 {
		t.Fatalf("SweepOrphans(1h) = %v, %v; want nothing removed", rep, err)
	}
	// Reopen: now only the records keep the committed material (one key
	// is loaded to check the token).
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = kms.New(ctx, softhsmtest.Open(t, cfg), kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	time.Sleep(2 * time.Millisecond) // CKA_IDs record milliseconds
	rep, err = e.SweepOrphans(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != len(orphans) {
		t.Errorf("removed %v, want the %d orphans", rep.Removed, len(orphans))
	}
	for _, o := range orphans {
		found := false
		for _, r := range rep.Removed {
			found = found || (r.Ref == o.ref && r.Type == o.typ)
		}
		if !found {
			t.Errorf("orphan %v not removed", o.ref)
		}
	}
	if n := countObjects(t, cfg, nil); n != committed {
		t.Errorf("%d token objects after the sweep, want the %d committed", n, committed)
	}
	if pt, err := e.Decrypt(ctx, aes.Tag, ct, []byte("ctx")); err != nil || !bytes.Equal(pt, msg) {
		t.Errorf("Decrypt v1 after the sweep: %v", err)
	}
	if pt, err := e.Decrypt(ctx, rsaKey.Tag, rsaCT, nil); err != nil || !bytes.Equal(pt, msg) {
		t.Errorf("RSA Decrypt after the sweep: %v", err)
	}
	if _, err := e.IssueTokens(ctx, aes.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "swept"}); err != nil {
		t.Errorf("IssueTokens after the sweep: %v", err)
	}
}
