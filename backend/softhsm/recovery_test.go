//go:build cgo

package softhsm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/softhsm"
	"github.com/pocketkms/kms/backend/softhsm/internal/p11"
	"github.com/pocketkms/kms/backend/softhsm/softhsmtest"
)

// closeAllSessions closes every session of this process on cfg's token,
// as other code holding the module would (C_CloseAllSessions): the
// token's login ends, and its object handles are renumbered at the next
// login. A second PKCS#11 context is not possible in one process (one
// C_Initialize per process), so this uses the shared one.
func closeAllSessions(t testing.TB, cfg softhsm.Config) {
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
		if ti, err := m.Ctx.GetTokenInfo(slot); err == nil && ti.Label == cfg.TokenLabel {
			if err := m.Ctx.CloseAllSessions(slot); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("token %q not found", cfg.TokenLabel)
}

// pinFileToken creates a token whose Config reads the PIN from a file.
func pinFileToken(t *testing.T) (cfg softhsm.Config, pin, path string) {
	t.Helper()
	cfg, pin = newPINToken(t)
	path = filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(path, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.PIN, cfg.PINFile = softhsm.PIN{}, path
	return cfg, pin, path
}

// TestSessionLossRecovered: after every session of the process on the
// token was closed under the Backend, the very next call of every kind
// works: it reopens, logs in again (reading the PIN file again) and
// finds its objects again under their new handles. Before the fix the
// first call failed with CKR_SESSION_HANDLE_INVALID and every later one
// as a missing key (CKR_OBJECT_HANDLE_INVALID).
func TestSessionLossRecovered(t *testing.T) {
	for _, noCopies := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoSessionCopies=%t", noCopies), func(t *testing.T) {
			cfg, _, _ := pinFileToken(t)
			cfg.NoSessionCopies = noCopies
			b := softhsmtest.Open(t, cfg)
			aes := generate(t, b, backend.AES256, true)
			rsaM := generate(t, b, backend.RSA2048, false)
			ec := generate(t, b, backend.ECDSA, false)
			unloaded := generate(t, b, backend.AES256, false)
			doomed := generate(t, b, backend.ECDSA, false)
			ka, kr, ke := load(t, b, aes), load(t, b, rsaM), load(t, b, ec)
			ct := encrypt(t, ka, []byte("pt"), []byte("ad"))
			rsaCT, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, rsaM.public.(*rsa.PublicKey), []byte("pt"), nil)
			if err != nil {
				t.Fatal(err)
			}
			ops := []struct {
				name string
				fn   func() error
			}{
				{"AES encrypt", func() error {
					got := encrypt(t, ka, []byte("pt"), []byte("ad"))
					if !bytes.Equal(got, ct) {
						return errors.New("convergent ciphertext changed")
					}
					return nil
				}},
				{"AES decrypt", func() error {
					_, err := ka.(backend.Decrypter).Decrypt(t.Context(), &backend.DecryptRequest{Ciphertext: ct, AdditionalData: []byte("ad")})
					return err
				}},
				{"RSA decrypt", func() error {
					_, err := kr.(backend.Decrypter).Decrypt(t.Context(), &backend.DecryptRequest{Ciphertext: rsaCT})
					return err
				}},
				{"RSA sign", func() error {
					_, err := kr.(backend.Signer).Sign(t.Context(), &backend.SignRequest{Digest: make([]byte, 32)})
					return err
				}},
				{"ECDSA sign", func() error {
					_, err := ke.(backend.Signer).Sign(t.Context(), &backend.SignRequest{Digest: make([]byte, 32)})
					return err
				}},
				{"Load", func() error {
					k, err := b.Load(t.Context(), unloaded.load())
					if err == nil {
						_, err = k.(backend.Encrypter).Encrypt(t.Context(), &backend.EncryptRequest{Plaintext: []byte("x")})
					}
					return err
				}},
				{"Generate", func() error {
					_, err := b.Generate(t.Context(), &backend.GenerateRequest{Ref: newRef(t, backend.PurposeCipher), Type: backend.ECDSA})
					return err
				}},
				{"Destroy", func() error { return b.Destroy(t.Context(), doomed.destroy()) }},
			}
			for _, op := range ops {
				closeAllSessions(t, cfg)
				if err := op.fn(); err != nil {
					t.Errorf("%s, first call after the sessions were closed: %v", op.name, err)
				}
			}
			// Generate left one key pair, not two, and Destroy destroyed:
			// AES+HMAC, RSA pair, ECDSA pair, AES, the new ECDSA pair.
			if n := countObjects(t, cfg, nil); n != 9 {
				t.Errorf("%d token objects, want 9", n)
			}
			// A new Backend on the token, whose login was lost meanwhile,
			// logs it in again.
			closeAllSessions(t, cfg)
			b2 := softhsmtest.Open(t, cfg)
			if _, err := load(t, b2, ec).(backend.Signer).Sign(t.Context(), &backend.SignRequest{Digest: make([]byte, 32)}); err != nil {
				t.Errorf("Sign on a new Backend after the sessions were closed: %v", err)
			}
			if err := ops[0].fn(); err != nil {
				t.Errorf("the first Backend after the second one logged in again: %v", err)
			}
		})
	}
}

// TestSessionLossWrongPIN: when the token must be logged in again and
// the PIN source now holds a wrong PIN, calls fail as
// backend.ErrUnavailable wrapping softhsm.ErrIncorrectPIN (never as a
// missing key), without the PIN in the message, and the same wrong PIN
// is not tried again (retries must not lock the PIN). Once the file holds
// the right PIN again, the next call logs in and works: the file is read
// again at each login.
func TestSessionLossWrongPIN(t *testing.T) {
	cfg, pin, path := pinFileToken(t)
	b := softhsmtest.Open(t, cfg)
	k := load(t, b, generate(t, b, backend.AES256, false))
	wrong := "wrong-" + pin
	if err := os.WriteFile(path, []byte(wrong), 0o600); err != nil {
		t.Fatal(err)
	}
	closeAllSessions(t, cfg)
	for i := range 3 {
		_, err := k.(backend.Encrypter).Encrypt(t.Context(), &backend.EncryptRequest{Plaintext: []byte("x")})
		if !errors.Is(err, backend.ErrUnavailable) || !errors.Is(err, softhsm.ErrIncorrectPIN) || errors.Is(err, backend.ErrKeyNotFound) {
			t.Fatalf("call %d with a wrong PIN file: %v, want ErrUnavailable and ErrIncorrectPIN", i, err)
		}
		for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
			if strings.Contains(s, pin) || strings.Contains(s, wrong) {
				t.Fatalf("error reveals a PIN: %s", s)
			}
		}
		if i > 0 && !strings.Contains(err.Error(), "not tried again") {
			t.Errorf("call %d tried the refused PIN again: %v", i, err)
		}
	}
	// A New with the wrong PIN fails clearly, and does not disturb b.
	c := cfg
	c.PIN, c.PINFile = softhsm.NewPIN(wrong), ""
	if _, err := softhsm.New(t.Context(), c); !errors.Is(err, softhsm.ErrIncorrectPIN) || strings.Contains(err.Error(), wrong) {
		t.Fatalf("New with a wrong PIN: %v, want ErrIncorrectPIN without the PIN", err)
	}
	if err := os.WriteFile(path, []byte(pin), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := k.(backend.Encrypter).Encrypt(t.Context(), &backend.EncryptRequest{Plaintext: []byte("x")}); err != nil {
		t.Fatalf("Encrypt once the PIN file is right again: %v", err)
	}
	for _, v := range []any{b, k, cfg} {
		for _, verb := range []string{"%v", "%+v", "%#v"} {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, pin) {
				t.Errorf("%s of %T reveals the PIN: %s", verb, v, out)
			}
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes (the log).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestEngineSessionLossUnderLoad: goroutines encrypt, decrypt and sign
// through an Engine on the token while every session of the process on
// it is closed, five times; after each, calls resume in the same
// process. At most the calls in flight at a closing may fail, and only as
// kms.ErrUnavailable, never kms.ErrBackendMismatch; a new Backend on the
// token works in between. The PIN (read from a file) appears in no
// error, log line or formatted value.
//
// SoftHSM2 2.6.1 frees a session in C_CloseAllSessions while another
// thread may be inside a call on it (heap corruption, SIGABRT: seen with
// an unsynchronised closer here), so the closer waits for the Engine
// calls in flight (gate) and closes between them, as any user of the
// module must; the workers go on at once and meet the closed sessions.
// The backend's own resets are synchronised inside it.
func TestEngineSessionLossUnderLoad(t *testing.T) {
	cfg, pin, _ := pinFileToken(t)
	ctx := context.Background()
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	be := softhsmtest.Open(t, cfg)
	e, err := kms.New(ctx, be, kms.WithDirectory(t.TempDir()), kms.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	aes, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "aes", Type: kms.AES256})
	if err != nil {
		t.Fatal(err)
	}
	conv, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "conv", Type: kms.AES256, Convergent: true})
	rsaKey, _ := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "rsa", Type: kms.RSA2048})
	ec, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "ecdsa", Type: kms.ECDSA})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("under load")
	rsaCT, err := e.Encrypt(ctx, rsaKey.Tag, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ops := []func() error{
		func() error {
			ct, err := e.Encrypt(ctx, aes.Tag, msg, nil)
			if err != nil {
				return err
			}
			pt, err := e.Decrypt(ctx, aes.Tag, ct, nil)
			if err == nil && !bytes.Equal(pt, msg) {
				t.Error("AES round trip gave another plaintext")
			}
			return err
		},
		func() error {
			ct, err := e.Encrypt(ctx, conv.Tag, msg, []byte("ctx"))
			if err != nil {
				return err
			}
			_, err = e.Decrypt(ctx, conv.Tag, ct, []byte("ctx"))
			return err
		},
		func() error {
			pt, err := e.Decrypt(ctx, rsaKey.Tag, rsaCT, nil)
			if err == nil && !bytes.Equal(pt, msg) {
				t.Error("RSA decryption gave another plaintext")
			}
			return err
		},
		func() error {
			sig, err := e.Sign(ctx, ec.Tag, msg)
			if err != nil {
				return err
			}
			if ok, err := e.Verify(ctx, ec.Tag, msg, sig); err != nil || !ok {
				t.Errorf("Verify = %v, %v", ok, err)
			}
			_, err = e.Sign(ctx, rsaKey.Tag, msg)
			return err
		},
	}
	const workers = 8
	var (
		done     atomic.Int64
		mu       sync.Mutex
		failures []error // the first 100
		failed   int
		gate     sync.RWMutex
		wg       sync.WaitGroup
		stop     = make(chan struct{})
	)
	for g := range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				gate.RLock()
				err := ops[g%len(ops)]()
				gate.RUnlock()
				if err != nil {
					mu.Lock()
					if failed++; len(failures) < 100 {
						failures = append(failures, err)
					}
					mu.Unlock()
					continue
				}
				done.Add(1)
			}
		})
	}
	progress := func(what string) {
		t.Helper()
		n := done.Load()
		deadline := time.Now().Add(20 * time.Second)
		for done.Load() < n+4*workers {
			if time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				var first error
				if len(failures) > 0 {
					first = failures[0]
				}
				t.Fatalf("no progress %s: %d calls failed, the first with %v", what, failed, first)
			}
			time.Sleep(time.Millisecond)
		}
	}
	progress("before the first closing")
	const closings = 5
	for i := range closings {
		gate.Lock()
		closeAllSessions(t, cfg)
		gate.Unlock()
		if i == 2 {
			// A new Backend on the token, opened before the Engine's
			// calls noticed: it logs the token in again and works.
			b2, err := softhsm.New(ctx, cfg)
			if err != nil {
				t.Fatalf("New after the sessions were closed: %v", err)
			}
			k := load(t, b2, generate(t, b2, backend.AES256, false))
			encrypt(t, k, msg, nil)
			b2.Close()
		}
		progress(fmt.Sprintf("after closing %d", i+1))
	}
	close(stop)
	wg.Wait()
	t.Logf("%d calls, %d failed, over %d closings", done.Load(), failed, closings)
	if failed > closings*workers {
		t.Errorf("%d calls failed; at most the %d in flight at the closings may", failed, closings*workers)
	}
	var texts []string
	for _, err := range failures {
		if !errors.Is(err, kms.ErrUnavailable) || errors.Is(err, kms.ErrBackendMismatch) {
			t.Errorf("a call failed with %v; want kms.ErrUnavailable, never ErrBackendMismatch", err)
		}
		texts = append(texts, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
	}
	for _, v := range []any{e, be, cfg} {
		texts = append(texts, fmt.Sprintf("%v", v), fmt.Sprintf("%+v", v), fmt.Sprintf("%#v", v))
	}
	texts = append(texts, logs.String())
	for _, s := range texts {
		if strings.Contains(s, pin) {
			t.Fatalf("the PIN appears in %q", s)
		}
	}
}

// TestStaleHandlesFoundAgain: when the token logs out and in again under
// the Backend (other code calls C_Logout and C_Login; the sessions stay
// open), SoftHSM2 renumbers the objects and drops the session copies: the
// next call meets CKR_OBJECT_HANDLE_INVALID, finds its objects again by
// CKA_ID and label, and works, without a reset.
func TestStaleHandlesFoundAgain(t *testing.T) {
	for _, noCopies := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoSessionCopies=%t", noCopies), func(t *testing.T) {
			cfg, pin := newPINToken(t)
			cfg.NoSessionCopies = noCopies
			b := softhsmtest.Open(t, cfg)
			k := load(t, b, generate(t, b, backend.AES256, true))
			ct := encrypt(t, k, []byte("pt"), nil)
			withRawSession(t, cfg, func(p *pkcs11.Ctx, s pkcs11.SessionHandle) {
				if err := p.Logout(s); err != nil {
					t.Fatal(err)
				}
				if err := p.Login(s, pkcs11.CKU_USER, pin); err != nil {
					t.Fatal(err)
				}
			})
			if got := encrypt(t, k, []byte("pt"), nil); !bytes.Equal(got, ct) {
				t.Error("convergent ciphertext changed")
			}
		})
	}
}
