package kms_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/acl"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/token"
)

// hygSecrets is every secret of a hygiene run, by name, in the forms a
// leak could take.
type hygSecrets struct {
	mu    sync.Mutex
	forms map[string][]string // name -> forms
}

// addBytes registers a binary secret: raw, hex, base64 in both alphabets
// with and without padding, fmt's decimal byte list, and (for long
// secrets) windows of each form, so a truncated or partial leak counts.
func (s *hygSecrets) addBytes(name string, b []byte) {
	if len(b) < 8 {
		panic("hygiene: secret too short to search for: " + name)
	}
	forms := []string{
		string(b), hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)),
		base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		strings.Trim(fmt.Sprint(b[:8]), "[]"),
	}
	s.addForms(name, forms)
}

// addString registers a secret string: itself, and its bytes' forms.
func (s *hygSecrets) addString(name, str string) {
	s.addBytes(name, []byte(str))
}

func (s *hygSecrets) addForms(name string, forms []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.forms == nil {
		s.forms = map[string][]string{}
	}
	for _, f := range forms {
		if len(f) > 32 {
			// Windows of 24 characters every 8: a partial leak is a leak.
			for i := 0; i+24 <= len(f); i += 8 {
				s.forms[name] = append(s.forms[name], f[i:i+24])
			}
			continue
		}
		s.forms[name] = append(s.forms[name], f)
	}
}

// find returns the name of a secret text contains, or "".
func (s *hygSecrets) find(text string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, forms := range s.forms {
		for _, f := range forms {
			if strings.Contains(text, f) {
				return fmt.Sprintf("%s (as %q)", name, f)
			}
		}
	}
	return ""
}

// hygBackend is the memory backend with key material the test knows:
// AES keys it chooses, and RSA and ECDSA keys it generates and remembers.
type hygBackend struct {
	*memory.Backend
	secrets *hygSecrets
	n       int
}

func (b *hygBackend) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	b.secrets.mu.Lock()
	b.n++
	n := b.n
	b.secrets.mu.Unlock()
	imp := &backend.ImportRequest{Ref: req.Ref, Type: req.Type}
	name := fmt.Sprintf("%s material #%d (%s)", req.Type, n, req.Ref.Purpose)
	switch req.Type {
	case backend.AES256:
		k := fmt.Appendf(nil, "AESKEY-hygiene-%04d-abcdefghijkl", n)[:32]
		imp.Material = k
		b.secrets.addBytes(name, k)
		if req.Convergent {
			c := fmt.Appendf(nil, "CONVKEY-hygiene-%04d-abcdefghijk", n)[:32]
			imp.ConvergentKey = c
			b.secrets.addBytes(name+" convergent key", c)
		}
	case backend.RSA2048:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		imp.Material = k
		b.secrets.addBytes(name+" D", k.D.Bytes())
		b.secrets.addBytes(name+" P", k.Primes[0].Bytes())
		b.secrets.addForms(name+" D decimal", []string{k.D.String()})
	case backend.ECDSA:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		imp.Material = k
		d, _ := k.Bytes()
		b.secrets.addBytes(name+" D", d)
		b.secrets.addForms(name+" D decimal", []string{new(big.Int).SetBytes(d).String()})
	}
	return b.ImportKey(ctx, imp)
}

// hygOutput is one piece of text the library produced.
type hygOutput struct {
	what, text string
}

// hygDocumented lists leaks that are documented limitations, not bugs:
// token.Set and kms.CustomKey must hand their secrets to the caller in
// exported fields, and fmt cannot call a type's methods on a value held in
// an unexported struct field of another type. Both types say so.
var hygDocumented = []string{
	"unexported field holding token.Set ",
	"unexported field holding kms.CustomKey ",
}

func documented(what string) bool {
	for _, p := range hygDocumented {
		if strings.HasPrefix(what, p) {
			return true
		}
	}
	return false
}

// TestSecretHygiene runs a workload with recognisable secrets — root key,
// key material, plaintexts, contexts, data keys, tokens — and checks that
// none of them appears, raw, in hex, in base64 or as fmt's byte list, in
// any log line (Debug level, Badger's lines included), in any error of a
// table of failing calls, or in any fmt verb (%v %+v %#v %s %q %x %d) or
// slog/JSON rendering of the values the API returns.
func TestSecretHygiene(t *testing.T) {
	ctx := context.Background()
	sec := &hygSecrets{}
	root := []byte("ROOTKEY-hygiene-0123456789abcdef")
	sec.addBytes("root key", root)
	plaintext := "PLAINTEXT-SECRET-hygiene-4711"
	encCtx := "CONTEXT-SECRET-hyg"
	sec.addString("plaintext", plaintext)
	sec.addString("context", encCtx)

	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mb, err := memory.New(root)
	if err != nil {
		t.Fatal(err)
	}
	be := &hygBackend{Backend: mb, secrets: sec}
	dir := t.TempDir()
	e, err := kms.New(ctx, be, kms.WithDirectory(dir), kms.WithLogger(logger), kms.WithMaintenanceInterval(0),
		kms.WithRateLimit(ratelimit.Limit{Rate: 5, Burst: 5}))
	if err != nil {
		t.Fatal(err)
	}
	var outs []hygOutput
	out := func(what, text string) { outs = append(outs, hygOutput{what, text}) }
	var values []hygOutput
	value := func(what string, v any) {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			values = append(values, hygOutput{what + " " + verb, fmt.Sprintf(verb, v)})
		}
		if js, err := json.Marshal(v); err == nil {
			values = append(values, hygOutput{what + " JSON", string(js)})
		}
		var b bytes.Buffer
		slog.New(slog.NewTextHandler(&b, nil)).Info("value", "v", v)
		slog.New(slog.NewJSONHandler(&b, nil)).Info("value", "v", v)
		values = append(values, hygOutput{what + " slog", b.String()})
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// The workload.
	aes, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "hygaes", Type: kms.AES256})
	must(err)
	conv, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "hygconv", Type: kms.AES256, Convergent: true})
	must(err)
	rsaKey, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "hygrsa", Type: kms.RSA2048})
	must(err)
	ecKey, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "hygec", Type: kms.ECDSA})
	must(err)
	value("*kms.Key", aes)
	value("kms.Key", *aes)
	ct, err := e.Encrypt(ctx, aes.Tag, []byte(plaintext), []byte(encCtx))
	must(err)
	cct, err := e.Encrypt(ctx, conv.Tag, []byte(plaintext), []byte(encCtx))
	must(err)
	rct, err := e.Encrypt(ctx, rsaKey.Tag, []byte(plaintext), nil)
	must(err)
	for _, c := range []struct {
		tag, ct string
		ctx     []byte
	}{{aes.Tag, ct, nil}, {conv.Tag, cct, []byte(encCtx)}, {rsaKey.Tag, rct, nil}} {
		pt, err := e.Decrypt(ctx, c.tag, c.ct, c.ctx)
		if err != nil || string(pt) != plaintext {
			t.Fatalf("decrypt: %v", err)
		}
	}
	v2, err := e.RotateKey(ctx, aes.Tag)
	must(err)
	value("*kms.KeyVersion", v2)
	_, err = e.ReEncrypt(ctx, aes.Tag, ct, nil)
	must(err)
	_, err = e.DisableKeyVersion(ctx, aes.Tag, 1)
	must(err)
	ck, err := e.CreateCustomKey(ctx, aes.Tag, kms.CustomKeyRequest{Bits: 512, RequestPlainKey: true})
	must(err)
	sec.addBytes("custom data key", ck.Plaintext)
	value("*kms.CustomKey", ck)
	value("kms.CustomKey", *ck)
	for _, k := range []*kms.Key{rsaKey, ecKey} {
		sig, err := e.Sign(ctx, k.Tag, []byte(plaintext))
		must(err)
		if ok, err := e.Verify(ctx, k.Tag, []byte(plaintext), sig); err != nil || !ok {
			t.Fatalf("verify: %v %v", ok, err)
		}
	}
	_, err = e.BatchEncrypt(ctx, conv.Tag, []kms.EncryptItem{{Plaintext: []byte(plaintext), Context: []byte(encCtx)}})
	must(err)

	// Tokens.
	g, err := e.ActivateTokenGenerator(ctx, aes.Tag)
	must(err)
	value("*kms.TokenGenerator", g)
	set, err := e.IssueTokens(ctx, aes.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "hygiene"})
	must(err)
	for name, tok := range map[string]string{"access token": set.Access, "refresh token": set.Refresh} {
		sec.addForms(name, []string{tok})
		sec.addForms(name+" signature", []string{tok[strings.LastIndexByte(tok, '.')+1:]})
	}
	value("*token.Set", set)
	value("token.Set", *set)
	caller := netip.MustParseAddr("10.1.2.3")
	tc := e.WithToken(set.Access, caller)
	value("kms.TokenClient", tc)
	value("*kms.TokenClient", &tc)
	tct, err := tc.Encrypt(ctx, aes.Tag, []byte(plaintext), nil)
	must(err)
	if _, err := tc.Decrypt(ctx, aes.Tag, tct, nil); err != nil {
		t.Fatal(err)
	}
	set2, err := e.WithToken(set.Refresh, caller).ReissueTokens(ctx, aes.Tag, token.TTL{}, token.TTL{})
	must(err)
	sec.addForms("reissued access token", []string{set2.Access, set2.Access[strings.LastIndexByte(set2.Access, '.')+1:]})
	sec.addForms("reissued refresh token", []string{set2.Refresh, set2.Refresh[strings.LastIndexByte(set2.Refresh, '.')+1:]})
	_, err = e.AddAllowedIPs(ctx, aes.Tag, []string{"10.1.2.3", "10.9.0.0/16"})
	must(err)
	a, err := e.SetKeyACLEnabled(ctx, aes.Tag, true)
	must(err)
	value("*kms.ACL", a)
	must(e.SetKeyRateLimit(ctx, aes.Tag, ratelimit.Limit{Rate: 3, Burst: 3}))
	rl, err := e.GetKeyRateLimit(ctx, aes.Tag)
	must(err)
	value("*kms.KeyRateLimit", rl)
	page, err := e.ListKeys(ctx, kms.ListKeysRequest{})
	must(err)
	value("*kms.KeyPage", page)
	vs, err := e.ListKeyVersions(ctx, aes.Tag)
	must(err)
	value("[]kms.KeyVersion", vs)
	value("*kms.Engine", e)

	// Failing calls: every error, and its fmt renderings.
	long := []byte(strings.Repeat(plaintext, kms.MaxAESPlaintext/len(plaintext)+1))
	tampered := []byte(ct)
	tampered[len(tampered)-5] ^= 1
	forged := strings.Join(strings.Split(set.Access, ".")[:2], ".") + "." + base64.RawURLEncoding.EncodeToString([]byte(plaintext+plaintext))
	var errs []error
	call := func(err error) {
		if err == nil {
			t.Errorf("call %d: expected an error", len(errs))
			return
		}
		errs = append(errs, err)
	}
	_, err = e.Encrypt(ctx, aes.Tag, long, []byte(encCtx))
	call(err)
	_, err = e.Encrypt(ctx, conv.Tag, []byte(plaintext), []byte(strings.Repeat(encCtx, 4)))
	call(err)
	_, err = e.Encrypt(ctx, rsaKey.Tag, long[:300], nil)
	call(err)
	_, err = e.Decrypt(ctx, aes.Tag, string(tampered), []byte(encCtx))
	call(err)
	_, err = e.Decrypt(ctx, aes.Tag, ct, nil) // version 1 disabled
	call(err)
	_, err = e.Decrypt(ctx, conv.Tag, cct, []byte(plaintext))
	call(err)
	_, err = e.Decrypt(ctx, aes.Tag, plaintext, nil)
	call(err)
	_, err = e.Decrypt(ctx, aes.Tag, "ncpkms:v2:"+base64.StdEncoding.EncodeToString([]byte(plaintext)), nil)
	call(err)
	_, err = e.Decrypt(ctx, rsaKey.Tag, "ncpkms:v1:"+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte(plaintext), 9)[:256]), nil)
	call(err)
	_, err = e.Decrypt(ctx, plaintext, ct, nil)
	call(err)
	_, err = e.Verify(ctx, ecKey.Tag, []byte(plaintext), "ncpkms:v1:"+base64.StdEncoding.EncodeToString([]byte(plaintext)))
	call(err)
	_, err = e.BatchDecrypt(ctx, conv.Tag, []kms.DecryptItem{{Ciphertext: cct, Context: []byte("wrong")}, {Ciphertext: plaintext}, {Ciphertext: string(tampered), Context: []byte(encCtx)}})
	call(err)
	_, err = e.BatchDecrypt(ctx, conv.Tag, []kms.DecryptItem{{Ciphertext: cct, Context: []byte("wrong")}})
	call(err)
	_, err = e.CreateCustomKey(ctx, conv.Tag, kms.CustomKeyRequest{Bits: 256, Context: []byte(strings.Repeat(encCtx, 4))})
	call(err)
	for _, tok := range []string{forged, set.Refresh, plaintext, set.Access + "x", strings.Repeat(set.Access, 3)} {
		_, err = e.WithToken(tok, caller).Encrypt(ctx, aes.Tag, []byte(plaintext), nil)
		call(err)
	}
	_, err = e.WithToken(set.Access, caller).Encrypt(ctx, conv.Tag, []byte(plaintext), []byte(encCtx))
	call(err) // a token for another key
	_, err = e.WithToken(set.Access, netip.MustParseAddr("10.2.0.1")).Encrypt(ctx, aes.Tag, []byte(plaintext), nil)
	call(err) // outside the allow-list
	for range 5 {
		if _, err = e.WithToken(set.Access, caller).Encrypt(ctx, aes.Tag, []byte(plaintext), nil); err != nil {
			break
		}
	}
	call(err) // rate limited
	_, err = e.WithToken(set.Access, caller).ReissueTokens(ctx, aes.Tag, token.TTL{}, token.TTL{})
	call(err) // access token used as refresh token
	_, err = e.IssueTokens(ctx, aes.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: plaintext, AccessTTL: token.TTL{Minutes: -1}})
	call(err)
	_, err = e.RotateTokenGenerator(ctx, conv.Tag)
	call(err)
	_, err = kms.New(ctx, newBackend(t, bytes.Repeat([]byte{7}, memory.RootKeySize)), kms.WithDirectory(t.TempDir()+"/none\x00"))
	call(err)
	_, err = memory.New([]byte(plaintext))
	call(err)
	_, err = token.Verify(set.Access, &rsa.PublicKey{}, token.Expect{})
	call(err)
	_, err = token.Verify(forged, nil, token.Expect{Kind: token.Access, KeyTag: aes.Tag, Now: time.Now()})
	call(err)
	var batchErr *kms.BatchError
	for _, err := range errs {
		out(fmt.Sprintf("error %T", err), err.Error())
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
			out(fmt.Sprintf("error %T %s", err, verb), fmt.Sprintf(verb, err))
		}
		var ke *kms.Error
		if errors.As(err, &ke) && ke.Err != nil {
			out(fmt.Sprintf("cause %T %%#v", ke.Err), fmt.Sprintf("%#v", ke.Err))
		}
		if errors.As(err, &batchErr) {
			value("*kms.BatchError", batchErr)
		}
	}
	if batchErr == nil {
		t.Error("no *kms.BatchError among the errors")
	}

	// The backend, its loaded keys, the token cache, the ACL and limiter
	// values.
	value("*memory.Backend", mb)
	gen, err := mb.Generate(ctx, &backend.GenerateRequest{Ref: backend.KeyRef{KeyTag: aes.Tag, Version: 99, Purpose: backend.PurposeCipher}, Type: backend.AES256})
	must(err)
	value("*backend.GenerateResponse", gen)
	for _, typ := range []backend.KeyType{backend.AES256, backend.ECDSA} {
		resp, err := be.Generate(ctx, &backend.GenerateRequest{Ref: backend.KeyRef{KeyTag: aes.Tag, Version: 98, Purpose: backend.PurposeCipher}, Type: typ})
		must(err)
		k, err := mb.Load(ctx, &backend.LoadRequest{Ref: backend.KeyRef{KeyTag: aes.Tag, Version: 98, Purpose: backend.PurposeCipher}, Type: typ, Handle: resp.Handle})
		must(err)
		value(fmt.Sprintf("loaded %s backend key", typ), k)
	}
	cache, err := token.NewCache(8)
	must(err)
	cache.Put(set2.Access, &token.Verified{GeneratorID: g.ID, Claims: token.Claims{Subject: "hygiene", Kind: token.Access, KeyTag: aes.Tag}})
	value("*token.Cache", cache)
	l, err := acl.List{}.Add([]string{"10.0.0.0/8"})
	must(err)
	value("acl.List", l)
	value("*acl.Matcher", l.Compile())
	lim, err := ratelimit.New()
	must(err)
	value("*ratelimit.Limiter", lim)

	// Close, reopen with Badger's own logging, close.
	must(e.Close())
	mb2, err := memory.New(root)
	must(err)
	e2, err := kms.New(ctx, &hygBackend{Backend: mb2, secrets: sec}, kms.WithDirectory(dir), kms.WithLogger(logger), kms.WithMaintenanceInterval(0))
	must(err)
	if _, err := e2.Decrypt(ctx, conv.Tag, cct, []byte(encCtx)); err != nil {
		t.Fatal(err)
	}
	must(e2.Close())
	if logs.Len() == 0 {
		t.Fatal("nothing was logged at Debug level")
	}
	out("log", logs.String())

	// Values nested in an unexported field are printed without their
	// methods: a secret must then sit behind a pointer.
	type holder struct{ v any }
	nested := []struct {
		name string
		v    any
	}{{"token.Set", *set}, {"kms.TokenClient", tc}, {"kms.CustomKey", *ck}, {"*kms.CustomKey", ck}, {"*token.Set", set}}
	for _, n := range nested {
		for _, verb := range []string{"%v", "%+v", "%#v"} {
			values = append(values, hygOutput{"unexported field holding " + n.name + " " + verb, fmt.Sprintf(verb, holder{n.v})})
		}
	}

	for _, o := range append(outs, values...) {
		leak := sec.find(o.text)
		if leak == "" {
			continue
		}
		if documented(o.what) {
			t.Logf("documented limitation: %s shows a secret", o.what)
			continue
		}
		t.Errorf("%s shows %s:\n%.600s", o.what, leak, o.text)
	}
	t.Logf("%d outputs checked against %d secrets, %d log bytes", len(outs)+len(values), len(sec.forms), logs.Len())
}
