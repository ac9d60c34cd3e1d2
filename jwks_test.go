package kms_test

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pocketkms/kms"
)

// jwksKey parses a JWKS document holding one RS256 signing key.
func jwksKey(t *testing.T, doc []byte) (kid string, pub *rsa.PublicKey) {
	t.Helper()
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("%d keys, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	for name, want := range map[string]string{"kty": "RSA", "use": "sig", "alg": "RS256"} {
		if k[name] != want {
			t.Fatalf("%s = %v, want %s", name, k[name], want)
		}
	}
	if len(k) != 6 {
		t.Fatalf("members %v: want kty use alg kid n e", k)
	}
	n, err := base64.RawURLEncoding.Strict().DecodeString(k["n"].(string))
	if err != nil {
		t.Fatal(err)
	}
	e, err := base64.RawURLEncoding.Strict().DecodeString(k["e"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return k["kid"].(string), &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
}

// TestTokenJWKS: another service verifies an issued token offline with
// the JWKS key and golang-jwt; after a rotation the old key set no longer
// verifies new tokens and the new one has the new generator's id.
func TestTokenJWKS(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	k, set := tokenKey(t, e, "jwks", kms.AES256, kms.IssueTokensRequest{Subject: "svc", Permissions: kms.AllPermissions()})
	doc, err := e.TokenJWKS(ctx, k.Tag)
	if err != nil {
		t.Fatal(err)
	}
	kid, pub := jwksKey(t, doc)
	g, _ := e.GetTokenGenerator(ctx, k.Tag)
	if kid != g.ID {
		t.Fatalf("kid %q, generator id %q", kid, g.ID)
	}
	verify := func(tok string, pub *rsa.PublicKey) (jwt.MapClaims, error) {
		claims := jwt.MapClaims{}
		_, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"})).ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return pub, nil })
		return claims, err
	}
	claims, err := verify(set.Access, pub)
	if err != nil {
		t.Fatalf("golang-jwt with the JWKS key: %v", err)
	}
	if claims["1"] != "ACCESS" || claims["2"] != "keytag__"+k.Tag || claims["sub"] != "svc" {
		t.Fatalf("claims %v", claims)
	}
	if _, err := e.RotateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	fresh, err := e.IssueTokens(ctx, k.Tag, kms.IssueTokensRequest{Subject: "svc", Permissions: kms.AllPermissions()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify(fresh.Access, pub); err == nil {
		t.Fatal("the old key set verifies a token of the rotated generator")
	}
	doc2, err := e.TokenJWKS(ctx, k.Tag)
	if err != nil {
		t.Fatal(err)
	}
	kid2, pub2 := jwksKey(t, doc2)
	if kid2 == kid {
		t.Fatal("the kid did not change with the rotation")
	}
	if _, err := verify(fresh.Access, pub2); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DeactivateTokenGenerator(ctx, k.Tag); err != nil {
		t.Fatal(err)
	}
	_, err = e.TokenJWKS(ctx, k.Tag)
	wantErr(t, err, kms.ErrInvalidState)
	_, err = e.TokenJWKS(ctx, "0000000000000000000000000000000000000000000000000000000000000000")
	wantErr(t, err, kms.ErrKeyNotFound)
}
