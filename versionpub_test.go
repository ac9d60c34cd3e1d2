package kms

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/internal/store"
)

// TestStoredPublicKeyChecked checks that opening a store whose version
// records hold a public key that does not parse, or does not fit the
// key's type, fails with ErrInternal (and never panics), since Verify and
// RSA2048 Encrypt run on that key.
func TestStoredPublicKeyChecked(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	root := bytes.Repeat([]byte{0x42}, memory.RootKeySize)
	open := func(dir string) (*Engine, error) {
		b, err := memory.New(root)
		if err != nil {
			t.Fatal(err)
		}
		return New(context.Background(), b, WithDirectory(dir))
	}
	for _, c := range []struct {
		name string
		typ  KeyType
		edit func(der []byte) []byte
	}{
		{"RSAGarbage", RSA2048, func([]byte) []byte { return []byte("not a public key") }},
		{"RSATruncated", RSA2048, func(der []byte) []byte { return der[:len(der)-1] }},
		{"RSAMissing", RSA2048, func([]byte) []byte { return nil }},
		{"RSAGivenECDSAKey", RSA2048, func([]byte) []byte { return ecDER }},
		{"ECDSAByteAppended", ECDSA, func(der []byte) []byte { return append(bytes.Clone(der), 0) }},
		{"AESGivenECDSAKey", AES256, func([]byte) []byte { return ecDER }},
		{"AESGarbage", AES256, func([]byte) []byte { return []byte{0x30} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			e, err := open(dir)
			if err != nil {
				t.Fatal(err)
			}
			k, err := e.CreateKey(context.Background(), CreateKeyRequest{Name: "key", Type: c.typ})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			st, err := store.Open(store.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			contents, err := st.Load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(contents.Keys) != 1 || contents.Keys[0].Key.Tag != k.Tag {
				t.Fatalf("store holds %d keys", len(contents.Keys))
			}
			vr := contents.Keys[0].Versions[0]
			vr.PublicKey = c.edit(vr.PublicKey)
			if err := st.Update(func(tx *store.Txn) error { return tx.PutVersion(&vr) }); err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			e, err = open(dir)
			if !errors.Is(err, ErrInternal) {
				if e != nil {
					e.Close()
				}
				t.Fatalf("New over a bad public key: %v, want ErrInternal", err)
			}
		})
	}
}
