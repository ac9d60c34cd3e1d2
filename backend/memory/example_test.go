package memory_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/pocketkms/kms/backend"
	"github.com/pocketkms/kms/backend/memory"
)

func Example() {
	ctx := context.Background()
	root, err := memory.GenerateRootKey() // keep it safe: it opens every handle
	if err != nil {
		log.Fatal(err)
	}
	b, err := memory.New(root)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	ref := backend.KeyRef{KeyTag: strings.Repeat("ab", 32), Version: 1, Purpose: backend.PurposeCipher}
	resp, err := b.Generate(ctx, &backend.GenerateRequest{Ref: ref, Type: backend.AES256})
	if err != nil {
		log.Fatal(err)
	}
	// The Engine stores resp.Handle and loads it when the key is used.
	k, err := b.Load(ctx, &backend.LoadRequest{Ref: ref, Type: backend.AES256, Handle: resp.Handle})
	if err != nil {
		log.Fatal(err)
	}
	ct, err := k.(backend.Encrypter).Encrypt(ctx, &backend.EncryptRequest{Plaintext: []byte("hello"), AdditionalData: []byte("context")})
	if err != nil {
		log.Fatal(err)
	}
	pt, err := k.(backend.Decrypter).Decrypt(ctx, &backend.DecryptRequest{Ciphertext: ct, AdditionalData: []byte("context")})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (%d-byte ciphertext)\n", pt, len(ct))
	fmt.Println(k)
	// Output:
	// hello (33-byte ciphertext)
	// memory.Key{AES256 key abababababababababababababababababababababababababababababababab v1 (cipher), material redacted}
}
