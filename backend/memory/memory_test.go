package memory_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/backendtest"
	"github.com/pocketkms/kms/backend/memory"
)

// newBackend returns a backend with a fresh root key.
func newBackend(t *testing.T) backend.Backend {
	t.Helper()
	root, err := memory.GenerateRootKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := memory.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openDir keeps the root key in dir/root.key, creating it on first use:
// the backend's state lives in dir.
func openDir(t *testing.T, dir string) backend.Backend {
	t.Helper()
	path := filepath.Join(dir, "root.key")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		root, err := memory.GenerateRootKey()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, root, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, err := memory.NewFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) { backendtest.Run(t, openDir) }

func tag(c byte) string { return strings.Repeat(string(c), 64) }

func cipherRef(c byte) backend.KeyRef {
	return backend.KeyRef{KeyTag: tag(c), Version: 1, Purpose: backend.PurposeCipher}
}

func TestNewRootKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		_, err := memory.New(make([]byte, n))
		if !errors.Is(err, backend.ErrInvalidArgument) {
			t.Errorf("New with a %d-byte root key: %v, want ErrInvalidArgument", n, err)
		}
	}
	if _, err := memory.New(make([]byte, 32), memory.WithRandom(nil)); !errors.Is(err, backend.ErrInvalidArgument) {
		t.Errorf("New with a nil random source: %v, want ErrInvalidArgument", err)
	}
}

func TestRootKeyCopied(t *testing.T) {
	root, _ := memory.GenerateRootKey()
	b, err := memory.New(root)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := b.Generate(t.Context(), &backend.GenerateRequest{Ref: cipherRef('a'), Type: backend.AES256})
	if err != nil {
		t.Fatal(err)
	}
	clear(root) // the caller wipes its copy
	if _, err := b.Load(t.Context(), &backend.LoadRequest{Ref: cipherRef('a'), Type: backend.AES256, Handle: resp.Handle}); err != nil {
		t.Fatalf("Load after the caller cleared its root key: %v", err)
	}
}

func TestWrongRootKey(t *testing.T) {
	ctx := t.Context()
	b1 := newBackend(t)
	b2 := newBackend(t)
	for _, typ := range []backend.KeyType{backend.AES256, backend.ECDSA} {
		resp, err := b1.Generate(ctx, &backend.GenerateRequest{Ref: cipherRef('b'), Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		_, err = b2.Load(ctx, &backend.LoadRequest{Ref: cipherRef('b'), Type: typ, Handle: resp.Handle})
		if !errors.Is(err, backend.ErrInvalidHandle) {
			t.Errorf("%v: Load under another root key: %v, want ErrInvalidHandle", typ, err)
		}
		if err != nil && err.Error() != "memory: load key "+tag('b')+" v1 (cipher): backend: invalid key handle" {
			t.Errorf("%v: error says more than it should: %q", typ, err)
		}
	}
}

// TestHandleFormat pins the documented layout: format byte, nonce, sealed
// material (32-byte key + tag for AES256).
func TestHandleFormat(t *testing.T) {
	b := newBackend(t)
	for _, c := range []struct {
		convergent bool
		size       int
	}{{false, 1 + 12 + 32 + 16}, {true, 1 + 12 + 64 + 16}} {
		resp, err := b.Generate(t.Context(), &backend.GenerateRequest{Ref: cipherRef('c'), Type: backend.AES256, Convergent: c.convergent})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Handle[0] != 1 || len(resp.Handle) != c.size {
			t.Errorf("convergent=%v: handle starts with %#x and is %d bytes, want 0x01 and %d", c.convergent, resp.Handle[0], len(resp.Handle), c.size)
		}
	}
}

func TestNewFromFile(t *testing.T) {
	root, _ := memory.GenerateRootKey()
	hexRoot := hex.EncodeToString(root)
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask-proof
			t.Fatal(err)
		}
		return p
	}

	// A handle sealed under root, to check that every accepted form is
	// the same key.
	ref, err := memory.New(root)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ref.Generate(t.Context(), &backend.GenerateRequest{Ref: cipherRef('d'), Type: backend.AES256})
	if err != nil {
		t.Fatal(err)
	}

	good := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"raw", root, 0o600},
		{"raw-readonly", root, 0o400},
		{"hex", []byte(hexRoot), 0o600},
		{"hex-newline", []byte(hexRoot + "\n"), 0o600},
		{"hex-crlf", []byte(hexRoot + "\r\n"), 0o600},
		{"hex-upper", []byte(strings.ToUpper(hexRoot)), 0o600},
	}
	for _, c := range good {
		b, err := memory.NewFromFile(write(c.name, c.data, c.mode))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if _, err := b.Load(t.Context(), &backend.LoadRequest{Ref: cipherRef('d'), Type: backend.AES256, Handle: resp.Handle}); err != nil {
			t.Errorf("%s: the file's key is not the root key: %v", c.name, err)
		}
	}

	bad := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"empty", nil, 0o600},
		{"short", root[:31], 0o600},
		{"raw-newline", append(bytes.Clone(root), '\n'), 0o600},
		{"hex-short", []byte(hexRoot[:62]), 0o600},
		{"hex-128-bit", []byte(hexRoot[:32]), 0o600},
		{"hex-two-newlines", []byte(hexRoot + "\n\n"), 0o600},
		{"hex-space", []byte(" " + hexRoot), 0o600},
		{"hex-bad-char", []byte("zz" + hexRoot[2:]), 0o600},
		{"long", bytes.Repeat([]byte("a"), 4096), 0o600},
	}
	if runtime.GOOS != "windows" {
		bad = append(bad,
			struct {
				name string
				data []byte
				mode os.FileMode
			}{"group-readable", root, 0o640},
			struct {
				name string
				data []byte
				mode os.FileMode
			}{"world-readable", []byte(hexRoot), 0o604})
	}
	for _, c := range bad {
		_, err := memory.NewFromFile(write(c.name, c.data, c.mode))
		if !errors.Is(err, backend.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", c.name, err)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, hexRoot[:8]) || strings.Contains(strings.ToLower(msg), "zz") || strings.Contains(msg, string(root[:8])) {
			t.Errorf("%s: error reveals file content: %q", c.name, msg)
		}
	}

	if _, err := memory.NewFromFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
	if _, err := memory.NewFromFile(dir); err == nil {
		t.Error("a directory was accepted as a root key file")
	}
}

// TestRedaction checks that no formatting path prints key material.
func TestRedaction(t *testing.T) {
	root := bytes.Repeat([]byte{0xab}, 32)
	b, err := memory.New(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	aesMaterial := bytes.Repeat([]byte{0xcd}, 32)
	convMaterial := bytes.Repeat([]byte{0xef}, 32)
	resp, err := b.ImportKey(ctx, &backend.ImportRequest{Ref: cipherRef('e'), Type: backend.AES256, Material: aesMaterial, ConvergentKey: convMaterial})
	if err != nil {
		t.Fatal(err)
	}
	aesKey, err := b.Load(ctx, &backend.LoadRequest{Ref: cipherRef('e'), Type: backend.AES256, Convergent: true, Handle: resp.Handle})
	if err != nil {
		t.Fatal(err)
	}
	rsaResp, err := b.Generate(ctx, &backend.GenerateRequest{Ref: cipherRef('f'), Type: backend.RSA2048})
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := b.Load(ctx, &backend.LoadRequest{Ref: cipherRef('f'), Type: backend.RSA2048, Handle: rsaResp.Handle})
	if err != nil {
		t.Fatal(err)
	}
	ecResp, err := b.Generate(ctx, &backend.GenerateRequest{Ref: cipherRef('0'), Type: backend.ECDSA})
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := b.Load(ctx, &backend.LoadRequest{Ref: cipherRef('0'), Type: backend.ECDSA, Handle: ecResp.Handle})
	if err != nil {
		t.Fatal(err)
	}

	// Forbidden: runs of the secret bytes in any common rendering, and
	// anything that looks like a big integer dump of a private key.
	forbidden := []string{"abababab", "cdcdcdcd", "efefefef", "ABABABAB", "CDCDCDCD", "EFEFEFEF",
		"171 171 171", "205 205 205", "239 239 239", "q6urq6ur", "zc3Nzc3N", "7+/v7+/v",
		"D:", "Primes", "Precomputed", "aead", "priv"}
	values := map[string]any{"backend": b, "aes": aesKey, "rsa": rsaKey, "ecdsa": ecKey}
	for name, v := range values {
		var outs []string
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
			outs = append(outs, fmt.Sprintf(verb, v))
		}
		outs = append(outs, fmt.Sprint(v), fmt.Sprintln(v), fmt.Sprintf("%v", []any{v}), fmt.Sprintf("%+v", struct{ K any }{v}))
		j, err := json.Marshal(v)
		if err != nil {
			t.Errorf("%s: json: %v", name, err)
		}
		outs = append(outs, string(j))
		var logBuf bytes.Buffer
		slog.New(slog.NewTextHandler(&logBuf, nil)).Info("x", "v", v)
		slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "v", v)
		outs = append(outs, logBuf.String())
		for _, out := range outs {
			for _, f := range forbidden {
				if strings.Contains(out, f) {
					t.Errorf("%s: output reveals %q: %s", name, f, out)
				}
			}
		}
		if s := fmt.Sprint(v); !strings.Contains(s, "redacted") {
			t.Errorf("%s: %q does not say it is redacted", name, s)
		}
	}
	if s := fmt.Sprint(aesKey); !strings.Contains(s, tag('e')) || !strings.Contains(s, "AES256") {
		t.Errorf("key description %q lacks its type or tag", s)
	}
}

// TestKeySeparation checks memory's purpose rules for RSA keys: the
// purpose fixes the signature algorithm, and token-signing keys neither
// encrypt nor decrypt.
func TestKeySeparation(t *testing.T) {
	b := newBackend(t)
	ctx := t.Context()
	d := sha256.Sum256([]byte("m"))
	load := func(p backend.Purpose) (backend.Key, *rsa.PublicKey) {
		ref := backend.KeyRef{KeyTag: tag('1'), Version: 1, Purpose: p}
		resp, err := b.Generate(ctx, &backend.GenerateRequest{Ref: ref, Type: backend.RSA2048})
		if err != nil {
			t.Fatal(err)
		}
		k, err := b.Load(ctx, &backend.LoadRequest{Ref: ref, Type: backend.RSA2048, Handle: resp.Handle})
		if err != nil {
			t.Fatal(err)
		}
		return k, resp.Public.(*rsa.PublicKey)
	}
	cipherKey, cipherPub := load(backend.PurposeCipher)
	tokenKey, tokenPub := load(backend.PurposeTokenSigning)
	sig, err := cipherKey.(backend.Signer).Sign(ctx, &backend.SignRequest{Digest: d[:]})
	if err != nil {
		t.Fatal(err)
	}
	if rsa.VerifyPKCS1v15(cipherPub, crypto.SHA256, d[:], sig) == nil {
		t.Error("cipher key signs PKCS #1 v1.5")
	}
	sig, err = tokenKey.(backend.Signer).Sign(ctx, &backend.SignRequest{Digest: d[:]})
	if err != nil {
		t.Fatal(err)
	}
	if rsa.VerifyPSS(tokenPub, crypto.SHA256, d[:], sig, nil) == nil {
		t.Error("token-signing key signs PSS")
	}
	if _, ok := tokenKey.(backend.Encrypter); ok {
		t.Error("token-signing key implements backend.Encrypter")
	}
	if _, err := tokenKey.(backend.Decrypter).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: make([]byte, 256)}); !errors.Is(err, backend.ErrInvalidArgument) {
		t.Errorf("token-signing key decrypts: %v", err)
	}
}

// failingReader fails every read.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestWithRandomFailure(t *testing.T) {
	root, _ := memory.GenerateRootKey()
	b, err := memory.New(root, memory.WithRandom(failingReader{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := b.Generate(ctx, &backend.GenerateRequest{Ref: cipherRef('2'), Type: backend.AES256}); err == nil {
		t.Error("Generate succeeded without nonces")
	}
	// A reader that runs dry after sealing the handle: Encrypt must fail
	// cleanly rather than use a short or zero nonce.
	r := &limitedReader{n: backend.NonceSize}
	b2, err := memory.New(root, memory.WithRandom(r))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := b2.Generate(ctx, &backend.GenerateRequest{Ref: cipherRef('2'), Type: backend.AES256})
	if err != nil {
		t.Fatal(err)
	}
	k, err := b2.Load(ctx, &backend.LoadRequest{Ref: cipherRef('2'), Type: backend.AES256, Handle: resp.Handle})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{Plaintext: []byte("x")}); err == nil {
		t.Error("Encrypt succeeded without a nonce")
	}
}

// limitedReader yields n zero bytes, then fails.
type limitedReader struct{ n int }

func (r *limitedReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := min(len(p), r.n)
	clear(p[:n])
	r.n -= n
	return n, nil
}

func TestAbsurdSizes(t *testing.T) {
	b := newBackend(t)
	ctx := t.Context()
	resp, err := b.Generate(ctx, &backend.GenerateRequest{Ref: cipherRef('3'), Type: backend.AES256})
	if err != nil {
		t.Fatal(err)
	}
	k, err := b.Load(ctx, &backend.LoadRequest{Ref: cipherRef('3'), Type: backend.AES256, Handle: resp.Handle})
	if err != nil {
		t.Fatal(err)
	}
	huge := make([]byte, memory.MaxAESInput+1)
	if _, err := k.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{Plaintext: huge}); !errors.Is(err, backend.ErrInvalidArgument) {
		t.Errorf("oversized plaintext: %v, want ErrInvalidArgument", err)
	}
	if _, err := k.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{AdditionalData: huge}); !errors.Is(err, backend.ErrInvalidArgument) {
		t.Errorf("oversized additional data: %v, want ErrInvalidArgument", err)
	}
	if _, err := k.(backend.Decrypter).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: make([]byte, memory.MaxAESInput+29)}); !errors.Is(err, backend.ErrDecryptionFailed) {
		t.Errorf("oversized ciphertext: %v, want ErrDecryptionFailed", err)
	}
}

func TestCanceledContext(t *testing.T) {
	b := newBackend(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := b.Generate(ctx, &backend.GenerateRequest{Ref: cipherRef('4'), Type: backend.AES256}); err == nil {
		t.Error("Generate ran with a canceled context")
	}
}

func TestZeroValue(t *testing.T) {
	var b memory.Backend
	_, err := b.Generate(t.Context(), &backend.GenerateRequest{Ref: cipherRef('5'), Type: backend.AES256})
	if !errors.Is(err, backend.ErrClosed) {
		t.Errorf("zero Backend: %v, want ErrClosed", err)
	}
}
