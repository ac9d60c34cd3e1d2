package kms_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/ratelimit"
)

var fzWriteCorpus = flag.Bool("fuzz.writecorpus", false, "rewrite the checked-in seed corpora of FuzzDecrypt and FuzzBatch (testdata/fuzz) and skip the fuzz tests")

// fzRSAKey is the RSA key of every RSA key and token generator of the
// fuzz fixture: a fixed key keeps checked-in ciphertexts valid. It
// protects nothing.
const fzRSAKey = `-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCleKv0rMzuRDuD
SIyTQKgAkNb2lFVfguGznh1f0mbjGaF+DGJzzRQ2xI7HUZifUTNc9bsHOQzu4Isn
AsCqKR61l2tkHhfeOWXhit/kWoXS0jT5mISX16VYF4Dt9UEpje779W/miBnu9aGw
q3H7QYl9AIqspeLy0c5gfo0rKViCpKWv3d2zmiXnb6SZuy+TeWsqM61cukFmb2z4
fxQX6nNOj5QyxXX/0BLn6PPnCmSc8mgDoWI1+QFrSj0pyDt1ZoU5wgktR+cDsRg9
Fa3vP1vuHbR9L7yUNzYudFn0h0WgXbmJF9775EC7kSRaBx9frWRZ5YVETxjptC5M
UZTN/eUHAgMBAAECggEALr8VASXyLRvMnk2YHR+GdsZ0XCvSpI1yms4/6SqlE2JR
y6zPAXz9yW0lEu0by2Jius/W+vbkjvWTij1OVaQRP2bcGWghARBBFoMntjjWlpT5
D0xFpSnwVZ8qNs9zDbzBt5+CceOgQ/BTsff1VvCQWWaWRqkEoOmhvoPx+LARB7Ls
qzlC6HHZ0SNLyGymYZ2yr7JmaDJquoI3x6Irwhn15DeRDB2uJz8iTq/iYfev240y
Xlnkcpr8pkPGVgBSxfW53vnjPMSq4ZLyul0jDDKRF9eCc82ns8bueUe54F52uqGZ
AIKSj2aKW0aCfhMEVfFNUGUKJnXlwbI5xqWMK0wwXQKBgQDO4PaJI6+H7wGEdTiP
8WvyWbpYDiB915ekKcaQrtVsI0VVwT6WyKfmjtvoYjGfGBaE39v931XzdRaSzWAj
POrSCnyWppjRfQo5qkCIZEAwQoc9VpYMiP18inzKNQnNEoMIbNesnY63o7ssGxaV
ngh3qEq7Bs1dUSOZK5eu74npgwKBgQDMwsc/9skotfEFG5e/Ox+S/0p+KhtRJ4c+
u66BCtPOX0s/6BcY/99jHLbVKsNM9wjeGyV1M1Lcf8LCfDoton6s0km82drKBvgA
iQf4EXg8XFgC/+kxXmSetaDWHoS1PxWQu6Ix1GF4uXfoZ+bm5UnQn0r1jaeBUh3P
2JDD4J5zLQKBgGiPw4ulAb8OyhGMvb3jI9AmEc0Xtsxj/zz18GqIM06otQ6W0W+c
k2AwrG1T1Ai5QAiArMwv6V1XvMUOEJ0+2OC4dCggo/Sd4mEq79r/8IFz3q7d6JEF
XDlqNZBuJjoENT445PlV2SBwHNY6CrwsV9NCuCK3WWzk6b0tD0lXwLjJAoGBAJAe
yH+NBClTZkFiGnzO8HpWlegXWwLT/614DGtnY41uJVjl0twVvPXV0BpZ7vzNI8Cw
+rxzU28/vaWGKqzUIrUhjiUOcaChJw25ZZKFOUvC82+pEElfVxMeZAZRlLa9oEAu
0QqhobmHUY6TE0KRQFNGy0vqWGv9kF4q4Dn+b4hBAoGAdQ/KJ6psRcTDpNoSs3eJ
7yDqF61uWAgxaXuaQ0CJdF8DdwzY2rFP/fS26lgsTMbAAMtPfrGawbbABwcj4bJO
GoXvmUM255LPqFm8FFTl3qwPbK3h8XdvqzrHwkToUkCnO+1FJw0DjNFZCLjiGx2M
gIl4/P5QeYhWRBPaTKa+c3g=
-----END PRIVATE KEY-----
`

// fzBackend is the memory backend with fixed key material, so that the
// fixture's ciphertexts and signatures stay valid from run to run.
type fzBackend struct{ *memory.Backend }

func (b fzBackend) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	imp := &backend.ImportRequest{Ref: req.Ref, Type: req.Type}
	seed := sha256.Sum256(fmt.Appendf(nil, "pocketkms fuzz %s %d %s", req.Ref.KeyTag, req.Ref.Version, req.Ref.Purpose))
	switch req.Type {
	case backend.AES256:
		imp.Material = seed[:]
		if req.Convergent {
			c := sha256.Sum256(seed[:])
			imp.ConvergentKey = c[:]
		}
	case backend.RSA2048:
		block, _ := pem.Decode([]byte(fzRSAKey))
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		imp.Material = k
	case backend.ECDSA:
		seed[0] = 0x7f // below the order of P-256
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), seed[:])
		if err != nil {
			return nil, err
		}
		imp.Material = k
	}
	return b.ImportKey(ctx, imp)
}

// fzFix is the fuzz fixture: an Engine whose key tags and key material
// are the same in every run, and what it encrypted and signed.
type fzFix struct {
	e                  *kms.Engine
	aes, conv, rsa, ec *kms.Key
	access             string
	// known[tag] is every plaintext the fixture encrypts under the key;
	// for the convergent key, mapped to its context.
	known map[string]map[string]string
	// signed[tag] is every message the fixture signs with the key.
	signed map[string]map[string]bool
	cts    []fzCT
	sigs   []fzSig
}

type fzCT struct {
	tag, ct string
	ctx     []byte
}

type fzSig struct {
	tag, sig, data string
}

var (
	fzOnce sync.Once
	fzVal  *fzFix
	fzErr  error
)

// fzFixture builds the fixture once per process.
func fzFixture(tb testing.TB) *fzFix {
	tb.Helper()
	fzOnce.Do(func() { fzVal, fzErr = fzBuild() })
	if fzErr != nil {
		tb.Fatal(fzErr)
	}
	return fzVal
}

func fzBuild() (*fzFix, error) {
	ctx := context.Background()
	mb, err := memory.New(bytes.Repeat([]byte{0x5a}, memory.RootKeySize))
	if err != nil {
		return nil, err
	}
	e, err := kms.New(ctx, fzBackend{mb}, kms.WithRandom(rand.NewChaCha8([32]byte{'f', 'u', 'z', 'z'})),
		kms.WithMaintenanceInterval(0), kms.WithRateLimit(ratelimit.Limit{Unlimited: true}))
	if err != nil {
		return nil, err
	}
	f := &fzFix{e: e, known: map[string]map[string]string{}, signed: map[string]map[string]bool{}}
	mk := func(name string, typ kms.KeyType, conv bool) (*kms.Key, error) {
		k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: name, Type: typ, Convergent: conv})
		if err == nil {
			f.known[k.Tag] = map[string]string{}
			f.signed[k.Tag] = map[string]bool{}
		}
		return k, err
	}
	if f.aes, err = mk("fuzzaes", kms.AES256, false); err != nil {
		return nil, err
	}
	if f.conv, err = mk("fuzzconv", kms.AES256, true); err != nil {
		return nil, err
	}
	if f.rsa, err = mk("fuzzrsa", kms.RSA2048, false); err != nil {
		return nil, err
	}
	if f.ec, err = mk("fuzzec", kms.ECDSA, false); err != nil {
		return nil, err
	}
	enc := func(k *kms.Key, pt string, c []byte) error {
		ct, err := e.Encrypt(ctx, k.Tag, []byte(pt), c)
		if err != nil {
			return err
		}
		f.known[k.Tag][pt] = string(c)
		f.cts = append(f.cts, fzCT{k.Tag, ct, c})
		return nil
	}
	for v := range 2 {
		for i := range 3 {
			if err := enc(f.aes, fmt.Sprintf("aes plaintext %d", i), nil); err != nil {
				return nil, err
			}
			if err := enc(f.conv, fmt.Sprintf("convergent plaintext %d", i), fmt.Appendf(nil, "ctx-%d", i)); err != nil {
				return nil, err
			}
		}
		if v == 0 {
			for _, k := range []*kms.Key{f.aes, f.conv} {
				if _, err := e.RotateKey(ctx, k.Tag); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := enc(f.rsa, "rsa plaintext", nil); err != nil {
		return nil, err
	}
	for _, k := range []*kms.Key{f.rsa, f.ec} {
		for i := range 2 {
			data := fmt.Sprintf("signed message %d", i)
			sig, err := e.Sign(ctx, k.Tag, []byte(data))
			if err != nil {
				return nil, err
			}
			f.signed[k.Tag][data] = true
			f.sigs = append(f.sigs, fzSig{k.Tag, sig, data})
		}
	}
	if _, err := e.ActivateTokenGenerator(ctx, f.aes.Tag); err != nil {
		return nil, err
	}
	set, err := e.IssueTokens(ctx, f.aes.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "fuzz"})
	if err != nil {
		return nil, err
	}
	f.access = set.Access
	return f, nil
}

// fzTyped fails unless err is an *kms.Error whose Code and Status are
// set.
func fzTyped(t *testing.T, what string, err error) {
	t.Helper()
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Code == "" || ke.Status == 0 || ke.Kind == nil {
		t.Fatalf("%s: error %v (%T) is not a complete *kms.Error", what, err, err)
	}
}

// fzPlaintextOK fails unless pt is a plaintext the fixture encrypted
// under the key (with this context, for the convergent key): anything
// else decrypting would be a forgery.
func (f *fzFix) fzPlaintextOK(t *testing.T, what, tag string, pt, c []byte) {
	t.Helper()
	wantCtx, ok := f.known[tag][string(pt)]
	if !ok {
		t.Fatalf("%s: a forged ciphertext decrypted to %q", what, pt)
	}
	if tag == f.conv.Tag && wantCtx != string(c) {
		t.Fatalf("%s: convergent ciphertext of context %q decrypted under context %q", what, wantCtx, c)
	}
}

// FuzzDecrypt feeds arbitrary strings and contexts to Decrypt (AES,
// convergent AES, RSA), ReEncrypt, Verify (ECDSA, RSA) and the token
// plane's Decrypt. Property: no panic; every failure is a complete
// *kms.Error; a decryption succeeds only with a plaintext the fixture
// encrypted under that key (and context), and a signature verifies only
// over a message the fixture signed — anything else would be a forgery.
func FuzzDecrypt(f *testing.F) {
	fx := fzFixture(f)
	for i, c := range fx.cts {
		op := uint8(0)
		switch c.tag {
		case fx.conv.Tag:
			op = 1
		case fx.rsa.Tag:
			op = 2
		}
		f.Add(op, c.ct, c.ctx)
		f.Add(uint8(3+3*(i%2)), c.ct, c.ctx)
	}
	for _, s := range fx.sigs {
		op := uint8(4)
		if s.tag == fx.rsa.Tag {
			op = 5
		}
		f.Add(op, s.sig, []byte(s.data))
	}
	f.Fuzz(func(t *testing.T, op uint8, s string, c []byte) {
		ctx := context.Background()
		e := fx.e
		var pt []byte
		var err error
		var tag string
		switch op % 7 {
		case 0, 1, 2:
			tag = []string{fx.aes.Tag, fx.conv.Tag, fx.rsa.Tag}[op%7]
			pt, err = e.Decrypt(ctx, tag, s, c)
		case 3:
			tag = fx.aes.Tag
			var re string
			if re, err = e.ReEncrypt(ctx, tag, s, c); err == nil {
				if pt, err = e.Decrypt(ctx, tag, re, c); err != nil {
					t.Fatalf("a re-encrypted ciphertext does not decrypt: %v", err)
				}
			}
		case 4, 5:
			tag = fx.ec.Tag
			if op%7 == 5 {
				tag = fx.rsa.Tag
			}
			ok, err := e.Verify(ctx, tag, c, s)
			if err != nil {
				fzTyped(t, "verify", err)
				return
			}
			if ok && !fx.signed[tag][string(c)] {
				t.Fatalf("verify accepted a signature over %q, a message never signed", c)
			}
			return
		case 6:
			tag = fx.aes.Tag
			pt, err = e.WithToken(fx.access, netip.MustParseAddr("10.1.2.3")).Decrypt(ctx, tag, s, c)
		}
		if err != nil {
			if pt != nil {
				t.Fatal("plaintext returned with an error")
			}
			fzTyped(t, "decrypt", err)
			return
		}
		fx.fzPlaintextOK(t, "decrypt", tag, pt, c)
		fzCanonical(t, s)
	})
}

// fzCanonical fails unless a ciphertext that was accepted is in the one
// canonical form: "ncpkms:v{N}:" and standard, padded base64 that encodes
// back to itself.
func fzCanonical(t *testing.T, s string) {
	t.Helper()
	body := s[strings.LastIndexByte(s, ':')+1:]
	b, err := base64.StdEncoding.Strict().DecodeString(body)
	if err == nil && base64.StdEncoding.EncodeToString(b) == body {
		return
	}
	t.Fatalf("a non-canonical ciphertext was accepted: %q", s)
}

// FuzzBatch builds BatchDecrypt and BatchReEncrypt item lists from fuzz
// bytes: genuine ciphertexts, genuine ones with a byte changed, and raw
// strings, with or without their context; n picks the item count (0 and
// over 100 included). Property: no panic; a call either fails as a whole
// — a complete *kms.Error, no results, a *kms.BatchError whose failures
// name items that exist, and the class NAVER's rule gives — or returns one
// result per item, each a plaintext the fixture encrypted under the key
// and context.
func FuzzBatch(f *testing.F) {
	fx := fzFixture(f)
	f.Add(uint8(3), false, []byte{0, 0, 0, 1, 0, 2})
	f.Add(uint8(2), true, []byte{0, 3, 1, 4, 9, 7})
	f.Add(uint8(4), false, []byte{2, 5, 'n', 'c', 'p', 'k', 'm', 0, 1})
	f.Add(uint8(0), false, []byte{})
	f.Add(uint8(101), true, []byte{0, 1})
	f.Fuzz(func(t *testing.T, n uint8, reEncrypt bool, data []byte) {
		ctx := context.Background()
		count := int(n) % 103
		tag := fx.aes.Tag
		if n%2 == 1 {
			tag = fx.conv.Tag
		}
		var genuine []fzCT
		for _, c := range fx.cts {
			if c.tag == tag {
				genuine = append(genuine, c)
			}
		}
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		items := make([]kms.DecryptItem, count)
		for i := range items {
			kind, arg := next(), next()
			g := genuine[int(arg)%len(genuine)]
			switch kind % 4 {
			case 0: // genuine, with its context
				items[i] = kms.DecryptItem{Ciphertext: g.ct, Context: g.ctx}
			case 1: // genuine with one byte changed
				b := []byte(g.ct)
				b[int(next())%len(b)] ^= next() | 1
				items[i] = kms.DecryptItem{Ciphertext: string(b), Context: g.ctx}
			case 2: // raw bytes
				l := int(arg) % (len(data) + 1)
				items[i] = kms.DecryptItem{Ciphertext: string(data[:l]), Context: g.ctx}
				data = data[l:]
			case 3: // genuine, with another context
				items[i] = kms.DecryptItem{Ciphertext: g.ct, Context: []byte{next()}}
			}
		}
		var pts [][]byte
		var err error
		if reEncrypt {
			var res []string
			if res, err = fx.e.BatchReEncrypt(ctx, tag, items); err == nil {
				if len(res) != count {
					t.Fatalf("%d results for %d items", len(res), count)
				}
				again := make([]kms.DecryptItem, count)
				for i := range res {
					again[i] = kms.DecryptItem{Ciphertext: res[i], Context: items[i].Context}
				}
				if pts, err = fx.e.BatchDecrypt(ctx, tag, again); err != nil {
					t.Fatalf("re-encrypted items do not decrypt: %v", err)
				}
			} else if res != nil {
				t.Fatal("results returned with an error")
			}
		} else {
			pts, err = fx.e.BatchDecrypt(ctx, tag, items)
			if err != nil && pts != nil {
				t.Fatal("results returned with an error")
			}
		}
		if err != nil {
			fzTyped(t, "batch", err)
			if count == 0 || count > kms.MaxBatchItems {
				if !errors.Is(err, kms.ErrInvalidArgument) {
					t.Fatalf("batch of %d items: %v, want invalid argument", count, err)
				}
				return
			}
			var be *kms.BatchError
			if !errors.As(err, &be) {
				t.Fatalf("batch failure without a *kms.BatchError: %v", err)
			}
			if len(be.Failures) == 0 {
				t.Fatal("BatchError lists no failed item")
			}
			var kind error
			for i, fe := range be.Failures {
				if i < 0 || i >= count || fe == nil {
					t.Fatalf("BatchError names item %d of %d (%v)", i, count, fe)
				}
				fzTyped(t, "batch item", fe)
				if kind == nil {
					kind = fe.Kind
				} else if kind != fe.Kind {
					kind = kms.ErrInvalidArgument
				}
			}
			if !errors.Is(err, kind) {
				t.Fatalf("batch error %v does not match its items' class %v", err, kind)
			}
			return
		}
		if count == 0 || count > kms.MaxBatchItems {
			t.Fatalf("a batch of %d items succeeded", count)
		}
		if len(pts) != count {
			t.Fatalf("%d plaintexts for %d items", len(pts), count)
		}
		for i := range pts {
			fx.fzPlaintextOK(t, fmt.Sprintf("batch item %d", i), tag, pts[i], items[i].Context)
		}
	})
}

// TestFuzzCorpus rewrites the checked-in seed corpora with
// -fuzz.writecorpus (after a change that invalidates them, such as a new
// ciphertext format); otherwise it checks that they exist.
func TestFuzzCorpus(t *testing.T) {
	fx := fzFixture(t)
	dirs := map[string][]string{}
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	for i, c := range fx.cts {
		op := 0
		switch c.tag {
		case fx.conv.Tag:
			op = 1
		case fx.rsa.Tag:
			op = 2
		}
		name := fmt.Sprintf("genuine-%d", i)
		dirs["FuzzDecrypt/"+name] = []string{fmt.Sprintf("uint8(%d)", op), "string(" + q(c.ct) + ")", "[]byte(" + q(string(c.ctx)) + ")"}
		b := []byte(c.ct)
		b[len(b)/2] ^= 4
		dirs["FuzzDecrypt/flipped-"+name] = []string{fmt.Sprintf("uint8(%d)", op), "string(" + q(string(b)) + ")", "[]byte(" + q(string(c.ctx)) + ")"}
	}
	first := fx.cts[0].ct
	body := first[strings.LastIndexByte(first, ':')+1:]
	for name, s := range map[string]string{
		"no-padding":      strings.TrimRight(first, "="),
		"url-alphabet":    strings.NewReplacer("+", "-", "/", "_").Replace(first),
		"version-zero":    "ncpkms:v0:" + body,
		"leading-zero":    "ncpkms:v01:" + body,
		"version-unknown": "ncpkms:v7:" + body,
		"space":           "ncpkms:v1: " + body,
		"empty-body":      "ncpkms:v1:",
		"huge-version":    "ncpkms:v4294967297:" + body,
		"truncated":       first[:len(first)-8],
		"crlf":            first[:len(first)-8] + "\r\n\r\n" + first[len(first)-8:],
	} {
		dirs["FuzzDecrypt/"+name] = []string{"uint8(0)", "string(" + q(s) + ")", `[]byte("")`}
	}
	for i, s := range fx.sigs {
		op := 4
		if s.tag == fx.rsa.Tag {
			op = 5
		}
		dirs[fmt.Sprintf("FuzzDecrypt/signature-%d", i)] = []string{fmt.Sprintf("uint8(%d)", op), "string(" + q(s.sig) + ")", "[]byte(" + q(s.data) + ")"}
		dirs[fmt.Sprintf("FuzzDecrypt/signature-other-message-%d", i)] = []string{fmt.Sprintf("uint8(%d)", op), "string(" + q(s.sig) + ")", "[]byte(" + q(s.data+"!") + ")"}
	}
	for name, args := range map[string][]string{
		"genuine-aes":       {"uint8(6)", "bool(false)", `[]byte("\x00\x00\x00\x01\x00\x02\x00\x03")`},
		"genuine-conv":      {"uint8(5)", "bool(true)", `[]byte("\x00\x00\x00\x01\x00\x02\x00\x03\x00\x04")`},
		"one-flipped":       {"uint8(4)", "bool(false)", `[]byte("\x00\x00\x01\x02\x11\x40\x00\x03")`},
		"raw-and-genuine":   {"uint8(2)", "bool(false)", `[]byte("\x02\x0bncpkms:v1:\x00\x01")`},
		"wrong-context":     {"uint8(3)", "bool(true)", `[]byte("\x03\x00\x07\x00\x01")`},
		"empty":             {"uint8(0)", "bool(false)", `[]byte("")`},
		"too-many":          {"uint8(101)", "bool(false)", `[]byte("\x00")`},
		"hundred":           {"uint8(100)", "bool(false)", `[]byte("\x00\x01")`},
		"reencrypt-genuine": {"uint8(3)", "bool(true)", `[]byte("\x00\x00\x00\x01\x00\x02")`},
	} {
		dirs["FuzzBatch/"+name] = args
	}
	for rel, args := range dirs {
		p := filepath.Join("testdata", "fuzz", rel)
		want := "go test fuzz v1\n" + strings.Join(args, "\n") + "\n"
		if *fzWriteCorpus {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("seed corpus: %v (regenerate with -run TestFuzzCorpus -fuzz.writecorpus)", err)
		}
		if !strings.HasPrefix(rel, "FuzzDecrypt/genuine-") {
			continue
		}
		// A genuine seed must still decrypt: the fixture's keys are the
		// same in every run.
		lines := strings.Split(string(got), "\n")
		if len(lines) < 4 || lines[0] != "go test fuzz v1" {
			t.Fatalf("%s: not a corpus file", p)
		}
		var op uint8
		fmt.Sscanf(lines[1], "uint8(%d)", &op)
		ct, err1 := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "string("), ")"))
		c, err2 := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[3], "[]byte("), ")"))
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		tag := []string{fx.aes.Tag, fx.conv.Tag, fx.rsa.Tag}[op%3]
		pt, err := fx.e.Decrypt(context.Background(), tag, ct, []byte(c))
		if err != nil {
			t.Errorf("%s: a genuine seed no longer decrypts (%v): regenerate with -fuzz.writecorpus", p, err)
			continue
		}
		fx.fzPlaintextOK(t, p, tag, pt, []byte(c))
	}
	if *fzWriteCorpus {
		t.Skipf("wrote %d seed files", len(dirs))
	}
}
