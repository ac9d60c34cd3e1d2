//go:build cgo

package softhsm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/softhsm"
	"github.com/pocketkms/kms/backend/softhsm/internal/p11"
	"github.com/pocketkms/kms/backend/softhsm/softhsmtest"
)

func newRef(t *testing.T, p backend.Purpose) backend.KeyRef {
	t.Helper()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return backend.KeyRef{KeyTag: hex.EncodeToString(b[:]), Version: 1, Purpose: p}
}

type material struct {
	ref        backend.KeyRef
	typ        backend.KeyType
	convergent bool
	handle     []byte
	public     crypto.PublicKey
}

func (m material) load() *backend.LoadRequest {
	return &backend.LoadRequest{Ref: m.ref, Type: m.typ, Convergent: m.convergent, Handle: m.handle}
}

func (m material) destroy() *backend.DestroyRequest {
	return &backend.DestroyRequest{Ref: m.ref, Type: m.typ, Handle: m.handle}
}

func generate(t *testing.T, b backend.Backend, typ backend.KeyType, convergent bool) material {
	t.Helper()
	p := backend.PurposeCipher
	ref := newRef(t, p)
	resp, err := b.Generate(t.Context(), &backend.GenerateRequest{Ref: ref, Type: typ, Convergent: convergent})
	if err != nil {
		t.Fatalf("Generate %v: %v", typ, err)
	}
	return material{ref: ref, typ: typ, convergent: convergent, handle: resp.Handle, public: resp.Public}
}

func load(t *testing.T, b backend.Backend, m material) backend.Key {
	t.Helper()
	k, err := b.Load(t.Context(), m.load())
	if err != nil {
		t.Fatalf("Load %v: %v", m.typ, err)
	}
	return k
}

func encrypt(t *testing.T, k backend.Key, pt, ad []byte) []byte {
	t.Helper()
	ct, err := k.(backend.Encrypter).Encrypt(t.Context(), &backend.EncryptRequest{Plaintext: pt, AdditionalData: ad})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	return ct
}

func TestTagFailureIsDecryptionFailed(t *testing.T) {
	b := softhsmtest.New(t)
	for _, convergent := range []bool{false, true} {
		k := load(t, b, generate(t, b, backend.AES256, convergent))
		ct := encrypt(t, k, []byte("secret plaintext"), []byte("ad"))
		for i := range ct {
			bad := bytes.Clone(ct)
			bad[i] ^= 0x80
			pt, err := k.(backend.Decrypter).Decrypt(t.Context(), &backend.DecryptRequest{Ciphertext: bad, AdditionalData: []byte("ad")})
			if !errors.Is(err, backend.ErrDecryptionFailed) || pt != nil {
				t.Fatalf("byte %d flipped: Decrypt = %q, %v; want ErrDecryptionFailed", i, pt, err)
			}
			if strings.Contains(err.Error(), "CKR_") {
				t.Fatalf("decryption error carries token detail: %v", err)
			}
		}
		// The session that saw the failure is fine afterwards.
		if _, err := k.(backend.Decrypter).Decrypt(t.Context(), &backend.DecryptRequest{Ciphertext: ct, AdditionalData: []byte("ad")}); err != nil {
			t.Fatalf("Decrypt after failures: %v", err)
		}
	}
}

func TestDestroyedKeyIsNotFound(t *testing.T) {
	for _, noCopies := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoSessionCopies=%t", noCopies), func(t *testing.T) {
			cfg := softhsmtest.NewToken(t)
			cfg.NoSessionCopies = noCopies
			b1 := softhsmtest.Open(t, cfg)
			b2 := softhsmtest.Open(t, cfg) // another Backend of the process on the same token
			aes := generate(t, b1, backend.AES256, true)
			ec := generate(t, b1, backend.ECDSA, false)
			k1, k2 := load(t, b1, aes), load(t, b2, aes)
			e1 := load(t, b2, ec)
			ct := encrypt(t, k1, []byte("pt"), nil)
			if err := b1.Destroy(t.Context(), aes.destroy()); err != nil {
				t.Fatal(err)
			}
			if err := b2.Destroy(t.Context(), ec.destroy()); err != nil {
				t.Fatal(err)
			}
			for name, k := range map[string]backend.Key{"same backend": k1, "other backend": k2} {
				if _, err := k.(backend.Encrypter).Encrypt(t.Context(), &backend.EncryptRequest{Plaintext: []byte("pt")}); !errors.Is(err, backend.ErrKeyNotFound) {
					t.Errorf("%s: Encrypt after Destroy: %v, want ErrKeyNotFound", name, err)
				}
				if _, err := k.(backend.Decrypter).Decrypt(t.Context(), &backend.DecryptRequest{Ciphertext: ct}); !errors.Is(err, backend.ErrKeyNotFound) {
					t.Errorf("%s: Decrypt after Destroy: %v, want ErrKeyNotFound", name, err)
				}
			}
			if _, err := e1.(backend.Signer).Sign(t.Context(), &backend.SignRequest{Digest: make([]byte, 32)}); !errors.Is(err, backend.ErrKeyNotFound) {
				t.Errorf("Sign after Destroy: %v, want ErrKeyNotFound", err)
			}
			for _, b := range []*softhsm.Backend{b1, b2} {
				if _, err := b.Load(t.Context(), aes.load()); !errors.Is(err, backend.ErrKeyNotFound) {
					t.Errorf("Load after Destroy: %v, want ErrKeyNotFound", err)
				}
				if err := b.Destroy(t.Context(), aes.destroy()); err != nil {
					t.Errorf("Destroy of destroyed material: %v", err)
				}
			}
			// Nothing is left in the token under the handle's labels.
			if n := countObjects(t, cfg, nil); n != 0 {
				t.Errorf("%d token objects left after Destroy", n)
			}
		})
	}
}

// withRawSession runs fn on a session of this process on cfg's token,
// which is logged in while any Backend on it is open.
func withRawSession(t testing.TB, cfg softhsm.Config, fn func(p *pkcs11.Ctx, s pkcs11.SessionHandle)) {
	t.Helper()
	m, err := p11.Acquire(cfg.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	slots, err := m.Ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range slots {
		ti, err := m.Ctx.GetTokenInfo(slot)
		if err != nil || ti.Label != cfg.TokenLabel {
			continue
		}
		s, err := m.Ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Ctx.CloseSession(s)
		fn(m.Ctx, s)
		return
	}
	t.Fatalf("token %q not found", cfg.TokenLabel)
}

// countObjects counts the token objects matching tmpl (all when nil).
func countObjects(t *testing.T, cfg softhsm.Config, tmpl []*pkcs11.Attribute) int {
	t.Helper()
	n := 0
	withRawSession(t, cfg, func(p *pkcs11.Ctx, s pkcs11.SessionHandle) {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true))
		if err := p.FindObjectsInit(s, tmpl); err != nil {
			t.Fatal(err)
		}
		defer p.FindObjectsFinal(s)
		objs, _, err := p.FindObjects(s, 1000)
		if err != nil {
			t.Fatal(err)
		}
		n = len(objs)
	})
	return n
}

func TestObjectAttributes(t *testing.T) {
	cfg := softhsmtest.NewToken(t)
	b := softhsmtest.Open(t, cfg)
	ms := []material{
		generate(t, b, backend.AES256, true),
		generate(t, b, backend.RSA2048, false),
		generate(t, b, backend.ECDSA, false),
	}
	if _, err := b.ImportKey(t.Context(), &backend.ImportRequest{Ref: newRef(t, backend.PurposeCipher), Type: backend.AES256, Material: make([]byte, 32), ConvergentKey: make([]byte, 32)}); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		load(t, b, m) // makes session copies, which must not count as token objects
	}
	withRawSession(t, cfg, func(p *pkcs11.Ctx, s pkcs11.SessionHandle) {
		if err := p.FindObjectsInit(s, nil); err != nil {
			t.Fatal(err)
		}
		objs, _, err := p.FindObjects(s, 100)
		p.FindObjectsFinal(s)
		if err != nil {
			t.Fatal(err)
		}
		secret := 0
		for _, o := range objs {
			attrs, err := p.GetAttributeValue(s, o, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil),
				pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, nil),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
				pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
			})
			if err != nil {
				t.Fatal(err)
			}
			label := string(attrs[3].Value)
			if !strings.HasPrefix(label, "pocketkms:cipher:") || len(attrs[4].Value) != 16 {
				t.Errorf("object %q: label or CKA_ID (%x) not as designed", label, attrs[4].Value)
			}
			isToken := attrs[1].Value[0] == 1
			if !isToken {
				continue // this process's session copies
			}
			if attrs[2].Value[0] != 1 {
				t.Errorf("object %q is not CKA_PRIVATE", label)
			}
			if class := attrs[0].Value[0]; class == pkcs11.CKO_PUBLIC_KEY {
				continue
			}
			secret++
			flags, err := p.GetAttributeValue(s, o, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
				pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
			})
			if err != nil {
				t.Fatal(err)
			}
			if flags[0].Value[0] != 1 || flags[1].Value[0] != 0 {
				t.Errorf("object %q: sensitive=%v extractable=%v", label, flags[0].Value, flags[1].Value)
			}
			if _, err := p.GetAttributeValue(s, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err == nil {
				t.Errorf("object %q: CKA_VALUE is readable", label)
			}
		}
		// AES + HMAC, RSA private, EC private, imported AES + HMAC.
		if secret != 6 {
			t.Errorf("found %d secret or private token objects, want 6", secret)
		}
	})
}

func TestReopenLoadsOldHandles(t *testing.T) {
	cfg := softhsmtest.NewToken(t)
	b1, err := softhsm.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	aes := generate(t, b1, backend.AES256, true)
	rsaM := generate(t, b1, backend.RSA2048, false)
	ct := encrypt(t, load(t, b1, aes), []byte("kept"), []byte("ad"))
	rsaCT, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, rsaM.public.(*rsa.PublicKey), []byte("kept"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	// The module was finalised with the last Backend; this initialises it
	// again and logs in again.
	b2 := softhsmtest.Open(t, cfg)
	for _, c := range []struct {
		m  material
		ct []byte
		ad []byte
	}{{aes, ct, []byte("ad")}, {rsaM, rsaCT, nil}} {
		pt, err := load(t, b2, c.m).(backend.Decrypter).Decrypt(t.Context(), &backend.DecryptRequest{Ciphertext: c.ct, AdditionalData: c.ad})
		if err != nil || string(pt) != "kept" {
			t.Errorf("%v after reopen: Decrypt = %q, %v", c.m.typ, pt, err)
		}
	}
	if again := encrypt(t, load(t, b2, aes), []byte("kept"), []byte("ad")); !bytes.Equal(again, ct) {
		t.Error("convergent ciphertext changed after reopen")
	}
}

func TestPIN(t *testing.T) {
	cfg, pin := newPINToken(t)
	dir := t.TempDir()

	t.Run("File", func(t *testing.T) {
		for name, content := range map[string]string{"Plain": pin, "LF": pin + "\n", "CRLF": pin + "\r\n"} {
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			c := cfg
			c.PIN, c.PINFile = softhsm.PIN{}, path
			b, err := softhsm.New(t.Context(), c)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			b.Close()
		}
	})
	t.Run("FileRejected", func(t *testing.T) {
		cases := map[string]struct {
			content string
			mode    os.FileMode
		}{
			"GroupReadable": {pin, 0o640},
			"Empty":         {"", 0o600},
			"TwoLines":      {pin + "\n" + pin + "\n", 0o600},
			"TooLong":       {strings.Repeat("1", 300), 0o600},
		}
		for name, c := range cases {
			path := filepath.Join(dir, "bad-"+name)
			if err := os.WriteFile(path, []byte(c.content), c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil {
				t.Fatal(err)
			}
			cf := cfg
			cf.PIN, cf.PINFile = softhsm.PIN{}, path
			_, err := softhsm.New(t.Context(), cf)
			if !errors.Is(err, softhsm.ErrInvalidConfig) {
				t.Errorf("%s: New = %v, want ErrInvalidConfig", name, err)
			}
			if err != nil && strings.Contains(err.Error(), pin) {
				t.Errorf("%s: error reveals the PIN: %v", name, err)
			}
		}
		cf := cfg
		cf.PIN, cf.PINFile = softhsm.PIN{}, filepath.Join(dir, "missing")
		if _, err := softhsm.New(t.Context(), cf); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("missing PIN file: %v", err)
		}
	})
	t.Run("Wrong", func(t *testing.T) {
		wrong := "wrong-" + pin
		c := cfg
		c.PIN = softhsm.NewPIN(wrong)
		_, err := softhsm.New(t.Context(), c)
		if !errors.Is(err, softhsm.ErrIncorrectPIN) {
			t.Fatalf("New with a wrong PIN: %v, want ErrIncorrectPIN", err)
		}
		if msg := err.Error(); strings.Contains(msg, wrong) || strings.Contains(msg, pin) || !strings.Contains(msg, cfg.TokenLabel) {
			t.Errorf("wrong-PIN error %q should name the token and no PIN", msg)
		}
		// While the token is logged in by another Backend, C_Login
		// accepts any PIN; New must still refuse the wrong one.
		softhsmtest.Open(t, cfg)
		if _, err := softhsm.New(t.Context(), c); !errors.Is(err, softhsm.ErrIncorrectPIN) {
			t.Errorf("New with a wrong PIN on a logged-in token: %v, want ErrIncorrectPIN", err)
		}
	})
}

// newPINToken creates a token whose PIN the test knows.
func newPINToken(t *testing.T) (softhsm.Config, string) {
	t.Helper()
	pin := "pin-" + newRef(t, backend.PurposeCipher).KeyTag[:16]
	return softhsmtest.NewTokenWithPIN(t, pin), pin
}

func TestConfigErrors(t *testing.T) {
	cfg := softhsmtest.NewToken(t)
	cases := []struct {
		name   string
		mutate func(*softhsm.Config)
		want   error
	}{
		{"NoModule", func(c *softhsm.Config) { c.Module = "" }, softhsm.ErrInvalidConfig},
		{"NoToken", func(c *softhsm.Config) { c.TokenLabel = "" }, softhsm.ErrInvalidConfig},
		{"NoPIN", func(c *softhsm.Config) { c.PIN = softhsm.PIN{} }, softhsm.ErrInvalidConfig},
		{"PINAndFile", func(c *softhsm.Config) { c.PINFile = "/x" }, softhsm.ErrInvalidConfig},
		{"NegativeSessions", func(c *softhsm.Config) { c.MaxSessions = -1 }, softhsm.ErrInvalidConfig},
		{"UnknownLabel", func(c *softhsm.Config) { c.TokenLabel = "no-such-token" }, softhsm.ErrTokenNotFound},
		{"WrongSerial", func(c *softhsm.Config) { c.TokenSerial = "0000000000000000" }, softhsm.ErrTokenNotFound},
	}
	for _, c := range cases {
		cf := cfg
		c.mutate(&cf)
		if _, err := softhsm.New(t.Context(), cf); !errors.Is(err, c.want) {
			t.Errorf("%s: New = %v, want %v", c.name, err, c.want)
		}
	}
	cf := cfg
	cf.Module = filepath.Join(t.TempDir(), "missing.so")
	if _, err := softhsm.New(t.Context(), cf); err == nil {
		t.Error("New with a missing module succeeded")
	}
}

func TestConcurrentSmallPool(t *testing.T) {
	cfg := softhsmtest.NewToken(t)
	cfg.MaxSessions = 2
	b1 := softhsmtest.Open(t, cfg)
	b2 := softhsmtest.Open(t, cfg)
	var keys []backend.Key
	for range 4 {
		m := generate(t, b1, backend.AES256, false)
		keys = append(keys, load(t, b1, m), load(t, b2, m))
	}
	conv := generate(t, b2, backend.AES256, true)
	keys = append(keys, load(t, b1, conv), load(t, b2, conv))
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 40 {
				k := keys[(g+i)%len(keys)]
				pt := fmt.Appendf(nil, "g%d i%d", g, i)
				ct, err := k.(backend.Encrypter).Encrypt(context.Background(), &backend.EncryptRequest{Plaintext: pt})
				if err != nil {
					t.Error(err)
					return
				}
				// Any instance of the same material decrypts it.
				other := keys[((g+i)%len(keys))^1]
				got, err := other.(backend.Decrypter).Decrypt(context.Background(), &backend.DecryptRequest{Ciphertext: ct})
				if err != nil || !bytes.Equal(got, pt) {
					t.Errorf("Decrypt = %q, %v", got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestContextWhileWaitingForSession(t *testing.T) {
	cfg := softhsmtest.NewToken(t)
	cfg.MaxSessions = 1
	b := softhsmtest.Open(t, cfg)
	k := load(t, b, generate(t, b, backend.AES256, false))
	// Hold the only session with a slow operation (RSA key generation)
	// while a call with a short deadline waits for it.
	ref := newRef(t, backend.PurposeCipher)
	done := make(chan error, 1)
	go func() {
		_, err := b.Generate(context.Background(), &backend.GenerateRequest{Ref: ref, Type: backend.RSA2048})
		done <- err
	}()
	sawBusy := false
	for !sawBusy {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		_, err := k.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{Plaintext: []byte("x")})
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			sawBusy = true // waited for the busy session and gave up
		case err != nil:
			t.Fatalf("Encrypt: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if !sawBusy {
				t.Skip("the key generation ended before a call found the session busy")
			}
			return
		default:
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestCloseWaitsForOperations(t *testing.T) {
	cfg := softhsmtest.NewToken(t)
	b, err := softhsm.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := load(t, b, generate(t, b, backend.AES256, false))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				_, err := k.(backend.Encrypter).Encrypt(context.Background(), &backend.EncryptRequest{Plaintext: []byte("x")})
				if errors.Is(err, backend.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Encrypt during Close: %v", err)
					return
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	// Another Backend opens the token again afterwards.
	softhsmtest.Open(t, cfg)
}

func TestFormatting(t *testing.T) {
	cfg, pin := newPINToken(t)
	b := softhsmtest.Open(t, cfg)
	k := load(t, b, generate(t, b, backend.AES256, false))
	type holder struct{ c softhsm.Config }
	type pinHolder struct{ p softhsm.PIN }
	for _, v := range []any{cfg, &cfg, holder{cfg}, &holder{cfg}, cfg.PIN, pinHolder{cfg.PIN}, b, k} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, pin) || strings.Contains(out, hex.EncodeToString([]byte(pin))) {
				t.Errorf("%s of %T reveals the PIN: %s", verb, v, out)
			}
		}
	}
}
