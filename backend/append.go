package backend

import "context"

// AppendEncrypter is an optional interface of AES256 keys (an Encrypter)
// that can write their output into the caller's buffer. The Engine uses
// it when a key offers it, so that an Encrypt allocates no body only to
// encode it and throw it away; a key without it still works through
// Encrypter.Encrypt. The request is passed by value, so a call allocates
// nothing for it.
type AppendEncrypter interface {
	Encrypter
	// EncryptAppend is Encrypt, appending nonce ‖ ciphertext ‖ tag to dst
	// and returning the extended slice (growing dst at most once). dst's
	// spare capacity must not overlap req.Plaintext or
	// req.AdditionalData. Errors are those of Encrypt.
	EncryptAppend(ctx context.Context, dst []byte, req EncryptRequest) ([]byte, error)
}

// AppendDecrypter is an optional interface of AES256 keys (a Decrypter)
// that can write the plaintext into the caller's buffer, as
// cipher.AEAD.Open does; the Engine uses it when a key offers it.
type AppendDecrypter interface {
	Decrypter
	// DecryptAppend is Decrypt, appending the plaintext to dst and
	// returning the extended slice. As with cipher.AEAD.Open, dst may be
	// req.Ciphertext[NonceSize:][:0] to decrypt in place, and must not
	// overlap req.Ciphertext otherwise. On failure it returns nil and the
	// error, and may have overwritten dst's spare capacity. Errors are
	// those of Decrypt.
	DecryptAppend(ctx context.Context, dst []byte, req DecryptRequest) ([]byte, error)
}
