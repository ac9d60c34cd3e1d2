package gocloud_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"gocloud.dev/gcerrors"
	"gocloud.dev/secrets"
	"gocloud.dev/secrets/driver"
	"gocloud.dev/secrets/drivertest"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/integration/gocloud"
	"github.com/pocketkms/kms/ratelimit"
	"github.com/pocketkms/kms/token"
)

var callerIP = netip.MustParseAddr("10.0.0.11")

func newEngine(t testing.TB, opts ...kms.Option) *kms.Engine {
	t.Helper()
	root, err := memory.GenerateRootKey()
	if err != nil {
		t.Fatal(err)
	}
	be, err := memory.New(root)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kms.New(context.Background(), be, append([]kms.Option{kms.WithMaintenanceInterval(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

var keySeq atomic.Int64

func newKey(t testing.TB, e *kms.Engine, typ kms.KeyType, convergent bool) string {
	t.Helper()
	k, err := e.CreateKey(context.Background(), kms.CreateKeyRequest{Name: fmt.Sprintf("key%d", keySeq.Add(1)), Type: typ, Convergent: convergent})
	if err != nil {
		t.Fatal(err)
	}
	return k.Tag
}

func tokenClient(t testing.TB, e *kms.Engine, tag string, perms ...token.Permission) kms.TokenClient {
	t.Helper()
	ctx := context.Background()
	if _, err := e.ActivateTokenGenerator(ctx, tag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, tag, kms.IssueTokensRequest{Subject: "gocloud-test", Permissions: perms})
	if err != nil {
		t.Fatal(err)
	}
	return e.WithToken(set.Access, callerIP)
}

// harness gives drivertest two Keepers on two keys of a fresh Engine,
// opened on the trusted plane or through token clients.
type harness struct {
	e     *kms.Engine
	t     *testing.T
	token bool
}

func (h *harness) MakeDriver(ctx context.Context) (driver.Keeper, driver.Keeper, error) {
	var ks [2]driver.Keeper
	for i := range ks {
		tag := newKey(h.t, h.e, kms.AES256, false)
		var c gocloud.Client = h.e
		if h.token {
			c = tokenClient(h.t, h.e, tag, token.PermEncrypt, token.PermDecrypt)
		}
		ks[i] = gocloud.NewDriver(c, tag)
	}
	return ks[0], ks[1], nil
}

func (h *harness) Close() {}

// verifyAs: the Keeper's errors reach the *kms.Error underneath.
type verifyAs struct{}

func (verifyAs) Name() string { return "verify As reaches *kms.Error" }

func (verifyAs) ErrorCheck(k *secrets.Keeper, err error) error {
	var ke *kms.Error
	if !k.ErrorAs(err, &ke) {
		return fmt.Errorf("ErrorAs(%v, *kms.Error) = false", err)
	}
	if !errors.Is(ke, kms.ErrInvalidArgument) || gcerrors.Code(err) != gcerrors.InvalidArgument {
		return fmt.Errorf("malformed ciphertext: %v, code %v", ke, gcerrors.Code(err))
	}
	var s string
	if k.ErrorAs(err, &s) {
		return errors.New("ErrorAs(err, *string) = true")
	}
	return nil
}

// TestConformance runs gocloud's own driver conformance suite, on both
// planes.
func TestConformance(t *testing.T) {
	for _, plane := range []string{"trusted", "token"} {
		t.Run(plane, func(t *testing.T) {
			drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return &harness{e: newEngine(t), t: t, token: plane == "token"}, nil
			}, []drivertest.AsTest{verifyAs{}})
		})
	}
}

// TestURLOpener opens keepers through a URLMux, as an embedder would.
func TestURLOpener(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	mux := new(secrets.URLMux)
	mux.RegisterKeeper(gocloud.Scheme, &gocloud.URLOpener{Engine: e})
	tag := newKey(t, e, kms.AES256, false)

	keeper, err := mux.OpenKeeper(ctx, "pocketkms://"+tag)
	if err != nil {
		t.Fatal(err)
	}
	defer keeper.Close()
	ct, err := keeper.Encrypt(ctx, []byte("database password"))
	if err != nil {
		t.Fatal(err)
	}
	// The ciphertext is the Engine's own.
	if !strings.HasPrefix(string(ct), "ncpkms:v1:") {
		t.Fatalf("ciphertext %q", ct)
	}
	if pt, err := e.Decrypt(ctx, tag, string(ct), nil); err != nil || string(pt) != "database password" {
		t.Fatalf("Engine.Decrypt: %q, %v", pt, err)
	}
	if _, err := e.RotateKey(ctx, tag); err != nil {
		t.Fatal(err)
	}
	re, err := e.ReEncrypt(ctx, tag, string(ct), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := keeper.Decrypt(ctx, []byte(re)); err != nil || string(pt) != "database password" {
		t.Fatalf("Decrypt after ReEncrypt: %q, %v", pt, err)
	}
	// A closed Keeper leaves the Engine open.
	if err := keeper.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Encrypt(ctx, tag, []byte("x"), nil); err != nil {
		t.Fatalf("Engine after Keeper.Close: %v", err)
	}

	rsaTag := newKey(t, e, kms.RSA2048, false)
	if k, err := mux.OpenKeeper(ctx, "pocketkms://"+rsaTag); err != nil {
		t.Fatalf("RSA2048 key: %v", err)
	} else {
		k.Close()
	}
	for _, tc := range []struct {
		url  string
		kind error
	}{
		{"pocketkms://" + strings.ToUpper(tag), kms.ErrInvalidArgument},
		{"pocketkms://" + tag[1:], kms.ErrInvalidArgument},
		{"pocketkms://" + tag + "/", kms.ErrInvalidArgument},
		{"pocketkms://" + tag + "/path", kms.ErrInvalidArgument},
		{"pocketkms://" + tag + "?version=1", kms.ErrInvalidArgument},
		{"pocketkms://" + tag + "?", kms.ErrInvalidArgument},
		{"pocketkms://" + tag + "#frag", kms.ErrInvalidArgument},
		{"pocketkms://" + tag + ":1", kms.ErrInvalidArgument},
		{"pocketkms://user@" + tag, kms.ErrInvalidArgument},
		{"pocketkms:" + tag, kms.ErrInvalidArgument},
		{"pocketkms:///" + tag, kms.ErrInvalidArgument},
		{"pocketkms://" + "00" + tag[2:], kms.ErrKeyNotFound},
		{"pocketkms://" + newKey(t, e, kms.AES256, true), kms.ErrWrongKeyType},
		{"pocketkms://" + newKey(t, e, kms.ECDSA, false), kms.ErrWrongKeyType},
	} {
		if _, err := mux.OpenKeeper(ctx, tc.url); !errors.Is(err, tc.kind) {
			t.Errorf("OpenKeeper(%q) = %v, want %v", tc.url, err, tc.kind)
		}
	}
	// An opener without an Engine refuses, and another scheme is not ours.
	mux.RegisterKeeper("nokms", &gocloud.URLOpener{})
	if _, err := mux.OpenKeeper(ctx, "nokms://"+tag); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("opener without an Engine: %v", err)
	}
	if _, err := mux.OpenKeeper(ctx, "base64key://"+tag); err == nil {
		t.Fatal("unregistered scheme opened")
	}
	// A second Engine under its own scheme.
	e2 := newEngine(t)
	tag2 := newKey(t, e2, kms.AES256, false)
	mux.RegisterKeeper("pocketkms-b", &gocloud.URLOpener{Engine: e2})
	k2, err := mux.OpenKeeper(ctx, "pocketkms-b://"+tag2)
	if err != nil {
		t.Fatal(err)
	}
	defer k2.Close()
	if _, err := k2.Encrypt(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// TestErrorCodes: the Keeper's errors carry the gcerrors code of the kms
// sentinel underneath.
func TestErrorCodes(t *testing.T) {
	e := newEngine(t, kms.WithRateLimit(ratelimit.Limit{Rate: 1, Burst: 1}))
	ctx := context.Background()
	tag := newKey(t, e, kms.AES256, false)
	k := gocloud.OpenKeeper(e, tag)
	defer k.Close()
	ct, err := k.Encrypt(ctx, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	check := func(name string, err error, want gcerrors.ErrorCode) {
		t.Helper()
		if got := gcerrors.Code(err); got != want {
			t.Errorf("%s: code %v (%v), want %v", name, got, err, want)
		}
	}
	_, err = k.Encrypt(ctx, nil)
	check("empty plaintext", err, gcerrors.InvalidArgument)
	_, err = k.Decrypt(ctx, []byte("not a ciphertext"))
	check("malformed", err, gcerrors.InvalidArgument)
	other := gocloud.OpenKeeper(e, newKey(t, e, kms.AES256, false))
	defer other.Close()
	_, err = other.Decrypt(ctx, ct)
	check("another key", err, gcerrors.InvalidArgument)
	_, err = k.Decrypt(ctx, []byte(strings.Replace(string(ct), "v1:", "v9:", 1)))
	check("unknown version", err, gcerrors.NotFound)
	missing := gocloud.OpenKeeper(e, "00"+tag[2:])
	defer missing.Close()
	_, err = missing.Encrypt(ctx, []byte("x"))
	check("unknown key", err, gcerrors.NotFound)
	_, err = k.Encrypt(canceled, []byte("x"))
	check("canceled", err, gcerrors.Canceled)

	tc := tokenClient(t, e, tag, token.PermEncrypt)
	tk := gocloud.OpenKeeper(tc, tag)
	defer tk.Close()
	_, err = tk.Decrypt(ctx, ct)
	check("no Decrypt permission", err, gcerrors.PermissionDenied)
	if _, err := tk.Encrypt(ctx, []byte("x")); err != nil { // the burst of 1
		t.Fatal(err)
	}
	_, err = tk.Encrypt(ctx, []byte("x"))
	check("rate limited", err, gcerrors.ResourceExhausted)
	var rl *kms.RateLimitError
	if !tk.ErrorAs(err, &rl) || rl.RetryAfter <= 0 {
		t.Errorf("ErrorAs(*kms.RateLimitError) on %v", err)
	}
	bad := gocloud.OpenKeeper(e.WithToken("not a token", callerIP), tag)
	defer bad.Close()
	_, err = bad.Encrypt(ctx, []byte("x"))
	check("bad token", err, gcerrors.PermissionDenied)

	if _, err := e.DisableKey(ctx, tag); err != nil {
		t.Fatal(err)
	}
	_, err = k.Decrypt(ctx, ct)
	check("disabled key", err, gcerrors.FailedPrecondition)
	e.Close()
	_, err = k.Encrypt(ctx, []byte("x"))
	check("closed engine", err, gcerrors.FailedPrecondition)
}

// sentinelCodes is the gcerrors code of every kms sentinel, by the name
// errors.go declares it under (TestEverySentinelHasACode checks that the
// list is whole).
var sentinelCodes = map[string]struct {
	err  error
	want gcerrors.ErrorCode
}{
	"ErrInvalidArgument":     {kms.ErrInvalidArgument, gcerrors.InvalidArgument},
	"ErrWrongKeyType":        {kms.ErrWrongKeyType, gcerrors.InvalidArgument},
	"ErrDecryptionFailed":    {kms.ErrDecryptionFailed, gcerrors.InvalidArgument},
	"ErrBackupInvalid":       {kms.ErrBackupInvalid, gcerrors.InvalidArgument},
	"ErrKeyNotFound":         {kms.ErrKeyNotFound, gcerrors.NotFound},
	"ErrVersionNotFound":     {kms.ErrVersionNotFound, gcerrors.NotFound},
	"ErrAlreadyExists":       {kms.ErrAlreadyExists, gcerrors.AlreadyExists},
	"ErrKeyNotEnabled":       {kms.ErrKeyNotEnabled, gcerrors.FailedPrecondition},
	"ErrInvalidState":        {kms.ErrInvalidState, gcerrors.FailedPrecondition},
	"ErrVersionDisabled":     {kms.ErrVersionDisabled, gcerrors.FailedPrecondition},
	"ErrVersionBelowMinimum": {kms.ErrVersionBelowMinimum, gcerrors.FailedPrecondition},
	"ErrEncryptionBudget":    {kms.ErrEncryptionBudget, gcerrors.FailedPrecondition},
	"ErrConflict":            {kms.ErrConflict, gcerrors.FailedPrecondition},
	"ErrClosed":              {kms.ErrClosed, gcerrors.FailedPrecondition},
	"ErrVersionLimit":        {kms.ErrVersionLimit, gcerrors.ResourceExhausted},
	"ErrRateLimited":         {kms.ErrRateLimited, gcerrors.ResourceExhausted},
	"ErrAccessDenied":        {kms.ErrAccessDenied, gcerrors.PermissionDenied},
	"ErrPermissionDenied":    {kms.ErrPermissionDenied, gcerrors.PermissionDenied},
	"ErrTokenInvalid":        {kms.ErrTokenInvalid, gcerrors.PermissionDenied},
	"ErrTokenExpired":        {kms.ErrTokenExpired, gcerrors.PermissionDenied},
	"ErrBackendMismatch":     {kms.ErrBackendMismatch, gcerrors.Internal},
	"ErrUnavailable":         {kms.ErrUnavailable, gcerrors.Internal},
	"ErrStale":               {kms.ErrStale, gcerrors.Internal},
	"ErrAuditFailed":         {kms.ErrAuditFailed, gcerrors.Internal},
	"ErrInternal":            {kms.ErrInternal, gcerrors.Internal},
	"ErrCanceled":            {kms.ErrCanceled, gcerrors.Canceled},
	"ErrUnsupported":         {kms.ErrUnsupported, gcerrors.Unimplemented},
}

// TestErrorCodeTable: every kms sentinel, and the standard errors the
// driver meets, get their code, wrapped or not.
func TestErrorCodeTable(t *testing.T) {
	type row struct {
		err  error
		want gcerrors.ErrorCode
	}
	rows := []row{
		{context.Canceled, gcerrors.Canceled},
		{context.DeadlineExceeded, gcerrors.DeadlineExceeded},
		{errors.ErrUnsupported, gcerrors.Unimplemented},
		{errors.New("other"), gcerrors.Unknown},
		// A kms error that also matches ErrUnsupported keeps its kind's code.
		{&kms.Error{Kind: kms.ErrInvalidArgument, Err: errors.ErrUnsupported}, gcerrors.InvalidArgument},
	}
	for _, r := range sentinelCodes {
		rows = append(rows, row{r.err, r.want})
	}
	for _, tc := range rows {
		if got := gocloud.ErrorCode(fmt.Errorf("wrapped: %w", tc.err)); got != tc.want {
			t.Errorf("ErrorCode(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestEverySentinelHasACode: every Err… sentinel errors.go declares has a
// row in sentinelCodes, so a sentinel added to the core cannot fall
// through to gcerrors.Unknown unnoticed.
func TestEverySentinelHasACode(t *testing.T) {
	f, err := parser.ParseFile(gotoken.NewFileSet(), "../../errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != gotoken.VAR {
			continue
		}
		for _, spec := range g.Specs {
			for _, name := range spec.(*ast.ValueSpec).Names {
				if !strings.HasPrefix(name.Name, "Err") || !name.IsExported() {
					continue
				}
				n++
				if _, ok := sentinelCodes[name.Name]; !ok {
					t.Errorf("kms.%s has no row in sentinelCodes (nor, likely, in the driver's table)", name.Name)
				}
			}
		}
	}
	if n != len(sentinelCodes) {
		t.Errorf("errors.go declares %d sentinels, sentinelCodes has %d rows", n, len(sentinelCodes))
	}
}

// TestTokenPlaneInterop: what the token plane encrypts the trusted plane
// decrypts, and back.
func TestTokenPlaneInterop(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	tag := newKey(t, e, kms.AES256, false)
	trusted := gocloud.OpenKeeper(e, tag)
	defer trusted.Close()
	tok := gocloud.OpenKeeper(tokenClient(t, e, tag, token.PermEncrypt, token.PermDecrypt), tag)
	defer tok.Close()
	msg := []byte("secret")
	for _, pair := range [][2]*secrets.Keeper{{trusted, tok}, {tok, trusted}} {
		ct, err := pair[0].Encrypt(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := pair[1].Decrypt(ctx, ct); err != nil || !bytes.Equal(pt, msg) {
			t.Fatalf("Decrypt = %q, %v", pt, err)
		}
	}
	// A convergent key cannot be used without a context.
	conv := gocloud.OpenKeeper(e, newKey(t, e, kms.AES256, true))
	defer conv.Close()
	if _, err := conv.Encrypt(ctx, msg); gcerrors.Code(err) != gcerrors.InvalidArgument {
		t.Fatalf("convergent key: %v", err)
	}
}
