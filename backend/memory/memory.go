package memory

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/internal/softkey"
)

// RootKeySize is the size in bytes of a root key.
const RootKeySize = 32

// MaxAESInput is the largest plaintext, and the largest additional data,
// an AES256 key accepts, in bytes. It only rejects absurd sizes; the
// Engine's own limits are far smaller.
const MaxAESInput = softkey.MaxAESInput

// maxRootKeyFileSize bounds what NewFromFile reads: 64 hex characters and
// a CRLF.
const maxRootKeyFileSize = 2*RootKeySize + 2

var (
	_ backend.Backend  = (*Backend)(nil)
	_ backend.Importer = (*Backend)(nil)
)

// Option configures New and NewFromFile.
type Option func(*config)

type config struct {
	random io.Reader
}

// WithRandom replaces the source of AES-GCM nonces (random-nonce
// encryptions and handle sealing). It is meant for tests only, for
// instance to inject a failing reader; a predictable reader in production
// repeats nonces and destroys confidentiality. Key material is always
// generated from crypto/rand. The reader must be safe for concurrent use.
// A nil reader makes New fail.
func WithRandom(r io.Reader) Option {
	return func(c *config) { c.random = r }
}

// Backend is a software backend holding keys in memory. Create it with New
// or NewFromFile; the zero value is unusable and behaves as closed. It is
// safe for concurrent use.
type Backend struct {
	// root is the root key in use: it seals new handles and opens the
	// ones presented. staged is the root key a rotation is moving to
	// (StageRootKey), nil otherwise; see rotate.go.
	root   atomic.Pointer[rootState]
	staged atomic.Pointer[rootState]
	random io.Reader
	closed atomic.Bool
	keys   softkey.Owner // what loaded keys use: name, check, nonce source
}

// rootState is what the backend keeps of one root key.
type rootState struct {
	aead cipher.AEAD // AES-256-GCM under the root key; seals handles
	// check is HMAC-SHA256(root key, checkLabel): it names the root key
	// without revealing it (backend.CheckValuer).
	check []byte
}

// newRootState derives what the backend keeps of k, which the caller
// clears.
func newRootState(k []byte) (*rootState, error) {
	if len(k) != RootKeySize {
		return nil, fmt.Errorf("%w: root key must be %d bytes", backend.ErrInvalidArgument, RootKeySize)
	}
	aead, err := newGCM(k)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte(checkLabel))
	return &rootState{aead: aead, check: mac.Sum(nil)}, nil
}

// checkLabel is the fixed message of the root key's check value.
const checkLabel = "pocketkms/memory/root-key-check/v1"

// New returns a Backend whose handles are sealed under rootKey, which must
// be RootKeySize bytes; another size fails with backend.ErrInvalidArgument.
// rootKey is not retained: New derives what it needs and the caller may
// clear its slice afterwards.
func New(rootKey []byte, opts ...Option) (*Backend, error) {
	cfg := config{random: rand.Reader}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if cfg.random == nil {
		return nil, fmt.Errorf("memory: new: %w: nil random source", backend.ErrInvalidArgument)
	}
	k := bytes.Clone(rootKey)
	defer clear(k)
	rk, err := newRootState(k)
	if err != nil {
		return nil, fmt.Errorf("memory: new: %w", err)
	}
	b := &Backend{random: cfg.random}
	b.root.Store(rk)
	b.keys = softkey.Owner{Name: "memory", Check: b.check, Random: cfg.random}
	return b, nil
}

// CheckValue returns HMAC-SHA256 of a fixed label under the root key: equal
// for backends with the same root key, and revealing nothing of it
// (backend.CheckValuer).
func (b *Backend) CheckValue(ctx context.Context) ([]byte, error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	return bytes.Clone(b.root.Load().check), nil
}

// NewFromFile reads the root key from the file at path and calls New.
//
// The file holds either exactly RootKeySize raw bytes, or the key as 64
// hexadecimal characters (either case) optionally followed by one "\n" or
// "\r\n"; nothing else is accepted. A file of 32 hexadecimal characters
// (a 128-bit key as text) is refused, not read as 32 raw bytes. On Unix-like systems the file must not
// be readable, writable or executable by group or others (mode 0600 or
// 0400): a looser mode fails with backend.ErrInvalidArgument. Errors name
// the path but never the content.
func NewFromFile(path string, opts ...Option) (*Backend, error) {
	key, err := readRootKeyFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return New(key, opts...)
}

func readRootKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("memory: root key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("memory: root key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("memory: root key file %q: %w: not a regular file", path, backend.ErrInvalidArgument)
	}
	if runtime.GOOS != "windows" && runtime.GOOS != "plan9" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("memory: root key file %q: %w: mode %v gives access to group or others (use 0600)",
			path, backend.ErrInvalidArgument, fi.Mode().Perm())
	}
	buf := make([]byte, maxRootKeyFileSize+1)
	defer clear(buf)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("memory: root key file %q: read failed", path)
	}
	data := buf[:n]
	switch {
	case len(data) == RootKeySize && allHex(data):
		// 32 hexadecimal characters are a 128-bit key written as text,
		// not 32 raw bytes (which are all hex digits with probability
		// about 10^-34): refuse rather than use the text as the key.
	case len(data) == RootKeySize:
		key := make([]byte, RootKeySize)
		copy(key, data)
		return key, nil
	case len(data) >= 2*RootKeySize && len(data) <= maxRootKeyFileSize:
		rest := string(data[2*RootKeySize:])
		if rest != "" && rest != "\n" && rest != "\r\n" {
			break
		}
		key := make([]byte, RootKeySize)
		// The hex package's errors quote the offending character; they
		// are dropped so that no part of the key reaches an error.
		if _, err := hex.Decode(key, data[:2*RootKeySize]); err != nil {
			clear(key)
			break
		}
		return key, nil
	}
	return nil, fmt.Errorf("memory: root key file %q: %w: want %d raw bytes or %d hex characters",
		path, backend.ErrInvalidArgument, RootKeySize, 2*RootKeySize)
}

// GenerateRootKey returns a new random root key of RootKeySize bytes from
// crypto/rand. Keep it secret: it opens every handle sealed under it.
func GenerateRootKey() ([]byte, error) {
	k := make([]byte, RootKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("memory: generate root key: %w", err)
	}
	return k, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// check returns ErrClosed after Close, or the context's error.
func (b *Backend) check(ctx context.Context) error {
	if b.closed.Load() || b.root.Load() == nil {
		return backend.ErrClosed
	}
	if ctx != nil {
		return ctx.Err()
	}
	return nil
}

// Generate creates new key material and returns its sealed handle and
// public key. See backend.Backend for the error contract; the KeyRef must
// have a 64-character lowercase hex KeyTag and a Version of at least 1.
func (b *Backend) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("memory: generate: %w", err)
	}
	if req == nil {
		return nil, fmt.Errorf("memory: generate: %w: nil request", backend.ErrInvalidArgument)
	}
	if err := req.Ref.Validate(req.Type, req.Convergent); err != nil {
		return nil, fmt.Errorf("memory: generate %s: %w", req.Ref, err)
	}
	material, pub, err := softkey.Generate(req.Type, req.Convergent)
	if err != nil {
		return nil, fmt.Errorf("memory: generate %s: %w", req.Ref, err)
	}
	defer clear(material)
	h, err := b.seal(req.Ref, req.Type, req.Convergent, material)
	if err != nil {
		return nil, fmt.Errorf("memory: generate %s: %w", req.Ref, err)
	}
	return &backend.GenerateResponse{Handle: h, Public: pub}, nil
}

// ImportKey seals existing key material into a handle, as Generate does.
// Material of the wrong Go type, size or curve, or a ConvergentKey that is
// not 32 bytes or given for a non-AES key, fails with
// backend.ErrInvalidArgument. A non-empty ConvergentKey makes an AES256 key
// convergent: load it with Convergent set. The caller's material is not
// modified or retained.
func (b *Backend) ImportKey(ctx context.Context, req *backend.ImportRequest) (*backend.GenerateResponse, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("memory: import: %w", err)
	}
	if req == nil {
		return nil, fmt.Errorf("memory: import: %w: nil request", backend.ErrInvalidArgument)
	}
	convergent := len(req.ConvergentKey) > 0
	if err := req.Ref.Validate(req.Type, convergent); err != nil {
		return nil, fmt.Errorf("memory: import %s: %w", req.Ref, err)
	}
	material, pub, err := softkey.Import(req)
	if err != nil {
		return nil, fmt.Errorf("memory: import %s: %w", req.Ref, err)
	}
	defer clear(material)
	h, err := b.seal(req.Ref, req.Type, convergent, material)
	if err != nil {
		return nil, fmt.Errorf("memory: import %s: %w", req.Ref, err)
	}
	return &backend.GenerateResponse{Handle: h, Public: pub}, nil
}

// Load opens a handle and returns the key. A handle that does not open
// under this backend's root key for exactly req.Ref, req.Type and
// req.Convergent fails with backend.ErrInvalidHandle; a request naming an
// invalid type, purpose or KeyRef fails with backend.ErrInvalidArgument.
// Load does all the parsing; the returned key does no per-call setup.
func (b *Backend) Load(ctx context.Context, req *backend.LoadRequest) (backend.Key, error) {
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("memory: load: %w", err)
	}
	if req == nil {
		return nil, fmt.Errorf("memory: load: %w: nil request", backend.ErrInvalidArgument)
	}
	if err := req.Ref.Validate(req.Type, req.Convergent); err != nil {
		return nil, fmt.Errorf("memory: load %s: %w", req.Ref, err)
	}
	material, err := b.open(req.Ref, req.Type, req.Convergent, req.Handle)
	if err != nil {
		return nil, fmt.Errorf("memory: load %s: %w", req.Ref, backend.ErrInvalidHandle)
	}
	defer clear(material)
	k, err := softkey.Load(&b.keys, req.Ref, req.Type, req.Convergent, material)
	if err != nil {
		return nil, fmt.Errorf("memory: load %s: %w", req.Ref, backend.ErrInvalidHandle)
	}
	return k, nil
}

// Destroy validates the request and returns nil: this backend stores
// nothing, so the material is destroyed when the Engine deletes the handle
// (and every copy of it, backups included). Keys loaded earlier keep
// working until they are dropped or the backend is closed. An invalid
// request fails with backend.ErrInvalidArgument, a handle that is empty or
// not in this backend's format with backend.ErrInvalidHandle.
func (b *Backend) Destroy(ctx context.Context, req *backend.DestroyRequest) error {
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("memory: destroy: %w", err)
	}
	if req == nil {
		return fmt.Errorf("memory: destroy: %w: nil request", backend.ErrInvalidArgument)
	}
	if err := req.Ref.Validate(req.Type, false); err != nil {
		return fmt.Errorf("memory: destroy %s: %w", req.Ref, err)
	}
	if len(req.Handle) < handleOverhead || req.Handle[0] != handleFormatV1 {
		return fmt.Errorf("memory: destroy %s: %w", req.Ref, backend.ErrInvalidHandle)
	}
	return nil
}

// Close marks the backend closed. It is idempotent and always returns nil;
// afterwards every method of the backend and of the keys it loaded fails
// with backend.ErrClosed.
func (b *Backend) Close() error {
	b.closed.Store(true)
	return nil
}

// String returns a redacted description of the backend.
func (b *Backend) String() string {
	if b == nil {
		return "memory.Backend(nil)"
	}
	if b.closed.Load() {
		return "memory.Backend{closed, root key redacted}"
	}
	return "memory.Backend{root key redacted}"
}

// GoString returns the same redacted description as String.
func (b *Backend) GoString() string { return b.String() }

// Format prints the redacted description for every verb, so that no fmt
// verb reveals the root key.
func (b *Backend) Format(f fmt.State, _ rune) { io.WriteString(f, b.String()) }

// MarshalJSON encodes the redacted description as a JSON string.
func (b *Backend) MarshalJSON() ([]byte, error) { return json.Marshal(b.String()) }

// LogValue logs the redacted description.
func (b *Backend) LogValue() slog.Value { return slog.StringValue(b.String()) }

func allHex(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
