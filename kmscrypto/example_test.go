package kmscrypto_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log"
	"math/big"
	"time"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/kmscrypto"
)

// exampleEngine opens an in-memory Engine and creates a key of type typ.
func exampleEngine(ctx context.Context, typ kms.KeyType) (*kms.Engine, string) {
	root, err := memory.GenerateRootKey()
	if err != nil {
		log.Fatal(err)
	}
	be, err := memory.New(root)
	if err != nil {
		log.Fatal(err)
	}
	e, err := kms.New(ctx, be)
	if err != nil {
		log.Fatal(err)
	}
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "example", Type: typ})
	if err != nil {
		log.Fatal(err)
	}
	return e, k.Tag
}

// A self-signed certificate whose key stays in pocketkms.
func ExampleNewSigner() {
	ctx := context.Background()
	e, tag := exampleEngine(ctx, kms.ECDSA)
	defer e.Close()

	signer, err := kmscrypto.NewSigner(ctx, e, tag)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pocketkms example CA"},
		NotBefore:    time.Now(),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IsCA:         true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		log.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cert.SignatureAlgorithm, cert.CheckSignatureFrom(cert))
	// Output: ECDSA-SHA256 <nil>
}

// Decrypting RSA-OAEP ciphertexts made with the public key.
func ExampleNewDecrypter() {
	ctx := context.Background()
	e, tag := exampleEngine(ctx, kms.RSA2048)
	defer e.Close()

	dec, err := kmscrypto.NewDecrypter(ctx, e, tag)
	if err != nil {
		log.Fatal(err)
	}
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, dec.Public().(*rsa.PublicKey), []byte("hello"), nil)
	if err != nil {
		log.Fatal(err)
	}
	pt, err := dec.Decrypt(nil, ct, &rsa.OAEPOptions{Hash: crypto.SHA256})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (version %d)\n", pt, dec.Version())
	// Output: hello (version 1)
}

// Wrapping a data key under an AES256 key, bound to what it protects.
func ExampleNewAEAD() {
	ctx := context.Background()
	e, tag := exampleEngine(ctx, kms.AES256)
	defer e.Close()

	kek, err := kmscrypto.NewAEAD(ctx, e, tag)
	if err != nil {
		log.Fatal(err)
	}
	dataKey := make([]byte, 32)
	rand.Read(dataKey)
	wrapped, err := kek.Encrypt(dataKey, []byte("orders/2024"))
	if err != nil {
		log.Fatal(err)
	}
	_, err = kek.Decrypt(wrapped, []byte("invoices/2024"))
	fmt.Println("other associated data:", errors.Is(err, kms.ErrDecryptionFailed))
	got, err := kek.Decrypt(wrapped, []byte("orders/2024"))
	fmt.Println("unwrapped:", err == nil && len(got) == 32)
	// Output:
	// other associated data: true
	// unwrapped: true
}
