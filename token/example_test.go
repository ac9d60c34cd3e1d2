package token_test

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/pocketkms/kms/token"
)

// Issue a token set with a generator key, verify the access token the way
// a token-plane call does, and cache the verification.
func Example() {
	// The generator's key pair; in pocketkms it lives in the backend and
	// only a crypto.Signer is handed over.
	genKey, err := rsa.GenerateKey(nil, 2048)
	if err != nil {
		log.Fatal(err)
	}
	genID, err := token.NewGeneratorID(nil)
	if err != nil {
		log.Fatal(err)
	}
	keyTag := "a6876c471a8bebc56dc0d664d3c64d453ee178205a4abad1849651de3fa6405d"
	now := time.Date(2024, 10, 16, 4, 27, 56, 0, time.UTC)

	set, err := token.IssueSet(genKey, token.Request{
		KeyTag:      keyTag,
		Subject:     "5b126890-c081-11ec-ba6e-246e96591594",
		Permissions: []token.Permission{token.PermEncrypt, token.PermDecrypt},
		AccessTTL:   token.TTL{Minutes: token.DefaultAccessTTLMinutes},
		RefreshTTL:  token.TTL{Unlimited: true},
		Now:         now,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(set) // tokens are redacted

	cache, err := token.NewCache(10_000)
	if err != nil {
		log.Fatal(err)
	}
	want := token.Expect{Kind: token.Access, KeyTag: keyTag, Now: now.Add(time.Hour)}
	claims, err := token.Verify(set.Access, &genKey.PublicKey, want)
	if err != nil {
		log.Fatal(err)
	}
	cache.Put(set.Access, &token.Verified{GeneratorID: genID, Claims: *claims})
	fmt.Println(claims.Subject, claims.Kind, claims.Has(token.PermEncrypt), claims.Has(token.PermSign))

	// Later calls: a hit, rechecked against the current generator and clock.
	v, _ := cache.Get(set.Access)
	fmt.Println(v.Recheck(genID, want))

	// The refresh token is refused where an access token is needed.
	_, err = token.Verify(set.Refresh, &genKey.PublicKey, want)
	fmt.Println(err, errors.Is(err, token.ErrTokenInvalid))

	// Three days later the access token has expired.
	want.Now = now.Add(72 * time.Hour)
	fmt.Println(v.Recheck(genID, want), errors.Is(v.Recheck(genID, want), token.ErrTokenExpired))
	// Output:
	// token.Set{Access:[redacted] Refresh:[redacted] IssuedAt:2024-10-16T04:27:56Z AccessExpires:2024-10-19T04:27:56Z RefreshExpires:unlimited}
	// 5b126890-c081-11ec-ba6e-246e96591594 ACCESS true false
	// <nil>
	// token: verify: wrong token kind true
	// token: recheck: token expired true
}
