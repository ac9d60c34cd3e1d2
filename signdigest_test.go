package kms_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/token"
)

// TestSignDigest: a signature over a digest is a signature over the
// message (the public key verifies it offline, and Verify accepts it when
// its salt is the default 222 bytes), on both planes, with the version
// that made it. A salt as long as the hash (TLS 1.3, X.509) is signed
// with 32 bytes, which Verify by default refuses as NAVER does.
func TestSignDigest(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	data := []byte("tbsCertificate")
	digest := sha256.Sum256(data)
	for i, tc := range []struct {
		typ  kms.KeyType
		opts crypto.SignerOpts
		salt int // the PSS salt length the signature must have
	}{
		{kms.RSA2048, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthAuto}, 222},
		{kms.RSA2048, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 222}, 222},
		{kms.RSA2048, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}, 32},
		{kms.RSA2048, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 32}, 32},
		{kms.ECDSA, crypto.SHA256, 0},
	} {
		name := fmt.Sprintf("%s/%T", tc.typ, tc.opts)
		if pss, ok := tc.opts.(*rsa.PSSOptions); ok {
			name += fmt.Sprintf("/salt%d", pss.SaltLength)
		}
		keyName := fmt.Sprintf("digest%d", i)
		t.Run(name, func(t *testing.T) {
			k, set := tokenKey(t, e, keyName, tc.typ,
				kms.IssueTokensRequest{Permissions: []token.Permission{token.PermSign}})
			if _, err := e.RotateKey(ctx, k.Tag); err != nil {
				t.Fatal(err)
			}
			p, err := e.GetPublicKey(ctx, k.Tag, 2)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode([]byte(p))
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			planes := map[string]interface {
				SignDigest(context.Context, string, []byte, crypto.SignerOpts) ([]byte, uint32, error)
			}{"trusted": e, "token": e.WithToken(set.Access, callerIP)}
			for plane, c := range planes {
				sig, v, err := c.SignDigest(ctx, k.Tag, digest[:], tc.opts)
				if err != nil || v != 2 {
					t.Fatalf("%s: SignDigest = version %d, %v", plane, v, err)
				}
				env := "ncpkms:v2:" + base64.StdEncoding.EncodeToString(sig)
				wantOK := tc.salt != 32 // Verify takes only 222-byte salts by default
				if ok, err := e.Verify(ctx, k.Tag, data, env); err != nil || ok != wantOK {
					t.Fatalf("%s: Verify of the message = %v, %v; want %v", plane, ok, err, wantOK)
				}
				switch pk := pub.(type) {
				case *rsa.PublicKey:
					if err := rsa.VerifyPSS(pk, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: tc.salt}); err != nil {
						t.Fatalf("%s: offline PSS verify, salt %d: %v", plane, tc.salt, err)
					}
				case *ecdsa.PublicKey:
					if !ecdsa.VerifyASN1(pk, digest[:], sig) {
						t.Fatalf("%s: offline ECDSA verify failed", plane)
					}
				}
			}
		})
	}
}

// TestSignDigestRefuses: anything but the key's own scheme is refused,
// never signed another way.
func TestSignDigestRefuses(t *testing.T) {
	e := newEngine(t)
	ctx := context.Background()
	rsaKey := createKey(t, e, "refrsa", kms.RSA2048, false)
	ecKey := createKey(t, e, "refec", kms.ECDSA, false)
	aesKey := createKey(t, e, "refaes", kms.AES256, false)
	d := sha256.Sum256([]byte("x"))
	d384 := make([]byte, 48)
	for _, tc := range []struct {
		name        string
		tag         string
		digest      []byte
		opts        crypto.SignerOpts
		kind        error
		unsupported bool
	}{
		{"RSA PKCS#1 v1.5", rsaKey.Tag, d[:], crypto.SHA256, kms.ErrInvalidArgument, true},
		{"RSA salt 1", rsaKey.Tag, d[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 1}, kms.ErrInvalidArgument, true},
		{"RSA salt 33", rsaKey.Tag, d[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 33}, kms.ErrInvalidArgument, true},
		{"RSA salt 221", rsaKey.Tag, d[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 221}, kms.ErrInvalidArgument, true},
		{"RSA salt 223", rsaKey.Tag, d[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 223}, kms.ErrInvalidArgument, true},
		{"RSA salt -2", rsaKey.Tag, d[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: -2}, kms.ErrInvalidArgument, true},
		{"RSA salt equals hash, SHA-384", rsaKey.Tag, d384, &rsa.PSSOptions{Hash: crypto.SHA384, SaltLength: rsa.PSSSaltLengthEqualsHash}, kms.ErrInvalidArgument, true},
		{"RSA PSS SHA-384", rsaKey.Tag, d384, &rsa.PSSOptions{Hash: crypto.SHA384}, kms.ErrInvalidArgument, true},
		{"RSA PSS no hash", rsaKey.Tag, d[:], &rsa.PSSOptions{}, kms.ErrInvalidArgument, true},
		{"RSA nil opts", rsaKey.Tag, d[:], nil, kms.ErrInvalidArgument, false},
		{"RSA nil PSS opts", rsaKey.Tag, d[:], (*rsa.PSSOptions)(nil), kms.ErrInvalidArgument, false},
		{"RSA short digest", rsaKey.Tag, d[:31], &rsa.PSSOptions{Hash: crypto.SHA256}, kms.ErrInvalidArgument, false},
		{"ECDSA SHA-384", ecKey.Tag, d384, crypto.SHA384, kms.ErrInvalidArgument, true},
		{"ECDSA PSS opts", ecKey.Tag, d[:], &rsa.PSSOptions{Hash: crypto.SHA256}, kms.ErrInvalidArgument, false},
		{"ECDSA long digest", ecKey.Tag, append(d[:], 0), crypto.SHA256, kms.ErrInvalidArgument, false},
		{"AES key", aesKey.Tag, d[:], crypto.SHA256, kms.ErrWrongKeyType, false},
		{"unknown key", unknownTag(aesKey.Tag), d[:], crypto.SHA256, kms.ErrKeyNotFound, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig, v, err := e.SignDigest(ctx, tc.tag, tc.digest, tc.opts)
			if sig != nil || v != 0 {
				t.Fatalf("refused call returned a signature (version %d)", v)
			}
			wantErr(t, err, tc.kind)
			if got := errors.Is(err, errors.ErrUnsupported); got != tc.unsupported {
				t.Fatalf("errors.Is(%v, ErrUnsupported) = %v, want %v", err, got, tc.unsupported)
			}
		})
	}
}

// TestSignDigestTokenPermission: the token plane needs the Sign permission.
func TestSignDigestTokenPermission(t *testing.T) {
	e := newEngine(t)
	k, set := tokenKey(t, e, "nosign", kms.ECDSA, kms.IssueTokensRequest{Permissions: []token.Permission{token.PermVerify}})
	d := sha256.Sum256([]byte("x"))
	_, _, err := e.WithToken(set.Access, callerIP).SignDigest(context.Background(), k.Tag, d[:], crypto.SHA256)
	wantErr(t, err, kms.ErrPermissionDenied)
}

// unknownTag is a well-formed tag that differs from tag (a random tag
// starts with "00" one time in 256).
func unknownTag(tag string) string {
	if tag[:2] == "00" {
		return "ff" + tag[2:]
	}
	return "00" + tag[2:]
}
