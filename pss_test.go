package kms_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
)

// knownRSA is a memory backend whose RSA2048 cipher keys are a key the
// test holds, so it can sign as another RSASSA-PSS signer with that key
// would.
type knownRSA struct {
	*memory.Backend
	priv *rsa.PrivateKey
}

func (b knownRSA) Generate(ctx context.Context, req *backend.GenerateRequest) (*backend.GenerateResponse, error) {
	if req.Type == backend.RSA2048 && req.Ref.Purpose == backend.PurposeCipher {
		return b.ImportKey(ctx, &backend.ImportRequest{Ref: req.Ref, Type: req.Type, Material: b.priv})
	}
	return b.Backend.Generate(ctx, req)
}

// TestVerifyPSSSaltLength: Verify accepts only the salt the key signs
// with (222 bytes) unless WithAnyPSSSaltLength says otherwise.
func TestVerifyPSSSaltLength(t *testing.T) {
	ctx := context.Background()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("signed elsewhere")
	digest := sha256.Sum256(data)
	sigWith := func(salt int) string {
		sig, err := rsa.SignPSS(rand.Reader, priv, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: salt})
		if err != nil {
			t.Fatal(err)
		}
		return "ncpkms:v1:" + base64.StdEncoding.EncodeToString(sig)
	}
	for _, lenient := range []bool{false, true} {
		t.Run(fmt.Sprintf("any=%v", lenient), func(t *testing.T) {
			opts := []kms.Option{kms.WithMaintenanceInterval(0)}
			if lenient {
				opts = append(opts, kms.WithAnyPSSSaltLength())
			}
			e, err := kms.New(ctx, knownRSA{Backend: newBackend(t, rootKey), priv: priv}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			k := createKey(t, e, "pss", kms.RSA2048, false)
			own, err := e.Sign(ctx, k.Tag, data)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name string
				sig  string
				want bool
			}{
				{"the key's own Sign", own, true},
				{"salt 222 made elsewhere", sigWith(222), true},
				{"salt 32 (hash length)", sigWith(rsa.PSSSaltLengthEqualsHash), lenient},
				{"salt 20", sigWith(20), lenient},
			} {
				ok, err := e.Verify(ctx, k.Tag, data, c.sig)
				if err != nil || ok != c.want {
					t.Errorf("%s: Verify = %v, %v; want %v", c.name, ok, err, c.want)
				}
			}
		})
	}
}
