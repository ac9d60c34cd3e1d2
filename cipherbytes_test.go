package kms_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/token"
)

// TestAppendEncryptDecrypt checks the []byte entry points against the
// string ones on both planes: the same envelopes, appended after the
// caller's bytes, each decrypting what the other made, and the same
// refusals.
func TestAppendEncryptDecrypt(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	aes := createKey(t, e, "aes", kms.AES256, false)
	conv := createKey(t, e, "conv", kms.AES256, true)
	rsa := createKey(t, e, "rsa", kms.RSA2048, false)
	ec := createKey(t, e, "ecdsa", kms.ECDSA, false)
	if _, err := e.ActivateTokenGenerator(ctx, aes.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, aes.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "t"})
	if err != nil {
		t.Fatal(err)
	}
	encOnly, err := e.IssueTokens(ctx, aes.Tag, kms.IssueTokensRequest{Permissions: []token.Permission{token.PermEncrypt}, Subject: "t"})
	if err != nil {
		t.Fatal(err)
	}
	type plane interface {
		Encrypt(ctx context.Context, keyTag string, plaintext, encCtx []byte) (string, error)
		Decrypt(ctx context.Context, keyTag, ciphertext string, encCtx []byte) ([]byte, error)
		AppendEncrypt(ctx context.Context, dst []byte, keyTag string, plaintext, encCtx []byte) ([]byte, error)
		AppendDecrypt(ctx context.Context, dst []byte, keyTag string, ciphertext, encCtx []byte) ([]byte, error)
	}
	cases := []struct {
		name   string
		p      plane
		tag    string
		encCtx []byte
		pt     []byte
	}{
		{"trusted/AES256", e, aes.Tag, nil, bytes.Repeat([]byte("x"), 1024)},
		{"trusted/AES256-32KiB", e, aes.Tag, nil, make([]byte, kms.MaxAESPlaintext)},
		{"trusted/convergent", e, conv.Tag, []byte("ctx"), []byte("data key")},
		{"trusted/RSA2048", e, rsa.Tag, nil, []byte("secret")},
		{"token/AES256", e.WithToken(set.Access, callerIP), aes.Tag, nil, []byte("hello")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text, err := tc.p.AppendEncrypt(ctx, []byte("held:"), tc.tag, tc.pt, tc.encCtx)
			if err != nil || !bytes.HasPrefix(text, []byte("held:ncpkms:v1:")) {
				t.Fatalf("AppendEncrypt = %.40q, %v", text, err)
			}
			ct := text[len("held:"):]
			got, err := tc.p.Decrypt(ctx, tc.tag, string(ct), tc.encCtx)
			if err != nil || !bytes.Equal(got, tc.pt) {
				t.Fatalf("Decrypt of AppendEncrypt's envelope: %v", err)
			}
			s, err := tc.p.Encrypt(ctx, tc.tag, tc.pt, tc.encCtx)
			if err != nil {
				t.Fatal(err)
			}
			got, err = tc.p.AppendDecrypt(ctx, []byte("held:"), tc.tag, []byte(s), tc.encCtx)
			if err != nil || !bytes.Equal(got, append([]byte("held:"), tc.pt...)) {
				t.Fatalf("AppendDecrypt of Encrypt's envelope: %v", err)
			}
			got, err = tc.p.AppendDecrypt(ctx, nil, tc.tag, ct, tc.encCtx)
			if err != nil || !bytes.Equal(got, tc.pt) || got == nil {
				t.Fatalf("AppendDecrypt(nil dst): %v", err)
			}
			if tc.tag == conv.Tag {
				if string(ct) != s {
					t.Fatalf("a convergent key's AppendEncrypt and Encrypt differ")
				}
			}
			// A nil dst still returns an envelope.
			if out, err := tc.p.AppendEncrypt(ctx, nil, tc.tag, tc.pt, tc.encCtx); err != nil || !bytes.HasPrefix(out, []byte("ncpkms:v1:")) {
				t.Fatalf("AppendEncrypt(nil dst) = %.20q, %v", out, err)
			}
			// Tampering, a malformed text and a wrong context are refused
			// as Decrypt refuses them.
			bad := bytes.Clone(ct)
			bad[len(bad)-6] ^= 'A' ^ 'B'
			_, err = tc.p.AppendDecrypt(ctx, nil, tc.tag, bad, tc.encCtx)
			_, serr := tc.p.Decrypt(ctx, tc.tag, string(bad), tc.encCtx)
			if err == nil || serr == nil || errors.Is(err, kms.ErrDecryptionFailed) != errors.Is(serr, kms.ErrDecryptionFailed) {
				t.Fatalf("tampered: AppendDecrypt %v, Decrypt %v", err, serr)
			}
			for _, junk := range [][]byte{nil, []byte("ncpkms:v1:"), []byte("ncpkms:v1:YW\nJj"), append(bytes.Clone(ct), '=')} {
				if _, err := tc.p.AppendDecrypt(ctx, nil, tc.tag, junk, tc.encCtx); !errors.Is(err, kms.ErrInvalidArgument) {
					t.Fatalf("AppendDecrypt(%.20q): %v, want ErrInvalidArgument", junk, err)
				}
			}
			if _, err := tc.p.AppendDecrypt(ctx, nil, tc.tag, []byte("ncpkms:v9:YWJj"), tc.encCtx); !errors.Is(err, kms.ErrVersionNotFound) {
				t.Fatalf("unknown version: %v", err)
			}
			if _, err := tc.p.AppendEncrypt(ctx, nil, tc.tag, nil, tc.encCtx); !errors.Is(err, kms.ErrInvalidArgument) {
				t.Fatalf("empty plaintext: %v", err)
			}
			if tc.encCtx != nil {
				if _, err := tc.p.AppendDecrypt(ctx, nil, tc.tag, ct, []byte("other")); !errors.Is(err, kms.ErrDecryptionFailed) {
					t.Fatalf("wrong context: %v", err)
				}
			}
		})
	}
	t.Run("wrong key type", func(t *testing.T) {
		if _, err := e.AppendEncrypt(ctx, nil, ec.Tag, []byte("x"), nil); !errors.Is(err, kms.ErrWrongKeyType) {
			t.Fatalf("AppendEncrypt on ECDSA: %v", err)
		}
		if _, err := e.AppendDecrypt(ctx, nil, ec.Tag, []byte("ncpkms:v1:YWJj"), nil); !errors.Is(err, kms.ErrWrongKeyType) {
			t.Fatalf("AppendDecrypt on ECDSA: %v", err)
		}
	})
	t.Run("token plane checks", func(t *testing.T) {
		ct, err := e.AppendEncrypt(ctx, nil, aes.Tag, []byte("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		c := e.WithToken(encOnly.Access, callerIP)
		if _, err := c.AppendEncrypt(ctx, nil, aes.Tag, []byte("x"), nil); err != nil {
			t.Fatalf("encrypt-only token, AppendEncrypt: %v", err)
		}
		if _, err := c.AppendDecrypt(ctx, nil, aes.Tag, ct, nil); !errors.Is(err, kms.ErrPermissionDenied) {
			t.Fatalf("encrypt-only token, AppendDecrypt: %v", err)
		}
		junk := e.WithToken("junk", netip.MustParseAddr("10.9.9.9"))
		if _, err := junk.AppendEncrypt(ctx, nil, aes.Tag, []byte("x"), nil); !errors.Is(err, kms.ErrTokenInvalid) {
			t.Fatalf("junk token, AppendEncrypt: %v", err)
		}
		if _, err := junk.AppendDecrypt(ctx, nil, aes.Tag, ct, nil); !errors.Is(err, kms.ErrTokenInvalid) {
			t.Fatalf("junk token, AppendDecrypt: %v", err)
		}
	})
}

// TestHotPathAllocations pins issue 19's allocation counts (counts, never
// timings): a trusted-plane Encrypt of 1 KiB allocates only its result, a
// Decrypt only its plaintext, a token-plane Encrypt with a cached token
// (its TokenClient made per call, as a server does) only its result, and
// AppendEncrypt/AppendDecrypt (and AppendSeal/AppendOpen, whose
// associated data is built in the pooled scratch) into a buffer with room
// nothing at all.
// (The race detector makes sync.Pool drop buffers at random, so the
// counts are checked without it.)
func TestHotPathAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops buffers at random under the race detector")
	}
	e := newEngine(t)
	ctx := context.Background()
	k := createKey(t, e, "alloc", kms.AES256, false)
	if _, err := e.ActivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	set, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Permissions: kms.AllPermissions(), Subject: "t"})
	if err != nil {
		t.Fatal(err)
	}
	pt := make([]byte, 1024)
	ct, err := e.Encrypt(ctx, k.Tag, pt, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctBytes := []byte(ct)
	ad := []byte("orders/2024/customer-42")
	sealed, err := e.AppendSeal(ctx, nil, k.Tag, pt, ad)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, 0, 4096)
	for _, tc := range []struct {
		name string
		max  float64
		f    func() error
	}{
		{"Encrypt", 1, func() error { _, err := e.Encrypt(ctx, k.Tag, pt, nil); return err }},
		{"Decrypt", 1, func() error { _, err := e.Decrypt(ctx, k.Tag, ct, nil); return err }},
		{"token Encrypt", 1, func() error {
			_, err := e.WithToken(set.Access, callerIP).Encrypt(ctx, k.Tag, pt, nil)
			return err
		}},
		{"AppendEncrypt", 0, func() error { _, err := e.AppendEncrypt(ctx, dst[:0], k.Tag, pt, nil); return err }},
		{"AppendDecrypt", 0, func() error { _, err := e.AppendDecrypt(ctx, dst[:0], k.Tag, ctBytes, nil); return err }},
		{"AppendSeal", 0, func() error { _, err := e.AppendSeal(ctx, dst[:0], k.Tag, pt, ad); return err }},
		{"AppendOpen", 0, func() error { _, err := e.AppendOpen(ctx, dst[:0], k.Tag, sealed, ad); return err }},
	} {
		if err := tc.f(); err != nil { // warm the pool and the token cache
			t.Fatal(err)
		}
		var ferr error
		n := testing.AllocsPerRun(200, func() {
			if err := tc.f(); err != nil {
				ferr = err
			}
		})
		if ferr != nil {
			t.Fatal(ferr)
		}
		// A garbage collection during the run empties the pool once;
		// AllocsPerRun's average rounds that away.
		if n > tc.max {
			t.Errorf("%s: %v allocations per call, want at most %v", tc.name, n, tc.max)
		}
	}
}
