package softhsm_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/softhsm"
	"github.com/pocketkms/kms/backend/softhsm/softhsmtest"
	"github.com/pocketkms/kms/internal/shred"
	"github.com/pocketkms/kms/internal/testclock"
)

// TestEngineOnSoftHSMSurvivesRestart runs an Engine on a SoftHSM token,
// closes it (and with it the PKCS#11 session pool), and opens a new Engine
// on the same token and Badger directory: every key, ciphertext,
// signature, public key and token still works.
func TestEngineOnSoftHSMSurvivesRestart(t *testing.T) {
	cfg := softhsmtest.NewToken(t)
	dir := t.TempDir()
	ctx := context.Background()
	e, err := kms.New(ctx, softhsmtest.Open(t, cfg), kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("kept in the token")
	aes, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "aes", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	conv, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "conv", Type: kms.AES256, Convergent: true})
	rsaKey, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "rsa", Type: kms.RSA2048})
	ec, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "ecdsa", Type: kms.ECDSA})
	aesCT, _ := e.Encrypt(ctx, aes.Tag, msg, nil)
	if _, err := e.RotateKey(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	convCT, _ := e.Encrypt(ctx, conv.Tag, msg, []byte("ctx"))
	rsaCT, err := e.Encrypt(ctx, rsaKey.Tag, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	rsaSig, _ := e.Sign(ctx, rsaKey.Tag, msg)
	ecSig, err := e.Sign(ctx, ec.Tag, msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ActivateTokenGenerator(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, aes.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "hsm"})
	if err != nil {
		t.Fatal(err)
	}
	caller := netip.MustParseAddr("127.0.0.1")
	if _, err := e.WithToken(set.Access, caller).Encrypt(ctx, aes.Tag, msg, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e2, err := kms.New(ctx, softhsmtest.Open(t, cfg), kms.WithDirectory(dir))
	if err != nil {
		t.Fatalf("reopen on the same token: %v", err)
	}
	defer e2.Close()
	for _, c := range []struct {
		tag, ct string
		ctx     []byte
	}{{aes.Tag, aesCT, nil}, {conv.Tag, convCT, []byte("ctx")}, {rsaKey.Tag, rsaCT, nil}} {
		if pt, err := e2.Decrypt(ctx, c.tag, c.ct, c.ctx); err != nil || !bytes.Equal(pt, msg) {
			t.Fatalf("decrypt after restart: %v", err)
		}
	}
	if again, _ := e2.Encrypt(ctx, conv.Tag, msg, []byte("ctx")); again != convCT {
		t.Fatal("convergent ciphertext changed across restart")
	}
	for _, s := range []struct{ tag, sig string }{{rsaKey.Tag, rsaSig}, {ec.Tag, ecSig}} {
		if ok, err := e2.Verify(ctx, s.tag, msg, s.sig); err != nil || !ok {
			t.Fatalf("verify after restart: %v %v", ok, err)
		}
	}
	if _, err := e2.WithToken(set.Access, caller).Encrypt(ctx, aes.Tag, msg, nil); err != nil {
		t.Fatalf("token after restart: %v", err)
	}
	if _, err := e2.IssueTokens(ctx, aes.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "hsm"}); err != nil {
		t.Fatalf("issuing with the token's signing key after restart: %v", err)
	}
}

// TestEngineWrongToken: a store made on one token cannot be opened with a
// backend on another.
func TestEngineWrongToken(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, err := kms.New(ctx, softhsmtest.New(t), kms.WithDirectory(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "aes", Type: kms.AES256}); err != nil {
		t.Fatal(err)
	}
	e.Close()
	_, err = kms.New(ctx, softhsmtest.New(t), kms.WithDirectory(dir))
	if err == nil {
		t.Fatal("a store opened on another token")
	}
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Kind != kms.ErrBackendMismatch {
		t.Fatalf("err = %v, want ErrBackendMismatch", err)
	}
}

// hsmRecorder records every handle its SoftHSM backend makes.
type hsmRecorder struct {
	*softhsm.Backend
	mu   sync.Mutex
	made []backend.LoadRequest
}

func (b *hsmRecorder) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	resp, err := b.Backend.Generate(ctx, req)
	if err == nil {
		b.mu.Lock()
		b.made = append(b.made, backend.LoadRequest{Ref: req.Ref, Type: req.Type, Convergent: req.Convergent, Handle: bytes.Clone(resp.Handle)})
		b.mu.Unlock()
	}
	return resp, err
}

// TestEngineOnSoftHSMDestroysMaterial: with a Badger directory the Engine
// stores a key's handles sealed under the key's shred key; destruction
// still gives the token the handles it made, so its objects are
// destroyed, both for a key destroyed by the process that loaded it and
// for one already due when the Engine opened (whose handles stay sealed
// until the destruction opens them), and the shred keys go after.
func TestEngineOnSoftHSMDestroysMaterial(t *testing.T) {
	cfg := softhsmtest.NewToken(t)
	dir := t.TempDir()
	ctx := context.Background()
	clk := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	rec := &hsmRecorder{}
	open := func() *kms.Engine {
		t.Helper()
		rec.Backend = softhsmtest.Open(t, cfg)
		e, err := kms.New(ctx, rec, kms.WithDirectory(dir), kms.WithClock(clk), kms.WithMaintenanceInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := open()
	var tags []string
	for _, name := range []string{"now", "later"} {
		k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: name, Type: kms.AES256})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.RotateKey(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
		if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
			t.Fatal(err)
		}
		tags = append(tags, k.Tag)
	}
	if _, err := e.RequestKeyDeletion(ctx, tags[0]); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay)
	if err := e.Maintain(ctx); err != nil {
		t.Fatalf("destroy in process: %v", err)
	}
	if _, err := e.RequestKeyDeletion(ctx, tags[1]); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	clk.Advance(kms.DeletionDelay)
	e = open()
	if err := e.Maintain(ctx); err != nil {
		t.Fatalf("destroy a key due at open: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	if len(rec.made) != 6 {
		t.Fatalf("%d handles made, want 6", len(rec.made))
	}
	be := softhsmtest.Open(t, cfg)
	for _, m := range rec.made {
		if _, err := be.Load(ctx, &m); !errors.Is(err, backend.ErrKeyNotFound) {
			t.Errorf("%s after destruction: Load = %v, want ErrKeyNotFound", m.Ref, err)
		}
	}
	for _, tag := range tags {
		if _, ok, err := shred.SlotOffset(dir, tag, false); ok || err != nil {
			t.Errorf("shred key of %s after destruction: %v %v", tag, ok, err)
		}
	}
}
