package kms

import (
	"context"
	"sync"

	"github.com/pocketkms/kms/internal/envelope"
	"github.com/pocketkms/kms/token"
)

// scratch is a reusable buffer for the cipher hot path. It only ever holds
// ciphertext: the sealed body on encryption (before it is encoded into the
// envelope), the decoded body on decryption (before it is opened into the
// result), and the associated data of AppendSeal and AppendOpen, which is
// public; plaintext never enters it, so it needs no clearing.
type scratch struct {
	buf []byte
	ad  []byte // an AES body's associated data (aesAD, gcmAD)
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

// maxPooledScratch bounds what goes back to the pool: the largest body
// (32 KiB of plaintext, nonce and tag) is about 33 KB; anything larger
// came from somewhere unexpected and is left to the collector.
const maxPooledScratch = 128 << 10

func putScratch(sc *scratch) {
	if cap(sc.buf) > maxPooledScratch {
		sc.buf = nil
	}
	if cap(sc.ad) > maxPooledScratch {
		sc.ad = nil // a large AppendSeal associated data
	}
	scratchPool.Put(sc)
}

// reserve makes sc.buf hold at least n bytes of capacity.
func (sc *scratch) reserve(n int) {
	if cap(sc.buf) < n {
		sc.buf = make([]byte, 0, n)
	}
}

// AppendEncrypt is Encrypt appending the envelope, "ncpkms:v{N}:<base64>",
// to dst and returning the extended slice: the []byte form of Encrypt for
// callers that hold bytes (kmscrypto's AEAD uses it). With a dst of
// enough capacity it allocates nothing for an AES256 key on the memory
// backend. dst must not overlap plaintext or encCtx. On error it returns
// nil.
func (e *Engine) AppendEncrypt(ctx context.Context, dst []byte, keyTag string, plaintext, encCtx []byte) ([]byte, error) {
	return onKey(e, ctx, "encrypt", keyTag, func(op string, s *keySnap) ([]byte, error) {
		return e.appendEncryptTo(ctx, op, s, dst, plaintext, encCtx, aeadData{})
	})
}

// AppendDecrypt is Decrypt of a ciphertext held in a []byte, appending the
// plaintext to dst and returning the extended slice (a new, exactly sized
// buffer when dst is nil), as cipher.AEAD.Open does. ciphertext is only
// read. dst must not overlap ciphertext. On error it returns nil and dst's
// spare capacity may have been overwritten.
func (e *Engine) AppendDecrypt(ctx context.Context, dst []byte, keyTag string, ciphertext, encCtx []byte) ([]byte, error) {
	return onKey(e, ctx, "decrypt", keyTag, func(op string, s *keySnap) ([]byte, error) {
		return decryptText(e, ctx, op, s, dst, ciphertext, encCtx, aeadData{})
	})
}

// appendEncryptTo seals plaintext into a scratch buffer and appends its
// envelope to dst; xad is AppendSeal's associated data (seal.go).
func (e *Engine) appendEncryptTo(ctx context.Context, op string, s *keySnap, dst, plaintext, encCtx []byte, xad aeadData) ([]byte, error) {
	sc := getScratch()
	defer putScratch(sc)
	return e.sealTo(ctx, op, s, sc, plaintext, encCtx, xad, func(v uint32, body []byte) []byte {
		return envelope.AppendText(dst, v, body)
	})
}

// AppendEncrypt is Engine.AppendEncrypt on the token plane (permission
// Encrypt), with TokenClient's checks.
func (c TokenClient) AppendEncrypt(ctx context.Context, dst []byte, keyTag string, plaintext, encCtx []byte) ([]byte, error) {
	return onToken(c, ctx, "encrypt", keyTag, token.Access, token.PermEncrypt, 1, func(op string, s *keySnap, _ *token.Claims) ([]byte, error) {
		return c.e.appendEncryptTo(ctx, op, s, dst, plaintext, encCtx, aeadData{})
	})
}

// AppendDecrypt is Engine.AppendDecrypt on the token plane (permission
// Decrypt), with TokenClient's checks.
func (c TokenClient) AppendDecrypt(ctx context.Context, dst []byte, keyTag string, ciphertext, encCtx []byte) ([]byte, error) {
	return onToken(c, ctx, "decrypt", keyTag, token.Access, token.PermDecrypt, 1, func(op string, s *keySnap, _ *token.Claims) ([]byte, error) {
		return decryptText(c.e, ctx, op, s, dst, ciphertext, encCtx, aeadData{})
	})
}
