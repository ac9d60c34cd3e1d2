//go:build cgo

package softhsm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"sync"
	"testing"
)

var oaepKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// rawDecrypt is RSADP + I2OSP in software (test only): what the token's
// CKM_RSA_X_509 decryption returns.
func rawDecrypt(k *rsa.PrivateKey, c []byte) []byte {
	m := new(big.Int).Exp(new(big.Int).SetBytes(c), k.D, k.N)
	return m.FillBytes(make([]byte, k.Size()))
}

func TestOAEPDecodeMatchesCryptoRSA(t *testing.T) {
	k, err := oaepKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 31, 32, 100, 189, 190} {
		msg := make([]byte, n)
		rand.Read(msg)
		ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &k.PublicKey, msg, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := oaepDecode(rawDecrypt(k, ct), k.Size())
		if !ok || !bytes.Equal(got, msg) {
			t.Errorf("%d-byte message: oaepDecode = %x, %v", n, got, ok)
		}
		// Every single-byte change of the encoded message is refused.
		em := rawDecrypt(k, ct)
		for i := range em {
			bad := bytes.Clone(em)
			bad[i] ^= 0x01
			if _, ok := oaepDecode(bad, k.Size()); ok {
				t.Errorf("%d-byte message: encoded message with byte %d changed decodes", n, i)
			}
		}
	}
	// A label is refused (the SPI uses the empty label).
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &k.PublicKey, []byte("m"), []byte("label"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := oaepDecode(rawDecrypt(k, ct), k.Size()); ok {
		t.Error("a message with a label decodes")
	}
	for _, em := range [][]byte{nil, make([]byte, 255), make([]byte, 257), make([]byte, 256)} {
		if _, ok := oaepDecode(em, 256); ok {
			t.Errorf("%d-byte zero block decodes", len(em))
		}
	}
	if _, ok := oaepDecode(make([]byte, 65), 65); ok {
		t.Error("k < 2hLen+2 decodes")
	}
}

// FuzzOAEPDecode checks oaepDecode against crypto/rsa on arbitrary
// ciphertexts: both accept the same ones, with the same message.
func FuzzOAEPDecode(f *testing.F) {
	k, err := oaepKey()
	if err != nil {
		f.Fatal(err)
	}
	ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, &k.PublicKey, []byte("seed"), nil)
	f.Add(ct)
	f.Add(make([]byte, 256))
	f.Fuzz(func(t *testing.T, c []byte) {
		if len(c) != k.Size() || new(big.Int).SetBytes(c).Cmp(k.N) >= 0 {
			return
		}
		want, wantErr := rsa.DecryptOAEP(sha256.New(), nil, k, c, nil)
		got, ok := oaepDecode(rawDecrypt(k, c), k.Size())
		if ok != (wantErr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("oaepDecode = %x, %v; crypto/rsa = %x, %v", got, ok, want, wantErr)
		}
	})
}
