package kmscrypto_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"log"
	"math/big"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pocketkms/kms"
	"github.com/pocketkms/kms/backend/memory"
	"github.com/pocketkms/kms/kmscrypto"
)

// signerMethod is a golang-jwt SigningMethod that signs through a
// crypto.Signer (golang-jwt's own methods want *rsa.PrivateKey or
// *ecdsa.PrivateKey) and verifies with golang-jwt's own method.
type signerMethod struct {
	jwt.SigningMethod                   // verification, and Alg
	opts              crypto.SignerOpts // what Sign asks the key for
}

// PS256 and ES256 over a crypto.Signer. RSA2048 keys sign with the
// maximum salt here (PSSSaltLengthAuto; PSSSaltLengthEqualsHash works
// too); golang-jwt's PS256 verifies any salt.
var (
	signerPS256 = &signerMethod{jwt.SigningMethodPS256, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthAuto}}
	signerES256 = &signerMethod{jwt.SigningMethodES256, crypto.SHA256}
)

func (m *signerMethod) Sign(signingString string, key any) ([]byte, error) {
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, jwt.ErrInvalidKeyType
	}
	digest := sha256.Sum256([]byte(signingString))
	sig, err := s.Sign(rand.Reader, digest[:], m.opts)
	if err != nil || m.opts != crypto.SHA256 {
		return sig, err
	}
	// JWS wants ECDSA signatures as R ‖ S, 32 bytes each, not DER.
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(sig, &rs); err != nil || len(rest) != 0 {
		return nil, errors.New("ES256: signature is not DER")
	}
	out := make([]byte, 64)
	rs.R.FillBytes(out[:32])
	rs.S.FillBytes(out[32:])
	return out, nil
}

// Example_jwt signs a JWT (PS256 here; ES256 works the same with an ECDSA
// key and signerES256) with a pocketkms key and verifies it with
// golang-jwt and the public key.
func Example_jwt() {
	ctx := context.Background()
	root, _ := memory.GenerateRootKey()
	be, _ := memory.New(root)
	e, err := kms.New(ctx, be)
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	k, err := e.CreateKey(ctx, kms.CreateKeyRequest{Name: "jwt-signing", Type: kms.RSA2048})
	if err != nil {
		log.Fatal(err)
	}

	signer, err := kmscrypto.NewSigner(ctx, e, k.Tag)
	if err != nil {
		log.Fatal(err)
	}
	tok, err := jwt.NewWithClaims(signerPS256, jwt.MapClaims{"sub": "alice"}).SignedString(signer)
	if err != nil {
		log.Fatal(err)
	}

	parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return signer.Public(), nil },
		jwt.WithValidMethods([]string{"PS256"}))
	if err != nil {
		log.Fatal(err)
	}
	sub, _ := parsed.Claims.GetSubject()
	fmt.Println(parsed.Method.Alg(), sub, parsed.Valid)
	// Output: PS256 alice true
}
